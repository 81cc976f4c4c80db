"""Teach Whisper's text decoder to read unpadded encoder states (issue 28, item 4).

Why: Whisper's decoder only ever saw 30 s windows, speech then padding, and it ends a transcript
where the padding starts. The device hands it just the speech's frames (the encoder runs on what
was said, not on 30 s), so alone it writes the sentence and starts it again; joint decoding works
only because the CTC head steers every step. Here the decoder learns, from the states the device
will give it, to write what padded decoding writes and then stop: sequence-level distillation.

- States: the encoder states output of a bundle's int8 graph (`edge_asr`'s CtcModel, exactly what
  `edge-asr file` feeds the decoder), computed once per clip and cached in the run folder.
- Targets: a manifest's `teacher_text` column where it has one (`python -m train.pseudo_label`:
  faster-whisper's padded beam-5 text), else, for a `python -m train.corpus` folder, the text the
  voice was given (metadata.csv's second column: cased and punctuated, numbers in words), which
  is what padded decoding aims at; tokenized with the checkpoint's own byte-level BPE.
- Student: the decoder of `--whisper`, with `--train cross` (the cross-attention blocks and every
  LayerNorm: what reads the encoder), `--train decoder` (every decoder weight but the token and
  position tables, which are tied to the output and shared with the CTC side's token table) or
  `--train lora` (low-rank adapters, `train/low_rank.py`, on every linear layer of the decoder's
  blocks, rank `--rank`; folded into the weights before saving, so the export is unchanged).
  One utterance per forward pass (Whisper's cross-attention has no mask for padded states),
  gradients summed over `--batch` utterances.
- Checkpoints are picked on the validation manifests (synthetic voices, the games' held-out clips):
  teacher-forced token loss, and greedy decoding alone (no CTC) with the device's token bound,
  counting the clips that hit it (loops). Real recordings are never used.

    python -m train.decoder_distill --whisper work/whisper-tiny.en-full \\
        --bundle edge_asr/models/default --data work/data/games/pseudo-train.csv \\
        work/data/corpus-v1/train.csv --validation-data work/data/games/pseudo-valid.csv \\
        work/data/corpus-v1/valid.csv --out work/runs/decoder-distill --train cross --steps 600

The run folder: cache/ (states, one file per manifest; `--cache-dir` shares them between runs,
`--cache-only` fills them and stops), metrics.json (the validation history), model/ (the best student: a
Hugging Face Whisper folder with provenance.json, which `python -m quantize convert --decoder` and
`scripts/package_default_model_v3.py --whisper` take).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import shutil
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.atomic import write_text_atomic
from edge_asr.text import TextNormalization, edit_distance

from .corpus.build import read_metadata
from .whisper_head import warmup_cosine

log = logging.getLogger("train.decoder_distill")

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.02  # the whisper-ctc graph: one frame per 320 samples
TRAIN_CHOICES = ("cross", "decoder", "lora")


class DistillError(ValueError):
    """Input this tool cannot use (a manifest without targets, a checkpoint without a decoder)."""


@dataclass(frozen=True)
class Target:
    """One clip and the text the student should write for it."""

    path: Path
    text: str


@dataclass
class DistillOptions:
    """How the student trains.

    Attributes:
        train: "cross" (cross-attention and LayerNorms), "decoder" (all but the embeddings) or "lora"
            (low-rank adapters on every linear layer of the decoder's blocks, all else frozen).
        rank, alpha: the adapters' rank and scale (update = alpha / rank * B A); "lora" only.
        steps: optimizer steps; batch: utterances per step; lr: peak AdamW rate, linear warm-up
            over `warmup` steps, then cosine to zero.
        eval_every: steps between validations; eval_limit: validation clips decoded greedily.
        max_seconds: clips longer than this are left out (the device's windows are shorter).
        seed: every random choice.
    """

    train: str = "cross"
    rank: int = 16
    alpha: float = 32.0
    steps: int = 600
    batch: int = 16
    lr: float = 3e-5
    warmup: int = 50
    weight_decay: float = 0.0
    eval_every: int = 100
    eval_limit: int = 200
    max_seconds: float = 26.0
    seed: int = 0


# --- targets --------------------------------------------------------------------------------------


def read_targets(manifest: Path) -> List[Target]:
    """The clips of `manifest` with their targets (see the module's docstring); clips whose target
    is empty are left out."""
    if not manifest.is_file():
        raise DistillError(f"{manifest}: no such manifest")
    spoken: Dict[str, str] = {}
    metadata = manifest.parent / "metadata.csv"
    with open(manifest, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = set(reader.fieldnames or [])
        if "path" not in fields:
            raise DistillError(f"{manifest}: no 'path' column")
        if "teacher_text" not in fields:
            if not metadata.is_file():
                raise DistillError(
                    f"{manifest}: no teacher_text column and no metadata.csv beside it; give a manifest "
                    "from `python -m train.pseudo_label` or `python -m train.corpus`"
                )
            spoken = {uid: said for uid, (said, _label) in read_metadata(manifest.parent).items()}
        targets = []
        for row in reader:
            path = (manifest.parent / row["path"]).resolve()
            text = row["teacher_text"] if "teacher_text" in fields else spoken.get(path.stem, "")
            if text.strip():
                targets.append(Target(path, text.strip()))
    return targets


class Tokenizer:
    """The checkpoint's byte-level BPE (tokenizer.json, via the `tokenizers` library): text to ids the
    way Whisper writes it, one leading space."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer as HfTokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise DistillError(f"{folder}: no tokenizer.json for the decoder's targets")
        self.tokenizer = HfTokenizer.from_file(str(path))

    def __call__(self, text: str) -> List[int]:
        return list(self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)


# --- encoder states ------------------------------------------------------------------------------


@dataclass
class StatesCache:
    """Encoder states of a list of clips: one float16 memmap [frames, d] and each clip's rows."""

    states: np.ndarray
    offsets: List[int]
    frames: List[int]

    def item(self, index: int) -> np.ndarray:
        return self.states[self.offsets[index] : self.offsets[index] + self.frames[index]]


def cache_states(targets: Sequence[Target], bundle: Path, path: Path, threads: int) -> StatesCache:
    """The bundle graph's encoder states for every clip, from `path` when a complete cache of the
    same clips is there (the index is written last)."""
    index_path = path.with_suffix(".json")
    names = [str(t.path) for t in targets]
    digest = zlib.crc32("\n".join(names).encode())
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index["digest"] == digest:
            rows = sum(index["frames"])
            states = np.memmap(path, np.float16, "r", shape=(rows, index["width"]))
            return StatesCache(states, index["offsets"], index["frames"])
    from edge_asr.audio import read_audio
    from edge_asr.bundle import load_bundle
    from edge_asr.model import CtcModel

    loaded = load_bundle(bundle, verify=False)
    model = CtcModel(loaded.model_file(), loaded.metadata, threads=threads)
    vocab = loaded.metadata.vocab_size
    offsets: List[int] = []
    frames: List[int] = []
    width = 0
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for i, target in enumerate(targets):
            rows = model.frame_rows(read_audio(str(target.path), SAMPLE_RATE))[:, vocab:]
            width = rows.shape[1]
            offsets.append(sum(frames))
            frames.append(rows.shape[0])
            handle.write(rows.astype(np.float16).tobytes())
            if (i + 1) % 500 == 0:
                log.info(
                    "%s: %d/%d clips, %.0f s", path.name, i + 1, len(targets), time.perf_counter() - started
                )
    index = {"digest": digest, "width": width, "offsets": offsets, "frames": frames, "clips": len(targets)}
    write_text_atomic(index_path, json.dumps(index))
    states = np.memmap(path, np.float16, "r", shape=(sum(frames), width))
    return StatesCache(states, offsets, frames)


# --- the student ---------------------------------------------------------------------------------


def trainable_parameters(model: Any, train: str, rank: int = 16, alpha: float = 32.0) -> List[Any]:
    """Freeze the whole model, then free what `train` names (see DistillOptions); "lora" adds the
    adapters first (`train.low_rank`), and they are what trains."""
    if train not in TRAIN_CHOICES:
        raise DistillError(f"--train must be one of {', '.join(TRAIN_CHOICES)}, got {train!r}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if train == "lora":
        from .low_rank import add_adapters

        return add_adapters(model.model.decoder.layers, lambda name: True, rank, alpha)
    chosen = []
    for name, parameter in model.model.decoder.named_parameters():
        if name.startswith(("embed_tokens", "embed_positions")):
            continue
        if train == "decoder" or "encoder_attn" in name or "layer_norm" in name:
            parameter.requires_grad_(True)
            chosen.append(parameter)
    return chosen


def token_loss(model: Any, states: Any, prompt: Sequence[int], tokens: Sequence[int], eot: int) -> Any:
    """Summed cross-entropy of `tokens` then end-of-text after `prompt`, the decoder reading `states`."""
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([list(prompt) + list(tokens)], dtype=torch.long)
    hidden = model.model.decoder(input_ids=ids, encoder_hidden_states=states).last_hidden_state
    logits = model.proj_out(hidden[0, len(prompt) - 1 :])
    labels = torch.tensor(list(tokens) + [eot], dtype=torch.long)
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def greedy_tokens(
    graphs: Tuple[Any, Any], states: Any, prompt: Sequence[int], eot: int, bound: int, banned: Any
) -> List[int]:
    """The decoder alone, greedy, through the same two graphs the device runs (`quantize.decoder`'s
    CrossGraph and StepGraph, in torch), up to `bound` tokens; -1 last when it hit the bound (a loop)."""
    import torch

    cross, step = graphs
    cross_k, cross_v = cross(states)
    layers, _, heads, _, head_dim = cross_k.shape
    self_k = self_v = torch.zeros((layers, 1, heads, 0, head_dim))
    tokens = torch.tensor([list(prompt)], dtype=torch.long)
    out: List[int] = []
    for _ in range(bound):
        log_probs, self_k, self_v = step(tokens, self_k, self_v, cross_k, cross_v)
        row = log_probs[0]
        row[banned] = -math.inf
        token = int(torch.argmax(row))
        if token == eot:
            return out
        out.append(token)
        tokens = torch.tensor([[token]], dtype=torch.long)
    return out + [-1]


@dataclass
class Validation:
    """Teacher-forced loss per token, greedy word error rate, and clips that hit the token bound."""

    step: int
    loss: float
    wer: float
    hit_bound: int
    clips: int


def validate(
    model: Any,
    targets: Sequence[Target],
    states_of: Sequence[np.ndarray],
    tokens: Sequence[List[int]],
    settings: Any,
    token_text: Any,
    step: int,
    limit: int,
) -> Validation:
    import torch

    from quantize.decoder import CrossGraph, StepGraph

    model.eval()
    graphs = (CrossGraph(model.model.decoder), StepGraph(model.model.decoder))
    normalize = TextNormalization()
    banned = torch.tensor(
        sorted(set(settings.suppress) | set(range(settings.special_from, model.config.vocab_size)))
    )
    loss, count, edits, words, hit = 0.0, 0, 0, 0, 0
    picked = list(range(len(targets)))[:: max(1, len(targets) // max(1, limit))][:limit]
    with torch.no_grad():
        for i in picked:
            states = torch.from_numpy(np.asarray(states_of[i], dtype=np.float32))[None]
            loss += float(token_loss(model, states, settings.prompt, tokens[i], settings.eot))
            count += len(tokens[i]) + 1
            seconds = states.shape[1] * FRAME_SECONDS
            bound = settings.min_tokens + int(math.ceil(seconds * settings.max_tokens_per_second))
            written = greedy_tokens(graphs, states, settings.prompt, settings.eot, bound, banned)
            hit += int(written[-1:] == [-1])
            hypothesis = normalize(token_text([t for t in written if t >= 0])).split()
            reference = normalize(targets[i].text).split()
            edits += edit_distance(reference, hypothesis)
            words += len(reference)
    model.train()
    return Validation(step, loss / max(1, count), edits / max(1, words), hit, len(picked))


def better(a: Validation, b: Optional[Validation]) -> bool:
    """Fewer loops first (what the student is for), then lower greedy WER."""
    return b is None or (a.hit_bound, a.wer) < (b.hit_bound, b.wer)


def manifest_slug(manifest: Path) -> str:
    """A cache name for a manifest: its folder and file names ("corpus-v1-train")."""
    name = f"{manifest.parent.name}-{manifest.stem}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_split(
    manifests: Sequence[Path], bundle: Path, cache_dir: Path, tokenizer: Tokenizer, max_seconds: float,
    threads: int,
) -> Tuple[List[Target], List[np.ndarray], List[List[int]]]:  # fmt: skip
    """Targets, encoder states (views of each manifest's cache) and target tokens of every clip no
    longer than `max_seconds`."""
    targets: List[Target] = []
    states: List[np.ndarray] = []
    for manifest in manifests:
        found = read_targets(manifest)
        if not found:
            raise DistillError(f"{manifest}: no clip with a target")
        cache = cache_states(found, bundle, cache_dir / f"{manifest_slug(manifest)}.f16", threads)
        for i, target in enumerate(found):
            if cache.frames[i] * FRAME_SECONDS <= max_seconds:
                targets.append(target)
                states.append(cache.item(i))
    return targets, states, [tokenizer(t.text) for t in targets]


def distil(
    whisper: Path,
    bundle: Path,
    data: Sequence[Path],
    validation: Sequence[Path],
    out: Path,
    options: DistillOptions,
    threads: int = 2,
    cache_dir: Optional[Path] = None,
    cache_only: bool = False,
) -> Dict[str, Any]:
    """Train the student (see the module's docstring) and write the best one to `out`/model."""
    import torch

    from edge_asr.attention import TokenTable
    from quantize.decoder import decoder_spec, load_whisper, token_folder, token_strings

    torch.set_num_threads(threads)
    torch.manual_seed(options.seed)
    model = load_whisper(str(whisper))
    settings = decoder_spec(model)
    folder = token_folder(str(whisper))
    tokenizer = Tokenizer(folder)
    table = TokenTable(token_strings(folder, model.config.vocab_size))

    def token_text(ids: Sequence[int]) -> str:
        return table.text(ids)

    cache_dir = cache_dir or out / "cache"
    train_targets, train_states, train_tokens = load_split(
        data, bundle, cache_dir, tokenizer, options.max_seconds, threads
    )
    valid_targets, valid_states, valid_tokens = load_split(
        validation, bundle, cache_dir, tokenizer, options.max_seconds, threads
    )
    if cache_only:
        return {"train_clips": len(train_targets), "valid_clips": len(valid_targets)}
    log.info("training on %d clips, validating on %d", len(train_targets), len(valid_targets))
    parameters = trainable_parameters(model, options.train, options.rank, options.alpha)
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    history = [
        asdict(
            validate(
                model, valid_targets, valid_states, valid_tokens, settings, token_text, 0, options.eval_limit
            )
        )
    ]
    log.info("step 0: %s", history[-1])
    best: Optional[Validation] = Validation(**history[-1])
    best_state = {k: v.clone() for k, v in model.model.decoder.state_dict().items()}
    rng = random.Random(options.seed)
    order: List[int] = []
    model.train()
    started = time.perf_counter()
    for step in range(options.steps):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, options.lr, options.warmup, options.steps)
        optimizer.zero_grad()
        total, count = 0.0, 0
        for _ in range(options.batch):
            if not order:
                order = list(range(len(train_targets)))
                rng.shuffle(order)
            i = order.pop()
            states = torch.from_numpy(np.asarray(train_states[i], dtype=np.float32))[None]
            loss = token_loss(model, states, settings.prompt, train_tokens[i], settings.eot)
            count += len(train_tokens[i]) + 1
            loss.backward()
            total += float(loss.detach())
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad /= count
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if (step + 1) % 10 == 0:
            log.info("step %d: loss %.4f, %.1f s", step + 1, total / count, time.perf_counter() - started)
        if (step + 1) % options.eval_every == 0 or step + 1 == options.steps:
            result = validate(
                model,
                valid_targets,
                valid_states,
                valid_tokens,
                settings,
                token_text,
                step + 1,
                options.eval_limit,
            )
            history.append(asdict(result))
            log.info("validation: %s", result)
            if better(result, best):
                best = result
                best_state = {k: v.clone() for k, v in model.model.decoder.state_dict().items()}
    model.model.decoder.load_state_dict(best_state)
    if options.train == "lora":
        from .low_rank import merge_adapters

        log.info("merged %d adapters into their layers", merge_adapters(model.model.decoder.layers))
    report = {
        "options": asdict(options),
        "whisper": str(whisper),
        "bundle": str(bundle),
        "data": [str(p) for p in data],
        "validation": [str(p) for p in validation],
        "train_clips": len(train_targets),
        "valid_clips": len(valid_targets),
        "history": history,
        "best": asdict(best) if best else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_student(model, whisper, out / "model", report)
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


def save_student(model: Any, whisper: Path, folder: Path, report: Dict[str, Any]) -> None:
    """The student as a Hugging Face folder, with the source's provenance (its token table and
    licence are the source's) plus how it was distilled."""
    staging = folder.with_name(folder.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(str(staging))
    provenance_path = whisper / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    provenance["distilled"] = {k: report[k] for k in ("options", "data", "validation", "best")}
    (staging / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.decoder_distill", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--whisper", type=Path, required=True, help="Whisper folder with its decoder")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle whose graph gives the states")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training manifests")
    parser.add_argument("--validation-data", type=Path, nargs="+", required=True, help="validation manifests")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, help="encoder states, one file per manifest (OUT/cache)")
    parser.add_argument("--cache-only", action="store_true", help="cache the encoder states and stop")
    defaults = DistillOptions()
    for name, value in asdict(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if name == "train":
            parser.add_argument(flag, choices=TRAIN_CHOICES, default=value, help=f"({value})")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"({value})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "eval_every", "eval_limit", "threads", "rank"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    options = DistillOptions(**{name: getattr(args, name) for name in asdict(DistillOptions())})
    try:
        report = distil(
            args.whisper, args.bundle, args.data, args.validation_data, args.out, options, args.threads,
            args.cache_dir, args.cache_only,
        )  # fmt: skip
        if args.cache_only:
            print(json.dumps(report))
            return 0
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"best": report["best"], "first": report["history"][0], "seconds": report["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
