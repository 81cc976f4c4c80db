import numpy as np
import pytest

from edge_asr.beam import frame_decoder
from edge_asr.ctc import (
    WORD_GAP_SECONDS,
    GreedyDecoder,
    SilenceBreaks,
    Vocabulary,
    best_path,
    decode,
    greedy_decode,
    token_runs,
)

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


GAP = round(WORD_GAP_SECONDS / FRAME)  # frames of silence that end a word


def decode_through_frame_decoder(lp: np.ndarray, cuts=(), lm=None, options=None):
    """Decode as files and streams do (`beam.frame_decoder`), pushing the frames split at `cuts`."""
    decoder = frame_decoder(VOCAB, lm, options, frame_seconds=FRAME)
    for piece in np.split(lp, list(cuts)):
        decoder.push(piece)
    ids, scores = decoder.finish()
    return decode(ids, VOCAB, FRAME, scores)


@pytest.mark.parametrize(
    "cuts", [(), (3,), (4, 40), (3 + GAP // 2,), (3 + GAP - 1, 3 + GAP), tuple(range(1, 60))]
)
def test_a_long_silence_ends_a_word_without_a_delimiter_in_any_chunking(cuts):
    # "ab", a second of blanks and specials with no "|", then "ca": the collapse alone made "abca"
    # spanning the silence; the rule must hold wherever chunks (windows) cut the silence.
    silence = [0, 1] * (GAP // 2) + [0] * (GAP % 2)
    lp = one_hot_log_probs([3, 0, 4] + silence + [5, 0, 3])
    text, chars, words = decode_through_frame_decoder(lp, cuts)
    assert text == "ab ca"
    assert [(w.text, w.start, w.end) for w in words] == [
        ("ab", 0.0, 0.06),
        ("ca", round((3 + GAP) * FRAME, 3), round((6 + GAP) * FRAME, 3)),
    ]
    assert all(0.9 < w.confidence <= 1.0 for w in words)  # the marked frame costs the words nothing
    assert [c.text for c in chars] == ["a", "b", " ", "c", "a"]


def test_a_pause_shorter_than_the_gap_keeps_the_word_and_a_long_one_gives_one_break():
    short = one_hot_log_probs([3, 0, 4] + [0] * (GAP - 1) + [5])
    assert decode_through_frame_decoder(short)[0] == "abc"
    # Five gaps of silence, leading and trailing ones too: one word break, nothing else spelled.
    long = one_hot_log_probs([0] * GAP + [3] + [0] * (5 * GAP) + [4] + [0] * GAP)
    assert decode_through_frame_decoder(long, cuts=(GAP + 7,))[0] == "a b"


def test_silence_breaks_are_found_once_per_run_across_chunks():
    ids = np.array([3] + [0] * 7 + [4, 0, 0, 0, 5], dtype=np.int32)
    whole = SilenceBreaks(VOCAB, gap_frames=3).find(ids)
    assert whole.tolist() == [3, 11]  # the frame that completes each run of 3 silent frames
    pieces = SilenceBreaks(VOCAB, gap_frames=3)
    found = [start + f for start in range(ids.size) for f in pieces.find(ids[start : start + 1]).tolist()]
    assert found == whole.tolist()
    assert SilenceBreaks(VOCAB, gap_frames=3).mark_ids(ids).tolist() == [
        3,
        0,
        0,
        2,
        0,
        0,
        0,
        0,
        4,
        0,
        0,
        2,
        5,
    ]
