"""CTC decoding: frame decoders, the one CTC collapse, and text with character and word times.

Every path that turns log-probabilities into text (files, streams, the LM tuner, training CER) goes
through the same two steps:

1. a `FrameDecoder` (`GreedyDecoder` here, `beam.PrefixBeamDecoder` with a language model) takes the
   [frames, vocab] log-probabilities chunk by chunk as the windowed runner produces them, and
   `finish()` gives one token id per frame: memory grows by a few bytes per 20 ms frame instead of
   a full logit row;
2. `decode` collapses those ids (`token_runs`: repeats merge, blanks and special tokens vanish) and
   spells them (`Vocabulary.spell`: the word delimiter separates words).

A silence ends a word. A model trained on single utterances often writes no delimiter before a long
pause (nor at a window's edge), and the collapse would then join the last word before the pause and
the first after it into one word spanning it ("weeks" + "on" -> "weekson", 2.9-13.7 s). So
`SilenceEndsWords` wraps every decoder (`beam.frame_decoder`): once the best token has been silent for
`WORD_GAP_SECONDS`, that frame becomes a certain word delimiter before any decoder sees it. The beam
search and its language models then score the word as finished, exactly as if the model had written
the delimiter, and the rule holds across windows and chunks because it counts frames, not windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .results import Char, Word


def best_path(
    log_probs: np.ndarray, blank_id: int, blank_penalty: float = 0.0
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame argmax over [frames, vocab] log-probabilities.

    `blank_penalty` is subtracted from the blank's score before the argmax: a positive value makes the
    decoder emit more tokens (useful when a model drops quiet or fast speech). Returns the token ids
    (int32) and each chosen token's log-probability without the penalty (float32).
    """
    if log_probs.ndim != 2:
        raise ValueError(f"expected [frames, vocab] log-probabilities, got shape {log_probs.shape}")
    if blank_penalty:
        scored = log_probs.copy()
        scored[:, blank_id] -= blank_penalty
    else:
        scored = log_probs
    ids = scored.argmax(axis=1).astype(np.int32)
    scores = np.take_along_axis(log_probs, ids[:, None].astype(np.int64), axis=1)[:, 0].astype(np.float32)
    return ids, scores


class FrameDecoder(Protocol):
    """Turns a stream of [frames, vocab] log-probability chunks into one token id per frame.

    `push` takes consecutive chunks (as `windows.WindowedRunner` yields them); `finish` ends the
    audio and returns (frame token ids, each id's log-probability) for `decode`. A decoder serves one
    file or utterance: make a new one for the next.
    """

    def push(self, log_probs: np.ndarray) -> None: ...

    def finish(self) -> Tuple[np.ndarray, np.ndarray]: ...


class GreedyDecoder:
    """The per-frame best token (`best_path`), kept as int32 ids and float32 scores."""

    def __init__(self, blank_id: int, blank_penalty: float = 0.0):
        self.blank_id = blank_id
        self.blank_penalty = blank_penalty
        self._ids: List[np.ndarray] = []
        self._scores: List[np.ndarray] = []

    def push(self, log_probs: np.ndarray) -> None:
        ids, scores = best_path(log_probs, self.blank_id, self.blank_penalty)
        self._ids.append(ids)
        self._scores.append(scores)

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        if not self._ids:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return np.concatenate(self._ids), np.concatenate(self._scores)


@dataclass(frozen=True)
class Vocabulary:
    """The decoder's view of a bundle's vocabulary."""

    tokens: Sequence[str]
    blank_id: int
    word_delimiter: Optional[str] = "|"
    special_ids: Collection[int] = ()

    def silent_ids(self) -> np.ndarray:
        """Ids that emit nothing: the blank and special tokens (pad, unk, <s>, ...)."""
        return np.array(sorted({self.blank_id, *self.special_ids}), dtype=np.int32)

    def is_delimiter(self, token: str) -> bool:
        return token == self.word_delimiter or token == " "

    def spell(self, token_ids: Sequence[int]) -> str:
        """Collapsed token ids -> text: delimiters separate words, words are joined by one space."""
        words: List[str] = []
        letters: List[str] = []
        for token_id in token_ids:
            token = self.tokens[token_id]
            if self.is_delimiter(token):
                if letters:
                    words.append("".join(letters))
                    letters = []
            else:
                letters.append(token)
        if letters:
            words.append("".join(letters))
        return " ".join(words)

    def delimiter_id(self) -> Optional[int]:
        """The id of the token that separates words, or None for a vocabulary without one."""
        for token_id, token in enumerate(self.tokens):
            if self.is_delimiter(token):
                return token_id
        return None


WORD_GAP_SECONDS = 1.0
"""Frames silent this long end a word. No word holds a second without a letter (a long vowel is one
letter's frames, not blanks), and a pause that short is well under the 8 s gaps that merged words."""

_NOT_SPOKEN = -1e4
"""What a frame made a delimiter gives every other token: certain, yet finite, so that score sums (word
confidences, Viterbi passes) stay numbers."""


class SilenceBreaks:
    """Finds, frame by frame across chunks, where a silence has lasted `gap_frames`: the frame that
    completes each such run of silent best tokens (blank or special), once per run."""

    def __init__(self, vocabulary: Vocabulary, gap_frames: int):
        if gap_frames < 1:
            raise ValueError(f"gap_frames must be at least 1, got {gap_frames}")
        self.gap_frames = gap_frames
        self.delimiter = vocabulary.delimiter_id()
        self._silent = vocabulary.silent_ids()
        self._run = 0  # silent frames just before the next frame

    @classmethod
    def for_frames(cls, vocabulary: Vocabulary, frame_seconds: float) -> SilenceBreaks:
        return cls(vocabulary, max(1, round(WORD_GAP_SECONDS / frame_seconds)))

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Indices into `ids` (the next frames' best tokens) where a silence reaches `gap_frames`."""
        silent = np.isin(ids, self._silent)
        found: List[int] = []
        # Runs as [start, end) pairs; the first may continue the previous chunk's run.
        edges = np.flatnonzero(np.diff(np.concatenate(([0], silent.astype(np.int8), [0]))))
        for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
            before = self._run if start == 0 else 0
            at = start + self.gap_frames - before - 1  # the frame where the run reaches the gap
            if before < self.gap_frames and at < end:
                found.append(at)
        spoken = np.flatnonzero(~silent)
        self._run = self._run + ids.size if spoken.size == 0 else ids.size - 1 - int(spoken[-1])
        return np.array(found, dtype=np.int64)

    def mark_ids(self, ids: np.ndarray) -> np.ndarray:
        """Best-path ids with the delimiter written where a silence ends a word (a copy when any)."""
        frames = self.find(ids)
        if frames.size and self.delimiter is not None:
            ids = ids.copy()
            ids[frames] = self.delimiter
        return ids

    def mark_log_probs(self, log_probs: np.ndarray) -> np.ndarray:
        """[frames, vocab] log-probabilities with a certain delimiter where a silence ends a word."""
        frames = self.find(log_probs.argmax(axis=1))
        if frames.size and self.delimiter is not None:
            log_probs = log_probs.copy()
            log_probs[frames] = _NOT_SPOKEN
            log_probs[frames, self.delimiter] = 0.0
        return log_probs


class SilenceEndsWords:
    """A `FrameDecoder` that gives `inner` the frames with a delimiter in each long silence
    (`SilenceBreaks`), so that no decoder can join words across one."""

    def __init__(self, inner: FrameDecoder, vocabulary: Vocabulary, frame_seconds: float):
        self.inner = inner
        self.breaks = SilenceBreaks.for_frames(vocabulary, frame_seconds)

    def push(self, log_probs: np.ndarray) -> None:
        self.inner.push(self.breaks.mark_log_probs(log_probs))

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        return self.inner.finish()


def token_runs(
    ids: np.ndarray, silent_ids: np.ndarray, previous: int = -1
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CTC collapse: frame ids -> (token ids, first frame, last frame + 1) of each emitted token.

    Repeats merge and silent tokens (blank, specials) vanish. `previous` is the id of the frame before
    `ids` when they continue earlier frames (a stream), so that a repeat across the boundary merges.
    """
    if ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty.astype(np.int32), empty, empty
    starts = np.flatnonzero(np.concatenate(([ids[0] != previous], ids[1:] != ids[:-1])))
    ends = np.concatenate((starts[1:], [ids.size])).astype(np.int64)
    tokens = ids[starts]
    keep = ~np.isin(tokens, silent_ids)
    return tokens[keep], starts[keep], ends[keep]


def decode(
    ids: np.ndarray,
    vocab: Vocabulary,
    frame_seconds: float,
    scores: Optional[np.ndarray] = None,
) -> Tuple[str, List[Char], List[Word]]:
    """Frame token ids -> (text, chars with times, words with times and confidence)."""
    tokens, starts, ends = token_runs(ids, vocab.silent_ids())
    if scores is not None and scores.size:
        cumulative = np.concatenate(([0.0], np.cumsum(scores, dtype=np.float64)))
        run_logp = cumulative[ends] - cumulative[starts]
    else:
        run_logp = np.zeros(tokens.size)
    chars: List[Char] = []
    words: List[Word] = []
    pending: List[int] = []  # indices into the runs of the word being built

    def close_word() -> None:
        if not pending:
            return
        frames = float(sum(ends[i] - starts[i] for i in pending))
        confidence = float(np.exp(sum(run_logp[i] for i in pending) / frames)) if frames else 1.0
        words.append(
            Word(
                text="".join(vocab.tokens[tokens[i]] for i in pending),
                start=round(float(starts[pending[0]]) * frame_seconds, 3),
                end=round(float(ends[pending[-1]]) * frame_seconds, 3),
                confidence=round(confidence, 4),
            )
        )
        pending.clear()

    for index, token_id in enumerate(tokens.tolist()):
        token = vocab.tokens[token_id]
        start = round(float(starts[index]) * frame_seconds, 3)
        end = round(float(ends[index]) * frame_seconds, 3)
        if vocab.is_delimiter(token):
            if chars and chars[-1].text != " ":
                chars.append(Char(text=" ", start=start, end=end))
            close_word()
        else:
            chars.append(Char(text=token, start=start, end=end))
            pending.append(index)
    close_word()
    if chars and chars[-1].text == " ":
        chars.pop()
    return vocab.spell(tokens.tolist()), chars, words


def greedy_decode(
    log_probs: np.ndarray, vocab: Vocabulary, frame_seconds: float, blank_penalty: float = 0.0
) -> Tuple[str, List[Char], List[Word]]:
    """Convenience: [frames, vocab] log-probabilities straight to text, chars and words."""
    ids, scores = best_path(log_probs, vocab.blank_id, blank_penalty)
    return decode(ids, vocab, frame_seconds, scores)
