"""CTC prefix beam search, optionally scored by a character n-gram language model.

Greedy decoding (`ctc.best_path`) picks each frame's best token alone; a weak acoustic model then
spells words the way they sound ("probeble"). The beam keeps the `beam_size` best prefixes, merging
every frame path that spells the same text, and adds `lm_weight` x the LM's log-probability plus an
`insertion_bonus` for each character, so that spellings the language knows win close calls.

With a word LM as well, each word is scored twice over as it grows: letter by letter by the
character LM, which ranks partial words, and once finished (at the next word boundary or the end) by
the word LM, whose score then replaces the character LM's for that word when the word LM knows it
(Hori et al., "Multi-level language modeling and decoding for open vocabulary end-to-end speech
recognition", ASRU 2017). A word it does not know keeps its character score plus
`unknown_word_penalty`, so names and rare words can still be spelled; the penalty falls as soon as
the letters begin no known word, so that the beam keeps spellings that can still become words.
The LMs choose between spellings, never whether anything was said: silence wins at the end only if the
frames make it likelier than every spelling in the beam (`_spoken_over_silence`).

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

from . import limits
from .bundle import LanguageModelSettings
from .ctc import FrameDecoder, GreedyDecoder, SilenceEndsWords, Vocabulary
from .hotwords import HotwordGraph, HotwordSpotter
from .lm import WORD_BOUNDARY, CharNgramLM, WordNgramLM

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
        word_weight: scale of the word LM's natural-log probability of a finished word (with a word LM).
        unknown_word_penalty: added for each finished word the word LM does not know (0 or less).
    """

    beam_size: int = 8
    lm_weight: float = 0.5
    insertion_bonus: float = 1.0
    token_min_logprob: float = -8.0
    word_weight: float = 0.7
    unknown_word_penalty: float = -4.0

    def validate(self) -> None:
        """ValueError naming the first setting outside its range (`edge_asr.limits`)."""
        ranges = {
            "beam_size": limits.BEAM_SIZE,
            "lm_weight": limits.LM_WEIGHT,
            "insertion_bonus": limits.INSERTION_BONUS,
            "token_min_logprob": limits.TOKEN_MIN_LOGPROB,
            "word_weight": limits.WORD_WEIGHT,
            "unknown_word_penalty": limits.UNKNOWN_WORD_PENALTY,
        }
        limits.check_fields(self, ranges, error=ValueError)

    @classmethod
    def from_settings(cls, settings: LanguageModelSettings) -> BeamOptions:
        """The settings a bundle's LM section was tuned with (`bundle.LanguageModelSettings`)."""
        options = cls(settings.beam_size, settings.lm_weight, settings.insertion_bonus)
        if settings.words is not None:
            options.word_weight = settings.words.word_weight
            options.unknown_word_penalty = settings.words.unknown_word_penalty
        return options


class _WordState:
    """A prefix as the word LM sees it: the words before the one being spelled, that word's letters so
    far, the character LM's weighted score of them (replaced by the word LM's if the word is known),
    and whether the letters still begin some known word."""

    __slots__ = ("context", "letters", "char_score", "in_lexicon")

    def __init__(
        self, context: Tuple[int, ...], letters: str = "", char_score: float = 0.0, in_lexicon: bool = True
    ):
        self.context = context
        self.letters = letters
        self.char_score = char_score
        self.in_lexicon = in_lexicon


class _Prefix:
    """One decoded prefix: the last token, when it was emitted, and the LM states after it.

    `frame` and `logprob` move to a later frame whose path outweighs the earlier ones; `first` keeps
    the frame and log-probability where the prefix was first reached, which always comes before any
    of its extensions were (a later best frame may not).
    """

    __slots__ = ("parent", "token", "frame", "logprob", "first", "context", "lm_score", "word")

    def __init__(
        self,
        parent: Optional[_Prefix],
        token: int,
        frame: int,
        logprob: float,
        context: str,
        lm_score: float,
        word: Optional[_WordState] = None,
    ):
        self.parent = parent
        self.token = token
        self.frame = frame
        self.logprob = logprob
        self.first = (frame, logprob)
        self.context = context
        self.lm_score = lm_score  # with the insertion bonus
        self.word = word


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
        words: a word LM to score finished words with (needs `lm`), or None.
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        lm: Optional[CharNgramLM],
        options: BeamOptions,
        words: Optional[WordNgramLM] = None,
    ):
        options.validate()
        if words is not None and lm is None:
            raise ValueError("a word LM scores words in place of the character LM: give both")
        self.vocabulary = vocabulary
        self.lm = lm
        self.words = words
        self.options = options
        self.frames = 0
        self._silent = vocabulary.silent_ids()
        self._is_boundary = [vocabulary.is_delimiter(t) for t in vocabulary.tokens]
        self._lm_token = [WORD_BOUNDARY if b else t for t, b in zip(vocabulary.tokens, self._is_boundary)]
        self._root = _Prefix(
            None,
            -1,
            -1,
            0.0,
            lm.start if lm else "",
            0.0,
            _WordState(words.start) if words is not None else None,
        )
        # prefix -> [log P(prefix, last frame blank), log P(prefix, last frame its last token)]
        self._beams: Dict[_Prefix, List[float]] = {self._root: [0.0, NEG_INF]}
        # A prefix stays in the beam for many frames and tries the same letters in each; what the LMs
        # say of each extension is kept, (id(prefix), token) -> (prefix, context, lm_score, word),
        # as nodes themselves cannot be: their emission frame changes.
        self._scored: Dict[Tuple[int, int], Tuple[_Prefix, str, float, Optional[_WordState]]] = {}

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
        key = (id(prefix), token)
        scored = self._scored.get(key)
        if scored is None:
            scored = self._scored[key] = (prefix, *self._score_language(prefix, token))
        return _Prefix(prefix, token, self.frames, logprob, *scored[1:])

    def _score_language(self, prefix: _Prefix, token: int) -> Tuple[str, float, Optional[_WordState]]:
        """The LM context, LM score (with the insertion bonus) and word state of `prefix` + `token`."""
        bonus = self.options.insertion_bonus
        if self.lm is None:
            return "", prefix.lm_score + bonus, None
        char = self._lm_token[token]
        char_score = self.options.lm_weight * self.lm.logprob(prefix.context, char)
        context = self.lm.extend(prefix.context, char)
        lm_score = prefix.lm_score + char_score + bonus
        word = prefix.word
        if self.words is None or word is None:
            return context, lm_score, None
        if self._is_boundary[token]:
            change, words = self._close_word(word, word.char_score + char_score)
            return context, lm_score + change, _WordState(words)
        letters = word.letters + self.vocabulary.tokens[token]
        in_lexicon = word.in_lexicon and self.words.begins_word(letters)
        if word.in_lexicon and not in_lexicon:
            # Penalised as soon as no known word starts so, rather than at the word's end: the beam
            # then spends its places on spellings that can still become words.
            lm_score += self.options.unknown_word_penalty
        return context, lm_score, _WordState(word.context, letters, word.char_score + char_score, in_lexicon)

    def _close_word(self, word: _WordState, char_score: float) -> Tuple[float, Tuple[int, ...]]:
        """The score change when `word` is finished, the character LM having scored its letters and
        its end `char_score`, and the word context after it."""
        assert self.words is not None
        code = self.words.code(word.letters)
        if code != self.words.unknown:
            change = self.options.word_weight * self.words.logprob(word.context, code) - char_score
        else:  # a word that left the lexicon on the way paid its penalty then
            change = self.options.unknown_word_penalty if word.in_lexicon else 0.0
        return change, self.words.extend(word.context, code)

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
        # Keep the scores of extensions of prefixes still in the beam (alive, so their ids stay theirs).
        self._scored = {key: scored for key, scored in self._scored.items() if scored[0] in following}

    @staticmethod
    def _score(prefix: _Prefix, probs: List[float]) -> float:
        return _logaddexp(probs[0], probs[1]) + prefix.lm_score

    def _final_score(self, prefix: _Prefix, probs: List[float]) -> float:
        score = self._score(prefix, probs)
        if self.lm is None or prefix.parent is None:
            # Nothing said is not a sentence: the LMs' end-of-sentence score for an empty one (which
            # no LM text holds) would make silence lose to any letter the acoustics barely allow.
            return score
        end = self.options.lm_weight * self.lm.logprob(prefix.context, self.lm.end)
        word = prefix.word
        if self.words is None or word is None:
            return score + end
        words = word.context
        if word.letters:
            change, words = self._close_word(word, word.char_score + end)
            score += change
        return score + end + self.options.word_weight * self.words.logprob(words, self.words.end)

    def best(self, final: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """The best prefix so far as (frame token ids, scores) for `ctc.decode`.

        With `final`, prefixes are ranked with the LM's end-of-sentence score as well.
        """
        rank = self._final_score if final else self._score
        prefix = max(self._beams.items(), key=lambda kv: rank(kv[0], kv[1]))[0]
        if final and prefix is self._root and len(self._beams) > 1:
            prefix = self._spoken_over_silence()
        ids = np.full(self.frames, self.vocabulary.blank_id, dtype=np.int32)
        scores = np.zeros(self.frames, dtype=np.float32)
        node: Optional[_Prefix] = prefix
        after = self.frames  # the frame of the letter after this one
        while node is not None and node.parent is not None:
            # A letter re-reached later than the next letter was emitted keeps its first frame.
            frame, logprob = (node.frame, node.logprob) if node.frame < after else node.first
            ids[frame] = node.token
            scores[frame] = logprob
            after = frame
            node = node.parent
        return ids, scores

    def _spoken_over_silence(self) -> _Prefix:
        """The empty hypothesis won on the LMs' score: keep it only if the acoustics agree.

        The empty one pays no LM cost (see `_final_score`), while a letter said alone ("B") pays for a
        whole sentence: its start, its end and, in the word LM, a word that is rarely a sentence. So
        the LMs would erase it however clearly it was said. They are there to choose between
        spellings, not to decide whether anything was said: when the frames make some spellings more
        likely than silence, the best-ranked of those is written instead.
        """
        silence = _logaddexp(*self._beams[self._root])
        heard = [(p, probs) for p, probs in self._beams.items() if _logaddexp(*probs) > silence]
        if not heard:
            return self._root
        return max(heard, key=lambda kv: self._final_score(kv[0], kv[1]))[0]

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        """End of audio: the best full hypothesis as (frame token ids, scores)."""
        return self.best(final=True)


def frame_decoder(
    vocabulary: Vocabulary,
    lm: Optional[CharNgramLM] = None,
    options: Optional[BeamOptions] = None,
    words: Optional[WordNgramLM] = None,
    blank_penalty: float = 0.0,
    hotwords: Optional[HotwordGraph] = None,
    *,
    frame_seconds: float,
) -> FrameDecoder:
    """The decoder for one file or utterance: a beam search scored by `lm` (and `words`) when both
    `lm` and `options` are given, else greedy with `blank_penalty`; with `hotwords`, wrapped in the
    pass that puts back the hotwords it missed (`hotwords.HotwordSpotter`); and outermost the rule that
    a silence of `ctc.WORD_GAP_SECONDS` (frames of `frame_seconds`) ends a word. Files, streams and
    the LM tuner all choose here, so they decode the same log-probabilities the same way."""
    decoder: FrameDecoder
    if lm is not None and options is not None:
        decoder = PrefixBeamDecoder(vocabulary, lm, options, words)
    else:
        decoder = GreedyDecoder(vocabulary.blank_id, blank_penalty)
    if hotwords is not None:
        decoder = HotwordSpotter(decoder, hotwords, vocabulary)
    return SilenceEndsWords(decoder, vocabulary, frame_seconds)
