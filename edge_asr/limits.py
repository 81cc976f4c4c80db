"""The sane range of every number a user or a bundle can set, in one table.

bundle.json (`bundle.py`, as a BundleError), the Python options (`TranscribeOptions`, `BeamOptions`,
`StreamOptions`, as an InputError) and through them the command-line flags (exit status 2) all check
against these, so a value is refused the same way wherever it comes from.

Why bounds and not just types: a beam of 10**9 or `--chunk-seconds 0` does not fail, it runs for
hours; NaN compares false with everything, so it slips past `x > 0` checks and yields garbage.
The bounds are wide (far past any tuned value) but finite.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Type

from .errors import InputError


@dataclass(frozen=True)
class Range:
    """A closed interval of finite numbers; `integer` ones must also be whole numbers (ints)."""

    low: float
    high: float
    integer: bool = False

    def problem(self, value: Any) -> Optional[str]:
        """None when `value` is in range, else what is wrong with it (for "NAME <problem>")."""
        number: float
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                return f"must be a whole number, got {brief(value)}"
            number = int(value)  # compared as an int: float() of 10**400 overflows
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return f"must be a number, got {brief(value)}"
            try:
                number = float(value)
            except OverflowError:  # an int beyond any float, e.g. 10**400 in bundle.json
                number = math.inf
            if math.isnan(number):
                return "must be a number, got NaN"
        if not self.low <= number <= self.high:
            return f"must be between {self.low:g} and {self.high:g}, got {brief(value)}"
        return None

    def check(self, value: Any, name: str, error: Type[Exception] = InputError) -> None:
        problem = self.problem(value)
        if problem is not None:
            raise error(f"{name} {problem}")


def check_fields(
    obj: Any,
    ranges: Mapping[str, Range],
    label: str = "",
    error: Type[Exception] = InputError,
    skip_none: bool = False,
) -> None:
    """`error` naming the first of `obj`'s fields outside its range ("{label}{field} ..."); with
    `skip_none`, fields left at None (meaning: the bundle's value) are not checked."""
    for name, allowed in ranges.items():
        value = getattr(obj, name)
        if not (skip_none and value is None):
            allowed.check(value, f"{label}{name}", error)


def brief(value: Any) -> str:
    """repr() cut to a line: a hostile value must not become a megabyte-long message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Decoding. Log-probabilities of real models sit within about -30..0 per frame, so weights and
# bonuses far beyond these only ever mean a typo; beam search costs grow linearly with the beam.
BEAM_SIZE = Range(1, 256, integer=True)
LM_WEIGHT = Range(0, 10)
INSERTION_BONUS = Range(-20, 20)
WORD_WEIGHT = Range(0, 10)
UNKNOWN_WORD_PENALTY = Range(-100, 0)
TOKEN_MIN_LOGPROB = Range(-1000, 0)
BLANK_PENALTY = Range(-100, 100)
# Joint CTC/attention decoding (edge_asr.attention, a bundle's "decoder" section).
CTC_WEIGHT = Range(0, 10)
DECODER_BEAM_SIZE = Range(1, 16, integer=True)
MAX_TOKENS_PER_SECOND = Range(0.5, 50)
MIN_TOKENS = Range(1, 448, integer=True)

# Windows for files. Below 0.5 s per core the context dominates every window (`--chunk-seconds 0`
# ran 15x slower); a 10-minute window's attention alone needs gigabytes (quadratic in its length).
# A model trained on shorter windows is bounded by its own (`windows.TRAINED_WINDOW_SECONDS`).
CHUNK_SECONDS = Range(0.5, 600)
CONTEXT_SECONDS = Range(0, 10)
BLOCK_SECONDS = Range(0.01, 60)
THREADS = Range(1, 256, integer=True)

# Streams (`edge-asr listen`).
HOP_SECONDS = Range(0.05, 10)
STREAM_CONTEXT_SECONDS = Range(0, 10)
ENDPOINT_SECONDS = Range(0.02, 60)
MAX_UTTERANCE_SECONDS = Range(0.05, 3600)
PREROLL_SECONDS = Range(0, 10)
MIN_SPEECH_SECONDS = Range(0, 10)
VAD_THRESHOLD_DB = Range(0, 200)  # frames span -120..+3 dBFS: past ~125 nothing is speech
VAD_HYSTERESIS_DB = Range(0, 60)
VAD_MIN_ENERGY_DB = Range(-120, 0)
VAD_FLOOR_FALL = Range(0, 1)
VAD_FLOOR_TIME_CONSTANT = Range(0.001, 3600)
VAD_FLOOR_RISE_DB_PER_S = Range(0, 100)
CAPTURE_SAMPLE_RATE = Range(8000, 192000, integer=True)

# `edge-asr bench`.
BENCH_REPEATS = Range(1, 100, integer=True)
MIN_CONFIDENCE = Range(0.0, 1.0)  # a voice-command grammar's rejection threshold

# Text files a user names (`--grammar`, `--hotwords`): read at most this much, so that /dev/zero or a
# log file given by mistake ends in one line instead of a MemoryError.
READ_CHUNK_BYTES = 1 << 20


def read_text(path: Any, most_bytes: int, what: str) -> str:
    """The UTF-8 text of `path`, read piece by piece: InputError (one line, naming `path` and `what`)
    past `most_bytes`, at a NUL byte (binary data, /dev/zero), or when it cannot be read or decoded."""
    parts = []
    size = 0
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(min(READ_CHUNK_BYTES, most_bytes + 1 - size))
                if not chunk:
                    break
                if b"\0" in chunk:
                    raise InputError(f"{path}: not a text file (it holds NUL bytes); give a {what} file")
                size += len(chunk)
                if size > most_bytes:
                    raise InputError(
                        f"{path}: larger than {most_bytes / 1e6:g} MB, the most a {what} file may be"
                    )
                parts.append(chunk)
        return b"".join(parts).decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: cannot read the {what} (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
