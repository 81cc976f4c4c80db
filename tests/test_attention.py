"""Joint CTC/attention decoding (edge_asr.attention), piece by piece, with small exact cases and a
scripted stand-in for the decoder graphs: no model files, no torch."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest

from edge_asr.attention import (
    AttentionDecoder,
    CtcPrefixScorer,
    CtcText,
    JointDecoder,
    TextState,
    TokenTable,
    _bytes_to_unicode,
    ctc_align,
    joint_search,
)
from edge_asr.bundle import DecoderSettings
from edge_asr.ctc import Vocabulary
from edge_asr.results import Word
from edge_asr.text import TextNormalization

TOKENS = ["[PAD]", "[UNK]", "|", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = Vocabulary(TOKENS, 0, "|", (0, 1))
NORM = TextNormalization()


def _bpe(text: bytes) -> str:
    table = _bytes_to_unicode()
    return "".join(table[b] for b in text)


def test_token_table_joins_a_character_split_across_tokens() -> None:
    word = "h\u00e9llo \u65e5\u672c".encode()  # 2-byte and 3-byte characters
    pieces = [word[:2], word[2:4], word[4:9], word[9:]]  # cuts inside both multi-byte characters
    table = TokenTable([_bpe(p) for p in pieces])
    assert table.text([0, 1, 2, 3]) == "h\u00e9llo \u65e5\u672c"
    assert table.piece(0) == "h"  # a lone piece drops the partial character instead of failing


def _labels(text: str) -> List[int]:
    return [TOKENS.index(c) for c in text]


def test_ctc_text_follows_the_training_labels_and_only_ever_grows() -> None:
    ctc_text = CtcText(VOCAB, NORM)
    assert ctc_text.labels_of("Hello, world!") == _labels("hello|world")
    assert ctc_text.labels_of("Log-in. I'm 19.") == _labels("log|in|i'm|nineteen")
    assert ctc_text.labels_of("$5 and 10%") == _labels("five|dollars|and|ten|percent")
    # Token by token gives what the whole text gives: the number is written once it is complete.
    pieces = [" Press", " 1", "9", "84", " now", "."]
    state, labels = TextState(), []
    for piece in pieces:
        added, state = ctc_text.extend(state, piece)
        labels += added
    assert labels + ctc_text.finish(state) == ctc_text.labels_of("".join(pieces))
    assert ctc_text.labels_of("".join(pieces)) == _labels("press|nineteen|eighty|four|now")


def _path_probabilities(log_probs: np.ndarray, blank: int) -> Dict[Tuple[int, ...], float]:
    """Every frame path's collapsed labels -> total probability (brute force)."""
    frames, vocab = log_probs.shape
    totals: Dict[Tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = [k for i, k in enumerate(path) if k != blank and (i == 0 or path[i - 1] != k)]
        p = math.exp(sum(log_probs[t, k] for t, k in enumerate(path)))
        totals[tuple(collapsed)] = totals.get(tuple(collapsed), 0.0) + p
    return totals


def _random_log_probs(rng: np.random.Generator, frames: int, vocab: int) -> np.ndarray:
    logits = rng.normal(size=(frames, vocab)) * 1.5
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_scores_equal_a_brute_force_sum_over_paths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    log_probs = _random_log_probs(rng, 5, 3)  # blank 0, labels 1 and 2: 243 paths
    totals = _path_probabilities(log_probs, 0)
    scorer = CtcPrefixScorer(log_probs, 0)
    for prefix in [(1,), (2,), (1, 1), (1, 2), (2, 2, 1), (1, 2, 1)]:
        state = scorer.extend_all(scorer.initial(), prefix)
        starts = sum(p for seq, p in totals.items() if seq[: len(prefix)] == prefix)
        exact = totals.get(prefix, 0.0)
        assert state.score == pytest.approx(math.log(starts), abs=1e-9)
        assert scorer.final(state) == pytest.approx(math.log(exact) if exact else -math.inf, abs=1e-9)
    assert scorer.final(scorer.initial()) == pytest.approx(math.log(totals[()]), abs=1e-9)


def test_forced_alignment_is_the_best_path_that_spells_the_labels() -> None:
    rng = np.random.default_rng(3)
    log_probs = _random_log_probs(rng, 6, 3)
    labels = [1, 1, 2]
    path = ctc_align(log_probs, labels, 0)
    assert path is not None
    collapsed = [int(k) for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
    assert collapsed == labels
    best = max(
        sum(log_probs[t, k] for t, k in enumerate(p))
        for p in itertools.product(range(3), repeat=6)
        if [k for i, k in enumerate(p) if k != 0 and (i == 0 or p[i - 1] != k)] == labels
    )
    assert sum(log_probs[t, k] for t, k in enumerate(path)) == pytest.approx(best)
    assert ctc_align(log_probs[:2], labels, 0) is None  # 2 frames cannot hold "a a b" (needs 4)


# -- a scripted decoder --------------------------------------------------------------------------

WORDS = ["<eot>", "<sot>", " the", " cat", " sat", "."]
EOT, SOT = 0, 1


class ScriptedDecoder(AttentionDecoder):
    """Stands in for the ONNX graphs: each step's log-probs come from `next_token(history)`."""

    def __init__(self, prefer: Dict[Tuple[int, ...], int], confidence: float = 3.0):
        self.settings = DecoderSettings(
            cross="c", step="s", tokens="t", prompt=[SOT], eot=EOT, suppress=[], suppress_at_begin=[EOT],
            special_from=len(WORDS), layers=1, heads=1, head_dim=2, max_positions=64,
            ctc_weight=0.3, max_tokens_per_second=4.0, min_tokens=2,
        )  # fmt: skip
        self.tokens = TokenTable([_bpe(w.encode()) if not w.startswith("<") else w for w in WORDS])
        self.prefer = prefer
        self.confidence = confidence
        self.steps = 0

    def cross(self, states: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return states, states

    def empty_cache(self, beams: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        empty = np.zeros((1, beams, 0), dtype=np.int64)
        return empty, empty

    def step(
        self, tokens: np.ndarray, cache: Tuple[np.ndarray, np.ndarray], cross: Tuple[np.ndarray, np.ndarray]
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        self.steps += 1
        history = np.concatenate((cache[0], tokens[None, :, :]), axis=2)  # the "cache" is the token history
        rows = []
        for beam in history[0]:
            said = tuple(int(t) for t in beam[1:])  # without the prompt
            logits = np.zeros(len(WORDS))
            logits[5] = -2.0  # like Whisper, it seldom writes a lone mark
            logits[self.prefer.get(said, self.prefer.get((), 2))] = self.confidence
            rows.append(logits - np.log(np.exp(logits).sum()))
        return np.array(rows), (history, history)


def _speech(text: str, frames_per_letter: int = 3, vocab: Sequence[str] = TOKENS) -> np.ndarray:
    """CTC log-probs that clearly say `text` ("|" between words), one label per few frames."""
    ids: List[int] = [0, 0]
    for char in text:
        ids += [vocab.index(char)] * frames_per_letter + [0]
    ids += [0, 0]
    log_probs = np.full((len(ids), len(vocab)), math.log(0.02 / (len(vocab) - 1)))
    log_probs[np.arange(len(ids)), ids] = math.log(0.98)
    return log_probs


def test_ctc_steers_a_decoder_that_would_loop_and_the_bound_cuts_it_without_ctc() -> None:
    # " the cat sat the cat sat ...": never ends by itself
    loops = {(): 2, (2,): 3, (2, 3): 4, (2, 3, 4): 2, (2, 3, 4, 2): 3, (2, 3, 4, 2, 3): 4}
    log_probs = _speech("the|cat|sat")
    states = np.zeros((log_probs.shape[0], 2), dtype=np.float32)
    seconds = log_probs.shape[0] * 0.02
    looping = ScriptedDecoder({**{k: v for k, v in loops.items()}, (2, 3, 4, 2, 3, 4): 2}, confidence=6.0)
    alone = joint_search(looping, CtcText(VOCAB, NORM), log_probs, states, 0, seconds, ctc_weight=0.0)
    assert alone.hit_bound
    assert len(alone.tokens) == looping.settings.min_tokens + math.ceil(seconds * 4.0)
    steered = joint_search(looping, CtcText(VOCAB, NORM), log_probs, states, 0, seconds, ctc_weight=0.3)
    assert not steered.hit_bound
    assert steered.text == "the cat sat"
    assert steered.labels == _labels("the|cat|sat")


def test_greedy_and_beam_follow_ctc_where_the_decoder_prefers_another_word() -> None:
    # The decoder slightly prefers " the" first, but CTC says "cat sat".
    decoder = ScriptedDecoder({(): 2, (3,): 4, (3, 4): 0, (2,): 0}, confidence=0.5)
    log_probs = _speech("cat|sat")
    states = np.zeros((log_probs.shape[0], 2), dtype=np.float32)
    for beams in (1, 3):
        result = joint_search(decoder, CtcText(VOCAB, NORM), log_probs, states, 0, 1.0, 1.0, beams)
        assert result.text == "cat sat"


def _rows(log_probs: np.ndarray, width: int = 2) -> np.ndarray:
    return np.concatenate((log_probs, np.zeros((log_probs.shape[0], width))), axis=1)


def test_an_empty_ctc_path_gives_no_text_and_never_runs_the_decoder() -> None:
    decoder = ScriptedDecoder({(): 2})
    joint = JointDecoder(decoder, VOCAB, NORM, 0.02)
    silence = np.full((200, len(TOKENS)), math.log(0.001 / (len(TOKENS) - 1)))
    silence[:, 0] = math.log(0.999)
    joint.push(_rows(silence))
    ids, scores = joint.finish()
    assert ids.shape == (200,) and scores.shape == (200,)
    assert joint.text == "" and decoder.steps == 0 and joint.stats.gated == 1


def test_display_words_keep_the_decoders_spelling_with_aligned_times() -> None:
    decoder = ScriptedDecoder({(): 2, (2,): 3, (2, 3): 5, (2, 3, 5): 0}, confidence=4.0)
    joint = JointDecoder(decoder, VOCAB, NORM, 0.02)
    log_probs = _speech("the|cat")
    joint.push(_rows(log_probs))
    from edge_asr.attention import finish_decoding

    text, chars, words = finish_decoding(joint, VOCAB, 0.02)
    assert text == "the cat."
    assert [w.text for w in words] == ["the", "cat."]
    assert words[0].end <= words[1].start
    assert chars[0].text == "t"
    joint.display = False
    assert JointDecoder.display_words(joint, [Word("a", 0, 1)])[0] == "a"  # counts differ: kept as given


def test_each_segment_is_decoded_from_one_window_cut_at_a_silence_in_the_overlap() -> None:
    decoder = ScriptedDecoder({(): 3, (3,): 4, (3, 4): 0})  # " cat sat" each segment
    joint = JointDecoder(decoder, VOCAB, NORM, 0.02)
    said = _speech("cat|sat")  # 30 frames
    gap = np.full((12, len(TOKENS)), math.log(0.001 / (len(TOKENS) - 1)))
    gap[:, 0] = math.log(0.999)
    whole = _rows(np.concatenate((said, gap, said)))  # 72 frames; the pause at 30-42
    # Two windows as a runner makes them: cores 0-36 and 36-72, the second with 12 frames before it.
    joint.push_window(whole[:40], 0, 0, 36)
    joint.push_window(whole[24:], 24, 36, 72)
    from edge_asr.attention import finish_decoding

    text, _, words = finish_decoding(joint, VOCAB, 0.02)
    assert joint.stats.segments == 2
    assert 30 <= joint._segments[0].frames <= 36  # cut inside the pause, where both windows overlap
    assert text == "cat sat cat sat"
    assert [w.text for w in words] == ["cat", "sat", "cat", "sat"]
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
    with pytest.raises(ValueError, match="follow"):
        joint.push_window(whole[:10], 0, 0, 10)


def test_token_table_file_errors_name_the_file(tmp_path: Path) -> None:
    from edge_asr.errors import BundleError

    bad = tmp_path / "decoder_tokens.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(BundleError, match="decoder_tokens.json"):
        TokenTable.load(bad)


class RandomDecoder(ScriptedDecoder):
    """Seeded random log-probs for every history: a decoder with opinions but no English."""

    def __init__(self, seed: int):
        super().__init__({})
        self.seed = seed

    def step(
        self, tokens: np.ndarray, cache: Tuple[np.ndarray, np.ndarray], cross: Tuple[np.ndarray, np.ndarray]
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        history = np.concatenate((cache[0], tokens[None, :, :]), axis=2)
        rows = []
        for beam in history[0]:
            rng = np.random.default_rng([self.seed, *[int(t) for t in beam]])
            logits = rng.normal(size=len(WORDS)) * 2.0
            rows.append(logits - np.log(np.exp(logits).sum()))
        return np.array(rows), (history, history)


def _reference_search(
    decoder: AttentionDecoder, log_probs: np.ndarray, weight: float, beams: int, bound: int
) -> str:
    """The search without its pruning: every candidate of every hypothesis CTC-scored."""
    from edge_asr.attention import Hypothesis, _expand

    s = decoder.settings
    ctc_text, scorer = CtcText(VOCAB, NORM), CtcPrefixScorer(log_probs, 0)
    alive = [Hypothesis([], TextState(), scorer.initial(), 0.0)]
    finished: List[Hypothesis] = []
    cache = decoder.empty_cache(1)
    logp, cache = decoder.step(np.array([s.prompt]), cache, (log_probs, log_probs))
    for step in range(bound):
        banned = set(range(s.special_from, len(WORDS))) | (set(s.suppress_at_begin) if step == 0 else set())
        children = []
        for index, hyp in enumerate(alive):
            row = logp[index].copy()
            row[[t for t in banned if t != s.eot or step == 0]] = -np.inf
            top = [int(t) for t in np.argsort(-row)[:6] if row[t] > -np.inf]
            top += [s.eot] if row[s.eot] > -np.inf else []
            for token in set(top):
                child = _expand(hyp, token, float(row[token]), decoder, ctc_text, scorer, weight)
                if child.score > -np.inf:
                    children.append((child, index))
        children.sort(key=lambda c: -c[0].score)
        finished += [c for c, _ in children if c.finished]
        best_done = max((h.score for h in finished), default=-np.inf)
        kept = [(c, i) for c, i in children if not c.finished][:beams]
        kept = [(c, i) for c, i in kept if c.score > best_done]
        if not kept:
            return decoder.tokens.text(max(finished, key=lambda h: h.score).tokens).strip()
        alive = [c for c, _ in kept]
        cache = (cache[0][:, [i for _, i in kept]], cache[1][:, [i for _, i in kept]])
        logp, cache = decoder.step(np.array([[h.tokens[-1]] for h in alive]), cache, (log_probs, log_probs))
    return "(bound)"


@pytest.mark.parametrize("seed", range(12))
def test_the_pruned_search_finds_what_scoring_every_candidate_finds(seed: int) -> None:
    decoder = RandomDecoder(seed)
    log_probs = _speech(["the|cat", "cat|sat", "sat", "the|cat|sat"][seed % 4], frames_per_letter=2)
    states = np.zeros((log_probs.shape[0], 2), dtype=np.float32)
    for weight, beams in ((0.3, 1), (0.1, 4), (1.0, 3)):
        result = joint_search(decoder, CtcText(VOCAB, NORM), log_probs, states, 0, 4.0, weight, beams)
        bound = decoder.settings.min_tokens + math.ceil(4.0 * decoder.settings.max_tokens_per_second)
        expected = _reference_search(decoder, log_probs, weight, beams, bound)
        assert result.text == expected or (result.hit_bound and expected == "(bound)"), (weight, beams)
