import numpy as np
import pytest

from edge_asr.ctc import GreedyDecoder, Vocabulary, best_path, decode, greedy_decode, token_runs

TOKENS = ["<pad>", "<unk>", "|", "a", "b", "c"]
VOCAB = Vocabulary(TOKENS, blank_id=0, word_delimiter="|", special_ids=[1])
FRAME = 0.02


def one_hot_log_probs(ids, size=None, on=-0.01, off=-8.0):
    size = size or len(TOKENS)
    lp = np.full((len(ids), size), off, dtype=np.float32)
    lp[np.arange(len(ids)), ids] = on
    return lp


def test_repeats_collapse_and_blank_separates_doubles():
    # a a _ a b | | _ c c : "aa" needs a blank between, the doubled delimiter is one break
    ids = np.array([3, 3, 0, 3, 4, 2, 2, 0, 5, 5])
    tokens, starts, ends = token_runs(ids, VOCAB.silent_ids())
    assert tokens.tolist() == [3, 3, 4, 2, 5]
    assert starts.tolist() == [0, 3, 4, 5, 8]
    assert ends.tolist() == [2, 4, 5, 7, 10]
    text, chars, words = decode(ids, VOCAB, FRAME)
    assert text == "aab c"
    assert [(w.text, w.start, w.end) for w in words] == [("aab", 0.0, 0.1), ("c", 0.16, 0.2)]
    assert [(c.text, c.start, c.end) for c in chars] == [
        ("a", 0.0, 0.04),
        ("a", 0.06, 0.08),
        ("b", 0.08, 0.1),
        (" ", 0.1, 0.14),
        ("c", 0.16, 0.2),
    ]


def test_special_tokens_and_edge_delimiters_emit_nothing():
    ids = np.array([2, 1, 3, 1, 0, 2, 2])
    text, chars, words = decode(ids, VOCAB, FRAME)
    assert text == "a"
    assert [c.text for c in chars] == ["a"]
    assert len(words) == 1


def test_empty_and_all_blank_give_empty_text():
    assert decode(np.zeros(0, dtype=np.int32), VOCAB, FRAME) == ("", [], [])
    assert greedy_decode(one_hot_log_probs([0] * 50), VOCAB, FRAME) == ("", [], [])


def test_blank_penalty_lets_a_weaker_token_through():
    lp = np.log(np.array([[0.6, 0.0, 0.0, 0.4, 0.0, 0.0]] * 3, dtype=np.float32) + 1e-9)
    assert greedy_decode(lp, VOCAB, FRAME)[0] == ""
    assert greedy_decode(lp, VOCAB, FRAME, blank_penalty=0.5)[0] == "a"
    ids, scores = best_path(lp, blank_id=0, blank_penalty=0.5)
    # the reported score is the token's own log-probability, not the penalized one
    assert scores == pytest.approx(np.log([0.4] * 3), abs=1e-4)


def test_word_confidence_is_mean_frame_probability():
    probs = np.full((4, len(TOKENS)), 1e-6, dtype=np.float32)
    probs[0, 3] = 0.9
    probs[1, 3] = 0.5
    probs[2, 0] = 1.0
    probs[3, 4] = 0.8
    _, _, words = greedy_decode(np.log(probs), VOCAB, FRAME)
    assert words[0].text == "ab"
    assert words[0].confidence == pytest.approx(float(np.exp(np.log([0.9, 0.5, 0.8]).mean())), abs=1e-3)


def test_space_token_vocabulary_without_delimiter():
    vocab = Vocabulary(["_", " ", "x", "y"], blank_id=0, word_delimiter=None)
    text, _, words = decode(np.array([2, 1, 3, 3]), vocab, FRAME)
    assert text == "x y"
    assert [w.text for w in words] == ["x", "y"]


def test_a_repeat_across_chunks_merges_only_when_the_chunks_continue():
    ids = np.array([3, 3, 0, 4])
    assert token_runs(ids, VOCAB.silent_ids(), previous=3)[0].tolist() == [4]  # "a" went on from before
    assert token_runs(ids, VOCAB.silent_ids(), previous=0)[0].tolist() == [3, 4]


def test_spelling_joins_words_with_one_space():
    assert VOCAB.spell([2, 3, 2, 2, 4, 5, 2]) == "a bc"
    assert VOCAB.spell([]) == ""


def test_greedy_decoder_in_chunks_equals_one_pass():
    lp = one_hot_log_probs([3, 3, 0, 4, 2, 5, 5, 0, 5])
    decoder = GreedyDecoder(blank_id=0)
    for start in range(0, len(lp), 2):
        decoder.push(lp[start : start + 2])
    ids, scores = decoder.finish()
    assert decode(ids, VOCAB, FRAME, scores) == greedy_decode(lp, VOCAB, FRAME)
    assert GreedyDecoder(0).finish()[0].size == 0
