"""Hotwords: names and device words that free dictation should write when the audio allows them.

A hotword file holds one word or phrase a line, optionally ending in ``:BOOST`` (sherpa-onnx's
format)::

    Anneliese
    Living Room Lamp :3.0

A weak acoustic model loses a rare name in its first letters, and hears "ottoline" as "to line".
So a hotword is not boosted letter by letter inside the beam search. Each hotword is instead scored
whole, exactly, against the frames, the way the command grammar scores its phrases (`grammar.py`),
and it is written where it scores close enough to what the model heard.

For every hotword, a CTC Viterbi pass over "|" + its letters + "|" may start at any frame. Its score
is compared with the model's best path (the per-frame maximum) over the same frames. The boost is the
natural-log bonus each letter earns, so the rule is:

    gap = Viterbi(hotword path over [start, end)) - sum of the per-frame maxima over [start, end)
    accepted when gap + boost * letters >= 0

The accepted spots that do not overlap, best first, replace the decoder's frames where they lie.
They are chosen as the frames arrive, so that memory and work per frame stay bounded however many
hotwords match and however long the audio: of the spots ending at one frame (which all overlap) only
those that no later-starting spot with a margin at least as high lies inside can ever be chosen; and
a spot replaces the chosen spots it overlaps when its margin beats theirs (ties: the earlier stays).
That is the best-first choice but for chains of three overlapping spots with rising margins, where the
first does not come back when the third replaces the second; the chosen spots never overlap, so they
are fewer than the frames. Where they lie:

- a word of the decoder's path whose letters the spot's letters overlap goes whole, so no fragment
  like "po" is left;
- anything under the spot's delimiter frames is cut there.

The result is still one frame path, so `ctc.decode` gives the words, times and confidences as usual.
It works the same over the beam search with the LMs and over greedy decoding.

The boost (`DEFAULT_BOOST`) was picked on the synthetic validation voices. The pass was measured
against sherpa-onnx-style boosting inside the beam: on the held-out voices that boosting recognized
73% of the names and added 0.5 CER points elsewhere, while this pass recognized 90% for 0.2 points
(docs/benchmarks.md).

The pass runs online, one frame at a time, with every hotword's states in one array. It keeps the
few log-probability columns it needs (blank, delimiter, the hotwords' letters and the per-frame
maximum; about 4 KB per second of audio for ten names) so that it can trace the accepted spots at
the end. Its work per frame grows with the states of all hotwords together, so a list of more than
`MAX_HOTWORD_STATES` is refused: past it the pass alone would not keep up with real time on a Pi.
The method is CTC keyword spotting (Fernández et al., ICANN 2007).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np

from . import limits
from .atomic import PathLike
from .ctc import FrameDecoder, Vocabulary, token_runs
from .errors import InputError
from .spoken import spell_numbers
from .text import TextNormalization

DEFAULT_BOOST = 2.0
"""Per letter; picked on synthetic validation voices (benchmarks/commands.py --pick)."""
MAX_BOOST = 20.0
MAX_HOTWORDS = 10_000
MAX_HOTWORDS_FILE_BYTES = 4_000_000
"""10,000 hotwords of 400 bytes each: a larger file is not a hotword list (/dev/zero, a log file)."""
MAX_HOTWORD_STATES = 30_000
"""CTC states of all hotwords together (`graph_states`: 2 per letter and boundary + 5 each; about
1,400 names of 8 letters). The pass's work per frame is proportional to them: measured on a loaded
2-core x86 at one thread, 30,000 states cost 1.0 ms a frame at boost 20 (0.6 ms at the default 2),
5% of real time (20 ms frames), which leaves room for a board several times slower; 190,000 states
(10,000 hotwords) cost 7 ms, and 54 ms before the pass was bounded (RTF 2.9 at 10 s, 3.4 at 60 s)."""
NEG = -1e30


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
        lines = limits.read_text(where, MAX_HOTWORDS_FILE_BYTES, "hotwords").splitlines()
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

    def compile(self, vocabulary: Vocabulary, normalization: TextNormalization) -> HotwordGraph:
        """Spell each hotword in the vocabulary's tokens (a clear error for a letter it lacks)."""
        index = {token: i for i, token in enumerate(vocabulary.tokens)}
        delimiters = [i for i, token in enumerate(vocabulary.tokens) if vocabulary.is_delimiter(token)]
        if not delimiters:
            raise InputError("this model has no word delimiter token, which hotwords need to find words")
        separator = delimiters[0]
        spellings: List[List[int]] = []
        for text, _ in self.entries:
            words = normalization(spell_numbers(text)).split()
            missing = sorted({c for word in words for c in word if c not in index})
            if missing or not words:
                raise InputError(
                    f"hotword {text!r} has character(s) the model cannot spell: {' '.join(missing)}"
                    if missing
                    else f"hotword {text!r} is empty after normalization"
                )
            spellings.append([])
            for position, word in enumerate(words):
                spellings[-1] += ([separator] if position else []) + [index[c] for c in word]
        states = sum(graph_states(spelling) for spelling in spellings)
        if states > MAX_HOTWORD_STATES:
            raise InputError(
                f"{len(spellings)} hotwords spell {states:,} letters and boundaries (CTC states), more than "
                f"the {MAX_HOTWORD_STATES:,} that the hotword pass can follow in real time (about 1,400 "
                "names of 8 letters): keep the names the model mishears, or use a --grammar for a fixed "
                "set of phrases"
            )
        letters = [sum(t != separator for t in spelling) for spelling in spellings]
        boosts = [boost for _, boost in self.entries]
        return HotwordGraph(vocabulary.blank_id, separator, spellings, boosts, letters)


def graph_states(spelling: Sequence[int]) -> int:
    """CTC states of one hotword in a `HotwordGraph`: blank, "|", blank, each token and a blank, "|",
    blank."""
    return 2 * (len(spelling) + 2) + 1


@dataclass(frozen=True)
class Spot:
    """A hotword found in the frames: its index, frames [start, end), and margin per letter (>= 0)."""

    hotword: int
    start: int
    end: int
    margin: float


class HotwordGraph:
    """All hotwords as one array of CTC states: blank, "|", blank, letter, blank, ..., "|", blank.

    Args:
        blank, delimiter: the vocabulary's blank and word delimiter ids.
        spellings: each hotword's token ids (letters, with the delimiter between the words of a phrase).
        boosts: each hotword's boost per letter (natural log).
        letters: each hotword's letter count (delimiters excluded), which the boost multiplies.
    """

    def __init__(
        self,
        blank: int,
        delimiter: int,
        spellings: Sequence[Sequence[int]],
        boosts: Sequence[float],
        letters: Sequence[int],
    ):
        states: List[int] = []
        owner: List[int] = []
        self.segments: List[Tuple[int, int]] = []
        for index, spelling in enumerate(spellings):
            labels = [delimiter, *spelling, delimiter]
            first = len(states)
            states.append(blank)
            for label in labels:
                states += [label, blank]
            owner += [index] * (len(states) - first)
            self.segments.append((first, len(states)))
        self.columns = np.array(sorted(set(states)), dtype=np.int64)
        column_of = {int(token): i for i, token in enumerate(self.columns)}
        self.tokens = np.array(states, dtype=np.int64)
        self.state_column = np.array([column_of[t] for t in states], dtype=np.int64)
        self.owner = np.array(owner, dtype=np.int64)
        size = len(states)
        starts = np.array([first for first, _ in self.segments])
        offset = np.arange(size) - starts[self.owner]
        self.can_step = offset >= 1
        previous2 = np.r_[-1, -1, self.tokens[:-2]]
        self.can_skip = (offset >= 2) & (self.tokens != blank) & (self.tokens != previous2)
        ends = np.array([end for _, end in self.segments])
        from_end = ends[self.owner] - np.arange(size)
        self.entry = offset <= 1  # the leading blank and "|": a spot may begin at any frame
        self.entry_at_start = offset <= 3  # at the first frame the letters may begin without a "|"
        self.exit = from_end <= 2  # the closing "|" and the blank after it
        self.exit_at_end = from_end <= 4  # at the last frame the letters may end without a "|"
        self.boosts = np.asarray(boosts, dtype=np.float64)
        self.letters = np.asarray(letters, dtype=np.float64)
        self.threshold = -(self.boosts * self.letters)[self.owner]
        self.blank_column = column_of[blank]


class HotwordSpotter:
    """A `FrameDecoder` that runs `inner` (beam search or greedy) and writes in the hotwords it missed."""

    def __init__(self, inner: FrameDecoder, graph: HotwordGraph, vocabulary: Vocabulary):
        self.inner = inner
        self.graph = graph
        self.silent = vocabulary.silent_ids()
        size = graph.tokens.size
        self._scores = np.full(size, NEG)
        self._starts = np.zeros(size, dtype=np.int64)
        self._frames = 0
        self._kept: List[np.ndarray] = []  # [frames, columns] log-probs of the graph's tokens
        self._maxima: List[np.ndarray] = []
        self._chosen: List[Spot] = []  # by start; never overlapping (see the module docstring)

    def push(self, log_probs: np.ndarray) -> None:
        self.inner.push(log_probs)
        g = self.graph
        maxima = log_probs.max(axis=1)
        columns = log_probs[:, g.columns]
        self._kept.append(columns.astype(np.float32))
        self._maxima.append(maxima.astype(np.float32))
        relative = columns - maxima[:, None]
        for row in relative:
            # Spread to the states one frame at a time: a whole chunk at once is [frames, states]
            # float64, 750 MB for a 10 s window and 10,000 hotwords.
            self._step(row[g.state_column], first=self._frames == 0)
            self._frames += 1

    def _step(self, relative: np.ndarray, first: bool) -> None:
        g = self.graph
        stay, stay_starts = self._scores, self._starts
        step = np.where(g.can_step, np.r_[NEG, stay[:-1]], NEG)
        skip = np.where(g.can_skip, np.r_[NEG, NEG, stay[:-2]], NEG)
        # The best of stay, step and skip, the earlier on a tie; pairwise maxima are 3x faster than
        # stacking the three and taking argmax and choose (the pass's cost is this, per frame).
        from_step = step > stay
        scores = np.where(from_step, step, stay)
        from_skip = skip > scores
        scores = np.where(from_skip, skip, scores)
        starts = np.where(from_step, np.r_[0, stay_starts[:-1]], stay_starts)
        starts = np.where(from_skip, np.r_[0, 0, stay_starts[:-2]], starts)
        # A fresh start scores 0 against the best path so far, and any continuation scores <= 0.
        fresh = (g.entry_at_start if first else g.entry) & (scores <= 0.0)
        scores = np.where(fresh, 0.0, scores) + relative
        starts = np.where(fresh, self._frames, starts)
        self._scores, self._starts = scores, starts
        self._offer(np.flatnonzero(g.exit & (scores >= g.threshold)), self._frames + 1)

    def _offer(self, states: np.ndarray, end: int) -> None:
        """Choose among the spots that `states` (exit states past their threshold) end at `end`."""
        if states.size == 0:
            return
        g = self.graph
        hotwords = g.owner[states]
        margins = (self._scores[states] - g.threshold[states]) / g.letters[hotwords]
        starts = self._starts[states]
        # All end here, so a spot inside another (a later start) with a margin at least as high is
        # always chosen before it: only the rest, latest start first with rising margins, can matter.
        order = np.lexsort((-margins, -starts))
        margins, starts, hotwords = margins[order], starts[order], hotwords[order]
        best_before = np.r_[-np.inf, np.maximum.accumulate(margins)[:-1]]
        for index in np.flatnonzero(margins > best_before)[::-1].tolist():  # best margin first
            self._choose(Spot(int(hotwords[index]), int(starts[index]), end, float(margins[index])))

    def _choose(self, spot: Spot) -> None:
        """Keep `spot` in place of the chosen spots it overlaps when its margin beats all of theirs."""
        chosen = self._chosen
        first = len(chosen)
        while first and chosen[first - 1].end > spot.start:  # chosen spots end no later than this one
            first -= 1
        if all(spot.margin > other.margin for other in chosen[first:]):
            del chosen[first:]
            chosen.append(spot)

    def spots(self) -> List[Spot]:
        """At the end of the audio (once): the chosen spots, none overlapping, sorted by start."""
        g = self.graph
        if self._frames:
            self._offer(np.flatnonzero(g.exit_at_end & ~g.exit & (self._scores >= g.threshold)), self._frames)
        taken, self._chosen = self._chosen, []
        return taken

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        ids, scores = self.inner.finish()
        spots = self.spots()
        if not spots:
            return ids, scores
        kept = np.concatenate(self._kept)
        maxima = np.concatenate(self._maxima)
        ids, scores = ids.copy(), scores.copy()
        for spot in spots:
            path = self._trace(spot, kept, maxima)
            self._splice(ids, scores, spot, path, kept)
        return ids, scores

    def _trace(self, spot: Spot, kept: np.ndarray, maxima: np.ndarray) -> np.ndarray:
        """The spot's Viterbi path over its frames, as graph state indices."""
        g = self.graph
        first, end_state = g.segments[spot.hotword]
        states = np.arange(first, end_state)
        relative = (
            kept[spot.start : spot.end][:, g.state_column[states]] - maxima[spot.start : spot.end, None]
        )
        size = states.size
        can_step, can_skip = g.can_step[states], g.can_skip[states]
        at_end = spot.end == self._frames
        scores = np.where((g.entry_at_start if spot.start == 0 else g.entry)[states], relative[0], NEG)
        back = np.zeros((relative.shape[0], size), dtype=np.int8)
        for t in range(1, relative.shape[0]):
            step = np.where(can_step, np.r_[NEG, scores[:-1]], NEG)
            skip = np.where(can_skip, np.r_[NEG, NEG, scores[:-2]], NEG)
            back[t] = np.argmax(np.stack((scores, step, skip)), axis=0)
            scores = np.choose(back[t], (scores, step, skip)) + relative[t]
        exits = (g.exit_at_end if at_end else g.exit)[states]
        state = int(np.argmax(np.where(exits, scores, NEG)))
        path = np.zeros(relative.shape[0], dtype=np.int64)
        for t in range(relative.shape[0] - 1, -1, -1):
            path[t] = first + state
            state -= int(back[t, state])
        return path

    def _splice(
        self, ids: np.ndarray, scores: np.ndarray, spot: Spot, path: np.ndarray, kept: np.ndarray
    ) -> None:
        g = self.graph
        first, end_state = g.segments[spot.hotword]
        blank, delimiter = int(g.tokens[first]), int(g.tokens[first + 1])
        offset = path - first
        letters = np.flatnonzero((offset % 2 == 1) & (offset != 1) & (offset != end_state - first - 2))
        first_letter, last_letter = spot.start + int(letters[0]), spot.start + int(letters[-1]) + 1
        # A beam word that the spot's letters overlap is removed whole; words under its "|" are cut.
        low, high = spot.start, spot.end
        runs, run_starts, run_ends = token_runs(ids, self.silent)
        word_start = 0
        for index in range(runs.size + 1):
            if index == runs.size or runs[index] == delimiter:
                if index > word_start:
                    begin, end = int(run_starts[word_start]), int(run_ends[index - 1])
                    if begin < last_letter and end > first_letter:
                        low, high = min(low, begin), max(high, end)
                word_start = index + 1
        ids[low:high] = blank
        scores[low:high] = kept[low:high, g.blank_column]
        ids[spot.start : spot.end] = g.tokens[path]
        scores[spot.start : spot.end] = kept[np.arange(spot.start, spot.end), g.state_column[path]]
