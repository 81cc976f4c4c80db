"""Joint CTC/attention decoding: Whisper's text decoder, steered at every step by the CTC head.

Why: on our unpadded encoder states Whisper's decoder alone loops or stops early (it ends a transcript
when it sees the padding it was trained with), and the CTC head alone spells words it has never heard
badly. Together each covers the other (shared notes, decoder-lab: real-dev sentences 34.9% -> ~20% WER):

    score(hypothesis + token) = score(hypothesis) + decoder log p(token)
                                + ctc_weight * (CTC prefix score(text + token) - CTC prefix score(text))

The CTC head knows where the speech is and how long it is; the decoder knows English, casing and
punctuation. End of text is scored with CTC's probability of the whole text, so the decoder cannot
stop early or run on past the speech.

The parts, each usable alone:

- `TokenTable`: byte-level BPE ids -> text (GPT-2's bytes-to-unicode table; no tokenizers package).
- `CtcText`: decoder text -> CTC label ids, the way training labels were made: the bundle's text
  normalization per character (letters kept, other punctuation breaks words), numbers spelled as
  `spoken.spell_numbers` says them ("19" -> "nineteen", written only when the number is complete, so
  that the label sequence only ever grows).
- `CtcPrefixScorer`: the CTC prefix probability of a label sequence, extended one label at a time in
  O(frames) numpy per label (`np.logaddexp.accumulate` turns the recursion over time into a scan).
- `AttentionDecoder`: the two ONNX graphs (cross K/V once, then one step per token with a cache).
- `joint_search`: beam search (beam 1: greedy) over both; only the decoder's top tokens are CTC-scored.
- `ctc_align`: Viterbi forced alignment of the final text to the CTC log-probs, so that word times and
  confidences come from the same frames as in CTC decoding.
- `JointDecoder`: the `FrameDecoder` of a file or utterance: takes the runner's windows, decodes each
  segment from one window's own states (cut at a silence in the overlap with the next window), gates
  segments whose CTC path is empty (silence and noise give "", and the decoder does not run), and
  returns the aligned frame ids; `display_words` puts Whisper's casing and punctuation back on the
  aligned words.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bundle import DecoderSettings
from .ctc import FrameDecoder, Vocabulary, best_path, decode, token_runs
from .errors import BundleError
from .model import session
from .results import Char, Word
from .spoken import spell_numbers
from .text import TextNormalization
from .windows import WindowedRunner, WindowPlan

log = logging.getLogger(__name__)

NEG_INF = float("-inf")
# Decoder tokens CTC-scores per hypothesis and step: the decoder's top ones (end of text is always
# scored too). 6 in the feasibility run; more costs CTC time for tokens the decoder finds unlikely.
CANDIDATES = 6
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# Joint decoding's file windows: a 22 s core with 3 s before it (where a segment may be cut at a
# silence and go on in the next window) and 1 s after it: 26 s windows, inside the 30 s that
# Whisper's decoder attends over.
JOINT_WINDOW = (22.0, 3.0, 1.0)


def joint_plan(sample_rate: int, frame_stride: int, receptive_field: int) -> WindowPlan:
    """The window plan of joint decoding (`JOINT_WINDOW`)."""
    core, left, right = JOINT_WINDOW
    return WindowPlan.from_seconds(core, left, right, sample_rate, frame_stride, receptive_field)


# -- tokens -> text -------------------------------------------------------------------------------


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (how BPE token strings are stored)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


class TokenTable:
    """Byte-level BPE token ids -> UTF-8 text. A character split across tokens is joined before
    decoding (`text`); `piece` decodes one token alone, dropping partial characters."""

    def __init__(self, strings: Sequence[str]):
        to_byte = {char: byte for byte, char in _bytes_to_unicode().items()}
        self._bytes: List[bytes] = []
        for string in strings:
            if all(char in to_byte for char in string):
                self._bytes.append(bytes(to_byte[char] for char in string))
            else:  # an added (special) token stored as plain text
                self._bytes.append(string.encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            strings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: cannot read the decoder's token table ({exc})") from None
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            raise BundleError(f"{path}: the decoder's token table must be a JSON list of strings")
        return cls(strings)

    def __len__(self) -> int:
        return len(self._bytes)

    def text(self, ids: Sequence[int]) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def piece(self, token_id: int) -> str:
        return self._bytes[token_id].decode("utf-8", errors="ignore")


# -- text -> CTC labels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextState:
    """Where `CtcText` stands in a text: a number not yet complete, whether a word is open, and
    whether any letter came yet (no delimiter before the first word)."""

    number: str = ""
    in_word: bool = False
    started: bool = False


_NUMBER_START = re.compile(r"[0-9$]")
_NUMBER_GOES_ON = re.compile(r"[0-9.,%]")


class CtcText:
    """Decoder text -> CTC label ids, prefix by prefix (see the module docstring)."""

    def __init__(self, vocabulary: Vocabulary, normalization: TextNormalization):
        self.normalization = normalization
        silent = set(vocabulary.silent_ids().tolist())
        self.labels = {
            token: index
            for index, token in enumerate(vocabulary.tokens)
            if len(token) == 1 and index not in silent and not vocabulary.is_delimiter(token)
        }
        tokens = list(vocabulary.tokens)
        delimiter = vocabulary.word_delimiter
        self.delimiter = tokens.index(delimiter) if delimiter is not None and delimiter in tokens else None

    def extend(self, state: TextState, text: str) -> Tuple[List[int], TextState]:
        """The labels `text` adds after `state`, and the state after it."""
        labels: List[int] = []
        number = state.number
        words = (state.in_word, state.started)
        for char in text:
            if number and _NUMBER_GOES_ON.match(char):
                number += char
                continue
            if number:
                words = self._spell(number, labels, words)
                number = ""
            if _NUMBER_START.match(char):
                number = char
                continue
            words = self._char(char, labels, words)
        return labels, TextState(number, *words)

    def finish(self, state: TextState) -> List[int]:
        """The labels still owed at the end of the text (a number that was being written)."""
        labels: List[int] = []
        if state.number:
            self._spell(state.number, labels, (state.in_word, state.started))
        return labels

    def labels_of(self, text: str) -> List[int]:
        labels, state = self.extend(TextState(), text)
        return labels + self.finish(state)

    def _spell(self, number: str, labels: List[int], words: Tuple[bool, bool]) -> Tuple[bool, bool]:
        body = number.rstrip(".,")
        spelled = spell_numbers(body) if body not in ("", "$") else ""
        spelled = re.sub(r"[0-9]", lambda m: f" {_DIGIT_WORDS[int(m.group(0))]} ", spelled)
        for char in " " + spelled + number[len(body) :]:
            words = self._char(char, labels, words)
        return words

    def _char(self, char: str, labels: List[int], words: Tuple[bool, bool]) -> Tuple[bool, bool]:
        """Append `char`'s labels; (in a word, started) after it."""
        in_word, started = words
        if char in ("'", "\u2019", "\u2018"):  # as training labels do: kept when the vocabulary has it
            label = self.labels.get("'")
            if label is not None and in_word:
                labels.append(label)
            return in_word, started
        norm = "" if char.isspace() else self.normalization.normalize(char)
        letters = [self.labels[c] for c in norm if c in self.labels]
        if not letters:
            return False, started  # a space or a word-breaking mark: the next letter starts a word
        if not in_word and started and self.delimiter is not None:
            labels.append(self.delimiter)
        labels.extend(letters)
        return True, True


# -- CTC prefix scores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CtcState:
    """A label prefix's CTC forward variables: log P(prefix, ending in a label / a blank at frame t)."""

    ending_label: np.ndarray
    ending_blank: np.ndarray
    last: int
    score: float  # log P(the transcript starts with this prefix)
    length: int


class CtcPrefixScorer:
    """CTC prefix scores over one segment's [frames, vocab] log-probabilities (log-softmaxed).

    `extend(state, label)` is Watanabe et al.'s prefix recursion; each per-frame recurrence
    x[t] = logaddexp(x[t-1], a[t-1]) + y[t] is written as a cumulative log-sum over time, so one
    label costs a few numpy passes over the frames instead of a Python loop.
    """

    def __init__(self, log_probs: np.ndarray, blank_id: int):
        self.x = np.asarray(log_probs, dtype=np.float64)
        self.frames = self.x.shape[0]
        self.blank_id = blank_id
        self._cumulative_blank = np.cumsum(self.x[:, blank_id])
        self._cumulative: Dict[int, np.ndarray] = {}

    def initial(self) -> CtcState:
        label = np.full(self.frames, NEG_INF)
        return CtcState(label, self._cumulative_blank.copy(), -1, 0.0, 0)

    def _cum(self, label: int) -> np.ndarray:
        found = self._cumulative.get(label)
        if found is None:
            found = self._cumulative[label] = np.cumsum(self.x[:, label])
        return found

    def extend(self, state: CtcState, label: int) -> CtcState:
        if self.frames == 0:
            return CtcState(state.ending_label, state.ending_blank, label, NEG_INF, state.length + 1)
        y = self.x[:, label]
        cum_y = self._cum(label)
        # phi: the prefix may end at t - 1 in anything but a repeat of `label` (that needs a blank).
        phi = (
            state.ending_blank
            if label == state.last
            else np.logaddexp(state.ending_blank, state.ending_label)
        )
        start = y[0] if state.length == 0 else NEG_INF
        with np.errstate(invalid="ignore"):
            terms = np.empty(self.frames)
            terms[0] = start - cum_y[0]
            terms[1:] = phi[:-1] - cum_y[:-1]
            ending_label = np.logaddexp.accumulate(terms) + cum_y
            cum_b = self._cumulative_blank
            terms_b = np.empty(self.frames)
            terms_b[0] = NEG_INF
            terms_b[1:] = ending_label[:-1] - cum_b[:-1]
            ending_blank = np.logaddexp.accumulate(terms_b) + cum_b
        emitted = phi[:-1] + y[1:]
        top = max(start, float(emitted.max()) if emitted.size else NEG_INF)
        if top == NEG_INF:
            score = NEG_INF
        else:
            score = top + math.log(math.exp(start - top) + float(np.exp(emitted - top).sum()))
        return CtcState(ending_label, ending_blank, label, score, state.length + 1)

    def extend_all(self, state: CtcState, labels: Sequence[int]) -> CtcState:
        for label in labels:
            state = self.extend(state, label)
        return state

    def final(self, state: CtcState) -> float:
        """log P(the transcript is exactly this prefix)."""
        if self.frames == 0:
            return 0.0 if state.length == 0 else NEG_INF
        return float(np.logaddexp(state.ending_label[-1], state.ending_blank[-1]))


# -- the decoder graphs ---------------------------------------------------------------------------


def cross_feeds(settings: DecoderSettings, cross: Tuple[np.ndarray, np.ndarray]) -> Dict[str, np.ndarray]:
    """The cross graph's keys and values [layers, 1, heads, frames, head_dim] as the step graph reads
    them: stacked, or one input per layer (`DecoderSettings.per_layer_cross`; each a view, no copy)."""
    keys, values = cross
    if not settings.per_layer_cross:
        return {"cross_k": keys, "cross_v": values}
    layers = [*keys, *values]
    return dict(zip(settings.cross_inputs(), layers))


class AttentionDecoder:
    """The bundle's decoder graphs and token table (`bundle.DecoderSettings`)."""

    def __init__(self, folder: Path, settings: DecoderSettings, threads: int, arena: bool = False):
        self.settings = settings
        self.cross_session = session(folder / settings.cross, threads, arena)
        self.step_session = session(folder / settings.step, threads, arena)
        self.tokens = TokenTable.load(folder / settings.tokens)
        width = self.step_session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.tokens):
            raise BundleError(
                f"{folder / settings.step}: the decoder scores {width} tokens but {settings.tokens} lists "
                f"{len(self.tokens)}; the bundle mixes files from different models"
            )
        inputs = {i.name for i in self.step_session.get_inputs()}
        missing = [name for name in settings.cross_inputs() if name not in inputs]
        if missing:
            layout = "one per layer" if settings.per_layer_cross else "stacked"
            raise BundleError(
                f"{folder / settings.step}: the step graph has no input(s) {', '.join(missing)}, though "
                f"bundle.json says it reads the cross keys and values {layout}; the bundle mixes files "
                "from different exports: copy the bundle again, or re-export it with `python -m quantize`"
            )
        self._cross_in = self.cross_session.get_inputs()[0].name

    def cross(self, states: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Encoder states [frames, d] -> the cross-attention keys and values of every layer."""
        k, v = self.cross_session.run(None, {self._cross_in: states[None].astype(np.float32, copy=False)})
        return k, v

    def empty_cache(self, beams: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        s = self.settings
        cache = np.zeros((s.layers, beams, s.heads, 0, s.head_dim), dtype=np.float32)
        return cache, cache

    def step(
        self,
        tokens: np.ndarray,
        cache: Tuple[np.ndarray, np.ndarray],
        cross: Tuple[np.ndarray, np.ndarray],
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """tokens [beams, n] after `cache` -> (log-probs [beams, vocab], the grown cache)."""
        feeds = {"tokens": tokens.astype(np.int64, copy=False), "self_k": cache[0], "self_v": cache[1]}
        feeds.update(cross_feeds(self.settings, cross))
        log_probs, self_k, self_v = self.step_session.run(None, feeds)
        return log_probs, (self_k, self_v)

    # The tokens never written, and those not written first, are fixed per bundle: found once.
    @cached_property
    def banned_ids(self) -> np.ndarray:
        """Ids of the tokens never written (specials but end of text, Whisper's suppress list)."""
        s = self.settings
        mask = np.zeros(len(self.tokens), dtype=bool)
        mask[s.special_from :] = True
        mask[[i for i in s.suppress if i < mask.size]] = True
        mask[s.eot] = False
        return np.flatnonzero(mask)

    @cached_property
    def banned_first_ids(self) -> np.ndarray:
        """`banned_ids` and the ids not written as the first token (a bare space, end of text)."""
        first = [i for i in self.settings.suppress_at_begin if i < len(self.tokens)]
        return np.union1d(self.banned_ids, first)


# -- the search -----------------------------------------------------------------------------------


@dataclass
class Hypothesis:
    tokens: List[int]
    text: TextState
    ctc: CtcState
    score: float  # decoder log-probs + ctc_weight * CTC prefix score
    finished: bool = False


@dataclass
class SearchResult:
    """The joint search's answer for one segment."""

    tokens: List[int]
    text: str
    labels: List[int]  # the CTC labels of `text`
    hit_bound: bool = False
    steps: int = 0


def joint_search(
    decoder: AttentionDecoder,
    ctc_text: CtcText,
    log_probs: np.ndarray,
    states: np.ndarray,
    blank_id: int,
    seconds: float,
    ctc_weight: Optional[float] = None,
    beam_size: Optional[int] = None,
) -> SearchResult:
    """The best transcript of one segment by joint scoring (see the module docstring)."""
    s = decoder.settings
    weight = s.ctc_weight if ctc_weight is None else ctc_weight
    beams = s.beam_size if beam_size is None else beam_size
    scorer = CtcPrefixScorer(log_probs, blank_id)
    cross = decoder.cross(states)
    bound = min(
        s.max_positions - len(s.prompt),
        s.min_tokens + int(math.ceil(seconds * s.max_tokens_per_second)),
    )
    alive = [Hypothesis([], TextState(), scorer.initial(), 0.0)]
    finished: List[Hypothesis] = []
    best_done = NEG_INF  # the best finished hypothesis' score
    logp, cache = decoder.step(np.array([s.prompt], dtype=np.int64), decoder.empty_cache(1), cross)
    steps = 0
    for step in range(bound):
        steps = step + 1
        logp[:, decoder.banned_first_ids if step == 0 else decoder.banned_ids] = NEG_INF
        tops = [_top_tokens(row, CANDIDATES) for row in logp]
        # Each candidate's score can only fall below hypothesis + decoder log-prob (a CTC prefix score
        # change is <= 0), so candidates are tried best bound first, and the CTC work is skipped for
        # one whose bound cannot beat what is already kept: the same result, far fewer CTC passes.
        bounds = sorted(
            (
                (hyp.score + float(logp[index, token]), index, int(token))
                for index, hyp in enumerate(alive)
                for token in {*tops[index].tolist(), s.eot}
                if logp[index, token] > NEG_INF
            ),
            reverse=True,
        )
        next_alive: List[Hypothesis] = []
        parents: List[int] = []
        for upper, index, token in bounds:
            if upper <= best_done:
                continue  # cannot beat a finished hypothesis
            if token != s.eot and len(next_alive) == beams and upper <= next_alive[-1].score:
                continue  # cannot enter the beam (end of text competes with finished ones only)
            child = _expand(alive[index], token, float(logp[index, token]), decoder, ctc_text, scorer, weight)
            if child.score == NEG_INF:
                continue
            if child.finished:
                finished.append(child)
                best_done = max(best_done, child.score)
                continue
            position = next((i for i, h in enumerate(next_alive) if h.score < child.score), len(next_alive))
            next_alive.insert(position, child)
            parents.insert(position, index)
            del next_alive[beams:], parents[beams:]
        # Scores only fall as a hypothesis grows (log-probs and prefix-score changes are <= 0), so
        # one that already trails a finished hypothesis can never overtake it.
        kept = [(h, p) for h, p in zip(next_alive, parents) if h.score > best_done]
        if not kept:
            alive = []
            break
        alive = [h for h, _ in kept]
        if steps == bound:
            break  # the bound: no step is run for tokens that will not be written
        keep = [p for _, p in kept]
        cache = (cache[0][:, keep], cache[1][:, keep])
        tokens = np.array([[h.tokens[-1]] for h in alive], dtype=np.int64)
        logp, cache = decoder.step(tokens, cache, cross)
    cut: List[Hypothesis] = []
    if alive:  # the bound stopped the search: close what is alive as it stands
        for hyp in alive:
            state = scorer.extend_all(hyp.ctc, ctc_text.finish(hyp.text))
            score = hyp.score + weight * (scorer.final(state) - hyp.ctc.score)
            cut.append(Hypothesis(hyp.tokens, hyp.text, state, score, True))
    if not finished and not cut:  # nothing reachable (CTC allows no text): end at once
        return SearchResult([], "", [], False, steps)
    best = max(finished + cut, key=lambda h: h.score)
    text = decoder.tokens.text(best.tokens).strip()
    return SearchResult(best.tokens, text, ctc_text.labels_of(text), any(best is h for h in cut), steps)


def _top_tokens(row: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest entries' indices (any order). Almost every step the decoder is sure of a
    few tokens and puts the rest far below, so the top ones are found among the entries within
    `_TOP_MARGIN` of the best (one comparison over the vocabulary) rather than by partitioning all
    51,864 (a few ms a step); exact either way."""
    near = np.flatnonzero(row >= row.max() - _TOP_MARGIN)
    if near.size < count:
        near = np.arange(row.size)
    if near.size <= count:
        return near
    return near[np.argpartition(row[near], -count)[-count:]]


_TOP_MARGIN = 12.0


def _expand(
    hyp: Hypothesis,
    token: int,
    token_logp: float,
    decoder: AttentionDecoder,
    ctc_text: CtcText,
    scorer: CtcPrefixScorer,
    weight: float,
) -> Hypothesis:
    if token == decoder.settings.eot:
        state = scorer.extend_all(hyp.ctc, ctc_text.finish(hyp.text))
        gain = scorer.final(state) - hyp.ctc.score
        return Hypothesis(hyp.tokens, hyp.text, state, hyp.score + token_logp + weight * gain, True)
    labels, text_state = ctc_text.extend(hyp.text, decoder.tokens.piece(token))
    state = scorer.extend_all(hyp.ctc, labels) if labels else hyp.ctc
    gain = state.score - hyp.ctc.score if labels else 0.0
    return Hypothesis(hyp.tokens + [token], text_state, state, hyp.score + token_logp + weight * gain)


# -- alignment ------------------------------------------------------------------------------------


def ctc_align(log_probs: np.ndarray, labels: Sequence[int], blank_id: int) -> Optional[np.ndarray]:
    """The most likely frame path (one id per frame) that collapses to `labels`; None when the frames
    are too few for them."""
    frames = log_probs.shape[0]
    extended = [blank_id]
    for label in labels:
        extended += [label, blank_id]
    size = len(extended)
    ext = np.array(extended)
    # A state may skip the blank before it when its label differs from the one two states back.
    skip = np.zeros(size, dtype=bool)
    skip[2:] = (ext[2:] != blank_id) & (ext[2:] != ext[:-2])
    emit = log_probs[:, ext].astype(np.float64)
    score = np.full(size, NEG_INF)
    score[0] = emit[0, 0]
    if size > 1:
        score[1] = emit[0, 1]
    back = np.zeros((frames, size), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        stay = score
        step = np.concatenate(([NEG_INF], score[:-1]))
        jump = np.where(skip, np.concatenate(([NEG_INF, NEG_INF], score[:-2])), NEG_INF)
        choice = np.argmax(np.stack((stay, step, jump)), axis=0)
        best = np.choose(choice, (stay, step, jump))
        back[t] = choice
        score = best + emit[t]
    ends = [size - 1] + ([size - 2] if size > 1 else [])
    last = max(ends, key=lambda s: score[s])
    if score[last] == NEG_INF:
        return None
    path = np.empty(frames, dtype=np.int32)
    state = last
    for t in range(frames - 1, -1, -1):
        path[t] = ext[state]
        state -= int(back[t, state])
    return path


# -- the frame decoder ----------------------------------------------------------------------------


@dataclass
class JointStats:
    """What the joint decoder did, for logs and benchmarks."""

    segments: int = 0
    gated: int = 0  # segments whose CTC path was empty: the decoder did not run
    tokens: int = 0
    hit_bound: int = 0
    unaligned: int = 0  # segments whose text could not be aligned (their CTC path was kept)

    def add(self, other: JointStats) -> None:
        self.segments += other.segments
        self.gated += other.gated
        self.tokens += other.tokens
        self.hit_bound += other.hit_bound
        self.unaligned += other.unaligned


@dataclass
class _Segment:
    frames: int
    display: str  # the decoder's text ("" when gated)


class JointDecoder:
    """The `ctc.FrameDecoder` of joint decoding: `push` [frames, vocab + d] rows (log-probs, then the
    encoder states: `model.CtcModel.frame_rows`), `finish` the aligned frame ids and scores, and
    `display_words` the words with the decoder's casing and punctuation (`display`: False keeps the
    normalized words, as `--lowercase` asks)."""

    def __init__(
        self,
        decoder: AttentionDecoder,
        vocabulary: Vocabulary,
        normalization: TextNormalization,
        frame_seconds: float,
        ctc_weight: Optional[float] = None,
        beam_size: Optional[int] = None,
        display: bool = True,
    ):
        self.decoder = decoder
        self.display = display
        self.vocabulary = vocabulary
        self.ctc_text = CtcText(vocabulary, normalization)
        self.frame_seconds = frame_seconds
        self.ctc_weight = ctc_weight
        self.beam_size = beam_size
        self.stats = JointStats()
        self._vocab = len(vocabulary.tokens)
        self._window: Optional[Tuple[np.ndarray, int, int]] = None  # (rows, first frame, core end)
        self._start = 0  # first frame not decoded yet
        self._end = 0  # frames pushed
        self._ids: List[np.ndarray] = []
        self._scores: List[np.ndarray] = []
        self._segments: List[_Segment] = []

    def push(self, rows: np.ndarray) -> None:
        """Consecutive frames without context (the `FrameDecoder` protocol): each push is decoded
        as its own segment. Files and streams give whole windows instead (`push_window`)."""
        self.push_window(rows, self._end, self._end, self._end + rows.shape[0])

    def push_window(self, window: np.ndarray, first: int, core_start: int, core_end: int) -> None:
        """One runner window's rows, context included: its row 0 is global frame `first`, and it
        contributes the frames `core_start` to `core_end` (`windows.WindowedRunner`).

        Why windows and not stitched frames: Whisper's encoder adds positions per window, so states
        stitched from two windows jump back in position, and the decoder then skips or repeats
        words. So each segment is decoded from one window's own states: the held window is decoded
        up to a silence in its last frames that the next window also covers (its left context), and
        the rest is decoded with the next window.
        """
        width = self._vocab + self.decoder.settings.state_dim
        if window.ndim != 2 or window.shape[1] != width:
            raise BundleError(
                f"the model gave rows {window.shape[-1]} wide where joint decoding needs the vocabulary "
                f"({self._vocab}) and the encoder states ({self.decoder.settings.state_dim}); the bundle's "
                "graph lacks its encoder_states output. Re-export it with `python -m quantize convert "
                "--decoder`, or decode with --decoder ctc"
            )
        if core_start != self._end or not first <= core_start <= core_end <= first + window.shape[0]:
            raise ValueError(f"windows must follow each other: core {core_start} after frame {self._end}")
        if self._window is not None:
            self._settle(next_first=first)
        self._window = (window, first, core_end)
        self._end = core_end

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._window is not None:
            window, first, core_end = self._window
            self._decode_range(window, first, core_end)
            self._window = None
        if not self._ids:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return np.concatenate(self._ids), np.concatenate(self._scores)

    def _settle(self, next_first: int) -> None:
        """Decode the held window up to where the next window (starting at `next_first`) can go on."""
        assert self._window is not None
        window, first, core_end = self._window
        overlap_from = max(self._start, next_first)
        cut = core_end
        if overlap_from < core_end:
            cut = overlap_from + self._silence(window[overlap_from - first : core_end - first, : self._vocab])
        self._decode_range(window, first, cut)

    def _silence(self, log_probs: np.ndarray) -> int:
        """The middle of the longest run of silent frames (a pause, or at least a gap between letters)
        in `log_probs`; its end when it has none."""
        ids, _ = best_path(log_probs, self.vocabulary.blank_id)
        silent = np.isin(ids, self.vocabulary.silent_ids())
        best_len, best_mid, run = 0, log_probs.shape[0], 0
        for t in range(log_probs.shape[0]):
            run = run + 1 if silent[t] else 0
            if run > best_len:
                best_len, best_mid = run, t - run // 2
        return int(best_mid)

    def _decode_range(self, window: np.ndarray, first: int, cut: int) -> None:
        if cut > self._start:
            self._decode(window[self._start - first : cut - first])
            self._start = cut

    def _decode(self, rows: np.ndarray) -> None:
        log_probs = rows[:, : self._vocab]
        states = rows[:, self._vocab :]
        vocab = self.vocabulary
        greedy, greedy_scores = best_path(log_probs, vocab.blank_id)
        self.stats.segments += 1
        tokens, _, _ = token_runs(greedy, vocab.silent_ids())
        speech = [t for t in tokens.tolist() if not vocab.is_delimiter(vocab.tokens[t])]
        if not speech:  # silence or noise: nothing to write, and no decoder run
            self.stats.gated += 1
            self._add(rows.shape[0], "", greedy, greedy_scores)
            return
        result = joint_search(
            self.decoder, self.ctc_text, log_probs, states, vocab.blank_id,
            rows.shape[0] * self.frame_seconds, self.ctc_weight, self.beam_size,
        )  # fmt: skip
        self.stats.tokens += len(result.tokens)
        self.stats.hit_bound += int(result.hit_bound)
        path = ctc_align(log_probs, result.labels, vocab.blank_id) if result.labels else None
        if path is None:  # nothing CTC can write, or too little time for it: keep what CTC heard
            self.stats.unaligned += int(bool(result.labels))
            self._add(rows.shape[0], vocab.spell(tokens.tolist()), greedy, greedy_scores)
            return
        scores = np.take_along_axis(log_probs, path[:, None].astype(np.int64), axis=1)[:, 0]
        self._add(rows.shape[0], result.text, path, scores.astype(np.float32))

    def _add(self, frames: int, display: str, ids: np.ndarray, scores: np.ndarray) -> None:
        """Keep a decoded segment (it starts at frame `_start`, which the caller then moves on)."""
        ids = ids.astype(np.int32, copy=True)
        delimiter = self.ctc_text.delimiter
        # A segment boundary ends a word: mark it where the path is silent there.
        if self._start and delimiter is not None and ids.size and ids[0] == self.vocabulary.blank_id:
            ids[0] = delimiter
        self._ids.append(ids)
        self._scores.append(scores)
        self._segments.append(_Segment(frames, display))

    @property
    def text(self) -> str:
        """The decoder's text of every segment (casing and punctuation kept)."""
        return " ".join(segment.display for segment in self._segments if segment.display)

    def display_words(self, words: Sequence[Word]) -> Tuple[str, List[Word]]:
        """(text, words) with the decoder's spelling: each display word takes the times and
        confidence of the aligned words its normalized form makes ("log-in" spans "log" and "in";
        a mark alone, like "-", joins the word before it). Falls back to `words` as they are when the
        two do not line up."""
        display = self.text.split()
        counts = [len(self._words_of(word)) for word in display]
        if sum(counts) != len(words):
            return " ".join(w.text for w in words), list(words)
        out: List[Word] = []
        position = 0
        pending_prefix = ""
        for word, count in zip(display, counts):
            if count == 0:
                if out:
                    last = out[-1]
                    out[-1] = Word(f"{last.text} {word}", last.start, last.end, last.confidence)
                else:
                    pending_prefix += word + " "
                continue
            span = words[position : position + count]
            position += count
            confidence = float(np.exp(np.mean([np.log(max(w.confidence, 1e-9)) for w in span])))
            out.append(Word(pending_prefix + word, span[0].start, span[-1].end, round(confidence, 4)))
            pending_prefix = ""
        return " ".join(w.text for w in out), out

    def _words_of(self, word: str) -> List[str]:
        labels = self.ctc_text.labels_of(word)
        return [w for w in self.vocabulary.spell(labels).split(" ") if w]


def push_core(decoder: FrameDecoder, runner: WindowedRunner, first: int, core: np.ndarray) -> None:
    """Give `decoder` the core `runner` just yielded: a `JointDecoder` takes the whole window it came
    from (`JointDecoder.push_window`), any other decoder the core."""
    if isinstance(decoder, JointDecoder) and runner.last_window is not None:
        decoder.push_window(runner.last_window, runner.last_window_first, first, first + core.shape[0])
    else:
        decoder.push(core)


def finish_decoding(
    decoder: FrameDecoder, vocabulary: Vocabulary, frame_seconds: float
) -> Tuple[str, List[Char], List[Word]]:
    """End `decoder` and spell what it found: (text, chars, words) with times. A `JointDecoder` that
    keeps its display form gives the decoder's casing and punctuation; any other gives CTC's text."""
    ids, scores = decoder.finish()
    text, chars, words = decode(ids, vocabulary, frame_seconds, scores)
    if isinstance(decoder, JointDecoder) and decoder.display:
        text, words = decoder.display_words(words)
    return text, chars, words
