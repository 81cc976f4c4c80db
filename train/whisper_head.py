"""Train a whisper-ctc model's CTC head on a frozen encoder, with the encoder's outputs cached to disk.

Why a separate loop: with the encoder frozen, each utterance's encoder states never change (for a
given augmentation), so they are computed once per copy through an ONNX export of the encoder (6-7x
faster than PyTorch eager on CPU) and the head then trains in minutes. Several augmented copies of
the training split are cached (copy 0 clean, the others through `train.augment`'s transforms and a
channel degradation); the head also sees SpecAugment-style time and channel masks on the states.
With `--ctc-layers N` the encoder's top N layers are copied into the CTC path and trained with the
head (at `--branch-lr-scale` of its learning rate); the cache then holds the states below the copy.

    python -m train.whisper_head --encoder data/whisper-tiny.en-hf \
        --data corpus/train.csv --validation-data corpus/valid.csv --out runs/v2-head \
        --vocab models/default-model-hf/vocab.json --copies 3 --steps 8000

The run folder:
    cache/train-<source>-<copy>.f16    encoder states (float16, frames x d_model) + .json index, one per
                                        training manifest and copy; cache/valid.f16 likewise; with
                                        --ctc-layers N the states where the CTC branch forks, in
                                        files named ...-layer<K>.f16 (K: the layers before the fork)
    tensorboard/                       loss, learning rate, validation CER/WER
    head-last.safetensors, state.pt     the head and the optimizer at the last evaluation (resume)
    head-best.safetensors               the head with the best validation CER so far
    metrics.json                        the validation history and the best step
    model/                              the full model (encoder + best head): a Hugging Face folder
                                        that `python -m quantize convert` takes
The same command resumes: finished caches are reused and training continues from state.pt. A larger
--steps continues a finished run (the cosine schedule stretches); another --data manifest added on
resume is cached and mixed in from then on.
Checkpoints are picked on the validation split only (synthetic voices), never on real recordings.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.atomic import write_text_atomic
from edge_asr.text import TextNormalization

from . import data as D
from . import vocab as V

if TYPE_CHECKING:
    import torch

log = logging.getLogger("train.whisper_head")

SAMPLE_RATE = 16000


@dataclass
class HeadOptions:
    """What the head looks like and how it trains.

    Attributes:
        head_type, head_layers, head_dim, head_heads, head_ffn, head_dropout, ctc_layers: see
            WhisperCtcConfig.
        branch_lr_scale: the CTC branch's learning rate as a share of the head's (its weights start
            as Whisper's trained ones, the head's from a trained head or at random).
        copies: cached copies of the training split (copy 0 is clean, the others augmented).
        steps: optimizer steps; lr: peak learning rate (AdamW), warmup: linear warm-up steps, then cosine.
        batch_frames: encoder frames per batch (padding included), about batch_frames / 50 seconds.
        weight_decay: AdamW weight decay.
        time_masks, time_mask_frames: SpecAugment time masks per utterance and their longest length.
        channel_masks, channel_mask_width: masks over encoder-state dimensions.
        eval_every: steps between validations; seed: every random choice.
        max_seconds: utterances longer than this are left out (the encoder sees at most 30 s).
        nonspeech_clips: generated clips with nothing to transcribe (digital silence, noise and hum
            at many levels, clicks) cached with an empty label, so the head learns to say nothing
            where the corpus, whose utterances are trimmed to 0.2 s of silence, never showed it.
    """

    head_type: str = "transformer"
    head_layers: int = 3
    head_dim: int = 256
    head_heads: int = 4
    head_ffn: int = 1024
    head_dropout: float = 0.1
    ctc_layers: int = 0
    branch_lr_scale: float = 0.3
    copies: int = 2
    steps: int = 6000
    lr: float = 1e-3
    warmup: int = 400
    batch_frames: int = 12000
    weight_decay: float = 0.01
    time_masks: int = 2
    time_mask_frames: int = 10
    channel_masks: int = 2
    channel_mask_width: int = 24
    eval_every: int = 500
    seed: int = 0
    max_seconds: float = 28.0
    nonspeech_clips: int = 0
    augment: Dict[str, float] = field(default_factory=dict)


@dataclass
class CachedSplit:
    """Encoder states of one copy of a split: a float16 memmap [frames, d_model] and its index."""

    states: np.ndarray
    offsets: List[int]
    frames: List[int]
    labels: List[List[int]]
    texts: List[str]

    def __len__(self) -> int:
        return len(self.offsets)

    def item(self, i: int) -> np.ndarray:
        return self.states[self.offsets[i] : self.offsets[i] + self.frames[i]]


# ----------------------------------------------------------------------------------------------
# data


def read_rows(
    sources: Sequence[str], normalization: TextNormalization, vocabulary: Dict[str, int], max_seconds: float
) -> Tuple[List[D.Utterance], D.FilterReport]:
    from .whisper_ctc import RECEPTIVE_FIELD, output_frames

    report = D.FilterReport()
    rows = D.normalize_labels(D.read_sources(sources, report), normalization, report)
    limits = D.AudioLimits(
        min_samples=RECEPTIVE_FIELD,
        max_samples=int(max_seconds * SAMPLE_RATE),
        min_frames=1,
        frames=output_frames,
    )
    rows = D.check_audio(rows, limits, report)
    rows = D.check_labels(rows, vocabulary, V.encoder(vocabulary), output_frames, report)
    return rows, report


def source_slug(source: str) -> str:
    """A cache name for a manifest: its folder and file names ("corpus-v1-train")."""
    path = Path(source)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{path.parent.name}-{path.stem}")


def export_encoder(model, path: Path) -> None:
    """The frozen encoder as an ONNX graph: raw samples [1, samples] -> states [1, frames, d_model]
    (`model.trunk`: the final states, or those where a CTC branch forks)."""
    import warnings

    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, samples: torch.Tensor) -> torch.Tensor:
            return self.net.trunk(samples)

    example = 0.1 * torch.randn(1, 2 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(model).eval(),
            (example,),
            str(tmp),
            input_names=["samples"],
            output_names=["states"],
            dynamic_axes={"samples": {1: "n"}, "states": {1: "frames"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)


class Augmenter:
    """Waveform augmentation for cached copies: train.augment's transforms, then maybe a channel."""

    def __init__(self, options: Dict[str, float], run_dir: Path, seed: int):
        from .augment import AugmentOptions, build_augmenter, make_impulse_responses

        impulse_dir = run_dir / "impulse_responses"
        make_impulse_responses(impulse_dir, (0.15, 0.7), count=12, seed=seed)
        values = {
            "speed_p": 0.5,
            "speed_rate": (0.9, 1.1),
            "noise_p": 0.5,
            "noise_snr_db": (0.0, 30.0),
            "pitch_p": 0.2,
            "stretch_p": 0.0,
            "eq_p": 0.4,
            "lowpass_p": 0.2,
            "gain_p": 0.5,
            "gain_db": (-18.0, 6.0),
            "reverb_p": 0.35,
            "reverb_rt60": (0.15, 0.7),
        }
        values.update({k: v for k, v in options.items() if k != "channel_p"})
        self.augmenter = build_augmenter(AugmentOptions(**values, impulse_dir=str(impulse_dir)))  # type: ignore[arg-type]
        self.channel_p = float(options.get("channel_p", 0.35))

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from .augment import CHANNELS, apply, degrade_channel

        random.seed(int(rng.integers(1 << 31)))  # audiomentations draws from the `random` module
        np.random.seed(int(rng.integers(1 << 31)))
        out = apply(self.augmenter, samples) if self.augmenter is not None else samples
        if rng.random() < self.channel_p:
            out = degrade_channel(out, str(rng.choice(CHANNELS)), rng)
        peak = float(np.abs(out).max()) if out.size else 0.0
        return out / peak * 0.95 if peak > 1.0 else out


def write_cache(
    encoder_onnx: Path,
    items: Iterable[Tuple[np.ndarray, str, List[int]]],
    count: int,
    path: Path,
    d_model: int,
    threads: int,
) -> CachedSplit:
    """Run each (samples, text, label ids) through the encoder and write the states (float16) and the
    index beside them; the index is written last, so a cache with one is complete."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(encoder_onnx), options, providers=["CPUExecutionProvider"])
    tmp = path.with_suffix(".tmp")
    index: Dict[str, Any] = {"offsets": [], "frames": [], "labels": [], "texts": [], "d_model": d_model}
    started, audio_seconds, total = time.perf_counter(), 0.0, 0
    with open(tmp, "wb") as out:
        for i, (samples, text, label) in enumerate(items):
            states = session.run(None, {"samples": samples[None, :].astype(np.float32)})[0][0]
            out.write(states.astype(np.float16).tobytes())
            index["offsets"].append(total)
            index["frames"].append(int(states.shape[0]))
            index["labels"].append(label)
            index["texts"].append(text)
            total += int(states.shape[0])
            audio_seconds += len(samples) / SAMPLE_RATE
            if (i + 1) % 1000 == 0:
                rate = audio_seconds / (time.perf_counter() - started)
                log.info("%s: %d/%d items, %.0f s of audio per second", path.name, i + 1, count, rate)
    tmp.replace(path)
    write_text_atomic(path.with_suffix(".json"), json.dumps(index))
    log.info(
        "%s: %d items, %.2f h in %.0f s",
        path.name,
        count,
        audio_seconds / 3600,
        time.perf_counter() - started,
    )
    return load_cache(path, d_model)


def cache_split(
    encoder_onnx: Path,
    rows: Sequence[D.Utterance],
    encode: Callable[[str], List[int]],
    path: Path,
    d_model: int,
    augmenter: Optional[Augmenter],
    seed: int,
    threads: int,
) -> CachedSplit:
    """Every row through the encoder (augmented when `augmenter`); a complete cache at `path` of the
    same rows is read back instead (resume). One of other rows (another --validation-data) is rebuilt."""
    if path.is_file() and path.with_suffix(".json").is_file():
        cached = load_cache(path, d_model)
        if cached.texts == [row.label for row in rows]:
            return cached
        log.warning("%s holds other utterances than these %d: caching them again", path.name, len(rows))

    def items() -> Iterator[Tuple[np.ndarray, str, List[int]]]:
        for i, row in enumerate(rows):
            samples = D.load_audio(row.path)
            if augmenter is not None:
                samples = augmenter(samples, np.random.default_rng([seed, i]))
            yield samples, row.label, encode(row.label)

    return write_cache(encoder_onnx, items(), len(rows), path, d_model, threads)


def nonspeech_clip(rng: np.random.Generator) -> np.ndarray:
    """0.3-8 s of audio with no speech in it: digital silence, white or brown noise, mains hum with
    harmonics, or clicks, at -90..-15 dBFS."""
    samples = int(rng.uniform(0.3, 8.0) * SAMPLE_RATE)
    kind = rng.choice(["zeros", "white", "brown", "hum", "clicks"])
    if kind == "zeros":
        return np.zeros(samples, dtype=np.float32)
    t = np.arange(samples) / SAMPLE_RATE
    if kind == "white":
        x = rng.standard_normal(samples)
    elif kind == "brown":
        x = np.cumsum(rng.standard_normal(samples))
        x -= np.convolve(x, np.ones(400) / 400, mode="same")  # keep it from drifting like a DC offset
    elif kind == "hum":
        base = rng.choice([50.0, 60.0])
        x = sum(
            rng.uniform(0.1, 1.0) * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3)
        )
        x = x + 0.05 * rng.standard_normal(samples)
    else:
        x = 0.01 * rng.standard_normal(samples)
        x[rng.integers(0, samples, size=int(rng.integers(1, 8)))] = rng.choice([-1.0, 1.0])
    x = np.asarray(x, dtype=np.float64)
    x /= max(1e-9, float(np.sqrt(np.mean(x**2))))
    return (x * 10 ** (rng.uniform(-90, -15) / 20)).clip(-1, 1).astype(np.float32)


def cache_nonspeech(
    encoder_onnx: Path, count: int, path: Path, d_model: int, seed: int, threads: int
) -> CachedSplit:
    """`count` generated non-speech clips through the encoder, each with an empty label."""
    if path.is_file() and path.with_suffix(".json").is_file():
        return load_cache(path, d_model)
    rng = np.random.default_rng(seed)
    empty: List[int] = []
    clips = ((nonspeech_clip(rng), "", empty) for _ in range(count))
    return write_cache(encoder_onnx, clips, count, path, d_model, threads)


def load_cache(path: Path, d_model: int) -> CachedSplit:
    index = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    states = np.memmap(path, dtype=np.float16, mode="r").reshape(-1, d_model)
    return CachedSplit(states, index["offsets"], index["frames"], index["labels"], index["texts"])


# ----------------------------------------------------------------------------------------------
# batches


def batches(
    splits: Sequence[CachedSplit], batch_frames: int, rng: random.Random
) -> Iterator[List[Tuple[int, int]]]:
    """Endless shuffled batches of (split, item), items of similar length together."""
    items = [(s, i, split.frames[i]) for s, split in enumerate(splits) for i in range(len(split))]
    while True:
        rng.shuffle(items)
        # Sort within large chunks so batches hold similar lengths but the order stays random.
        chunk = 2000
        groups: List[List[Tuple[int, int]]] = []
        for start in range(0, len(items), chunk):
            part = sorted(items[start : start + chunk], key=lambda t: t[2])
            batch: List[Tuple[int, int]] = []
            longest = 0
            for s, i, n in part:
                if batch and max(longest, n) * (len(batch) + 1) > batch_frames:
                    groups.append(batch)
                    batch, longest = [], 0
                batch.append((s, i))
                longest = max(longest, n)
            if batch:
                groups.append(batch)
        rng.shuffle(groups)
        yield from groups


def collate(splits: Sequence[CachedSplit], batch: Sequence[Tuple[int, int]]):
    import torch

    frames = [splits[s].frames[i] for s, i in batch]
    d_model = splits[0].states.shape[1]
    x = np.zeros((len(batch), max(frames), d_model), dtype=np.float32)
    for row, (s, i) in enumerate(batch):
        x[row, : frames[row]] = splits[s].item(i)
    labels = [splits[s].labels[i] for s, i in batch]
    y = np.full((len(batch), max(1, *(len(label) for label in labels))), -100, dtype=np.int64)
    for row, label in enumerate(labels):
        y[row, : len(label)] = label
    return torch.from_numpy(x), torch.tensor(frames), torch.from_numpy(y)


def spec_augment(x, frames, options: HeadOptions, generator) -> None:
    """In place: time masks (zeroed frames) and channel masks (zeroed dimensions) per utterance."""
    import torch

    batch, _, dims = x.shape
    for b in range(batch):
        n = int(frames[b])
        for _ in range(options.time_masks):
            width = int(torch.randint(0, options.time_mask_frames + 1, (1,), generator=generator))
            if width and n > 2 * width:
                start = int(torch.randint(0, n - width, (1,), generator=generator))
                x[b, start : start + width] = 0
        for _ in range(options.channel_masks):
            width = int(torch.randint(0, options.channel_mask_width + 1, (1,), generator=generator))
            if width:
                start = int(torch.randint(0, dims - width, (1,), generator=generator))
                x[b, :n, start : start + width] = 0


# ----------------------------------------------------------------------------------------------
# training


def head_state(model) -> Dict[str, torch.Tensor]:
    from .whisper_ctc import HEAD_PREFIXES

    return {k: v for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}


def evaluate(
    model, split: CachedSplit, tokens: List[str], blank_id: int, batch_frames: int
) -> Dict[str, float]:
    import torch

    from .metrics import count_errors, ids_to_text

    model.eval()
    order = sorted(range(len(split)), key=lambda i: split.frames[i])
    hyps: Dict[int, str] = {}
    with torch.no_grad():
        start = 0
        while start < len(order):
            batch = [order[start]]
            start += 1
            while start < len(order) and split.frames[order[start]] * (len(batch) + 1) <= batch_frames:
                batch.append(order[start])
                start += 1
            x, frames, _ = collate([split], [(0, i) for i in batch])
            ids = model(encoder_states=x, frames=frames).logits.argmax(-1)
            for row, i in enumerate(batch):
                hyps[i] = ids_to_text(ids[row, : int(frames[row])].tolist(), tokens, blank_id, "|", (1,))
    model.train()
    counts = count_errors(split.texts, [hyps[i] for i in range(len(split))])
    return {"cer": counts.cer, "wer": counts.wer}


def check_settings(args: argparse.Namespace, options: HeadOptions, run_dir: Path) -> None:
    """Refuse to resume a run with other settings (but --steps and --eval-every), then record these."""
    settings_path = run_dir / "head_options.json"
    if settings_path.is_file() and not args.force:
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
        # --steps and --eval-every may change on resume (a longer run stretches the cosine schedule).
        free = ("steps", "eval_every")
        now = {k: v for k, v in json.loads(json.dumps(asdict(options))).items() if k not in free}
        before = {k: v for k, v in saved["options"].items() if k not in free}
        if now != before or saved["encoder"] != args.encoder:
            raise SystemExit(
                f"{run_dir}: this run was started with other settings ({settings_path}); pass the same "
                "ones to resume, another --out for a new run, or --force to start over here"
            )
    record = {
        "options": asdict(options),
        "encoder": args.encoder,
        "init_head": args.init_head,
        "grow_head": args.grow_head,
        "data": args.data,
        "validation_data": args.validation_data,
    }
    write_text_atomic(settings_path, json.dumps(record, indent=2) + "\n")


def build_caches(
    args: argparse.Namespace,
    options: HeadOptions,
    model,
    vocabulary: Dict[str, int],
    normalization: TextNormalization,
    cache_dir: Path,
) -> Tuple[CachedSplit, List[CachedSplit]]:
    """(validation cache, training caches): every manifest x copy, plus the non-speech clips."""
    val_rows, val_report = read_rows(args.validation_data, normalization, vocabulary, options.max_seconds)
    if val_report.dropped:
        log.warning("validation data: %s", val_report.summary())
    sources = {}
    for source in args.data:  # one cache per source and copy, so a source can be added later
        rows, report = read_rows([source], normalization, vocabulary, options.max_seconds)
        if report.dropped:
            log.warning("%s: %s", source, report.summary())
        sources[source_slug(source)] = rows
    log.info(
        "train: %s; validation: %s",
        D.summarize([r for rows in sources.values() for r in rows]),
        D.summarize(val_rows),
    )
    d_model = int(model.config.encoder_config["d_model"])
    # States below a CTC branch are not the encoder's final ones: other file names, never mixed up.
    tap = f"-layer{model.fork_layer}" if model.ctc_branch is not None else ""
    encoder_onnx = cache_dir / f"encoder{tap}.onnx"
    if not encoder_onnx.is_file():
        export_encoder(model, encoder_onnx)
    encode = V.encoder(vocabulary)
    augmenter = Augmenter(options.augment, cache_dir.parent, options.seed) if options.copies > 1 else None
    val = cache_split(
        encoder_onnx, val_rows, encode, cache_dir / f"valid{tap}.f16", d_model, None, 0, args.threads
    )
    train_splits = [
        cache_split(
            encoder_onnx,
            rows,
            encode,
            cache_dir / f"train-{slug}-{c}{tap}.f16",
            d_model,
            augmenter if c else None,
            zlib.crc32(slug.encode()) + options.seed * 1000 + c,
            args.threads,
        )
        for slug, rows in sources.items()
        for c in range(options.copies)
    ]
    if options.nonspeech_clips:
        train_splits.append(
            cache_nonspeech(
                encoder_onnx,
                options.nonspeech_clips,
                cache_dir / f"train-nonspeech-{options.nonspeech_clips}{tap}.f16",
                d_model,
                options.seed,
                args.threads,
            )
        )
    return val, train_splits


def warmup_cosine(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then a cosine to 0 at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_at(step: int, options: HeadOptions) -> float:
    return warmup_cosine(step, options.lr, options.warmup, options.steps)


def train_head(args: argparse.Namespace) -> Path:
    """Cache (or reuse) the encoder states, train (or resume) the head, write run_dir/model."""
    import torch

    from .whisper_ctc import from_whisper

    options = HeadOptions(
        **{k: getattr(args, k) for k in HeadOptions.__dataclass_fields__ if hasattr(args, k)}
    )
    run_dir = Path(args.out).resolve()
    cache_dir = run_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    check_settings(args, options, run_dir)
    normalization = TextNormalization(lowercase=True, keep_punctuation="'")
    vocabulary = V.load_vocabulary(Path(args.vocab))
    V.save_vocabulary(vocabulary, run_dir / "vocab.json")
    head_config = {
        k: getattr(options, k)
        for k in (
            "head_type",
            "head_layers",
            "head_dim",
            "head_heads",
            "head_ffn",
            "head_dropout",
            "ctc_layers",
        )
    }
    model = from_whisper(args.encoder, len(vocabulary), vocabulary[V.PAD], options.seed, **head_config)
    val, train_splits = build_caches(args, options, model, vocabulary, normalization, cache_dir)
    if args.cache_only:
        return run_dir
    train_loop(args, options, model, vocabulary, val, train_splits, run_dir)
    return write_model_folder(model, run_dir, normalization)


def train_loop(
    args: argparse.Namespace,
    options: HeadOptions,
    model,
    vocabulary: Dict[str, int],
    val: CachedSplit,
    train_splits: List[CachedSplit],
    run_dir: Path,
) -> None:
    """AdamW on the head (and a CTC branch) alone until options.steps; validation, checkpoints and
    metrics every options.eval_every steps; resumes from run_dir/state.pt."""
    import torch
    from safetensors.torch import load_file, save_file
    from torch.utils.tensorboard import SummaryWriter

    from .pipeline import cpu_has_native_bf16
    from .trainer import ctc_loss
    from .whisper_ctc import HEAD_PREFIXES, load_head

    tokens = [t for t, _ in sorted(vocabulary.items(), key=lambda kv: kv[1])]
    blank_id = vocabulary[V.PAD]
    # bf16 autocast where the CPU does bf16 matmuls natively (AVX512-BF16, AMX): ~2x faster steps.
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and cpu_has_native_bf16())
    log.info("precision: %s", "bf16 autocast" if use_bf16 else "fp32")
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(HEAD_PREFIXES)
    params = [p for p in model.parameters() if p.requires_grad]
    branch = [p for n, p in model.named_parameters() if n.startswith("ctc_branch.")]
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if n.startswith(("head.", "lm_head."))],
            "scale": 1.0,
        }
    ]
    if branch:
        groups.append({"params": branch, "scale": options.branch_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=options.lr, weight_decay=options.weight_decay)

    step, best, history = 0, math.inf, []
    state_path = run_dir / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(load_file(str(run_dir / "head-last.safetensors")), strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best"], state["history"]
        if args.reset_best:  # a continuation with another data mix picks its own best checkpoint
            best = math.inf
        log.info("resuming at step %d (best validation CER %.4f)", step, best)
    elif args.init_head:
        load_head(model, args.init_head, grow=args.grow_head)
        log.info("head initialized from %s%s", args.init_head, " (grown)" if args.grow_head else "")
    rng = random.Random(options.seed + step)
    generator = torch.Generator().manual_seed(options.seed + step)
    stream = batches(train_splits, options.batch_frames, rng)
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    started, losses = time.perf_counter(), []
    while step < options.steps:
        x, frames, labels = collate(train_splits, next(stream))
        spec_augment(x, frames, options, generator)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, options) * group.get("scale", 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(encoder_states=x, frames=frames).logits
        loss = ctc_loss(logits.float(), labels, frames, blank_id)
        if not torch.isfinite(loss):
            raise SystemExit(f"step {step}: the CTC loss is {loss.item()}; lower --lr (now {options.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            writer.add_scalar("train/loss", float(np.mean(losses[-50:])), step)
            writer.add_scalar("train/lr", lr_at(step, options), step)
        if step % options.eval_every == 0 or step == options.steps:
            scores = evaluate(model, val, tokens, blank_id, 4 * options.batch_frames)
            history.append({"step": step, "loss": float(np.mean(losses[-options.eval_every :])), **scores})
            writer.add_scalar("eval/cer", scores["cer"], step)
            writer.add_scalar("eval/wer", scores["wer"], step)
            log.info(
                "step %d: loss %.3f, validation CER %.4f WER %.4f (%.1f s/100 steps)",
                step,
                history[-1]["loss"],
                scores["cer"],
                scores["wer"],
                100 * (time.perf_counter() - started) / max(1, len(losses)),
            )
            weights = {k: v.contiguous() for k, v in head_state(model).items()}
            if scores["cer"] < best:
                best = scores["cer"]
                save_file(weights, str(run_dir / "head-best.safetensors"))
            save_file(weights, str(run_dir / "head-last.safetensors"))
            tmp = state_path.with_suffix(".tmp")
            torch.save(
                {"optimizer": optimizer.state_dict(), "step": step, "best": best, "history": history}, tmp
            )
            tmp.replace(state_path)
            write_text_atomic(
                run_dir / "metrics.json",
                json.dumps({"best_cer": best, "history": history}, indent=2) + "\n",
            )
    writer.close()


def write_model_folder(model, run_dir: Path, normalization: TextNormalization) -> Path:
    """The encoder + the best head as a complete Hugging Face folder in run_dir/model."""
    from safetensors.torch import load_file

    from .trainer import complete_model_folder

    model.load_state_dict(load_file(str(run_dir / "head-best.safetensors")), strict=False)
    partial = run_dir / ".model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    # The graph takes raw samples (the log-mel front-end is inside the model): no normalization, no mask.
    processor = V.make_processor(run_dir / "vocab.json", use_attention_mask=False, do_normalize=False)
    complete_model_folder(partial, processor, normalization)
    final = run_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    log.info("model written to %s", final)
    return final


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.whisper_head", description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", required=True, help="Whisper checkpoint: hub name or local folder")
    parser.add_argument(
        "--data", nargs="+", required=True, help="training manifests (CSV path,text or LJSpeech)"
    )
    parser.add_argument("--validation-data", nargs="+", required=True, help="validation manifests")
    parser.add_argument("--vocab", required=True, help="vocab.json of the CTC vocabulary")
    parser.add_argument("--out", required=True, help="run folder (created; the same command resumes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast for the head (auto: where the CPU has native bf16)",
    )
    parser.add_argument("--cache-only", action="store_true", help="cache the encoder states and stop")
    parser.add_argument(
        "--init-head",
        help="start from a trained head (a whisper-ctc folder, e.g. models/default-model-hf, or its "
        "head.safetensors) instead of a random one; ignored when the run resumes",
    )
    parser.add_argument(
        "--grow-head",
        action="store_true",
        help="with --init-head from a head with fewer blocks (--head-layers more): its blocks come first "
        "and the added ones start as the identity; from a head without a CTC branch (--ctc-layers), the "
        "branch starts as a copy of the encoder's top layers",
    )
    parser.add_argument(
        "--reset-best",
        action="store_true",
        help="on resume, forget the best validation CER so far (continuing with another data mix)",
    )
    parser.add_argument("--force", action="store_true", help="accept settings that differ from the run's")
    parser.add_argument("-v", "--verbose", action="store_true")
    defaults = HeadOptions()
    for name, value in asdict(defaults).items():
        if isinstance(value, dict):
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument(
        "--augment",
        type=json.loads,
        default={},
        help='JSON overrides of the augmentation, e.g. \'{"noise_p": 0.6, "channel_p": 0.5}\'',
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_head(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
