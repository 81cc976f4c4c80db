"""Result types: plain dataclasses, easy to print, compare and serialize."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class Char:
    """One emitted token (a character for character models) with its time span in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds and the model's mean per-frame probability for it."""

    text: str
    start: float
    end: float
    confidence: float = 1.0


@dataclass
class Transcript:
    """The result of transcribing one input.

    Attributes:
        text: the words joined by single spaces ("" for silence).
        words: each word with start/end times (seconds from the start of the input).
        chars: each emitted token with its times.
        duration: length of the input audio in seconds.
        processing_time: wall seconds spent decoding and running the model.
        source: the file name, "<stdin>" or "<array>".
    """

    text: str
    words: List[Word] = field(default_factory=list)
    chars: List[Char] = field(default_factory=list)
    duration: float = 0.0
    processing_time: float = 0.0
    source: str = "<array>"

    @property
    def real_time_factor(self) -> Optional[float]:
        """Processing seconds per second of audio (below 1 is faster than real time)."""
        return self.processing_time / self.duration if self.duration else None

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["real_time_factor"] = self.real_time_factor
        return data
