"""Character LM (quantize/lm_estimate.py and lm_files.py build, edge_asr/lm.py reads) and the CTC
prefix beam search."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf
from tone_model import VOCAB, token_frequency, tone_audio

from edge_asr.beam import BeamOptions, PrefixBeamDecoder, frame_decoder
from edge_asr.bundle import LM_FILE, load_bundle
from edge_asr.cli import main as edge_main
from edge_asr.ctc import Vocabulary, decode, greedy_decode
from edge_asr.errors import BundleError
from edge_asr.hotwords import Hotwords
from edge_asr.lm import WORD_BOUNDARY, CharLmArrays, CharNgramLM
from edge_asr.text import TextNormalization
from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions
from quantize.cli import main as quantize_main
from quantize.lm_estimate import estimate, to_model, tokens_of
from quantize.lm_files import backoff_dict, char_lm_from_arpa, ngram_dict, save_char_lm
from quantize.lm_tune import LmScorer
from quantize.manifest import EvalItem

TEXT = [
    "the cat sat on the mat",
    "a cat and a hat",
    "the cat ate the rat",
    "that cat is fat",
    "the hat is on the cat",
] * 3
CHARS = sorted({c for s in TEXT for c in s if c != " "})
SPEECH_VOCAB = ["<pad>", WORD_BOUNDARY, *CHARS]


def build_lm(tmp_path: Path, sentences: List[str] = TEXT, order: int = 4, min_count: int = 1) -> CharNgramLM:
    """Estimate, save as the bundle's lm.npz and load back, as `quantize lm` does."""
    path = tmp_path / LM_FILE
    save_char_lm(
        to_model(estimate([tokens_of(s) for s in sentences], order=order, min_count=min_count)), path
    )
    return CharNgramLM.load(path, SPEECH_VOCAB)


@pytest.mark.parametrize("min_count", [1, 2])
def test_every_context_is_a_probability_distribution(tmp_path: Path, min_count: int) -> None:
    lm = build_lm(tmp_path, order=5, min_count=min_count)
    outcomes = [WORD_BOUNDARY, *CHARS, lm.end]
    for text in ["", "the c", "a hat", "zzzz", "cat|is|f", "qqq|t"]:
        context = lm.start
        for token in tokens_of(text.replace("|", " ")):
            context = lm.extend(context, token)
        total = sum(math.exp(lm.logprob(context, t)) for t in outcomes)
        assert total == pytest.approx(1.0, abs=2e-3), (text, total)


def test_lm_prefers_the_spelling_it_was_trained_on(tmp_path: Path) -> None:
    lm = build_lm(tmp_path)
    assert lm.sentence_logprob(tokens_of("the cat sat")) > lm.sentence_logprob(tokens_of("tha cet sat")) + 5
    assert lm.order == 4


def test_pruning_drops_rare_long_ngrams_and_keeps_short_ones(tmp_path: Path) -> None:
    sentences = [tokens_of(s) for s in ["abcd", "abcd", "abce"]]
    full = estimate(sentences, order=4, min_count=1)
    pruned = estimate(sentences, order=4, min_count=2)
    grams = lambda entries: {" ".join(g) for level in entries for g, _, _ in level}  # noqa: E731
    assert "b c e" in grams(full) and "b c e" not in grams(pruned)
    assert "c e" in grams(pruned) and "b c d" in grams(pruned)


def test_plain_arpa_from_another_tool_is_read(tmp_path: Path) -> None:
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(
        "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-99\t<s>\t-0.3\n-0.5\ta\t-0.2\n-0.4\tb\n-0.6\t</s>\n"
        "\n\\2-grams:\n-0.1\t<s> a\n-0.2\ta b\n\n\\end\\\n"
    )
    lm = char_lm_from_arpa(arpa)
    ln10 = math.log(10)
    assert lm.logprob(lm.start, "a") == pytest.approx(-0.1 * ln10)
    assert lm.logprob("a", "b") == pytest.approx(-0.2 * ln10)
    assert lm.logprob("a", "a") == pytest.approx((-0.2 - 0.5) * ln10)  # backoff weight of "a"
    assert lm.logprob("b", "a") == pytest.approx(-0.5 * ln10)  # no backoff listed for "b"


def test_saved_model_loads_back_identical(tmp_path: Path) -> None:
    built = to_model(estimate([tokens_of(s) for s in TEXT], order=5))
    save_char_lm(built, tmp_path / "lm.npz")
    with np.load(tmp_path / "lm.npz") as data:
        assert data.files == list(CharLmArrays._fields)  # the layout edge_asr.lm defines and reads
    loaded = CharNgramLM.load(tmp_path / "lm.npz", SPEECH_VOCAB)
    assert loaded.order == 5 and loaded.ngram_counts() == built.ngram_counts()
    assert ngram_dict(loaded.table) == pytest.approx(ngram_dict(built.table), abs=1e-6)
    assert backoff_dict(loaded.table) == pytest.approx(backoff_dict(built.table), abs=1e-6)
    for text in ["the cat", "a rat sat", "qq"]:
        tokens = tokens_of(text.replace("q", "t"))
        assert loaded.sentence_logprob(tokens) == pytest.approx(built.sentence_logprob(tokens), abs=1e-4)


def test_non_ascii_tokens_survive_the_packed_format(tmp_path: Path) -> None:
    sentences = ["café au lait", "crème brûlée", "naïve café"]
    built = to_model(estimate([tokens_of(s) for s in sentences], order=4))
    save_char_lm(built, tmp_path / "lm.npz")
    loaded = CharNgramLM.load(tmp_path / "lm.npz")
    assert ngram_dict(loaded.table) == pytest.approx(ngram_dict(built.table), abs=1e-6)
    for text in ["café", "brûlée au lait", "xyz"]:
        tokens = tokens_of(text)
        assert loaded.sentence_logprob(tokens) == pytest.approx(built.sentence_logprob(tokens), abs=1e-4)
    assert loaded.sentence_logprob(tokens_of("café")) > loaded.sentence_logprob(tokens_of("cafe")) + 1


def test_an_order_too_long_to_pack_is_refused(tmp_path: Path) -> None:
    many_tokens = "".join(chr(ord("a") + i % 26) + chr(0x400 + i) for i in range(200))
    with pytest.raises(BundleError, match="does not fit in 63 bits"):
        to_model(estimate([tokens_of(many_tokens)] * 2, order=8, min_count=1))


def test_bad_lm_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    lm_path = tmp_path / LM_FILE
    save_char_lm(to_model(estimate([tokens_of("xyz")], order=2)), lm_path)
    with pytest.raises(BundleError, match="vocabulary lacks"):
        CharNgramLM.load(lm_path, SPEECH_VOCAB)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="cannot read"):
        CharNgramLM.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(BundleError, match="cannot read"):
        CharNgramLM.load(tmp_path / "other.npz")
    (tmp_path / "junk.arpa").write_text("hello\n")
    with pytest.raises(BundleError, match="not an ARPA"):
        char_lm_from_arpa(tmp_path / "junk.arpa")
    (tmp_path / "broken.arpa.gz").write_bytes(gzip.compress(b"\\data\\\nngram 1=1\n")[:-8])
    with pytest.raises(BundleError, match="cannot read"):
        char_lm_from_arpa(tmp_path / "broken.arpa.gz")
    (tmp_path / "words.arpa").write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\thello\n\n\\end\\\n")
    with pytest.raises(BundleError, match="not a single character"):
        char_lm_from_arpa(tmp_path / "words.arpa")


# --- beam search on synthetic log-probabilities -------------------------------------------------


def frames_for(spelling: str, vocab: List[str], sharp: float = 0.9, seed: int = 0) -> np.ndarray:
    """Log-probs that spell `spelling`: each character for 2 frames then 2 blank frames.

    "_" is an explicit blank frame; (x/y) puts 52% on x and 40% on y in those frames.
    """
    rng = np.random.default_rng(seed)
    rows: List[np.ndarray] = []
    i = 0
    while i < len(spelling):
        if spelling[i] == "(":
            close = spelling.index(")", i)
            first, second = spelling[i + 1 : close].split("/")
            weights = {vocab.index(first): 0.52, vocab.index(second): 0.40}
            i = close + 1
        else:
            char = spelling[i]
            weights = {0 if char == "_" else vocab.index(WORD_BOUNDARY if char == " " else char): sharp}
            i += 1
        for _ in range(2):
            row = rng.uniform(0.5, 1.0, len(vocab))
            rest = 1.0 - sum(weights.values())
            row = row / row.sum() * rest
            for index, weight in weights.items():
                row[index] = weight
            rows.append(np.log(row))
        blank = np.full(len(vocab), (1.0 - sharp) / (len(vocab) - 1))
        blank[0] = sharp
        rows.extend([np.log(blank)] * 2)
    return np.array(rows, dtype=np.float32)


def beam_text(log_probs: np.ndarray, lm, options: BeamOptions, chunks: int = 1) -> str:
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    decoder = PrefixBeamDecoder(vocab, lm, options)
    for piece in np.array_split(log_probs, chunks):
        decoder.push(piece)
    ids, scores = decoder.finish()
    return decode(ids, vocab, 0.02, scores)[0]


def test_beam_without_lm_matches_greedy_on_clear_frames() -> None:
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    log_probs = frames_for("the cat sat on the mat", SPEECH_VOCAB)
    greedy = greedy_decode(log_probs, vocab, 0.02)[0]
    assert greedy == "the cat sat on the mat"
    assert beam_text(log_probs, None, BeamOptions(beam_size=4, insertion_bonus=0.0)) == greedy


def test_lm_turns_a_close_call_into_the_known_word(tmp_path: Path) -> None:
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    log_probs = frames_for("the c(e/a)t s(e/a)t", SPEECH_VOCAB)
    assert greedy_decode(log_probs, vocab, 0.02)[0] == "the cet set"
    lm = build_lm(tmp_path)
    assert beam_text(log_probs, lm, BeamOptions(beam_size=8, lm_weight=0.7)) == "the cat sat"
    # Weight 0 leaves the acoustics in charge.
    assert (
        beam_text(log_probs, lm, BeamOptions(beam_size=8, lm_weight=0.0, insertion_bonus=0.0))
        == "the cet set"
    )


def test_a_hotword_the_audio_allows_is_written_over_the_lm_choice(tmp_path: Path) -> None:
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    log_probs = frames_for("the c(e/a)t s(e/a)t", SPEECH_VOCAB)
    hotwords = Hotwords.from_list(["cet"]).compile(vocab, TextNormalization())
    options = BeamOptions(beam_size=8, lm_weight=0.7)
    decoder = frame_decoder(vocab, build_lm(tmp_path), options, hotwords=hotwords, frame_seconds=0.02)
    decoder.push(log_probs)
    ids, scores = decoder.finish()
    # The LM alone says "the cat sat"; the frames spell "cet" outright, so the hotword is written.
    assert decode(ids, vocab, 0.02, scores)[0] == "the cet sat"


def test_a_long_silence_ends_a_word_for_the_beam_and_its_lm(tmp_path: Path) -> None:
    # "the cat", 1.04 s of blank frames with no "|", "sat": the beam used to spell "the catsat" and
    # score it so; the silence must be a word boundary for the LM too, wherever the chunks cut it.
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    # A model sure of its blanks (99.9%): no "|" is likely enough for the LM to pick on its own.
    log_probs = frames_for("the cat" + "_" * 13 + "sat", SPEECH_VOCAB, sharp=0.999)
    assert greedy_decode(log_probs, vocab, 0.02)[0] == "the catsat"
    lm = build_lm(tmp_path)
    for cuts in [(), (40,), (30, 60, 61)]:
        decoder = frame_decoder(vocab, lm, BeamOptions(beam_size=8, lm_weight=0.7), frame_seconds=0.02)
        for piece in np.split(log_probs, list(cuts)):
            decoder.push(piece)
        ids, scores = decoder.finish()
        text, _, words = decode(ids, vocab, 0.02, scores)
        assert text == "the cat sat", cuts
        assert words[1].end < 1.0 < words[2].start


def test_chunked_pushes_decode_like_one_push(tmp_path: Path) -> None:
    lm = build_lm(tmp_path)
    log_probs = frames_for("a c(e/a)t and a h(e/a)t _ the rat", SPEECH_VOCAB, seed=3)
    whole = beam_text(log_probs, lm, BeamOptions())
    assert whole == "a cat and a hat the rat"
    assert beam_text(log_probs, lm, BeamOptions(), chunks=7) == whole


def test_silence_stays_empty_with_the_lm(tmp_path: Path) -> None:
    # Blank-dominated frames (digital silence): greedy writes nothing, and so must the beam with an
    # LM, whose end-of-sentence score for an empty sentence once made it write "a".
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    row = np.full(len(SPEECH_VOCAB), np.log(0.02 / (len(SPEECH_VOCAB) - 1)))
    row[0] = np.log(0.98)
    silence = np.tile(row, (150, 1)).astype(np.float32)
    assert greedy_decode(silence, vocab, 0.02)[0] == ""
    lm = build_lm(tmp_path)
    for weight in (1.0, 2.0):  # before: "t" and "that"
        assert beam_text(silence, lm, BeamOptions(beam_size=16, lm_weight=weight, insertion_bonus=2.5)) == ""


def test_a_letter_said_alone_is_not_erased_by_the_lm(tmp_path: Path) -> None:
    # "e" said clearly in 0.8 s of silence: an empty hypothesis pays no LM cost and a lone letter pays
    # for a whole sentence, so a strong LM used to write nothing. The frames make "e" far more likely
    # than silence, and the LM may only choose between spellings the frames prefer to silence.
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    letter = frames_for("_" * 20 + "e" + "_" * 20, SPEECH_VOCAB, sharp=0.999)
    assert greedy_decode(letter, vocab, 0.02)[0] == "e"
    lm = build_lm(tmp_path)
    assert beam_text(letter, lm, BeamOptions(beam_size=16, lm_weight=3.0, insertion_bonus=0.0)) == "e"


def test_doubled_letters_need_a_blank_between() -> None:
    vocab = ["<pad>", WORD_BOUNDARY, "a", "l"]
    # "al_l" spells "all"; "all" without the blank frame between the l's would collapse to "al".
    rows = frames_for("al_l", vocab)
    decoder = PrefixBeamDecoder(Vocabulary(vocab, 0), None, BeamOptions(insertion_bonus=0.0))
    decoder.push(rows)
    ids, scores = decoder.finish()
    assert decode(ids, Vocabulary(vocab, 0), 0.02, scores)[0] == "all"


def test_word_times_come_from_emission_frames(tmp_path: Path) -> None:
    vocab = Vocabulary(SPEECH_VOCAB, blank_id=0)
    log_probs = frames_for("a cat", SPEECH_VOCAB)  # a:0-1 blank:2-3 |:4-5 blank c:8 ... t:16
    decoder = PrefixBeamDecoder(vocab, build_lm(tmp_path), BeamOptions())
    decoder.push(log_probs)
    ids, scores = decoder.finish()
    _, _, words = decode(ids, vocab, 0.02, scores)
    assert [w.text for w in words] == ["a", "cat"]
    assert words[0].start == 0.0 and words[1].start == pytest.approx(8 * 0.02)
    assert words[1].end == pytest.approx(17 * 0.02)
    assert all(0.5 < w.confidence <= 1.0 for w in words)


def test_bad_beam_options_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        PrefixBeamDecoder(Vocabulary(SPEECH_VOCAB, 0), None, BeamOptions(beam_size=0))
    decoder = PrefixBeamDecoder(Vocabulary(SPEECH_VOCAB, 0), None, BeamOptions())
    with pytest.raises(ValueError, match="log-probabilities"):
        decoder.push(np.zeros((3, 2), dtype=np.float32))


# --- bundles with a language model ---------------------------------------------------------------


@pytest.fixture()
def lm_bundle(tone_bundle: Path, tmp_path: Path) -> Path:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(["abc fed", "bad cab", "face bead", "deaf cafe", "a b c"] * 4) + "\nzebra\n")
    out = tmp_path / "with-lm"
    argv = ["-q", "lm", "--bundle", str(tone_bundle), "--out", str(out), "--text", str(text)]
    assert quantize_main([*argv, "--word-order", "0"]) == 0  # the character LM alone (test_word_lm.py)
    return out


def test_quantize_lm_adds_a_checked_lm_to_a_new_bundle(lm_bundle: Path, tone_bundle: Path) -> None:
    bundle = load_bundle(lm_bundle)
    bundle.verify()
    lm = bundle.metadata.language_model
    assert lm is not None and lm.file == LM_FILE and lm.order is not None and lm.order >= 3
    assert bundle.metadata.extra["language_model"]["skipped"] == 1  # "zebra" cannot be spelled
    assert load_bundle(tone_bundle).metadata.language_model is None  # the source is untouched
    CharNgramLM.load(lm_bundle / LM_FILE, VOCAB)


def test_transcriber_decodes_with_the_bundle_lm(lm_bundle: Path) -> None:
    audio = tone_audio("bad cafe")
    with_lm = EdgeTranscriber(lm_bundle)
    greedy = EdgeTranscriber(lm_bundle, options=TranscribeOptions(use_lm=False))
    assert with_lm.lm is not None and greedy.lm is None
    beam_result = with_lm.transcribe(audio, sample_rate=16000)
    greedy_result = greedy.transcribe(audio, sample_rate=16000)
    assert beam_result.text == greedy_result.text == "bad cafe"
    assert [w.start for w in beam_result.words] == [w.start for w in greedy_result.words]


def test_corrupt_lm_is_caught_by_its_checksum(lm_bundle: Path) -> None:
    with open(lm_bundle / LM_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="checksum"):
        EdgeTranscriber(lm_bundle)
    EdgeTranscriber(lm_bundle, options=TranscribeOptions(use_lm=False))  # greedy never reads it


def test_lm_listed_without_its_file_is_refused(lm_bundle: Path) -> None:
    data = json.loads((lm_bundle / "bundle.json").read_text())
    data["language_model"]["file"] = "other.arpa.gz"
    (lm_bundle / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="language_model file"):
        load_bundle(lm_bundle)


def test_cli_lm_flags_and_info(lm_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, tone_audio("deaf cab"), 16000)
    assert edge_main(["file", str(wav), "--model", str(lm_bundle), "--beam-size", "4"]) == 0
    assert capsys.readouterr().out.strip() == "deaf cab"
    assert edge_main(["file", str(wav), "--model", str(lm_bundle), "--no-lm"]) == 0
    assert capsys.readouterr().out.strip() == "deaf cab"
    assert edge_main(["file", str(wav), "--model", str(lm_bundle), "--beam-size", "0"]) == 2
    assert "beam_size" in capsys.readouterr().err
    assert edge_main(["info", "--model", str(lm_bundle)]) == 0
    assert f"language model:  {LM_FILE}" in capsys.readouterr().out


def test_quantize_lm_refuses_text_it_cannot_spell(tone_bundle: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("xyz\nhello world\n")
    status = quantize_main(
        ["lm", "--bundle", str(tone_bundle), "--out", str(tmp_path / "o"), "--text", str(text)]
    )
    assert status == 2
    assert "none of the 2 sentence(s) can be spelled" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_quantize_lm_names_a_text_file_that_is_not_utf8(tone_bundle: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "latin1.txt"
    text.write_bytes("a cab\nd\xe9f bad\n".encode("latin-1"))
    status = quantize_main(
        ["lm", "--bundle", str(tone_bundle), "--out", str(tmp_path / "o"), "--text", str(text)]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert f"{text}: not UTF-8 text (invalid continuation byte); save it as UTF-8" in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("cut", ["the last 2-gram and \\end\\", "\\end\\ only"])
def test_a_truncated_arpa_file_is_refused_with_what_is_short(tmp_path: Path, cut: str) -> None:
    # Issue 29: a cut ARPA file parsed, its lost n-grams silently backing off to shorter ones.
    whole = (
        "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-99\t<s>\t-0.3\n-0.5\ta\t-0.2\n-0.4\tb\n"
        "-0.6\t</s>\n\n\\2-grams:\n-0.1\t<s> a\n-0.2\ta b\n\n\\end\\\n"
    )
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(whole)
    char_lm_from_arpa(arpa)  # whole: read
    if cut.startswith("the last"):
        arpa.write_text(whole[: whole.index("-0.2\ta b")])
        message = r"ends at line 12 without the closing \\end\\: the file is truncated"
    else:
        arpa.write_text(whole.replace("-0.2\ta b\n", ""))
        message = "the header declares 2 2-grams but 1 are listed: the file is truncated or damaged"
    with pytest.raises(BundleError, match=message):
        char_lm_from_arpa(arpa)


def test_quantize_lm_updates_in_place_and_guards_other_folders(lm_bundle: Path, tmp_path: Path) -> None:
    text = tmp_path / "more.txt"
    text.write_text("cafe\n" * 5)
    copy = tmp_path / "copy"
    shutil.copytree(lm_bundle, copy)
    assert quantize_main(["-q", "lm", "--bundle", str(copy), "--text", str(text), "--order", "3"]) == 0
    assert load_bundle(copy).metadata.language_model.order == 3  # type: ignore[union-attr]
    status = quantize_main(["-q", "lm", "--bundle", str(copy), "--out", str(lm_bundle), "--text", str(text)])
    assert status == 2  # --out exists and is another bundle: needs --force
    assert load_bundle(lm_bundle).metadata.language_model.order > 3  # type: ignore[union-attr,operator]


def test_stream_finals_use_the_lm_and_match_the_file_result(
    lm_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = []
    original = PrefixBeamDecoder.finish

    def finish(self):
        finished.append(1)
        return original(self)

    monkeypatch.setattr(PrefixBeamDecoder, "finish", finish)
    audio = np.concatenate([tone_audio("bad cafe"), np.zeros(16000, dtype=np.float32)])
    asr = EdgeTranscriber(lm_bundle)
    stream = asr.stream()
    events = []
    for start in range(0, audio.size, 1600):
        events.extend(stream.accept(audio[start : start + 1600], 16000))
    events.extend(stream.flush())
    finals = [e for e in events if e.is_final]
    assert [e.text for e in finals] == ["bad cafe"]
    assert len(finished) == 1  # the final came from the beam search
    offline = asr.transcribe(audio, sample_rate=16000)
    assert [w.start for w in finals[0].words] == pytest.approx([w.start for w in offline.words], abs=0.021)


def test_listen_no_lm_flag(lm_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, tone_audio("face bead"), 16000)
    for extra in ([], ["--no-lm"]):
        assert edge_main(["listen", "-m", str(lm_bundle), "--input", str(wav), "-q", *extra]) == 0
        assert capsys.readouterr().out == "face bead\n"


def test_quantize_lm_tunes_and_evaluates_on_manifests(tone_bundle: Path, tmp_path: Path) -> None:
    import soundfile as sf

    lines = ["path,text"]
    for index, said in enumerate(["bad cafe", "face", "deaf bead"]):
        sf.write(tmp_path / f"{index}.wav", tone_audio(said), 16000)
        lines.append(f"{index}.wav,{said}")
    manifest = tmp_path / "dev.csv"
    manifest.write_text("\n".join(lines) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("bad cafe\nface bead\ndeaf cab\n" * 3)
    out = tmp_path / "tuned"
    argv = ["-q", "lm", "--bundle", str(tone_bundle), "--out", str(out), "--text", str(text)]
    assert quantize_main([*argv, "--tune", str(manifest), "--eval", str(manifest), "--eval-limit", "2"]) == 0
    meta = load_bundle(out).metadata
    figures = meta.extra["language_model"]
    assert figures["tuning"]["utterances"] == 3 and figures["evaluation"]["utterances"] == 2
    assert figures["evaluation"]["cer_lm"] == 0.0 == figures["evaluation"]["cer_greedy"]
    assert meta.language_model is not None and meta.language_model.lm_weight in (0.2, 0.35, 0.5, 0.7, 1.0)


def test_quantize_lm_imports_an_arpa_file(tone_bundle: Path, tmp_path: Path) -> None:
    arpa = tmp_path / "kenlm.arpa"
    arpa.write_text(
        "\\data\\\nngram 1=5\nngram 2=1\n\n\\1-grams:\n-99\t<s>\t-0.3\n-0.5\ta\t-0.2\n-0.6\tb\n-0.7\t|\n"
        "-0.8\t</s>\n\n\\2-grams:\n-0.1\ta b\n\n\\end\\\n"
    )
    out = tmp_path / "imported"
    assert (
        quantize_main(["-q", "lm", "--bundle", str(tone_bundle), "--out", str(out), "--arpa", str(arpa)]) == 0
    )
    meta = load_bundle(out).metadata
    assert meta.language_model is not None and meta.language_model.order == 2
    assert meta.extra["language_model"]["from_arpa"] == "kenlm.arpa"
    lm = CharNgramLM.load(out / LM_FILE, VOCAB)
    assert lm.logprob("a", "b") == pytest.approx(-0.1 * math.log(10), abs=1e-6)


def test_bench_times_the_decoding_file_uses(lm_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--quick", "--in-process", "--model", str(lm_bundle), "--seconds", "2"]
    assert edge_main(argv) == 0
    assert "decoding: beam search (beam 8) with the bundle's language model" in capsys.readouterr().out
    assert edge_main([*argv, "--no-lm"]) == 0
    assert "decoding: greedy" in capsys.readouterr().out


def close_call_audio() -> np.ndarray:
    """ "bad caf" and then a 'd' tone mixed with a quieter 'e': greedy hears "bad cafd", while the LM
    text ("deaf cafe", "face bead") makes the beam search spell the mix otherwise."""
    n = int(0.2 * 16000)
    t = np.arange(n) / 16000
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / 160)
    d, e = (np.sin(2 * np.pi * token_frequency(VOCAB.index(c)) * t) for c in "de")
    mix = (ramp * (0.17 * d + 0.13 * e)).astype(np.float32)
    return np.concatenate([tone_audio("bad caf"), mix, np.zeros(16000, dtype=np.float32)])


@pytest.mark.parametrize("use_lm", [True, False])
def test_file_stream_and_lm_tuner_decode_the_same_way(lm_bundle: Path, tmp_path: Path, use_lm: bool) -> None:
    audio = close_call_audio()
    path = tmp_path / "close.wav"
    sf.write(path, audio, 16000)
    asr = EdgeTranscriber(lm_bundle, options=TranscribeOptions(use_lm=use_lm))
    file_text = asr.transcribe(path).text
    stream = asr.stream()
    events = [e for i in range(0, audio.size, 1600) for e in stream.accept(audio[i : i + 1600], 16000)]
    finals = [e.text for e in [*events, *stream.flush()] if e.is_final]
    scorer = LmScorer(lm_bundle, [EvalItem(path, "bad cafe")], threads=1)
    assert np.array_equal(scorer.log_probs[0], np.concatenate(list(asr.log_probs(path))))
    tuner_text = scorer.transcript(0, asr.lm, asr.beam_options, asr.word_lm)
    assert [file_text] == finals == [tuner_text]
    greedy = scorer.transcript(0, None, None)
    assert greedy == "bad cafd"
    assert (file_text != greedy) == use_lm  # the LM did decide this close call
