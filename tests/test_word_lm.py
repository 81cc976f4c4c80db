"""Word LM (quantize/lm_estimate.py and lm_files.py build, edge_asr/lm.py reads) and its part in the
beam search."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List

import numpy as np
import pytest
from test_lm import frames_for
from tone_model import tone_audio

from edge_asr.beam import BeamOptions, PrefixBeamDecoder
from edge_asr.bundle import WORDS_FILE, load_bundle
from edge_asr.cli import main as edge_main
from edge_asr.ctc import GreedyDecoder, SilenceEndsWords, Vocabulary, decode
from edge_asr.errors import BundleError
from edge_asr.lm import BOS, CharNgramLM, WordLmArrays, WordNgramLM
from edge_asr.text import TextNormalization
from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions, tuned_beam_options
from quantize.cli import main as quantize_main
from quantize.lm_estimate import estimate, read_word_lists, to_model, tokens_of, word_model
from quantize.lm_files import save_word_lm

TEXT = ["the cat sat on the mat", "the bat flew at dusk", "a cat sat", "a bat flew", "the cat sat down"] * 3
SPEECH_VOCAB_WORDS = ["<pad>", "|", *sorted({c for s in [*TEXT, "dog"] for c in s if c != " "})]


def build_words(
    tmp_path: Path, sentences: List[str] = TEXT, order: int = 2, min_count: int = 1
) -> WordNgramLM:
    """Estimate, save as the bundle's words.npz and load back, as `quantize lm` does."""
    path = tmp_path / WORDS_FILE
    save_word_lm(word_model([tokens_of(s) for s in sentences], order=order, min_count=min_count), path)
    return WordNgramLM.load(path)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_word_context_is_a_probability_distribution(tmp_path: Path, order: int) -> None:
    words = build_words(tmp_path, order=order)
    outcomes = [code for code in range(1, words.unknown) if words.table.alphabet[code - 1] != BOS]
    for history in ([], ["the"], ["the", "cat"], ["cat", "flew"], ["dog"], ["sat", "dog"]):
        context = words.start
        for word in history:
            context = words.extend(context, words.code(word))
        total = sum(math.exp(words.logprob(context, code)) for code in outcomes)
        assert total == pytest.approx(1.0, abs=2e-3), (history, total)


def test_word_lm_knows_word_order_and_its_vocabulary(tmp_path: Path) -> None:
    words = build_words(tmp_path)
    assert words.vocabulary_size == len({w for s in TEXT for w in s.split()})
    assert words.code("zebra") == words.unknown and words.code("cat") != words.unknown
    assert words.sentence_logprob(["the", "cat", "sat"]) > words.sentence_logprob(["the", "bat", "sat"]) + 1
    assert words.ngram_counts()[1] > 0


def test_pruning_keeps_every_word_and_drops_rare_pairs(tmp_path: Path) -> None:
    pruned = build_words(tmp_path, TEXT + ["the dog barked"], min_count=2)
    assert pruned.code("barked") != pruned.unknown
    full = build_words(tmp_path, TEXT + ["the dog barked"], min_count=1)
    assert pruned.ngram_counts()[1] < full.ngram_counts()[1]


def test_word_list_words_become_known_without_touching_the_texts_words(tmp_path: Path) -> None:
    sentences = [tokens_of(s) for s in TEXT]
    plain = word_model(sentences, order=2, min_count=1)
    listed = word_model(sentences, order=2, min_count=1, known_words=["dog", "cat", "zebra"])
    assert plain.code("dog") == plain.unknown and listed.code("dog") != listed.unknown
    assert listed.vocabulary_size == plain.vocabulary_size + 2  # "cat" was already known
    # Seen once, alone: far less likely than a word the text uses.
    after_dusk = listed.extend(listed.start, listed.code("dusk"))  # "dusk" is only followed by the end
    dog, cat = (listed.logprob(after_dusk, listed.code(w)) for w in ("dog", "cat"))
    assert cat > dog + 1
    outcomes = [code for code in range(1, listed.unknown) if listed.table.alphabet[code - 1] != BOS]
    for history in ([], ["the"], ["dog"]):
        context = listed.start
        for word in history:
            context = listed.extend(context, listed.code(word))
        total = sum(math.exp(listed.logprob(context, code)) for code in outcomes)
        assert total == pytest.approx(1.0, abs=2e-3), history


def test_word_lists_are_normalized_and_unspellable_lines_counted(tmp_path: Path) -> None:
    words = tmp_path / "words"  # no .txt: /usr/share/dict/words has no extension either
    words.write_text("Zebra\ncafé\nzebra\nzebra's\ntwo words\nnaïve\n\n")
    normalization = TextNormalization(lowercase=True, keep_punctuation="'", strip_accents=True)
    vocabulary = ["<pad>", "|", "'", *"abcdefghijklmnopqrstuvwxyz"]
    known, skipped = read_word_lists([words], normalization, vocabulary)
    assert known == ["zebra", "cafe", "zebra's", "naive"] and skipped == 1
    no_quote = [v for v in vocabulary if v != "'"]
    assert read_word_lists([words], normalization, no_quote) == (["zebra", "cafe", "naive"], 2)


def test_saved_word_model_loads_back_identical(tmp_path: Path) -> None:
    built = word_model([tokens_of(s) for s in TEXT], order=3, min_count=1)
    save_word_lm(built, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as data:
        assert data.files == list(WordLmArrays._fields)  # the layout edge_asr.lm defines and reads
    loaded = WordNgramLM.load(tmp_path / "w.npz")
    for sentence in ["the cat sat on the mat", "a bat sat", "dusk at the bat"]:
        assert loaded.sentence_logprob(sentence.split()) == pytest.approx(
            built.sentence_logprob(sentence.split())
        )


def test_bad_word_lm_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="cannot read the word language model"):
        WordNgramLM.load(tmp_path / "junk.npz")
    build_words(tmp_path)
    with np.load(tmp_path / WORDS_FILE) as data:
        arrays = dict(data)
    np.savez(tmp_path / "future.npz", **{**arrays, "format": np.array(99)})
    with pytest.raises(BundleError, match="format 99"):
        WordNgramLM.load(tmp_path / "future.npz")
    steps = arrays["ngram_key_steps"].copy()
    steps[3] = 0  # two n-grams with one key
    np.savez(tmp_path / "doubled.npz", **{**arrays, "ngram_key_steps": steps})
    with pytest.raises(BundleError, match="ascending"):
        WordNgramLM.load(tmp_path / "doubled.npz")


def beam_text(log_probs: np.ndarray, lm: CharNgramLM, words, options: BeamOptions) -> str:
    vocab = Vocabulary(SPEECH_VOCAB_WORDS, blank_id=0)
    decoder = PrefixBeamDecoder(vocab, lm, options, words)
    decoder.push(log_probs)
    ids, scores = decoder.finish()
    return decode(ids, vocab, 0.02, scores)[0]


def build_chars(sentences: List[str], order: int) -> CharNgramLM:
    return to_model(estimate([tokens_of(s) for s in sentences], order=order, min_count=1))


def test_word_lm_settles_what_letters_alone_cannot(tmp_path: Path) -> None:
    # A character bigram cannot tell "cat" from "bat" after "the " (both follow a space equally
    # often); the word LM knows that it is the cat that sat.
    chars = build_chars(TEXT, order=2)
    words = build_words(tmp_path)
    log_probs = frames_for("the (b/c)at sat", SPEECH_VOCAB_WORDS)
    options = BeamOptions(beam_size=8, lm_weight=0.5, insertion_bonus=1.0, word_weight=1.0)
    assert beam_text(log_probs, chars, None, options) == "the bat sat"
    assert beam_text(log_probs, chars, words, options) == "the cat sat"
    # The last word is closed by the end of the audio, not by a boundary.
    assert beam_text(frames_for("a (b/c)at sat", SPEECH_VOCAB_WORDS), chars, words, options) == "a cat sat"


def test_unknown_words_are_still_spelled(tmp_path: Path) -> None:
    chars = build_chars(TEXT + ["the dog"], order=3)
    words = build_words(tmp_path)  # never saw "dog"
    log_probs = frames_for("the dog sat", SPEECH_VOCAB_WORDS)
    assert (
        beam_text(log_probs, chars, words, BeamOptions(word_weight=1.0, unknown_word_penalty=-2.0))
        == "the dog sat"
    )


def test_word_lm_needs_a_character_lm_and_sane_options(tmp_path: Path) -> None:
    vocab = Vocabulary(SPEECH_VOCAB_WORDS, 0)
    with pytest.raises(ValueError, match="give both"):
        PrefixBeamDecoder(vocab, None, BeamOptions(), build_words(tmp_path))
    with pytest.raises(ValueError, match="unknown_word_penalty"):
        BeamOptions(unknown_word_penalty=1.0).validate()
    with pytest.raises(ValueError, match="word_weight"):
        BeamOptions(word_weight=-1.0).validate()


# --- bundles with a word LM -----------------------------------------------------------------------


@pytest.fixture()
def words_bundle(tone_bundle: Path, tmp_path: Path) -> Path:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(["abc fed", "bad cab", "face bead", "deaf cafe", "a b c"] * 4) + "\n")
    out = tmp_path / "with-words"
    argv = ["-q", "lm", "--bundle", str(tone_bundle), "--out", str(out), "--text", str(text)]
    assert quantize_main(argv) == 0
    return out


def test_quantize_lm_writes_a_checked_word_lm(words_bundle: Path, tone_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(words_bundle)
    bundle.verify()
    settings = bundle.metadata.language_model
    assert (
        settings is not None
        and settings.words is not None
        and settings.words.file == WORDS_FILE
        and settings.words.order == 3
    )
    assert (
        bundle.metadata.extra["language_model"]["words"]["vocabulary"] == 11
    )  # abc fed bad cab face bead deaf cafe a b c
    assert WordNgramLM.load(words_bundle / WORDS_FILE).code("cafe") > 0
    text = tmp_path / "t.txt"
    text.write_text("bad cafe\n")
    no_words = tmp_path / "no-words"
    argv = ["-q", "lm", "--bundle", str(words_bundle), "--out", str(no_words), "--text", str(text)]
    assert quantize_main([*argv, "--word-order", "0"]) == 0
    assert load_bundle(no_words).metadata.language_model.words is None  # type: ignore[union-attr]
    assert "words" not in json.loads((no_words / "bundle.json").read_text())["language_model"]
    assert not (no_words / WORDS_FILE).exists()  # the old word LM does not linger
    assert quantize_main([*argv, "--force", "--word-order", "-1"]) == 2
    assert quantize_main([*argv, "--force", "--jobs", "0"]) == 2


def test_quantize_lm_word_list_makes_words_known(tone_bundle: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(["abc fed", "bad cab"] * 4) + "\n")
    word_list = tmp_path / "words"
    word_list.write_text("cafe\nFace\nbad\nnot one\n")
    out = tmp_path / "listed"
    argv = ["-q", "lm", "--bundle", str(tone_bundle), "--out", str(out), "--text", str(text)]
    assert quantize_main([*argv, "--word-list", str(word_list)]) == 0
    words = WordNgramLM.load(out / WORDS_FILE)
    assert words.code("cafe") != words.unknown and words.code("face") != words.unknown
    built = json.loads((out / "bundle.json").read_text())["extra"]["language_model"]
    assert built["words"]["vocabulary"] == 6 and built["word_lists"] == ["words"]
    missing = ["--force", "--word-list", str(tmp_path / "nope.txt")]
    assert quantize_main([*argv, *missing]) == 2
    assert quantize_main([*argv, "--force", "--word-order", "0", "--word-list", str(word_list)]) == 2


def test_transcriber_uses_the_word_lm_unless_told_not_to(words_bundle: Path) -> None:
    audio = tone_audio("bad cafe")
    with_words = EdgeTranscriber(words_bundle)
    chars_only = EdgeTranscriber(words_bundle, options=TranscribeOptions(use_word_lm=False))
    assert with_words.word_lm is not None and chars_only.word_lm is None and chars_only.lm is not None
    assert with_words.transcribe(audio, sample_rate=16000).text == "bad cafe"
    assert chars_only.transcribe(audio, sample_rate=16000).text == "bad cafe"


def test_transcriber_beam_options_come_from_the_bundle(words_bundle: Path) -> None:
    data = json.loads((words_bundle / "bundle.json").read_text())
    data["language_model"].update(beam_size=5, lm_weight=0.9)
    data["language_model"]["words"].update(word_weight=1.3, unknown_word_penalty=-6.5)
    (words_bundle / "bundle.json").write_text(json.dumps(data))
    options = EdgeTranscriber(words_bundle).beam_options
    assert options is not None
    assert (options.beam_size, options.lm_weight, options.word_weight, options.unknown_word_penalty) == (
        5,
        0.9,
        1.3,
        -6.5,
    )
    changed = tuned_beam_options(words_bundle, beam_size=2, lm_weight=None)
    narrower = EdgeTranscriber(words_bundle, options=TranscribeOptions(beam=changed)).beam_options
    assert narrower is not None and (narrower.beam_size, narrower.lm_weight, narrower.word_weight) == (
        2,
        0.9,
        1.3,
    )
    assert tuned_beam_options(words_bundle) is None  # no change: the bundle's own settings
    greedy = EdgeTranscriber(words_bundle, options=TranscribeOptions(use_lm=False))
    decoder = greedy.new_decoder()
    assert isinstance(decoder, SilenceEndsWords)  # outermost on every decoder (a silence ends a word)
    assert greedy.beam_options is None and isinstance(decoder.inner, GreedyDecoder)


def test_corrupt_or_unlisted_word_lm_is_refused(words_bundle: Path) -> None:
    with open(words_bundle / WORDS_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="checksum"):
        EdgeTranscriber(words_bundle)
    EdgeTranscriber(words_bundle, options=TranscribeOptions(use_word_lm=False))  # never reads it
    data = json.loads((words_bundle / "bundle.json").read_text())
    data["language_model"]["words"]["file"] = "other.npz"
    (words_bundle / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="language_model.words"):
        load_bundle(words_bundle)


def test_cli_word_lm_flag_and_info(
    words_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, tone_audio("deaf cab"), 16000)
    for extra in ([], ["--no-word-lm"]):
        assert edge_main(["file", str(wav), "--model", str(words_bundle), *extra]) == 0
        assert capsys.readouterr().out.strip() == "deaf cab"
    assert edge_main(["info", "--model", str(words_bundle)]) == 0
    assert f"word LM:         {WORDS_FILE}" in capsys.readouterr().out
    argv = ["bench", "--quick", "--in-process", "--model", str(words_bundle), "--seconds", "2"]
    assert edge_main(argv) == 0
    assert "with the bundle's character and word language models" in capsys.readouterr().out


def test_emission_frames_stay_in_order_on_noisy_frames(tmp_path: Path) -> None:
    # Many letters in play each frame: prefixes leave the beam and come back, and a letter can be
    # re-reached by a stronger path after the next letter was emitted; the alignment must still put
    # every letter of the best hypothesis on its own frame, in order.
    chars = build_chars(TEXT, order=3)
    vocab = Vocabulary(SPEECH_VOCAB_WORDS, 0)
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 2.0, (400, len(SPEECH_VOCAB_WORDS)))
    logits[:, 0] += 1.5
    log_probs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    for words in (None, build_words(tmp_path)):
        decoder = PrefixBeamDecoder(vocab, chars, BeamOptions(beam_size=8, token_min_logprob=-6.0), words)
        decoder.push(log_probs)
        prefix = max(decoder._beams.items(), key=lambda kv: decoder._final_score(*kv))[0]
        letters = []
        while prefix.parent is not None:
            letters.append(SPEECH_VOCAB_WORDS[prefix.token])
            prefix = prefix.parent
        assert len(letters) > 20
        ids, _ = decoder.finish()
        assert [SPEECH_VOCAB_WORDS[i] for i in ids if i != 0] == letters[::-1]


def test_listen_decoding_flags(
    words_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, tone_audio("face bead"), 16000)
    for extra in ([], ["--no-word-lm"], ["--beam-size", "4"]):
        assert edge_main(["listen", "-m", str(words_bundle), "--input", str(wav), "-q", *extra]) == 0
        assert capsys.readouterr().out == "face bead\n"
    assert edge_main(["listen", "-m", str(words_bundle), "--input", str(wav), "-q", "--beam-size", "0"]) == 2
    assert "beam_size must be between 1 and 256, got 0" in capsys.readouterr().err


def test_forked_decoding_gives_the_serial_transcripts(words_bundle: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from quantize.lm_tune import LmScorer
    from quantize.manifest import read_manifest

    texts = ["bad cafe", "face", "deaf bead", "abc fed", "cab", "a b c"]
    lines = ["path,text"]
    for index, text in enumerate(texts):
        sf.write(tmp_path / f"{index}.wav", tone_audio(text), 16000)
        lines.append(f"{index}.wav,{text}")
    (tmp_path / "dev.csv").write_text("\n".join(lines) + "\n")
    items = read_manifest(tmp_path / "dev.csv")
    serial = LmScorer(words_bundle, items, threads=1, jobs=1)
    forked = LmScorer(words_bundle, items, threads=1, jobs=2)
    chars = CharNgramLM.load(words_bundle / "lm.npz")
    words = WordNgramLM.load(words_bundle / WORDS_FILE)
    options = BeamOptions(beam_size=4)
    assert forked.transcripts(chars, options, words) == serial.transcripts(chars, options, words) == texts
