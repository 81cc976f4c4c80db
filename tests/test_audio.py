import io

import numpy as np
import pytest
import soundfile as sf
import soxr
from tone_model import SPEECH_TEXT, tone_audio, write_tone_bundle

from edge_asr import AudioError, EdgeTranscriber
from edge_asr.audio import as_float32, open_audio, prepare_array, read_audio
from edge_asr.errors import InputError

TEXT = SPEECH_TEXT


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_gives_the_16k_transcript(tmp_path, transcriber, speech, rate):
    path = tmp_path / f"x{rate}.wav"
    sf.write(path, soxr.resample(speech, 16000, rate), rate, subtype="PCM_16")
    reference = transcriber.transcribe(speech, sample_rate=16000)
    result = transcriber.transcribe(str(path))
    assert result.text == reference.text == TEXT
    assert result.duration == pytest.approx(speech.size / 16000, abs=0.01)
    for got, want in zip(result.words, reference.words):
        assert got.start == pytest.approx(want.start, abs=0.021)
        assert got.end == pytest.approx(want.end, abs=0.021)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "PCM_U8"])
def test_sample_formats_and_stereo(tmp_path, transcriber, speech, subtype):
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype=subtype)
    assert transcriber.transcribe(str(path)).text == TEXT


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_flac_and_ogg(tmp_path, transcriber, speech, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, speech, 16000, format=fmt)
    assert transcriber.transcribe(str(path)).text == TEXT


def test_integer_arrays_and_channel_layout(transcriber, speech):
    pcm = (speech * 32767).astype(np.int16)
    assert transcriber.transcribe(pcm, sample_rate=16000).text == TEXT
    with pytest.raises(AudioError, match="channels, frames"):
        prepare_array(np.stack([speech, speech]), 16000, 16000)
    assert as_float32(np.array([-32768, 0], dtype=np.int16)).tolist() == [-1.0, 0.0]


def test_stdin(monkeypatch, transcriber, speech):
    wav = io.BytesIO()
    sf.write(wav, speech, 16000, format="WAV")

    class FakeStdin:
        buffer = io.BytesIO(wav.getvalue())

    monkeypatch.setattr("sys.stdin", FakeStdin)
    result = transcriber.transcribe("-")
    assert result.text == TEXT and result.source == "<stdin>"


def test_blocks_bound_memory_and_cover_the_file(tmp_path):
    audio = (0.1 * np.random.default_rng(0).standard_normal(44100 * 7)).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, audio, 44100, subtype="FLOAT")
    info, blocks = open_audio(str(path), 16000, block_seconds=1.0)
    sizes = [b.size for b in blocks]
    assert info.duration == pytest.approx(7.0)
    assert max(sizes) <= 16000 * 1.1
    assert sum(sizes) == pytest.approx(16000 * 7, abs=2)
    np.testing.assert_allclose(
        read_audio(str(path), 16000), soxr.resample(audio, 44100, 16000, quality="HQ"), atol=1e-4
    )


def test_silence_is_an_empty_transcript_not_an_error(tmp_path, transcriber):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 2), 16000)
    result = transcriber.transcribe(str(path))
    assert result.text == "" and result.words == [] and result.duration == pytest.approx(2.0)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.wav", b"", "empty"),
        ("text.wav", b"this is not audio at all\n" * 10, "not a readable audio file"),
        ("noheader.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, "not a readable audio file"),
    ],
)
def test_bad_files(tmp_path, transcriber, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as info:
        transcriber.transcribe(str(path))
    assert name in str(info.value)


def test_zero_length_truncated_and_missing(tmp_path, transcriber, speech):
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        transcriber.transcribe(str(zero))
    whole = tmp_path / "whole.wav"
    sf.write(whole, speech, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioError, match="truncated"):
        transcriber.transcribe(str(cut))
    with pytest.raises(AudioError, match="no such file"):
        transcriber.transcribe(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="sample rate"):
        prepare_array(speech, 4000, 16000)


# -- samples that are not audio: NaN, Inf, far beyond full scale (issue 16, item 1) --------------


@pytest.fixture(scope="module")
def normalizing(tmp_path_factory):
    """The tone model behind per-window normalization, as wav2vec2-base graphs have it: one bad sample
    then spoils its whole window, which is what made these inputs lose their transcript."""
    folder = write_tone_bundle(tmp_path_factory.mktemp("norm") / "bundle", do_normalize=True)
    return EdgeTranscriber(folder)


# kind -> (first sample, how many, value), at 16 kHz positions
BAD_SAMPLES = {
    "nan-burst": (50, 96, np.nan),  # 6 ms
    "one-nan": (0, 1, np.nan),
    "inf": (10, 1, -np.inf),
    "huge": (5, 1, 1e30),
}


def spoiled(kind: str, rate: int = 16000) -> np.ndarray:
    audio = tone_audio(TEXT)
    if rate != 16000:
        audio = soxr.resample(audio, 16000, rate).astype(np.float32)
    first, count, value = BAD_SAMPLES[kind]
    first, count = first * rate // 16000, max(1, count * rate // 16000)
    audio[first : first + count] = value
    return audio


@pytest.mark.parametrize("kind", sorted(BAD_SAMPLES))
@pytest.mark.parametrize("rate, how", [(16000, "file"), (44100, "file"), (16000, "array"), (44100, "array")])
def test_bad_samples_become_silence_with_one_warning(tmp_path, normalizing, caplog, kind, rate, how):
    audio = spoiled(kind, rate)
    path = tmp_path / "bad.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="edge_asr"):
        if how == "file":
            result = normalizing.transcribe(str(path))
        else:
            result = normalizing.transcribe(audio, sample_rate=rate)
    assert result.text == TEXT
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    count = np.count_nonzero(~np.isfinite(audio) | (np.abs(audio) > 1))
    assert f" {count} " in warnings[0] and ("bad.wav" if how == "file" else "<array>") in warnings[0]


def test_good_audio_is_not_copied_or_changed(caplog):
    from edge_asr.audio import SampleGuard

    audio = tone_audio(TEXT)
    guard = SampleGuard("clip")
    assert guard(audio) is audio
    with caplog.at_level("WARNING"):
        guard.report()
    assert not caplog.records
    bad = spoiled("nan-burst")
    before = bad.copy()
    fixed = guard(bad)
    assert np.isfinite(fixed).all() and np.array_equal(np.isnan(bad), np.isnan(before))  # caller's array
    assert (guard.non_finite, guard.clipped) == (96, 0)


# -- argument errors of the Python API (issue 16, item 13) ---------------------------------------


def test_a_list_is_refused_with_a_short_message(transcriber, speech):
    with pytest.raises(InputError) as info:
        transcriber.transcribe(speech.tolist(), sample_rate=16000)
    message = str(info.value)
    assert len(message) < 300 and "got list" in message and "np.asarray" in message
    with pytest.raises(InputError, match="transcribe_many"):
        list(transcriber.transcribe_many("one.wav"))  # a string is not a list of files


@pytest.mark.parametrize("rate", ["16000", None, 16000.5, True])
def test_a_sample_rate_that_is_not_a_number_of_hz(transcriber, speech, rate):
    with pytest.raises(InputError, match=r"sample_rate.*Hz"):
        transcriber.transcribe(speech, sample_rate=rate)
    with pytest.raises(InputError, match="sample_rate must be a whole number of Hz"):
        transcriber.stream().accept(speech, rate)


def test_whole_float_and_numpy_rates_are_fine(transcriber, speech):
    assert transcriber.transcribe(speech, sample_rate=16000.0).text == TEXT
    assert transcriber.transcribe(speech, sample_rate=np.int64(16000)).text == TEXT


@pytest.mark.parametrize("shape", [(10, 48000), (2, 48000), (300, 100000)])
def test_channels_first_arrays_are_refused_with_the_layout_expected(transcriber, shape):
    with pytest.raises(AudioError, match=r"\(frames, channels\).*\.T") as info:
        transcriber.transcribe(np.zeros(shape, np.float32), sample_rate=16000)
    assert str(shape) in str(info.value)
    with pytest.raises(AudioError, match=r"\(frames, channels\)"):
        transcriber.stream().accept(np.zeros(shape, np.float32), 16000)


def test_small_multichannel_blocks_still_stream(transcriber, speech):
    stream = transcriber.stream()
    stereo = np.stack([speech, speech], axis=1)
    for i in range(0, len(stereo), 1):  # blocks of one frame of two channels
        if i > 3200:
            break
        stream.accept(stereo[i : i + 1], 16000)


def test_a_file_opened_in_text_mode(tmp_path, transcriber, speech, capfd):
    path = tmp_path / "x.wav"
    sf.write(path, speech, 16000)
    with open(path) as handle, pytest.raises(InputError, match=r"binary mode.*open\(path, 'rb'\)"):
        transcriber.transcribe(handle)
    assert "Traceback" not in capfd.readouterr().err
    with open(path, "rb") as handle:
        assert transcriber.transcribe(handle).text == TEXT


# -- what a broken MP3 prints (issue 16, item 15) ------------------------------------------------


@pytest.fixture(scope="module")
def mp3_bytes(tmp_path_factory, speech):
    path = tmp_path_factory.mktemp("mp3") / "x.mp3"
    sf.write(path, np.concatenate([speech] * 3), 16000, format="MP3")
    return path.read_bytes()


def test_a_corrupt_mp3_gets_one_line_and_no_decoder_chatter(tmp_path, capfd, tone_bundle, mp3_bytes):
    from edge_asr import cli

    rng = np.random.default_rng(3)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(mp3_bytes[:100] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    damaged = tmp_path / "damaged.mp3"  # readable, with a stretch of garbage the decoder skips
    middle = len(mp3_bytes) // 2
    damaged.write_bytes(
        mp3_bytes[:middle] + rng.integers(0, 256, 300, dtype=np.uint8).tobytes() + mp3_bytes[middle + 300 :]
    )
    capfd.readouterr()
    assert cli.main(["file", str(broken), str(damaged), "-m", str(tone_bundle)]) == 1
    captured = capfd.readouterr()
    assert captured.err.splitlines() == [
        f"edge-asr: {broken}: not a readable audio file (no audio frames found: the file is corrupt, or "
        "not the format its name says); use WAV, FLAC or OGG (convert with e.g. "
        "`ffmpeg -i INPUT -ar 16000 -ac 1 out.wav`)",
        "edge-asr: 1 of 2 input(s) failed",
    ]
    assert captured.out.startswith(f"{damaged}: ")
