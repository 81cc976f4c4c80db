"""The onnxruntime session: float32 samples at the model rate -> log-probabilities [frames, vocab]."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import onnxruntime as ort

from .bundle import BundleMetadata
from .errors import BundleError

log = logging.getLogger(__name__)
LENGTHS_INPUT = "input_lengths"
MAX_DEFAULT_THREADS = 4


def physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as handle:
                cores.add(handle.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def default_threads() -> int:
    # Past 4 threads a small wav2vec2 gains little, and on a Pi the other cores serve the audio path.
    return min(physical_cores(), MAX_DEFAULT_THREADS)


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return result


def normalize_utterance(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, as wav2vec2's feature extractor does (same epsilon)."""
    mean = samples.mean(dtype=np.float64)
    var = samples.var(dtype=np.float64)
    normalized: np.ndarray = ((samples - mean) / np.sqrt(var + 1e-7)).astype(np.float32)
    return normalized


class CtcModel:
    """One onnxruntime session running a bundle's CTC graph on one utterance at a time."""

    def __init__(self, model_path: Path, metadata: BundleMetadata, threads: Optional[int] = None):
        self.path = Path(model_path)
        self.metadata = metadata
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The CPU arena keeps its peak allocation for the life of the session; without it peak RSS
        # measured ~15% lower for wav2vec2-base at no cost in speed.
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"{self.path}: onnxruntime cannot load this model ({exc})") from None
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.feeds_lengths = any(i.name == LENGTHS_INPUT for i in inputs[1:])
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        width = out.shape[-1] if out.shape else None
        if isinstance(width, int) and width != metadata.vocab_size:
            raise BundleError(
                f"{self.path}: the graph outputs {width} classes but bundle.json lists a vocabulary of "
                f"{metadata.vocab_size} tokens; the bundle mixes files from different models"
            )

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Samples (1-D float32 at the model rate) -> log-probabilities [frames, vocab]."""
        meta = self.metadata
        if samples.size < meta.receptive_field:
            # Shorter than one frame's receptive field: pad with silence so it still yields a frame.
            samples = np.pad(samples, (0, meta.receptive_field - samples.size))
        if meta.do_normalize and not meta.normalization_in_graph:
            samples = normalize_utterance(samples)
        feeds: Dict[str, np.ndarray] = {self.input_name: samples.astype(np.float32, copy=False)[None, :]}
        if self.feeds_lengths:
            feeds[LENGTHS_INPUT] = np.array([samples.size], dtype=np.int64)
        (output,) = self.session.run([self.output_name], feeds)
        scores = output[0]
        if scores.shape[-1] != meta.vocab_size:
            raise BundleError(
                f"{self.path}: the graph produced {scores.shape[-1]} classes, bundle.json lists "
                f"{meta.vocab_size}"
            )
        return scores if meta.log_softmax_in_graph else log_softmax(scores)

    def num_frames(self, num_samples: int) -> int:
        """Frames the graph yields for `num_samples` input samples (exact for strided conv stacks)."""
        meta = self.metadata
        if num_samples < meta.receptive_field:
            return 1 if num_samples > 0 else 0
        return (num_samples - meta.receptive_field) // meta.frame_stride + 1


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
