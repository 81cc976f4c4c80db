"""`edge-asr info --verify`: prove that a bundle can run, not only that its files are the listed ones.

Checksums only show that the files are the ones bundle.json names; a bundle whose ONNX file was cut
short (and its checksum updated), whose vocabulary does not match the graph's output, or whose frame
geometry is wrong passed them and failed later, on the first file. So each graph is loaded and run on
a few inputs whose frame counts bundle.json's frame_stride and receptive_field predict, split graphs
(format 2) are run against their single graph, and each language model is loaded, the way
`edge-asr file` would.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List

import numpy as np

from .audio import read_audio
from .bundle import ModelBundle
from .ctc import Vocabulary, greedy_decode
from .errors import BundleError
from .lm import CharNgramLM, WordNgramLM
from .model import CtcModel, SplitCtcModel
from .text import edit_distance

PROBE_SEED = 16
SAMPLES = Path(__file__).resolve().parent / "samples"
MAX_SAMPLE_CER = 0.65
"""The bundled English samples read worse than this are garbage, not a weak model: the default model
reads them at CER 0.30 greedily, and at 0.73-0.86 when bundle.json says 8, 32, 44.1 or 48 kHz for its
16 kHz graph (0.39-0.49 at 11-24 kHz, which this does not catch)."""


def probe_lengths(frame_stride: int, receptive_field: int, sample_rate: int) -> List[int]:
    """Sample counts to run: exactly one frame; a few frames and part of one; about a second."""
    return [
        receptive_field,
        receptive_field + 5 * frame_stride + frame_stride // 2,
        receptive_field + (sample_rate // frame_stride) * frame_stride + 1,
    ]


def check_graph(bundle: ModelBundle, filename: str, threads: int = 1) -> List[str]:
    """Load one graph and run it; a BundleError says what does not match, else lines of what held."""
    path = bundle.path / filename
    model = CtcModel(path, bundle.metadata, threads)  # cannot load / width != vocabulary: BundleError
    lines = [check_frames(model, path)]
    speech = check_samples(model, path)
    return lines + [speech] if speech else lines


def check_frames(model: CtcModel, path: Path) -> str:
    """Output width, frame counts and finite scores on noise of three lengths; blank on silence."""
    meta = model.metadata
    filename = path.name
    rng = np.random.default_rng(PROBE_SEED)
    lengths = probe_lengths(meta.frame_stride, meta.receptive_field, meta.sample_rate)
    for samples in lengths:
        audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        try:
            scores = model.log_probs(audio)  # output width != vocabulary: BundleError
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: loads but cannot run
            raise BundleError(f"{path}: the graph fails on {samples} samples of audio ({exc})") from None
        expected = model.num_frames(samples)
        if scores.ndim != 2 or scores.shape[0] != expected:
            raise BundleError(
                f"{path}: {samples} samples gave {scores.shape[0]} frames where bundle.json's frame_stride "
                f"{meta.frame_stride} and receptive_field {meta.receptive_field} predict {expected}: they do "
                "not match the graph. Re-export the bundle with `python -m quantize convert`"
            )
        if not np.isfinite(scores).all():
            raise BundleError(f"{path}: the graph outputs NaN or infinite scores for ordinary audio")
    check_blank(model, path)
    return (
        f"{filename} loads and runs: {meta.vocab_size} classes as the vocabulary, blank on silence, "
        f"and the frames frame_stride {meta.frame_stride} / receptive_field {meta.receptive_field} "
        f"predict for {len(lengths)} input lengths"
    )


def check_blank(model: CtcModel, path: Path) -> None:
    """A CTC graph's best token over silence is its blank (or a special token): a blank_id edited in
    bundle.json, or a vocabulary in another order, shows here."""
    meta = model.metadata
    best = model.log_probs(np.zeros(meta.sample_rate, dtype=np.float32)).argmax(axis=1)
    found = int(np.bincount(best, minlength=meta.vocab_size).argmax())
    if found != meta.blank_id and found not in meta.special_ids:
        raise BundleError(
            f"{path}: over a second of silence the graph's most likely token is {found} "
            f"({meta.vocabulary[found]!r}), where bundle.json's blank_id says {meta.blank_id} "
            f"({meta.vocabulary[meta.blank_id]!r}); correct blank_id or the vocabulary's order"
        )


def check_samples(model: CtcModel, path: Path) -> str:
    """Read the bundled English samples at bundle.json's sample_rate: a wrong rate gives garbage. An
    empty string where the vocabulary cannot spell them (another language or alphabet)."""
    meta = model.metadata
    vocab = Vocabulary(meta.vocabulary, meta.blank_id, meta.word_delimiter, meta.special_ids)
    spelled = set(meta.vocabulary)
    errors, length = 0, 0
    with open(SAMPLES / "transcripts.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        reference = meta.text_normalization(row["text"])
        if not set(reference.replace(" ", "")) <= spelled:
            return ""
        audio = read_audio(SAMPLES / row["file"], meta.sample_rate)
        text = greedy_decode(model.log_probs(audio), vocab, meta.frame_seconds)[0]
        errors += edit_distance(reference, text)
        length += len(reference)
    cer = errors / max(1, length)
    if cer > MAX_SAMPLE_CER:
        raise BundleError(
            f"{path}: reads the bundled English samples at character error rate {cer:.2f} with "
            f"bundle.json's sample_rate {meta.sample_rate}: garbage. Check sample_rate against the rate "
            "the model was trained at (a wrong one reads 0.7-0.9 here)"
        )
    return f"reads the {len(rows)} bundled samples at {meta.sample_rate} Hz (greedy CER {cer:.2f})"


def check_split(bundle: ModelBundle, variant: str, threads: int = 1) -> str:
    """Run a variant's split graphs (format 2) and its single graph on the same probes: the same frames,
    and greedy tokens that agree (exactly what `python -m quantize` checked at export)."""
    meta = bundle.metadata
    assert meta.split is not None
    front, encoder = meta.split.front_end[variant], meta.split.encoder[variant]
    split = SplitCtcModel(bundle.path / front, bundle.path / encoder, meta, threads)
    single = CtcModel(bundle.path / meta.models[variant], meta, threads)
    rng = np.random.default_rng(PROBE_SEED)
    agree, frames = 0, 0
    for samples in probe_lengths(meta.frame_stride, meta.receptive_field, meta.sample_rate):
        audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        try:
            a, b = single.log_probs(audio), split.log_probs(audio)
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: loads but cannot run
            raise BundleError(
                f"{bundle.path / front}: the split graphs fail on {samples} samples ({exc})"
            ) from None
        if a.shape != b.shape:
            raise BundleError(
                f"{bundle.path}: the split graphs ({front}, {encoder}) give {b.shape[0]} frames for "
                f"{samples} samples where {meta.models[variant]} gives {a.shape[0]}; they are not the "
                "same model. Re-export the bundle with `python -m quantize convert`"
            )
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        frames += a.shape[0]
    return (
        f"{front} + {encoder} run and give {meta.models[variant]}'s frames "
        f"(greedy tokens agree on {agree} of {frames}); front-end "
        + ("local" if meta.split.frames_local else "not local (group norm: the cache is opt-in)")
    )


def check_decoder(bundle: ModelBundle, threads: int = 1) -> str:
    """Run the text decoder (format 3) on the encoder states each graph gives for a probe: the states
    are as wide as the decoder reads, and one step scores every token of its table with finite values."""
    from .attention import AttentionDecoder

    meta = bundle.metadata
    settings = meta.decoder
    assert settings is not None
    decoder = AttentionDecoder(bundle.path, settings, threads)
    audio = (0.1 * np.random.default_rng(PROBE_SEED).standard_normal(meta.sample_rate)).astype(np.float32)
    for filename in sorted(set(meta.models.values())):
        model = CtcModel(bundle.path / filename, meta, threads)
        rows = model.frame_rows(audio)  # no encoder_states output: BundleError naming the fix
        states = rows[:, meta.vocab_size :]
        if states.shape[1] != settings.state_dim:
            raise BundleError(
                f"{bundle.path / filename}: encoder states {states.shape[1]} wide where the decoder reads "
                f"{settings.state_dim} (heads x head_dim); the bundle mixes files from different models"
            )
        try:
            cross = decoder.cross(states)
            log_probs, _ = decoder.step(
                np.array([settings.prompt], dtype=np.int64), decoder.empty_cache(), cross
            )
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            raise BundleError(
                f"{bundle.path / settings.step}: the decoder fails on a probe ({exc})"
            ) from None
        if log_probs.shape != (1, len(decoder.tokens)) or not np.isfinite(log_probs).all():
            raise BundleError(
                f"{bundle.path / settings.step}: one step gave scores of shape {log_probs.shape} (or not "
                f"finite) for a token table of {len(decoder.tokens)}"
            )
    return (
        f"{settings.cross} + {settings.step} run on each graph's encoder states ({settings.state_dim} wide) "
        f"and score all {len(decoder.tokens)} tokens of {settings.tokens}"
    )


def verify_bundle(bundle: ModelBundle, threads: int = 1) -> List[str]:
    """Every check `info --verify` makes, in order; a BundleError at the first that fails, else a line
    per check saying what was checked."""
    meta = bundle.metadata
    bundle.verify()
    lines = [f"checksums:       all {len(meta.files)} files OK (sha256 as in bundle.json)"]
    for variant, filename in meta.models.items():
        graph, *speech = check_graph(bundle, filename, threads)
        lines.append(f"graph {variant + ':':<11}{graph}")
        lines += [f"speech {variant + ':':<10}{line}" for line in speech]
        if meta.split is not None:
            lines.append(f"split {variant + ':':<11}{check_split(bundle, variant, threads)}")
    if meta.decoder is not None:
        lines.append(f"text decoder:    {check_decoder(bundle, threads)}")
    lm_file = bundle.language_model_file
    if lm_file is not None:
        CharNgramLM.load(lm_file, meta.vocabulary)
        lines.append(f"language model:  {Path(lm_file).name} loads, over the vocabulary's characters")
    words_file = bundle.word_model_file
    if words_file is not None:
        WordNgramLM.load(words_file)
        lines.append(f"word LM:         {Path(words_file).name} loads")
    return lines
