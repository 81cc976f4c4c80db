"""Overlapping windows over a sample stream, and stitching of their logits.

A wav2vec2 graph's cost and memory grow faster than linearly with input length, so long input runs in
windows: each window is a core of `chunk` frames plus `left`/`right` context frames on either side. Only
the core's logits are kept, so every frame is scored with context on both sides, and the kept frames
join end to end into exactly the frame sequence a single pass would produce (the approach of the
transformers ASR pipeline's chunking). Windows start on frame boundaries (multiples of the frame
stride), so a window's local frame j is global frame start/stride + j with no rounding.

`WindowedRunner` is fed samples as they arrive (file blocks or a microphone) and yields
(first_frame, log_probs) for each finished core; memory holds one window of samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Tuple

import numpy as np

from .errors import BundleError

LogProbFn = Callable[[np.ndarray], np.ndarray]


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
    """Feeds a sample stream through `log_probs_fn` in overlapping windows; see the module docstring."""

    def __init__(self, log_probs_fn: LogProbFn, plan: WindowPlan):
        self.fn = log_probs_fn
        self.plan = plan
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
            yield 0, self.fn(self._buffer)
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
        log_probs = self.fn(window)
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
        keep_from = max(0, core_end - plan.left_frames) * plan.frame_stride
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :].copy()
            self._buffer_start = keep_from
        return core_start, core
