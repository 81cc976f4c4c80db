"""Overlapping windows over a sample stream, and stitching of their logits.

A wav2vec2 graph's cost and memory grow faster than linearly with input length, so long input runs in
windows: each window is a core of `chunk` frames plus `left`/`right` context frames on either side. Only
the core's logits are kept, so every frame is scored with context on both sides, and the kept frames
join end to end into exactly the frame sequence a single pass would produce (the approach of the
transformers ASR pipeline's chunking). Windows start on frame boundaries (multiples of the frame
stride), so a window's local frame j is global frame start/stride + j with no rounding.

`WindowedRunner` is fed samples as they arrive (file blocks or a microphone) and yields
(first_frame, log_probs) for each finished core; memory holds one window of samples.

Consecutive windows overlap (by left + right context), and a stream's hop windows overlap by most of
their length. For a model split into a front-end and an encoder (bundle format 2), a `FeatureCache`
given to the runner keeps the front-end features of the frames already computed, so each window runs
the front-end on its new samples only and the encoder on the whole window.

When that is exact: the encoder always sees the whole window, so only the front-end's features can
differ, and the features of global frame f are the same whichever window computes them exactly when
(1) the front-end is local: frame f depends only on samples f * stride .. + receptive_field, which
holds for a conv stack with per-frame layer norm (wav2vec2's feat_extract_norm="layer") but not for
group norm (one group per channel, statistics over the whole time axis of its input: wav2vec2-base,
HuBERT-base), measured at export into `SplitGraphs.frames_local`; and (2) the samples are not
normalized per utterance (`do_normalize`), whose mean and variance are the window's. Windows start on
frame boundaries, so frame f has the same samples in every window. `cache_is_exact` is that rule; an
inexact cache is opt-in (`FeatureCache.normalize`: new samples are normalized with the statistics of
the window they first arrive in), and its measured effect is in docs/streaming.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np

from .bundle import BundleMetadata
from .errors import BundleError, InputError
from .model import normalization_stats, normalize_utterance

LogProbFn = Callable[[np.ndarray], np.ndarray]

TRAINED_WINDOW_SECONDS = {"WhisperCtcForCTC": 30.0}
"""The longest input each architecture (bundle.json's `source.architecture`) was trained to read in
one pass. A Whisper encoder has 1500 positions (30 s); past them the graph still runs but reads
garbage (measured: `--chunk-seconds 60` gave wrong text at rc 0). The wav2vec2 family's convolutional
positions have no such edge: there only `limits.CHUNK_SECONDS` (memory) bounds a window."""


def trained_window_seconds(metadata: BundleMetadata) -> Optional[float]:
    """The longest window `metadata`'s model reads correctly, or None where its architecture has no
    known bound (`TRAINED_WINDOW_SECONDS`)."""
    architecture = metadata.source.get("architecture")
    return TRAINED_WINDOW_SECONDS.get(architecture) if isinstance(architecture, str) else None


def check_window(plan: WindowPlan, metadata: BundleMetadata, core: str, context: str) -> None:
    """InputError when one window of `plan` (context + core + context) is longer than the model was
    trained on; `core` and `context` name the options that set them, for the message."""
    bound = trained_window_seconds(metadata)
    if bound is None:
        return
    frames = plan.left_frames + plan.chunk_frames + plan.right_frames
    # Counted in frames, the encoder's positions (1500 for 30 s), not in samples: a receptive field
    # wider than the stride adds a fraction of a frame that no position holds.
    if frames > round(bound / metadata.frame_seconds):
        seconds = frames * metadata.frame_seconds
        context_seconds = (plan.left_frames + plan.right_frames) * metadata.frame_seconds
        chunk_seconds = plan.chunk_frames * metadata.frame_seconds
        raise InputError(
            f"{core} {chunk_seconds:g} with {context} makes {seconds:g} s windows, and this model "
            f"({metadata.source.get('architecture')}) reads at most {bound:g} s in one pass: "
            f"set {core} to {bound - context_seconds:g} or less"
        )


def cache_is_exact(metadata: BundleMetadata) -> bool:
    """Whether caching front-end features gives exactly the frames a window's single pass gives (the
    rule in the module docstring): split graphs with a local front-end, no per-utterance normalization."""
    split = metadata.split
    return split is not None and split.frames_local and not metadata.do_normalize


@dataclass(frozen=True)
class SplitStages:
    """The two halves of a split model, as `FeatureCache` calls them (`model.SplitCtcModel`'s
    methods, or wrappers of them that keep statistics).

    Attributes:
        features: samples (1-D float32, already normalized when `normalize`) -> [frames, dim].
        encode: [frames, dim] -> log-probabilities [frames, vocab].
        normalize: the model expects zero-mean unit-variance samples (the bundle's do_normalize).
    """

    features: Callable[[np.ndarray], np.ndarray]
    encode: Callable[[np.ndarray], np.ndarray]
    normalize: bool


class FeatureCache:
    """Front-end features by global frame, so that a `WindowedRunner` runs the front-end on each
    window's new samples only (see the module docstring for when that is exact).

    Args:
        stages: the split model's front-end and encoder.
        plan: the runner's window geometry (its stride and receptive field).
        keep_all: keep every frame's features instead of dropping those before the next window; a
            stream does, so that its final pass over the utterance (same frame numbering) runs the
            encoder alone (memory: 2 MB per 20 s at 512 features of 50 frames a second).
    """

    def __init__(self, stages: SplitStages, plan: WindowPlan, keep_all: bool = False):
        self.stages = stages
        self.plan = plan
        self.keep_all = keep_all
        self._features: Optional[np.ndarray] = None  # [frames, dim]
        self._start = 0  # global frame of _features[0]
        self.frames_computed = 0  # front-end frames run, for tests and statistics

    @property
    def cached_frames(self) -> int:
        return 0 if self._features is None else self._features.shape[0]

    def log_probs(self, window: np.ndarray, first_frame: int) -> np.ndarray:
        """Log-probabilities of a window (at least one receptive field long) whose first sample is
        global frame `first_frame`'s."""
        plan = self.plan
        frames = plan.frames_in(window.size)
        have_end = self._start + self.cached_frames
        if self._features is None or not self._start <= first_frame <= have_end:
            self._features, self._start, have_end = None, first_frame, first_frame  # nothing usable
        new_from = max(first_frame, have_end)
        if new_from < first_frame + frames:
            segment = window[(new_from - first_frame) * plan.frame_stride :]
            if self.stages.normalize:
                # The statistics a single pass over this window would use: exact for frames that
                # first appear in it, not for the cached ones (an opt-in cache; see the docstring).
                segment = normalize_utterance(segment, normalization_stats(window))
            new = self.stages.features(segment)
            expected = first_frame + frames - new_from
            if new.shape[0] != expected:
                raise BundleError(
                    f"the front-end gave {new.shape[0]} frames for {segment.size} samples where "
                    f"bundle.json's frame_stride {plan.frame_stride} and receptive_field "
                    f"{plan.receptive_field} promise {expected}: they do not match the graph. Re-export "
                    "the bundle with `python -m quantize convert`"
                )
            self.frames_computed += expected
            self._features = new if self._features is None else np.concatenate((self._features, new))
        assert self._features is not None
        offset = first_frame - self._start
        return self.stages.encode(self._features[offset : offset + frames])

    def discard_before(self, frame: int) -> None:
        """Drop the features of frames before `frame` (no later window starts before it)."""
        if self.keep_all or self._features is None or frame <= self._start:
            return
        self._features = self._features[frame - self._start :].copy()
        self._start = frame


@dataclass(frozen=True)
class WindowPlan:
    """Window geometry in frames; see the module docstring."""

    chunk_frames: int
    left_frames: int
    right_frames: int
    frame_stride: int
    receptive_field: int

    @classmethod
    def from_seconds(
        cls,
        chunk: float,
        left: float,
        right: float,
        sample_rate: int,
        frame_stride: int,
        receptive_field: int,
    ) -> WindowPlan:
        def frames(seconds: float) -> int:
            return max(0, round(seconds * sample_rate / frame_stride))

        return cls(max(1, frames(chunk)), frames(left), frames(right), frame_stride, receptive_field)

    def frames_in(self, num_samples: int) -> int:
        if num_samples < self.receptive_field:
            return 0
        return (num_samples - self.receptive_field) // self.frame_stride + 1

    def samples_for(self, num_frames: int) -> int:
        """Samples that produce exactly `num_frames` frames."""
        return 0 if num_frames <= 0 else (num_frames - 1) * self.frame_stride + self.receptive_field


class WindowedRunner:
    """Feeds a sample stream through `log_probs_fn` in overlapping windows; see the module docstring.

    With a `cache`, windows of at least one receptive field run through it (front-end on new samples,
    encoder on the window) instead of `log_probs_fn`, which then serves shorter input only.
    """

    def __init__(self, log_probs_fn: LogProbFn, plan: WindowPlan, cache: Optional[FeatureCache] = None):
        self.fn = log_probs_fn
        self.plan = plan
        self.cache = cache
        self.last_window: Optional[np.ndarray] = None  # log-probs of the last window run, all frames
        self.last_window_first = 0  # the global frame of last_window's first row
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # global sample index of _buffer[0]; always a multiple of the stride
        self._received = 0
        self._next_frame = 0  # first global frame not yet emitted

    @property
    def samples_received(self) -> int:
        return self._received

    @property
    def buffered_samples(self) -> int:
        """Samples held right now: bounded by one window plus the last pushed block."""
        return self._buffer.size

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    def push(self, samples: np.ndarray) -> Iterator[Tuple[int, np.ndarray]]:
        """Add samples; yield every core whose right context is now complete."""
        if samples.size:
            self._buffer = np.concatenate((self._buffer, samples.astype(np.float32, copy=False)))
            self._received += samples.size
        plan = self.plan
        # Strictly more frames than the window needs: input that ends exactly at a window's edge is
        # left for finish(), which runs it as one pass.
        while self._next_frame + plan.chunk_frames + plan.right_frames < plan.frames_in(self._received):
            yield self._run(self._next_frame + plan.chunk_frames)

    def finish(self) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield the remaining cores, the last ones with whatever right context exists."""
        total = self.plan.frames_in(self._received)
        if total == 0 and self._received > 0 and self._next_frame == 0:
            # Shorter than one receptive field: the model pads it to a single frame.
            self.last_window = self.fn(self._buffer)
            self.last_window_first = 0
            yield 0, self.last_window
            self._next_frame = 1
            return
        plan = self.plan
        while self._next_frame < total:
            # The last window absorbs a tail of up to `right_frames` into its core: there is nothing
            # after it to be context for, and audio that fits one window then runs as one pass.
            if total - self._next_frame <= plan.chunk_frames + plan.right_frames:
                yield self._run(total)
            else:
                yield self._run(self._next_frame + plan.chunk_frames)

    def _run(self, core_end: int) -> Tuple[int, np.ndarray]:
        plan = self.plan
        core_start = self._next_frame
        first_frame = max(0, core_start - plan.left_frames)
        start_sample = first_frame * plan.frame_stride
        if core_end >= plan.frames_in(self._received):
            end_sample = self._received  # the samples past the last whole frame still count
        else:
            end_sample = min(self._received, plan.samples_for(core_end + plan.right_frames))
        window = self._buffer[start_sample - self._buffer_start : end_sample - self._buffer_start]
        if self.cache is not None and window.size >= plan.receptive_field:
            log_probs = self.cache.log_probs(window, first_frame)
        else:
            log_probs = self.fn(window)
        self.last_window = log_probs
        self.last_window_first = first_frame
        core = log_probs[core_start - first_frame : core_end - first_frame]
        if core.shape[0] != core_end - core_start:
            # A BundleError, not a crash: every input would fail the same way, and callers that go on
            # past a bad file (transcribe_many, `edge-asr file`) must be able to tell it apart.
            raise BundleError(
                f"the model gave {log_probs.shape[0]} frames for {window.size} samples where bundle.json's "
                f"frame_stride {plan.frame_stride} and receptive_field {plan.receptive_field} promise "
                f"{core_end - first_frame}: they do not match the graph. Re-export the bundle with "
                "`python -m quantize convert`, or correct those two fields"
            )
        self._next_frame = core_end
        if self.cache is not None:
            self.cache.discard_before(max(0, core_end - plan.left_frames))
        keep_from = max(0, core_end - plan.left_frames) * plan.frame_stride
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :].copy()
            self._buffer_start = keep_from
        return core_start, core
