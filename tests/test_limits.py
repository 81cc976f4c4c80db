"""Every number from bundle.json, the Python options and the command line is checked against a sane
range (issue 16, item 6): NaN, 0 and huge values are refused with a message naming the value, before
any work, instead of hanging, running 15x slower or decoding garbage."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import soundfile as sf
from tone_model import edit_metadata, tone_audio, write_tone_bundle

from edge_asr import BundleError, EdgeTranscriber, TranscribeOptions
from edge_asr.beam import BeamOptions
from edge_asr.bundle import load_bundle
from edge_asr.cli import main
from edge_asr.errors import InputError
from edge_asr.limits import Range
from edge_asr.stream import StreamOptions
from edge_asr.vad import EnergyVadOptions


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone_audio("abc"), 16000)
    return path


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--beam-size", "100000", "beam_size must be between 1 and 256, got 100000"),
        ("--chunk-seconds", "0", "chunk_seconds must be between 0.5 and 600, got 0.0"),
        ("--chunk-seconds", "nan", "chunk_seconds must be a number, got NaN"),
        ("--chunk-seconds", "-5", "chunk_seconds must be between"),
        ("--lm-weight", "nan", "lm_weight must be a number, got NaN"),
        ("--lm-weight", "-1", "lm_weight must be between 0 and 10"),
        ("--insertion-bonus", "inf", "insertion_bonus must be between -20 and 20, got inf"),
        ("--blank-penalty", "nan", "blank_penalty must be a number, got NaN"),
    ],
)
def test_file_flags_out_of_range_exit_2_before_any_work(capsys, tone_bundle, wav, flag, value, message):
    started = time.perf_counter()
    assert main(["file", str(wav), "-m", str(tone_bundle), flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "Traceback" not in captured.err
    assert time.perf_counter() - started < 5


def test_thread_count_has_an_upper_bound(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["file", "x.wav", "--threads", "100000"])
    assert exit_info.value.code == 2
    assert "--threads must be between 1 and 256" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--hop", "nan", "hop_seconds must be a number, got NaN"),
        ("--left-context", "nan", "left_context_seconds must be a number"),
        ("--right-context", "inf", "right_context_seconds must be between 0 and 10, got inf"),
        ("--endpoint-silence", "nan", "endpoint_silence must be a number"),
        ("--max-utterance", "nan", "max_utterance_seconds must be a number"),
        ("--vad-threshold", "nan", "threshold_db must be a number"),
        ("--vad-threshold", "-3", "threshold_db must be between 0 and 200"),
        ("--beam-size", "1000000", "beam_size must be between 1 and 256"),
    ],
)
def test_listen_flags_out_of_range(capsys, tone_bundle, wav, flag, value, message):
    assert main(["listen", "-m", str(tone_bundle), "--input", str(wav), "-q", flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_listen_samplerate_out_of_range(capsys, tone_bundle):
    assert main(["listen", "-m", str(tone_bundle), "--samplerate", "1000000000"]) == 2
    assert "--samplerate must be between 8000 and 192000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (TranscribeOptions(chunk_seconds=math.nan), "chunk_seconds must be a number, got NaN"),
        (TranscribeOptions(context_seconds=-1.0), "context_seconds must be between 0 and 10"),
        (TranscribeOptions(block_seconds=0.0), "block_seconds must be between"),
        (TranscribeOptions(beam=BeamOptions(beam_size=10**9)), "beam_size must be between 1 and 256"),
        # A float on purpose: the check under test is the one that catches it.
        (TranscribeOptions(beam=BeamOptions(8.5)), "beam_size must be a whole number, got 8.5"),  # type: ignore[arg-type]
        (
            TranscribeOptions(beam=BeamOptions(lm_weight=math.inf)),
            "lm_weight must be between 0 and 10, got inf",
        ),
    ],
)
def test_python_options_out_of_range(tone_bundle, options, message):
    with pytest.raises(InputError, match=message):
        EdgeTranscriber(tone_bundle, options=options)


@pytest.mark.parametrize(
    "options, message",
    [
        (StreamOptions(left_context_seconds=math.nan), "left_context_seconds must be a number"),
        (StreamOptions(endpoint_silence=1e9), "endpoint_silence must be between"),
        (StreamOptions(vad=EnergyVadOptions(threshold_db=math.nan)), "threshold_db must be a number"),
        (StreamOptions(vad=EnergyVadOptions(floor_fall=2.0)), "floor_fall must be between 0 and 1"),
    ],
)
def test_stream_options_out_of_range(tone_bundle, options, message):
    asr = EdgeTranscriber(tone_bundle)
    with pytest.raises(InputError, match=message):
        asr.stream(options)


@pytest.fixture
def lm_section_bundle(tmp_path):
    """A bundle whose bundle.json has a language_model section (its files are placeholders: the
    section is checked when bundle.json is read, before any LM file is opened)."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "lm.npz").write_bytes(b"placeholder")
    (folder / "words.npz").write_bytes(b"placeholder")
    lm = {
        "file": "lm.npz",
        "kind": "char-ngram",
        "order": 4,
        "beam_size": 8,
        "lm_weight": 0.5,
        "insertion_bonus": 1.0,
        "words": {"file": "words.npz", "order": 3, "word_weight": 0.7, "unknown_word_penalty": -4.0},
    }
    return write_tone_bundle(folder, language_model=lm)


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("beam_size", 1000000000, "language_model.beam_size must be between 1 and 256, got 1000000000"),
        ("beam_size", 8.0, "language_model.beam_size must be a whole number"),
        ("lm_weight", math.nan, "language_model.lm_weight must be a number, got NaN"),
        pytest.param("lm_weight", 10**400, "lm_weight must be between 0 and 10", id="lm_weight-10**400"),
        ("insertion_bonus", 1e308, "language_model.insertion_bonus must be between -20 and 20"),
        ("word_weight", -1, "language_model.words.word_weight must be between 0 and 10"),
        ("unknown_word_penalty", math.inf, "unknown_word_penalty must be between -100 and 0, got inf"),
    ],
)
def test_bundle_numbers_out_of_range(lm_section_bundle, where, value, message):
    load_bundle(lm_section_bundle, verify=False)  # the placeholder bundle itself is fine
    lm = json.loads((lm_section_bundle / "bundle.json").read_text())["language_model"]
    (lm["words"] if where in lm["words"] else lm)[where] = value
    edit_metadata(lm_section_bundle, language_model=lm)
    with pytest.raises(BundleError, match=message):
        load_bundle(lm_section_bundle, verify=False)


def test_range_refuses_every_kind_of_bad_number():
    assert Range(0, 1).problem(0.5) is None and Range(1, 9, integer=True).problem(np.int64(3)) is None
    assert Range(0, 1).problem(np.float32(0.25)) is None
    for bad in (math.nan, math.inf, -math.inf, 10**400, "1", None, True, 2.0):
        assert Range(0, 1).problem(bad), bad
    long = Range(0, 1).problem(list(range(100000)))
    assert long is not None and len(long) < 80  # a hostile value does not become a huge message


def test_bench_counts_out_of_range(capsys, tone_bundle):
    from edge_asr.bench import parse_threads

    with pytest.raises(InputError, match="between 1 and 256"):
        parse_threads("1,100000")
    assert main(["bench", "-m", str(tone_bundle), "--repeats", "1000000", "--in-process"]) == 2
    assert "--repeats must be between 1 and 100" in capsys.readouterr().err


def test_chunk_seconds_past_the_models_trained_window_is_refused(capsys, tmp_path, wav):
    # Issue 29: a Whisper encoder reads at most 30 s in one pass; `--chunk-seconds 60` ran and wrote
    # garbage at rc 0. The bound comes from bundle.json's source.architecture.
    whisper = write_tone_bundle(tmp_path / "whisper", source={"architecture": "WhisperCtcForCTC"})
    started = time.perf_counter()
    assert main(["file", str(wav), "-m", str(whisper), "--chunk-seconds", "60"]) == 2
    err = capsys.readouterr().err
    assert "makes 62 s windows" in err and "at most 30 s" in err and "to 28 or less" in err, err
    assert "Traceback" not in err and time.perf_counter() - started < 5
    with pytest.raises(InputError, match="at most 30 s"):
        EdgeTranscriber(whisper, options=TranscribeOptions(chunk_seconds=20.0, context_seconds=6.0))
    # The largest window that fits runs; a model without a known bound keeps limits.CHUNK_SECONDS.
    fits = EdgeTranscriber(whisper, options=TranscribeOptions(chunk_seconds=28.0))
    assert fits.transcribe(str(wav)).text == "abc"
    other = write_tone_bundle(tmp_path / "other", source={"architecture": "Wav2Vec2ForCTC"})
    assert EdgeTranscriber(other, options=TranscribeOptions(chunk_seconds=60.0)).plan.chunk_frames == 3000
