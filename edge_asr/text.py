"""Text normalization shared by training, evaluation and the device.

The same normalization must be applied to training labels and to the references a model is scored
against, so it is a saved choice: it travels in the model bundle's metadata and `train/` reads it from
the run config. Keep this module free of heavy imports: the device side uses it to score references.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Sequence

# Typographic apostrophes are folded into the ASCII one before anything else is decided.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TextNormalization:
    """How transcripts are normalized before training and scoring.

    Attributes:
        lowercase: fold case (the model then only ever outputs lower case).
        keep_punctuation: punctuation characters that survive normalization (e.g. "'" keeps
            "don't" intact). Every other punctuation mark becomes a word break, except apostrophes,
            which are dropped so that "don't" becomes "dont" rather than two words.
        strip_accents: fold accented letters to their base letter ("café" -> "cafe").
        alphabet: if not empty, the only letters and digits allowed; others are dropped.
    """

    lowercase: bool = True
    keep_punctuation: str = "'"
    strip_accents: bool = True
    alphabet: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        return self.normalize(text)

    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
        if self.strip_accents:
            decomposed = unicodedata.normalize("NFKD", text)
            text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        if self.lowercase:
            text = text.lower()
        allowed = set(self.alphabet)
        out = []
        for ch in text:
            if ch in self.keep_punctuation:
                out.append(ch)
            elif ch.isalnum():
                if not allowed or ch in allowed:
                    out.append(ch)
            elif ch == "'":
                continue
            else:
                out.append(" ")
        return _SPACES.sub(" ", "".join(out)).strip()

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TextNormalization:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown text normalization option(s): {', '.join(sorted(unknown))}")
        kinds = {
            "lowercase": bool,
            "keep_punctuation": str,
            "strip_accents": bool,
            "alphabet": str,
            "extra": dict,
        }
        for key, kind in kinds.items():
            if key in data and not isinstance(data[key], kind):
                shown = repr(data[key])
                raise ValueError(f"{key} should be {kind.__name__}, got {shown[:40]}")
        return cls(**data)


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two sequences (the characters of a string, or its words); the
    device's `info --verify` and the desktop's pseudo-labelling score with it, without jiwer."""
    previous = list(range(len(hypothesis) + 1))
    for i, item in enumerate(reference, 1):
        current = [i]
        for j, other in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)))
        previous = current
    return previous[-1]
