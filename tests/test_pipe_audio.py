"""Audio from pipes: stdin, FIFOs and `<(...)` are read as streams, in flat memory (issue 16, items 4, 5)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tone_model import SPEECH_TEXT

from edge_asr import AudioError
from edge_asr import pipe_audio as P
from edge_asr.audio import open_audio, read_audio

ROOT = Path(__file__).resolve().parents[1]
TEXT = SPEECH_TEXT


def encoded(audio: np.ndarray, rate: int = 16000, **kwargs) -> bytes:
    buffer = io.BytesIO()
    kwargs.setdefault("format", "WAV")
    sf.write(buffer, audio, rate, **kwargs)
    return buffer.getvalue()


class Writer(threading.Thread):
    """Writes bytes into the write end of a pipe (or a FIFO path) from another thread, as a producer
    process would; `error` keeps what stopped it (a reader that closed early gives BrokenPipeError)."""

    def __init__(self, target, data: bytes, repeat: int = 1):
        super().__init__(daemon=True)
        self.target, self.data, self.repeat = target, data, repeat
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            with open(self.target, "wb") as out:
                for _ in range(self.repeat):
                    out.write(self.data)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc


def piped(data: bytes, repeat: int = 1):
    """A non-seekable binary file whose bytes come from a writer thread."""
    read_fd, write_fd = os.pipe()
    writer = Writer(write_fd, data, repeat)
    return os.fdopen(read_fd, "rb"), writer


# -- item 5: FIFOs and <(...) --------------------------------------------------------------------


def test_a_fifo_is_transcribed_and_its_writer_finishes(tmp_path, transcriber, speech):
    fifo = tmp_path / "audio.fifo"
    os.mkfifo(fifo)
    writer = Writer(str(fifo), encoded(speech))
    result = transcriber.transcribe(str(fifo))
    writer.join(timeout=10)
    assert result.text == TEXT and result.source == str(fifo)
    assert not writer.is_alive() and writer.error is None


def test_process_substitution_through_the_command_line(tmp_path, tone_bundle, speech):
    wav = tmp_path / "x.flac"
    sf.write(wav, speech, 16000)
    command = f'"{sys.executable}" -m edge_asr file <(cat "{wav}") -m "{tone_bundle}"'
    result = subprocess.run(["bash", "-c", command], capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == TEXT + "\n"


@pytest.mark.parametrize(
    "fmt, subtype, channels, rate",
    [
        ("WAV", "PCM_16", 1, 16000),
        ("WAV", "PCM_24", 2, 44100),
        ("WAV", "PCM_32", 1, 22050),
        ("WAV", "PCM_U8", 1, 16000),
        ("WAV", "FLOAT", 3, 48000),
        ("WAV", "DOUBLE", 1, 16000),
        ("WAVEX", "PCM_16", 2, 16000),
        ("WAV", "ULAW", 1, 8000),  # a WAV codec left to libsndfile, from a temporary copy
        ("FLAC", "PCM_16", 1, 16000),
        ("OGG", "VORBIS", 1, 16000),
        ("MP3", "MPEG_LAYER_III", 1, 16000),
    ],
)
def test_a_pipe_decodes_as_the_same_file_by_path(tmp_path, speech, fmt, subtype, channels, rate):
    audio = np.stack([speech * (0.5 + 0.2 * c) for c in range(channels)], axis=1)
    if rate != 16000:
        import soxr

        audio = soxr.resample(audio, 16000, rate)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, audio, rate, format=fmt, subtype=subtype)
    by_path = read_audio(str(path), 16000)
    handle, writer = piped(path.read_bytes())
    with handle:
        by_pipe = read_audio(handle, 16000)
    writer.join(timeout=10)
    assert by_pipe.shape == by_path.shape
    np.testing.assert_allclose(by_pipe, by_path, atol=1e-6)


def test_wav_with_open_sizes_is_read_to_the_end_of_the_stream(transcriber, speech):
    data = bytearray(encoded(speech, subtype="PCM_16"))
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)  # as `arecord` and `sox ... -t wav -` write them
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    handle, writer = piped(bytes(data))
    info, blocks = open_audio(handle, 16000)
    assert info.frames is None and info.duration == 0.0
    with handle:
        assert sum(b.size for b in blocks) == speech.size
    handle, writer = piped(bytes(data))
    with handle:
        assert transcriber.transcribe(handle).text == TEXT


def test_a_stream_cut_short_is_refused_like_a_truncated_file(speech):
    data = encoded(speech, subtype="PCM_16")
    handle, writer = piped(data[: len(data) // 2])
    with handle, pytest.raises(AudioError, match="truncated WAV.*the stream ended after"):
        read_audio(handle, 16000)


def test_a_stream_that_is_not_audio_fails_at_once(tmp_path, tone_bundle):
    handle, writer = piped(b"\0" * (1 << 20), repeat=100)  # 100 MB of zeros, as `< /dev/zero`
    started = time.perf_counter()
    with handle, pytest.raises(AudioError, match="not a readable audio stream .*00 00 00 00"):
        read_audio(handle, 16000)
    assert time.perf_counter() - started < 2
    writer.join(timeout=10)
    assert isinstance(writer.error, BrokenPipeError)  # the writer is released, not left blocked
    result = subprocess.run(
        [sys.executable, "-m", "edge_asr", "file", "-", "-m", str(tone_bundle)],
        stdin=open("/dev/zero", "rb"),  # noqa: SIM115 - closed with the process
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"<stdin>: not a readable audio stream" in result.stderr and b"Traceback" not in result.stderr


def test_compressed_streams_past_the_spool_limit_give_a_clear_error(monkeypatch, speech):
    monkeypatch.setattr(P, "MAX_SPOOL_BYTES", 4096)
    handle, writer = piped(encoded(speech, format="FLAC"))
    with handle, pytest.raises(AudioError, match=r"more than .* GiB of FLAC on a stream.*by path"):
        read_audio(handle, 16000)


def test_a_terminal_on_stdin_is_refused(monkeypatch):
    class Terminal:
        buffer = io.BytesIO(b"")

        @staticmethod
        def isatty() -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal)
    with pytest.raises(AudioError, match="standard input is a terminal"):
        read_audio("-", 16000)


# -- item 4: stdin is streamed in flat memory ----------------------------------------------------


def test_stdin_is_decoded_as_it_arrives_not_read_whole(monkeypatch, speech):
    minutes = 10  # 19 MB of 16-bit WAV
    audio = np.tile(speech, int(minutes * 60 * 16000 / speech.size))
    data = encoded(audio, subtype="PCM_16")
    handle, writer = piped(data)

    class Stdin:
        buffer = handle

    monkeypatch.setattr(sys, "stdin", Stdin)
    tracemalloc.start()
    try:
        info, blocks = open_audio("-", 16000, block_seconds=5.0)
        total = sum(block.size for block in blocks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        handle.close()
    assert total == audio.size and info.frames == audio.size
    assert peak < 4 << 20, f"peak {peak / 1e6:.1f} MB while reading {len(data) / 1e6:.0f} MB from stdin"


PEAK_RSS_SCRIPT = """
import resource, sys
from edge_asr import EdgeTranscriber
asr = EdgeTranscriber(sys.argv[1], threads=1)
result = asr.transcribe(sys.argv[2])
print(result.duration, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_one_hour_by_stdin_peaks_within_10_percent_of_by_path(tmp_path, tone_bundle, speech):
    """Peak RSS of `edge-asr file`'s work for a one-hour WAV by path and piped into stdin (printed)."""
    path = tmp_path / "hour.wav"
    minute = np.tile(speech, int(60 * 16000 / speech.size) + 1)[: 60 * 16000]
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as out:
        for _ in range(60):
            out.write(minute)
    command = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(tone_bundle)]
    by_path = subprocess.run([*command, str(path)], capture_output=True, cwd=ROOT, timeout=1800)
    with open(path, "rb") as wav:
        cat = subprocess.Popen(["cat"], stdin=wav, stdout=subprocess.PIPE)  # stdin a pipe, not the file
        by_stdin = subprocess.run(
            [*command, "-"], stdin=cat.stdout, capture_output=True, cwd=ROOT, timeout=1800
        )
        cat.wait(timeout=60)
    peaks = {}
    for how, result in (("path", by_path), ("stdin", by_stdin)):
        assert result.returncode == 0, result.stderr.decode()
        duration, peak_kib = result.stdout.decode().split()
        assert float(duration) == pytest.approx(3600, abs=1)
        peaks[how] = int(peak_kib) / 1024
    print(f"peak RSS, one-hour WAV: by path {peaks['path']:.0f} MB, by stdin {peaks['stdin']:.0f} MB")
    assert peaks["stdin"] <= 1.10 * peaks["path"]


LISTEN_RSS_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from tone_model import tone_audio
from edge_asr import EdgeTranscriber
from edge_asr.model import limit_heap_growth

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 1e6

limit_heap_growth()
stream = EdgeTranscriber(sys.argv[1], threads=1).stream()
speech = np.concatenate([tone_audio("ab cd ef"), np.zeros(16000 * 2, np.float32)])
minute = np.tile(speech, int(60 * 16000 / speech.size) + 1)[: 60 * 16000]
finals, at = 0, {}
for m in range(1, 61):
    for i in range(0, minute.size, 800):  # 50 ms blocks, as the microphone delivers them
        finals += sum(e.is_final for e in stream.accept(minute[i : i + 800], 16000))
    if m in (1, 59):
        at[m] = rss_mb()
print(at[1], at[59], finals)
"""


@pytest.mark.slow
def test_a_60_minute_listen_session_keeps_flat_memory(tone_bundle):
    """RSS of a simulated 60-minute `listen` session at minute 1 and minute 59 (prints both)."""
    result = subprocess.run(
        [sys.executable, "-c", LISTEN_RSS_SCRIPT, str(tone_bundle), str(ROOT / "tests")],
        capture_output=True,
        cwd=ROOT,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr.decode()
    first, last, finals = result.stdout.decode().split()
    print(f"listen RSS: minute 1 {float(first):.0f} MB, minute 59 {float(last):.0f} MB, {finals} finals")
    assert int(finals) >= 60 * 10  # ~13 utterances a minute: the session kept transcribing to the end
    assert float(last) <= 1.10 * float(first)
