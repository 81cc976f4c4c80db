"""Parity: does the exported graph compute what the PyTorch model computes?

Runs on every export, on several lengths (none equal to the tracing example's, so a length frozen
into the graph by the tracer shows up), one padded batch through `input_lengths`, and any real
utterances given. Checks the max absolute log-probability difference, greedy-token agreement and
the frame count the bundle's frame_stride/receptive_field predict.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnxruntime as ort
import torch

from edge_asr.bundle import BundleMetadata
from edge_asr.model import CtcModel, SplitCtcModel

from .errors import ExportError, ParityError
from .export import INPUT_NAME, LENGTHS_NAME, graph_module
from .source import SourceModel

log = logging.getLogger(__name__)


@dataclass
class ParityOptions:
    """Thresholds and probe lengths.

    Attributes:
        seconds: synthetic probe lengths; deliberately not multiples of the frame stride.
        atol: largest allowed |log-prob difference| between ONNX and PyTorch.
        min_agreement: smallest allowed fraction of frames whose argmax token agrees.
    """

    seconds: Sequence[float] = (0.61, 1.37, 3.203)
    atol: float = 1e-3
    min_agreement: float = 0.999
    padded_batch: bool = True


@dataclass
class ParityCase:
    name: str
    samples: int
    frames: int
    max_abs_diff: float
    agreement: float


@dataclass
class ParityResult:
    max_abs_diff: float
    agreement: float
    frames: int
    cases: List[ParityCase] = field(default_factory=list)
    passed: bool = True

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def probe_signal(samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """Noise plus a few gliding tones: gives a model's every layer something non-trivial to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    tones = sum(np.sin(2 * np.pi * (200 + 300 * k + 150 * t) * t) for k in range(3))
    return (0.05 * rng.standard_normal(samples) + 0.1 * tones).astype(np.float32)


def expected_frames(samples: int, frame_stride: int, receptive_field: int) -> int:
    return 0 if samples < receptive_field else (samples - receptive_field) // frame_stride + 1


def make_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session for a graph this package wrote; ExportError (a one-line error, not a
    traceback) when onnxruntime refuses it, which is a bug in the writer."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ExportError(
            f"{path.name}: onnxruntime cannot load the graph written here ({exc}); please report it"
        ) from None


def run_graph(session: ort.InferenceSession, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    feeds: Dict[str, np.ndarray] = {INPUT_NAME: batch.astype(np.float32)}
    if any(i.name == LENGTHS_NAME for i in session.get_inputs()):
        feeds[LENGTHS_NAME] = lengths.astype(np.int64)
    return session.run(None, feeds)[0]


def run_torch(source: SourceModel, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    module = graph_module(source)
    with torch.no_grad():
        return module(
            torch.from_numpy(batch.astype(np.float32)), torch.from_numpy(lengths.astype(np.int64))
        ).numpy()


def _compare(name: str, ref: np.ndarray, out: np.ndarray, samples: int) -> ParityCase:
    if ref.shape != out.shape:
        raise ParityError(
            f"parity: {name}: ONNX output shape {out.shape} differs from PyTorch's {ref.shape}; a length "
            "was frozen into the graph during export"
        )
    return ParityCase(
        name=name,
        samples=samples,
        frames=int(ref.shape[0]),
        max_abs_diff=float(np.abs(ref - out).max()) if ref.size else 0.0,
        agreement=float((ref.argmax(-1) == out.argmax(-1)).mean()) if ref.size else 1.0,
    )


def check_parity(
    source: SourceModel,
    onnx_path: Path,
    options: Optional[ParityOptions] = None,
    utterances: Sequence[np.ndarray] = (),
) -> ParityResult:
    """Compare the graph with PyTorch; raises ParityError when a threshold is missed."""
    options = options or ParityOptions()
    rate = source.features.sample_rate
    session = make_session(onnx_path)
    signals = [
        (f"synthetic {s:g} s", probe_signal(int(s * rate), rate, i)) for i, s in enumerate(options.seconds)
    ]
    signals += [(f"utterance {i + 1}", u) for i, u in enumerate(utterances)]
    cases: List[ParityCase] = []
    for name, signal in signals:
        lengths = np.array([signal.size])
        ref = run_torch(source, signal[None, :], lengths)[0]
        out = run_graph(session, signal[None, :], lengths)[0]
        want = expected_frames(signal.size, source.frame_stride, source.receptive_field)
        if ref.shape[0] != want:
            raise ParityError(
                f"parity: {name}: the model gives {ref.shape[0]} frames for {signal.size} samples, but "
                f"frame_stride={source.frame_stride} and receptive_field={source.receptive_field} from the "
                f"config predict {want}; this architecture's frame geometry is not supported"
            )
        cases.append(_compare(name, ref, out, signal.size))
    if options.padded_batch and len(signals) >= 2:
        # Two utterances of different lengths in one zero-padded batch, fed with their lengths.
        a, b = signals[0][1], signals[1][1]
        width = max(a.size, b.size)
        batch = np.zeros((2, width), dtype=np.float32)
        batch[0, : a.size], batch[1, : b.size] = a, b
        lengths = np.array([a.size, b.size])
        ref = run_torch(source, batch, lengths)
        out = run_graph(session, batch, lengths)
        for row, length in enumerate(lengths):
            frames = expected_frames(int(length), source.frame_stride, source.receptive_field)
            cases.append(
                _compare(f"padded batch row {row}", ref[row, :frames], out[row, :frames], int(length))
            )
    total = sum(c.frames for c in cases)
    result = ParityResult(
        max_abs_diff=max(c.max_abs_diff for c in cases),
        agreement=sum(c.agreement * c.frames for c in cases) / max(1, total),
        frames=total,
        cases=cases,
    )
    result.passed = result.max_abs_diff <= options.atol and result.agreement >= options.min_agreement
    if not result.passed:
        worst = max(cases, key=lambda c: c.max_abs_diff)
        raise ParityError(
            f"parity failed: max |diff| {result.max_abs_diff:.3g} (allowed {options.atol:g}), greedy-token "
            f"agreement {result.agreement:.4f} (needed {options.min_agreement:g}); worst case: {worst.name}. "
            "The exported graph does not reproduce the PyTorch model; no bundle was written."
        )
    return result


# -- split graphs (bundle format 2) ----------------------------------------------------------------

SPLIT_FP32_ATOL = 1e-4  # split vs single fp32 graph: the same arithmetic, but normalization in numpy
# int8 quantizes activations by their range at run time, so a difference in the last bits of the
# input (normalization in numpy rather than in the graph) can flip a rounding and, in a random or weak
# model, a token. So the split int8 pipeline must agree with the single int8 graph at least as well as
# that graph agrees with fp32 (less one point): the split changes no more than quantization does.
# (A random wav2vec2-base with group norm: 97.3% split vs single int8, 95.7% int8 vs fp32.)
SPLIT_INT8_MARGIN = 0.01
LOCALITY_RTOL = 1e-4  # relative to the largest feature: float noise passes, group norm does not
LOCALITY_OFFSET_FRAMES = 37  # where the slice starts: any frame boundary well inside the probe


@dataclass
class SplitParity:
    """The split pipeline (device code: edge_asr.model.SplitCtcModel) against the single graph.

    Attributes:
        max_abs_diff, agreement: split vs single graph of the same variant (log-probs; greedy tokens).
        agreement_with_fp32: int8 only: the single int8 graph's greedy-token agreement with the
            single fp32 graph, which bounds how far the split may be from the single int8 graph.
    """

    variant: str
    max_abs_diff: float
    agreement: float
    frames: int
    agreement_with_fp32: Optional[float] = None


def check_split_parity(
    folder: Path,
    metadata: BundleMetadata,
    variant: str,
    utterances: Sequence[np.ndarray] = (),
    seconds: Sequence[float] = ParityOptions.seconds,
) -> SplitParity:
    """Run `variant`'s split graphs as the device does and compare them with its single graph on the
    parity probes: fp32 within SPLIT_FP32_ATOL; int8 as close to the single int8 graph as that is to
    the fp32 graph (SPLIT_INT8_MARGIN). Raises ParityError."""
    split = metadata.split
    assert split is not None
    single = CtcModel(folder / metadata.models[variant], metadata, threads=1)
    pipeline = SplitCtcModel(
        folder / split.front_end[variant], folder / split.encoder[variant], metadata, threads=1
    )
    fp32 = CtcModel(folder / metadata.models["fp32"], metadata, threads=1) if variant != "fp32" else None
    rate = metadata.sample_rate
    signals = [probe_signal(int(s * rate), rate, i) for i, s in enumerate(seconds)] + list(utterances)
    diff, agree, frames = 0.0, 0, 0
    single_fp32 = 0
    for signal in signals:
        ref, out = single.log_probs(signal), pipeline.log_probs(signal)
        if ref.shape != out.shape:
            raise ParityError(
                f"split parity ({variant}): the split graphs give {out.shape} for {signal.size} samples, "
                f"the single graph {ref.shape}; the front-end and encoder do not compose into the model"
            )
        diff = max(diff, float(np.abs(ref - out).max()))
        agree += int((ref.argmax(-1) == out.argmax(-1)).sum())
        frames += ref.shape[0]
        if fp32 is not None:
            single_fp32 += int((ref.argmax(-1) == fp32.log_probs(signal).argmax(-1)).sum())
    result = SplitParity(variant, diff, agree / max(1, frames), frames)
    if fp32 is None:
        failed, bound = diff > SPLIT_FP32_ATOL, f"max |diff| {SPLIT_FP32_ATOL:g}"
    else:
        result.agreement_with_fp32 = single_fp32 / max(1, frames)
        least = result.agreement_with_fp32 - SPLIT_INT8_MARGIN
        failed, bound = result.agreement < least, f"greedy-token agreement {least:.4f}"
    if failed:
        raise ParityError(
            f"split parity ({variant}) failed against the single graph: max |diff| {diff:.3g}, greedy-token "
            f"agreement {result.agreement:.4f} (needed: {bound}); no bundle was written. "
            "`--no-split` exports the single graph only"
        )
    return result


def front_end_locality(front_end: Path, rate: int, frame_stride: int) -> float:
    """How far the front-end is from local: the largest difference between the features of frames
    computed from a slice of a probe (starting on a frame boundary) and from the whole probe, relative
    to the largest feature. ~1e-7 for per-frame layer norm; order 1 for group norm (whole-input
    statistics)."""
    session = make_session(front_end)
    probe = probe_signal(int(3.2 * rate), rate, seed=11)
    start = LOCALITY_OFFSET_FRAMES * frame_stride
    whole = session.run(None, {INPUT_NAME: probe[None, :]})[0][0]
    part = session.run(None, {INPUT_NAME: probe[None, start : start + rate]})[0][0]
    reference = whole[LOCALITY_OFFSET_FRAMES : LOCALITY_OFFSET_FRAMES + part.shape[0]]
    return float(np.abs(reference - part).max() / max(float(np.abs(whole).max()), 1e-30))
