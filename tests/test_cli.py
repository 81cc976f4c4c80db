import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from tone_model import tone_audio

from edge_asr import cli
from edge_asr.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def audio_dir(tmp_path):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "one.wav", tone_audio("abc"), 16000)
    sf.write(folder / "sub" / "two.flac", tone_audio("de fa"), 16000)
    (folder / "notes.txt").write_text("not audio, and not picked up by folder expansion")
    return folder


def test_file_to_stdout(capsys, tone_bundle, audio_dir):
    assert cli.main(["file", str(audio_dir / "one.wav"), "--model", str(tone_bundle)]) == 0
    assert capsys.readouterr().out == "abc\n"


def test_folder_to_output_dir_in_every_format(capsys, tone_bundle, audio_dir, tmp_path):
    out = tmp_path / "out"
    code = cli.main(["file", str(audio_dir), "-m", str(tone_bundle), "-f", "all", "-o", str(out)])
    assert code == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    expected = [f"{stem}.{ext}" for stem in ("one", "sub/two") for ext in ("json", "srt", "txt", "vtt")]
    assert written == sorted(expected + ["sub"])
    assert (out / "sub" / "two.txt").read_text() == "de fa\n"
    assert json.loads((out / "one.json").read_text())["words"][0]["text"] == "abc"


def test_a_failed_file_does_not_stop_the_batch(capsys, tone_bundle, audio_dir, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("garbage")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    args = [str(bad), str(audio_dir / "one.wav"), str(tmp_path / "missing.wav"), str(empty_dir)]
    code = cli.main(["file", *args, "-m", str(tone_bundle), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "out" / "one.txt").read_text() == "abc\n"
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4 and "3 of 4 input(s) failed" in errors[-1]
    assert any("bad.wav: not a readable audio file" in line for line in errors)
    assert any("missing.wav: no such file" in line for line in errors)
    assert any("holds no audio files" in line for line in errors)
    assert "Traceback" not in captured.err


def test_bundle_errors_exit_2_without_traceback(capsys, tmp_path, audio_dir):
    assert cli.main(["file", str(audio_dir / "one.wav"), "-m", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-asr: error:") and "does not exist" in err


def test_several_inputs_need_output_dir_for_subtitles(capsys, tone_bundle, audio_dir):
    assert cli.main(["file", str(audio_dir), "-m", str(tone_bundle), "-f", "srt"]) == 2
    assert "needs --output-dir" in capsys.readouterr().err


def test_info(capsys, tone_bundle):
    assert cli.main(["info", "-m", str(tone_bundle), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "8 tokens" in out and "all 2 files OK" in out and "model int8:" in out
    assert cli.main(["info", "-m", str(tone_bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["blank_id"] == 0


@pytest.mark.parametrize("command", [[], ["file"], ["info"], ["bench"], ["listen"], ["devices"]])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: edge-asr" in capsys.readouterr().out


def test_file_and_listen_build_their_decoding_options_alike():
    from edge_asr.cli_args import transcribe_options

    flags = ["--no-word-lm", "--beam-size", "4", "--blank-penalty", "0.5"]  # the default model has an LM
    file_options = transcribe_options(cli.parse_args(["file", "x.wav", *flags]))
    assert transcribe_options(cli.parse_args(["listen", *flags])) == file_options
    assert file_options.use_lm and not file_options.use_word_lm and file_options.blank_penalty == 0.5
    assert file_options.beam is not None and file_options.beam.beam_size == 4
    tuned = transcribe_options(cli.parse_args(["file", "x.wav", "--lm-weight", "0.5"])).beam
    assert tuned is not None and tuned.lm_weight == 0.5  # file only: listen keeps the bundle's weights
    assert not transcribe_options(cli.parse_args(["listen", "--no-lm"])).use_lm


@pytest.mark.parametrize("command", [["file", "--help"], ["listen", "--help"]])
def test_language_model_flags_are_grouped_in_help(capsys, command):
    with pytest.raises(SystemExit):
        cli.parse_args(command)
    group = capsys.readouterr().out.split("language model:")[1]
    assert "--no-lm" in group and "--no-word-lm" in group and "--beam-size" in group


def test_bad_thread_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["file", "x.wav", "--threads", "0"])
    assert exit_info.value.code == 2


def test_stdin_through_the_real_entry_point(tone_bundle, audio_dir):
    wav = (audio_dir / "one.wav").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "edge_asr", "file", "-", "-m", str(tone_bundle)],
        input=wav,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "abc\n"


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.srt"
    target.write_text("old complete content")

    def crash(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_text_atomic(target, "new content")
    assert target.read_text() == "old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["a.srt"]


def test_inputs_with_the_same_name_keep_every_output(capsys, tone_bundle, tmp_path, caplog):
    for folder, text in (("c1", "abc"), ("c2", "fed")):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "x.wav", tone_audio(text), 16000)
    mixed = tmp_path / "mixed"
    (mixed / "sub").mkdir(parents=True)
    sf.write(mixed / "y.wav", tone_audio("ab"), 16000)
    sf.write(mixed / "Y.flac", tone_audio("cd"), 16000)  # the same name on a case-insensitive card
    sf.write(mixed / "y-2.wav", tone_audio("ef"), 16000)  # already holds the name a rename would pick
    sf.write(mixed / "sub" / "z.wav", tone_audio("fa"), 16000)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "c1" / "x.wav"), str(tmp_path / "c2" / "x.wav"), str(mixed)]
    code = cli.main(["file", *inputs, "-m", str(tone_bundle), "-o", str(out), "-f", "all"])
    assert code == 0
    texts = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.txt")}
    assert sorted(texts.values()) == sorted(f"{t}\n" for t in ("abc", "fed", "ab", "cd", "ef", "fa"))
    assert texts["x.txt"] == "abc\n" and texts["y-2.txt"] == "ef\n" and texts["sub/z.txt"] == "fa\n"
    assert len({name.casefold() for name in texts}) == len(texts) == 6
    for name in texts:  # every format of an input went to the same name
        source = json.loads((out / name).with_suffix(".json").read_text())["source"]
        assert sf.info(source).duration > 0
    (warning,) = [r.getMessage() for r in caplog.records if "c2/x.wav" in r.getMessage()]
    assert "taken by" in warning and "x-2" in warning


@pytest.fixture
def count_transcriptions(monkeypatch):
    """How many inputs were transcribed (an output check must come before any of that work)."""
    from edge_asr.transcriber import EdgeTranscriber

    calls = []
    real = EdgeTranscriber.transcribe

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EdgeTranscriber, "transcribe", counting)
    return calls


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_output_dir_that_cannot_be_a_folder_fails_before_any_work(
    capsys, tone_bundle, audio_dir, tmp_path, count_transcriptions, where
):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "a file" else blocker / "out"
    assert cli.main(["file", str(audio_dir), "-m", str(tone_bundle), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"edge-asr: error: -o {out}: ")
    assert ("is a file, not a folder" if where == "a file" else "cannot write there") in err
    assert count_transcriptions == [] and blocker.read_text() == "a file, not a folder"


def test_unwritable_output_dir_fails_once_before_any_work(
    capsys, tone_bundle, audio_dir, tmp_path, count_transcriptions, monkeypatch
):
    import tempfile

    out = tmp_path / "readonly"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through chmod: refuse file creation there as the kernel would
        real_mkstemp = tempfile.mkstemp

        def refusing(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == out:
                raise PermissionError(13, "Permission denied", str(Path(dir) / ".x.tmp"))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refusing)
    out.chmod(0o500)
    try:
        assert cli.main(["file", str(audio_dir), "-m", str(tone_bundle), "-o", str(out)]) == 2
    finally:
        out.chmod(0o700)
    err = capsys.readouterr().err
    assert (
        err == f"edge-asr: error: -o {out}: cannot write there (Permission denied); choose another "
        "folder or fix its permissions\n"
    )
    assert count_transcriptions == [] and list(out.iterdir()) == []
