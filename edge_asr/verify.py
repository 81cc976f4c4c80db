"""`edge-asr info --verify`: prove that a bundle can run, not only that its files are the listed ones.

Checksums only show that the files are the ones bundle.json names; a bundle whose ONNX file was cut
short (and its checksum updated), whose vocabulary does not match the graph's output, or whose frame
geometry is wrong passed them and failed later, on the first file. So each graph is loaded and run on
a few inputs whose frame counts bundle.json's frame_stride and receptive_field predict, split graphs
(format 2) are run against their single graph, and each language model is loaded, the way
`edge-asr file` would.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .bundle import ModelBundle
from .errors import BundleError
from .lm import CharNgramLM, WordNgramLM
from .model import CtcModel, SplitCtcModel

PROBE_SEED = 16


def probe_lengths(frame_stride: int, receptive_field: int, sample_rate: int) -> List[int]:
    """Sample counts to run: exactly one frame; a few frames and part of one; about a second."""
    return [
        receptive_field,
        receptive_field + 5 * frame_stride + frame_stride // 2,
        receptive_field + (sample_rate // frame_stride) * frame_stride + 1,
    ]


def check_graph(bundle: ModelBundle, filename: str, threads: int = 1) -> str:
    """Load one graph and run it; a BundleError says what does not match, else a line of what held."""
    meta = bundle.metadata
    path = bundle.path / filename
    model = CtcModel(path, meta, threads)  # cannot load / declared width != vocabulary: BundleError
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
    return (
        f"{filename} loads and runs: {meta.vocab_size} classes as the vocabulary, and the frames "
        f"frame_stride {meta.frame_stride} / receptive_field {meta.receptive_field} predict for "
        f"{len(lengths)} input lengths"
    )


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
        lines.append(f"graph {variant + ':':<11}{check_graph(bundle, filename, threads)}")
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
