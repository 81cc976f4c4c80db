"""The onnxruntime session: float32 samples at the model rate -> log-probabilities [frames, vocab]."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort

from .bundle import BundleMetadata
from .errors import BundleError, InputError
from .sysinfo import memory_mb as machine_memory_mb
from .sysinfo import physical_cores

log = logging.getLogger(__name__)
LENGTHS_INPUT = "input_lengths"
STATES_OUTPUT = "encoder_states"  # format 3: the encoder states a bundle's text decoder reads
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    # Past 4 threads a small wav2vec2 gains little, and on a Pi the other cores serve the audio path.
    return min(physical_cores(), MAX_DEFAULT_THREADS)


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return result


def normalization_stats(samples: np.ndarray) -> Tuple[float, float]:
    """(mean, scale) of wav2vec2's zero-mean unit-variance normalization (same epsilon)."""
    mean = float(samples.mean(dtype=np.float64))
    return mean, float(np.sqrt(samples.var(dtype=np.float64) + 1e-7))


def normalize_utterance(samples: np.ndarray, stats: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Zero mean, unit variance, as wav2vec2's feature extractor does; `stats` (mean, scale) from
    `normalization_stats` of other samples (a cache of features normalizes new samples with the
    statistics of the window they arrive in), else those of `samples` themselves."""
    mean, scale = stats if stats is not None else normalization_stats(samples)
    normalized: np.ndarray = ((samples - mean) / scale).astype(np.float32)
    return normalized


ARENA_CHOICES = ("auto", "on", "off")
# onnxruntime's CPU memory arena keeps the largest allocation of a run for the session's life. Measured
# (docs/benchmarks.md; int8, 1 thread, x86; speed side by side in one process, peak RSS in a process
# per setting): for graphs of 10-13 MB (the Whisper-tiny default, a small wav2vec2) it was no faster
# (0.95-1.02x) and cost 7-27 MB of RSS (5-19%); for wav2vec2-base (105-122 MB) it was 2-10% faster
# and cost 216-348 MB (52-88%). So `auto` takes the arena only for a large model on a machine with
# the memory to spare: at least ARENA_MIN_MODEL_BYTES of graphs and ARENA_MIN_MEMORY_MB of RAM (where
# ~350 MB is under a tenth of it); a Pi with 1-2 GB keeps the memory.
ARENA_MIN_MODEL_BYTES = 50_000_000
ARENA_MIN_MEMORY_MB = 4096


def resolve_arena(choice: str, graphs: Sequence[Path], memory_mb: Optional[int] = None) -> bool:
    """Whether to use onnxruntime's CPU memory arena for a model made of `graphs`: "on", "off", or
    "auto" by the measured rule above (`memory_mb`: the machine's, read from /proc when None)."""
    if choice not in ARENA_CHOICES:
        raise InputError(f"arena must be one of {', '.join(ARENA_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice == "on"
    if sum(Path(g).stat().st_size for g in set(graphs)) < ARENA_MIN_MODEL_BYTES:
        return False
    if memory_mb is None:
        memory_mb = machine_memory_mb()
    return memory_mb is not None and memory_mb >= ARENA_MIN_MEMORY_MB


def session(path: Path, threads: int, arena: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session for one graph of a bundle; BundleError when it does not load.

    `arena`: onnxruntime's CPU memory arena, which keeps the largest allocation it made for the life of
    the session. Whether that costs memory or saves time depends on the model: `resolve_arena` and
    docs/benchmarks.md have the measurements.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BundleError(f"{path}: onnxruntime cannot load this model ({exc})") from None


class CtcModel:
    """One onnxruntime session running a bundle's CTC graph on one utterance at a time."""

    def __init__(
        self, model_path: Path, metadata: BundleMetadata, threads: Optional[int] = None, arena: bool = False
    ):
        self.path = Path(model_path)
        self.metadata = metadata
        self.threads = threads or default_threads()
        self.arena = arena
        self.session = session(self.path, self.threads, arena)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.feeds_lengths = any(i.name == LENGTHS_INPUT for i in inputs[1:])
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.has_states = any(o.name == STATES_OUTPUT for o in self.session.get_outputs()[1:])
        width = out.shape[-1] if out.shape else None
        if isinstance(width, int) and width != metadata.vocab_size:
            raise BundleError(
                f"{self.path}: the graph outputs {width} classes but bundle.json lists a vocabulary of "
                f"{metadata.vocab_size} tokens; the bundle mixes files from different models"
            )

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Samples (1-D float32 at the model rate) -> log-probabilities [frames, vocab]."""
        return self._run(samples, states=False)

    def frame_rows(self, samples: np.ndarray) -> np.ndarray:
        """Samples -> [frames, vocab + d]: each frame's log-probabilities, then its encoder states
        (the graph's second output, format 3). One array, so that the windowed runner, which cuts
        and joins frames, carries both unchanged; `attention.JointDecoder` splits them again."""
        if not self.has_states:
            raise BundleError(
                f"{self.path}: this graph has no {STATES_OUTPUT} output for the text decoder; re-export "
                "the bundle with `python -m quantize convert --decoder`, or decode with --decoder ctc"
            )
        return self._run(samples, states=True)

    def _run(self, samples: np.ndarray, states: bool) -> np.ndarray:
        meta = self.metadata
        if samples.size < meta.receptive_field:
            # Shorter than one frame's receptive field: pad with silence so it still yields a frame.
            samples = np.pad(samples, (0, meta.receptive_field - samples.size))
        if meta.do_normalize and not meta.normalization_in_graph:
            samples = normalize_utterance(samples)
        feeds: Dict[str, np.ndarray] = {self.input_name: samples.astype(np.float32, copy=False)[None, :]}
        if self.feeds_lengths:
            feeds[LENGTHS_INPUT] = np.array([samples.size], dtype=np.int64)
        outputs = self.session.run([self.output_name, STATES_OUTPUT] if states else [self.output_name], feeds)
        scores = outputs[0][0]
        if scores.shape[-1] != meta.vocab_size:
            raise BundleError(
                f"{self.path}: the graph produced {scores.shape[-1]} classes, bundle.json lists "
                f"{meta.vocab_size}"
            )
        scores = scores if meta.log_softmax_in_graph else log_softmax(scores)
        if not states:
            return scores
        encoder_states = outputs[1][0]
        if encoder_states.shape[0] != scores.shape[0]:
            raise BundleError(
                f"{self.path}: {encoder_states.shape[0]} frames of encoder states for {scores.shape[0]} "
                "frames of log-probabilities; the graph's two outputs must line up"
            )
        return np.concatenate((scores, encoder_states.astype(np.float32, copy=False)), axis=1)

    def num_frames(self, num_samples: int) -> int:
        """Frames the graph yields for `num_samples` input samples (exact for strided conv stacks)."""
        return _num_frames(self.metadata, num_samples)

    @property
    def graph_files(self) -> List[Path]:
        """The ONNX files this model runs."""
        return [self.path]


def _num_frames(meta: BundleMetadata, num_samples: int) -> int:
    if num_samples < meta.receptive_field:
        return 1 if num_samples > 0 else 0
    return (num_samples - meta.receptive_field) // meta.frame_stride + 1


class SplitCtcModel:
    """A bundle's model as its two split graphs (format 2, `bundle.SplitGraphs`): the front-end
    (samples -> features) and the encoder (features -> log-probabilities).

    `log_probs` gives what `CtcModel` gives with the single graph (`python -m quantize` checks that);
    `features` and `encode` are the two halves, for `windows.FeatureCache`, which runs the front-end on
    the samples it has not seen yet. The front-end graph never normalizes: with `do_normalize` the
    caller normalizes (`normalize_utterance`); `log_probs` does, over the samples it is given.
    """

    def __init__(
        self,
        front_end_path: Path,
        encoder_path: Path,
        metadata: BundleMetadata,
        threads: Optional[int] = None,
        arena: bool = False,
    ):
        if metadata.split is None:
            raise BundleError("this bundle has no split graphs (bundle format 2 'split')")
        self.metadata = metadata
        self.path = Path(encoder_path)
        self.front_end_path = Path(front_end_path)
        self.threads = threads or default_threads()
        self.arena = arena
        self.front_end = session(self.front_end_path, self.threads, arena)
        self.encoder = session(self.path, self.threads, arena)
        self._front_in = self.front_end.get_inputs()[0].name
        self._front_out = self.front_end.get_outputs()[0].name
        self._encoder_in = self.encoder.get_inputs()[0].name
        self._encoder_out = self.encoder.get_outputs()[0].name
        width = self.encoder.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != metadata.vocab_size:
            raise BundleError(
                f"{self.path}: the encoder outputs {width} classes but bundle.json lists a vocabulary of "
                f"{metadata.vocab_size} tokens; the bundle mixes files from different models"
            )

    @property
    def normalizes(self) -> bool:
        """Whether samples must be normalized before `features` (the bundle's `do_normalize`)."""
        return self.metadata.do_normalize

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Samples (1-D float32, normalized when `normalizes`; at least one receptive field) ->
        front-end features [frames, feature_dim]."""
        feeds = {self._front_in: samples.astype(np.float32, copy=False)[None, :]}
        (output,) = self.front_end.run([self._front_out], feeds)
        features: np.ndarray = output[0]
        dim = self.metadata.split.feature_dim if self.metadata.split else features.shape[-1]
        if features.shape[-1] != dim:
            raise BundleError(
                f"{self.front_end_path}: the front-end gives features {features.shape[-1]} wide where "
                f"bundle.json's split.feature_dim says {dim}; the bundle mixes files from different models"
            )
        return features

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Front-end features [frames, feature_dim] -> log-probabilities [frames, vocab]."""
        (output,) = self.encoder.run([self._encoder_out], {self._encoder_in: features[None, :, :]})
        scores: np.ndarray = output[0]
        if scores.shape[-1] != self.metadata.vocab_size:
            raise BundleError(
                f"{self.path}: the encoder produced {scores.shape[-1]} classes, bundle.json lists "
                f"{self.metadata.vocab_size}"
            )
        return scores

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Samples (1-D float32 at the model rate) -> log-probabilities [frames, vocab], as `CtcModel`."""
        meta = self.metadata
        if samples.size < meta.receptive_field:
            samples = np.pad(samples, (0, meta.receptive_field - samples.size))
        if meta.do_normalize:
            samples = normalize_utterance(samples)
        return self.encode(self.features(samples))

    def num_frames(self, num_samples: int) -> int:
        return _num_frames(self.metadata, num_samples)

    @property
    def graph_files(self) -> List[Path]:
        """The ONNX files this model runs (front-end, encoder)."""
        return [self.front_end_path, self.path]


def limit_heap_growth(threshold_bytes: int = 1 << 20) -> bool:
    """Pin glibc's mmap threshold so that a long session's RSS stays flat; False where unsupported.

    glibc raises its mmap threshold each time a large block is freed, after which onnxruntime's
    per-run activation buffers come from the heap, which fragments: over a 30-minute session with a
    wav2vec2-base graph RSS crept from ~670 MB to ~970 MB, and a 10-minute file peaked
    at 611 MB against 419 MB with the threshold pinned. With the threshold pinned at 1 MB those
    buffers are mmapped and returned after every run (RSS stayed at ~250 MB; the cost is a few page
    faults per run). Same effect as MALLOC_MMAP_THRESHOLD_=1048576 in the environment.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
