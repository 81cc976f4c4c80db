"""Hotwords: names and device words that free dictation should prefer, boosted inside the beam search.

A hotword file holds one word or phrase a line, optionally ending in ``:BOOST`` (sherpa-onnx's
format)::

    Anneliese
    Living Room Lamp :3.0

`beam.PrefixBeamDecoder` adds the boost for each character of a prefix that follows a hotword from a
word start, and takes the whole bonus back unless the word ends exactly where the hotword does (so
"cafes" or "caf" win nothing for the hotword "cafe"), as sherpa-onnx's context graph does for tokens.
A finished hotword keeps its bonus, which is what lets a weak acoustic model spell "anneliese" rather
than "anna lisa". It works with and without the language models: without them, the beam runs with
no LM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple, Union

from .atomic import PathLike
from .ctc import Vocabulary
from .errors import InputError
from .spoken import spell_numbers
from .text import TextNormalization

DEFAULT_BOOST = 2.0
"""Per character; picked on synthetic validation voices (benchmarks/commands.py --hotwords)."""
MAX_BOOST = 20.0
MAX_HOTWORDS = 10_000
HotState = Tuple[int, float]
"""A beam prefix's hotword state: the trie node it reached, and the bonus still pending."""


@dataclass(frozen=True)
class Hotwords:
    """Words or phrases to boost, each with its per-character boost (natural-log units)."""

    entries: Tuple[Tuple[str, float], ...]

    @classmethod
    def from_list(
        cls, items: Sequence[Union[str, Tuple[str, float]]], boost: float = DEFAULT_BOOST
    ) -> Hotwords:
        entries = []
        for item in items:
            text, value = (item, boost) if isinstance(item, str) else item
            if not math.isfinite(value) or not 0.0 < value <= MAX_BOOST:
                raise InputError(
                    f"hotword {text!r}: boost must be above 0 and at most {MAX_BOOST}, got {value}"
                )
            if text.strip():
                entries.append((" ".join(text.split()), float(value)))
        if not entries:
            raise InputError("no hotwords given")
        if len(entries) > MAX_HOTWORDS:
            raise InputError(f"more than {MAX_HOTWORDS} hotwords")
        return cls(tuple(entries))

    @classmethod
    def from_file(cls, path: PathLike, boost: float = DEFAULT_BOOST) -> Hotwords:
        """One hotword a line ("#" comments), each optionally ending in " :BOOST"."""
        where = Path(path)
        try:
            lines = where.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: cannot read the hotwords ({exc})") from None
        items: List[Union[str, Tuple[str, float]]] = []
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            text, colon, value = line.rpartition(":")
            if colon and text.strip():
                try:
                    items.append((text.strip(), float(value)))
                except ValueError:
                    raise InputError(f"{where}:{number}: boost {value!r} is not a number") from None
            else:
                items.append(line)
        return cls.from_list(items, boost)

    def compile(self, vocabulary: Vocabulary, normalization: TextNormalization) -> HotwordTrie:
        return HotwordTrie(self, vocabulary, normalization)


class HotwordTrie:
    """The hotwords as a trie of token ids: node 0 is the root; `children[node][token]` the next node;
    `boost[node]` the boost earned by reaching it; `complete[node]` ends a hotword."""

    def __init__(self, hotwords: Hotwords, vocabulary: Vocabulary, normalization: TextNormalization):
        index = {token: i for i, token in enumerate(vocabulary.tokens)}
        separator = vocabulary.word_delimiter if vocabulary.word_delimiter in index else " "
        self.children: List[Dict[int, int]] = [{}]
        self.boost: List[float] = [0.0]
        self.complete: List[bool] = [False]
        # The hotwords' words count as known words for the word LM (no unknown-word penalty).
        self.words: Set[str] = set()
        self.prefixes: Set[str] = set()
        for text, boost in hotwords.entries:
            words = normalization(spell_numbers(text)).split()
            self.words.update(words)
            self.prefixes.update(word[:end] for word in words for end in range(1, len(word) + 1))
            missing = sorted({c for word in words for c in word if c not in index})
            if missing or not words:
                raise InputError(
                    f"hotword {text!r} has character(s) the model cannot spell: {' '.join(missing)}"
                    if missing
                    else f"hotword {text!r} is empty after normalization"
                )
            node = 0
            for position, word in enumerate(words):
                tokens = ([index[separator]] if position else []) + [index[c] for c in word]
                for token in tokens:
                    child = self.children[node].get(token)
                    if child is None:
                        child = self.children[node][token] = len(self.boost)
                        self.children.append({})
                        self.boost.append(boost)
                        self.complete.append(False)
                    else:
                        self.boost[child] = max(self.boost[child], boost)
                    node = child
            self.complete[node] = True
        self._link(index[separator])

    def _link(self, separator: int) -> None:
        """`path_boost[n]`: the boosts from the root to n; `fail[n]`: where the letters after n's last
        word boundary lead from the root (a hotword that began at a later word start), else 0."""
        count = len(self.boost)
        self.path_boost = [0.0] * count
        self.fail = [0] * count
        paths: List[List[int]] = [[] for _ in range(count)]
        for node in range(count):  # children are numbered after their parents
            for token, child in self.children[node].items():
                paths[child] = paths[node] + [token]
                self.path_boost[child] = self.path_boost[node] + self.boost[child]
        for node, path in enumerate(paths):
            if separator not in path:
                continue
            suffix = path[len(path) - path[::-1].index(separator) :]
            target = 0
            for token in suffix:
                target = self.children[target].get(token, -1)
                if target < 0:
                    break
            self.fail[node] = max(target, 0) if suffix else 0

    def advance(
        self, state: HotState, token: int, word_start: bool, boundary: bool
    ) -> Tuple[HotState, float]:
        """From (node, bonus pending) with `token` next: the new state and the score change.

        A hotword starts only at a word start, and its bonus stays pending until the word ends (a
        `boundary` token, or `unfinished` at the end) right where a hotword ends: "cafe" earns its
        bonus, "cafes" and "caf" give it back. Multi-word hotwords go on across the boundary; when
        one breaks off, a hotword that began at one of its later word starts takes over (`fail`).
        """
        node, pending = state
        # At the root, only a word start may begin a hotword ("fcafe" holds no "cafe").
        child = self.children[node].get(token) if node or word_start else None
        if child is not None:
            banked = boundary and self.complete[node]  # a finished hotword keeps its bonus for good
            return (child, (0.0 if banked else pending) + self.boost[child]), self.boost[child]
        if boundary and self.complete[node]:
            return (0, 0.0), 0.0
        fallback = self.fail[node]
        while fallback:
            if boundary and self.complete[fallback]:
                return (0, 0.0), self.path_boost[fallback] - pending
            child = self.children[fallback].get(token)
            if child is not None and not boundary:
                kept = self.path_boost[fallback] + self.boost[child]
                return (child, kept), kept - pending
            fallback = self.fail[fallback]
        if word_start and not boundary:
            child = self.children[0].get(token)
            if child is not None:
                return (child, self.boost[child]), self.boost[child] - pending
        return (0, 0.0), -pending

    def unfinished(self, state: HotState) -> float:
        """The bonus to take back at the end of the audio (none when a hotword ends there)."""
        node, pending = state
        return 0.0 if self.complete[node] else pending
