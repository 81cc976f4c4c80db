"""CTC prefix beam search, optionally scored by a character n-gram language model.

Greedy decoding (`ctc.best_path`) picks each frame's best token alone; a weak acoustic model then
spells words the way they sound ("probeble"). The beam keeps the `beam_size` best prefixes, merging
every frame path that spells the same text, and adds `lm_weight` x the LM's log-probability plus an
`insertion_bonus` for each character, so that spellings the language knows win close calls.

The decoder takes log-probabilities in chunks as the windowed runner produces them, so a long file
needs no more memory than its prefixes. Prefixes are linked nodes (parent, token, frame), not
strings, so extending one costs the same at the first frame and after an hour. The result is a frame
alignment in the form `ctc.decode` reads: the blank everywhere but at the frame where each
character was emitted (where the path that made its prefix most likely reached it), so word times and
confidences come out as for greedy decoding.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .ctc import Vocabulary
from .lm import WORD_BOUNDARY, CharNgramLM

NEG_INF = -math.inf


@dataclass
class BeamOptions:
    """Beam search settings.

    Attributes:
        beam_size: prefixes kept after each frame; 8 is a good trade on a Pi, 16+ rarely helps.
        lm_weight: scale of the LM's natural-log probability against the acoustic score.
        insertion_bonus: added per emitted character, balancing the LM's pull towards short output.
        token_min_logprob: tokens below this log-probability in a frame are not tried there; it
            decides the speed more than the beam size does.
    """

    beam_size: int = 8
    lm_weight: float = 0.5
    insertion_bonus: float = 1.0
    token_min_logprob: float = -8.0

    def validate(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be 1 or more, got {self.beam_size}")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be 0 or more, got {self.lm_weight}")


class _Prefix:
    """One decoded prefix: the last token, when it was emitted, and the LM state after it."""

    __slots__ = ("parent", "token", "frame", "logprob", "context", "lm_score")

    def __init__(
        self,
        parent: Optional[_Prefix],
        token: int,
        frame: int,
        logprob: float,
        context: str,
        lm_score: float,
    ):
        self.parent = parent
        self.token = token
        self.frame = frame
        self.logprob = logprob
        self.context = context
        self.lm_score = lm_score


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


class PrefixBeamDecoder:
    """Feed [frames, vocab] log-probabilities with `push`, then read `finish()`.

    Args:
        vocabulary: the bundle's vocabulary (blank, special tokens, word delimiter).
        lm: a character LM over the vocabulary's tokens, or None for a plain prefix beam search.
        options: see `BeamOptions`.
    """

    def __init__(self, vocabulary: Vocabulary, lm: Optional[CharNgramLM], options: BeamOptions):
        options.validate()
        self.vocabulary = vocabulary
        self.lm = lm
        self.options = options
        self.frames = 0
        self._silent = vocabulary.silent_ids()
        self._is_boundary = [vocabulary.is_delimiter(t) for t in vocabulary.tokens]
        self._lm_token = [WORD_BOUNDARY if b else t for t, b in zip(vocabulary.tokens, self._is_boundary)]
        self._root = _Prefix(None, -1, -1, 0.0, lm.start if lm else "", 0.0)
        # prefix -> [log P(prefix, last frame blank), log P(prefix, last frame its last token)]
        self._beams: Dict[_Prefix, List[float]] = {self._root: [0.0, NEG_INF]}

    def push(self, log_probs: np.ndarray) -> None:
        """Advance over a chunk of frames (consecutive with the previous chunk)."""
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.vocabulary.tokens):
            raise ValueError(
                f"expected [frames, {len(self.vocabulary.tokens)}] log-probabilities, got {log_probs.shape}"
            )
        tried = log_probs > self.options.token_min_logprob
        tried[:, self._silent] = False
        for row, mask in zip(log_probs.astype(np.float64).tolist(), tried):
            self._step(row, np.flatnonzero(mask).tolist())
            self.frames += 1

    def _extend(self, prefix: _Prefix, token: int, logprob: float) -> _Prefix:
        bonus = self.options.insertion_bonus
        if self.lm is None:
            return _Prefix(prefix, token, self.frames, logprob, "", prefix.lm_score + bonus)
        char = self._lm_token[token]
        lm_score = prefix.lm_score + self.options.lm_weight * self.lm.logprob(prefix.context, char) + bonus
        return _Prefix(prefix, token, self.frames, logprob, self.lm.extend(prefix.context, char), lm_score)

    def _step(self, row: List[float], candidates: List[int]) -> None:
        blank = row[self.vocabulary.blank_id]
        following: Dict[_Prefix, List[float]] = {}
        # An extension that spells a prefix already in the beam must add to it, not compete with it.
        children: Dict[Tuple[int, int], _Prefix] = {
            (id(p.parent), p.token): p for p in self._beams if p.parent is not None
        }
        for prefix, (p_blank, p_token) in self._beams.items():
            total = _logaddexp(p_blank, p_token)
            here = following.setdefault(prefix, [NEG_INF, NEG_INF])
            here[0] = _logaddexp(here[0], total + blank)
            if prefix.token >= 0:
                here[1] = _logaddexp(here[1], p_token + row[prefix.token])
            for token in candidates:
                logprob = row[token]
                if self._is_boundary[token] and (prefix.parent is None or self._is_boundary[prefix.token]):
                    # A leading or doubled word boundary spells nothing new.
                    here[0] = _logaddexp(here[0], total + logprob)
                    continue
                source = p_blank if token == prefix.token else total
                if source == NEG_INF:
                    continue
                key = (id(prefix), token)
                child = children.get(key)
                if child is None:
                    child = children[key] = self._extend(prefix, token, logprob)
                entry = following.setdefault(child, [NEG_INF, NEG_INF])
                entry[1] = _logaddexp(entry[1], source + logprob)
                if child.frame != self.frames:
                    # The prefix was first reached through an unlikely early frame; when this frame's
                    # path outweighs all it had so far, this is where the character was spoken.
                    before = self._beams.get(child)
                    if before is None or source + logprob > _logaddexp(before[0], before[1]):
                        child.frame, child.logprob = self.frames, logprob
        if len(following) > self.options.beam_size:
            kept = heapq.nlargest(
                self.options.beam_size, following.items(), key=lambda kv: self._score(kv[0], kv[1])
            )
            following = dict(kept)
        self._beams = following

    @staticmethod
    def _score(prefix: _Prefix, probs: List[float]) -> float:
        return _logaddexp(probs[0], probs[1]) + prefix.lm_score

    def _final_score(self, prefix: _Prefix, probs: List[float]) -> float:
        score = self._score(prefix, probs)
        if self.lm is not None:
            score += self.options.lm_weight * self.lm.logprob(prefix.context, self.lm.end)
        return score

    def best(self, final: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """The best prefix so far as (frame token ids, scores) for `ctc.decode`.

        With `final`, prefixes are ranked with the LM's end-of-sentence score as well.
        """
        rank = self._final_score if final else self._score
        prefix = max(self._beams.items(), key=lambda kv: rank(kv[0], kv[1]))[0]
        ids = np.full(self.frames, self.vocabulary.blank_id, dtype=np.int32)
        scores = np.zeros(self.frames, dtype=np.float32)
        node: Optional[_Prefix] = prefix
        while node is not None and node.parent is not None:
            ids[node.frame] = node.token
            scores[node.frame] = node.logprob
            node = node.parent
        return ids, scores

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        """End of audio: the best full hypothesis as (frame token ids, scores)."""
        return self.best(final=True)
