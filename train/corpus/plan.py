"""The corpus plan: which sentence, voice, variant, rate and pitch each utterance id gets.

The plan is a deterministic stream: utterance i depends only on the seed, i, the sentence pool and the
voices in use. So a run can stop anywhere and resume (ids already written are skipped), and a corpus
can be extended later by asking for more hours with the same options.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence

from .engines import Prosody
from .sources import Sentence
from .voices import Voice


@dataclass(frozen=True)
class ProsodyRange:
    """Per-utterance rate (tempo factor) and pitch (semitones) are drawn uniformly from these."""

    rate_min: float = 0.85
    rate_max: float = 1.2
    pitch_min: float = -3.0
    pitch_max: float = 3.0


@dataclass(frozen=True)
class PlannedUtterance:
    index: int
    id: str
    sentence: Sentence
    voice: Voice
    variant: str
    prosody: Prosody
    split: str

    @property
    def voice_name(self) -> str:
        """The engine's voice, with the espeak-ng variant when there is one ("en-US+m3")."""
        return f"{self.voice.voice}+{self.variant}" if self.variant else self.voice.voice


def prefer_short(sentences: Sequence[Sentence], seed: int, long_words: int = 15, keep_long: float = 0.35):
    """Keep every sentence of up to `long_words` words and a `keep_long` share of the longer ones.

    Most utterances then last about 1.5-8 s: short items are what a from-scratch CTC model learns from
    first, and what a Pi-class device mostly hears (commands, phrases).
    """
    rng = random.Random(f"{seed}:short")
    return [s for s in sentences if s.words <= long_words or rng.random() < keep_long]


def pool_digest(sentences: Sequence[Sentence]) -> str:
    """A fingerprint of the ordered sentence pool (a resumed run must see the same pool)."""
    digest = hashlib.sha256()
    for sentence in sentences:
        digest.update(sentence.label.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


class Planner:
    """Utterance i of the corpus, from the seed, the sentence pool and the voices in use."""

    def __init__(
        self,
        sentences: Sequence[Sentence],
        voices: Sequence[Voice],
        splits: Dict[str, str],
        seed: int = 0,
        prosody: ProsodyRange = ProsodyRange(),
    ) -> None:
        if not sentences:
            raise ValueError("no usable sentences: install the text packages (scripts/install_tts.sh)")
        if not voices:
            raise ValueError("no voice available: install an engine (scripts/install_tts.sh)")
        self.sentences = list(sentences)
        self.voices: List[Voice] = sorted(voices, key=lambda v: v.key)
        self.weights = [v.weight for v in self.voices]
        self.splits = splits
        self.seed = seed
        self.prosody = prosody

    def __len__(self) -> int:
        return len(self.sentences)

    def item(self, index: int) -> PlannedUtterance:
        if not 0 <= index < len(self.sentences):
            raise IndexError(f"the sentence pool has {len(self.sentences)} sentences; asked for #{index}")
        rng = random.Random(f"{self.seed}:{index}")
        voice = rng.choices(self.voices, weights=self.weights)[0]
        variant = rng.choice(voice.variants) if voice.variants else ""
        p = self.prosody
        prosody = Prosody(
            rate=round(rng.uniform(p.rate_min, p.rate_max), 3),
            pitch=round(rng.uniform(p.pitch_min, p.pitch_max), 2),
        )
        return PlannedUtterance(
            index=index,
            id=f"u{index:06d}",
            sentence=self.sentences[index],
            voice=voice,
            variant=variant,
            prosody=prosody,
            split=self.splits.get(voice.speaker, "train"),
        )
