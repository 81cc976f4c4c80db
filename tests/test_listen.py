"""`edge-asr listen` and `devices` end to end, against a fake sounddevice module and the tone model."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import soundfile as sf
import soxr
from tone_model import SAMPLE_RATE, tone_audio, write_tone_bundle

from edge_asr import DeviceError
from edge_asr.cli import main
from edge_asr.listen import EventPrinter, StopFlag, run_session
from edge_asr.mic import BlockQueue, MicSource, list_input_devices, resolve_device
from edge_asr.stream import StreamEvent


class FakePortAudioError(Exception):
    pass


class FakeInputStream:
    """Calls the callback from its own thread with `audio` in blocks, like PortAudio, then runs `after`."""

    def __init__(
        self,
        fake: FakeSoundDevice,
        device=None,
        samplerate=None,
        channels=None,
        dtype=None,
        blocksize=None,
        callback=None,
    ):
        if samplerate not in fake.supported_rates:
            raise FakePortAudioError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")
        fake.opened.append({"device": device, "samplerate": samplerate, "channels": channels, "dtype": dtype})
        self.fake, self.callback, self.blocksize, self.channels = fake, callback, blocksize, channels
        self.active = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        audio = self.fake.audio
        for i in range(0, len(audio), self.blocksize):
            if not self.active:
                return
            block = np.repeat(audio[i : i + self.blocksize, None], self.channels, axis=1).astype(np.float32)
            self.callback(block, len(block), None, self.fake.status)
            if self.fake.pace:
                time.sleep(self.fake.pace)
        if self.fake.after is not None:
            self.fake.after()

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False


class FakeSoundDevice(types.ModuleType):
    """Just enough of sounddevice: query_devices, default.device, InputStream, PortAudioError."""

    PortAudioError = FakePortAudioError

    def __init__(
        self,
        devices: List[Dict[str, Any]],
        default_input: int,
        audio: Optional[np.ndarray] = None,
        supported_rates=(44100, 48000),
        after=None,
        pace: float = 0.0,
    ):
        super().__init__("sounddevice")
        self.devices = devices
        self.default = types.SimpleNamespace(device=[default_input, -1])
        self.audio = audio if audio is not None else np.zeros(0, np.float32)
        self.supported_rates = supported_rates
        self.after = after
        self.pace = pace
        self.status = None
        self.opened: List[Dict[str, Any]] = []

    def query_devices(self):
        return [dict(d, index=i) for i, d in enumerate(self.devices)]

    def InputStream(self, **kwargs):  # noqa: N802 - sounddevice's name
        return FakeInputStream(self, **kwargs)


def device(name: str, inputs: int, rate: float = 44100.0, outputs: int = 0) -> Dict[str, Any]:
    return {
        "name": name,
        "max_input_channels": inputs,
        "max_output_channels": outputs,
        "default_samplerate": rate,
        "hostapi": 0,
    }


DEVICES = [
    device("HDA Intel PCH: ALC892 Analog (hw:0,0)", 2, 48000.0, outputs=2),
    device("HDMI 0 (hw:0,3)", 0, 48000.0, outputs=8),
    device("USB PnP Sound Device: Audio (hw:1,0)", 1, 44100.0),
    device("USB Webcam C270: Audio (hw:2,0)", 1, 48000.0),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_bundle(tmp_path_factory.mktemp("tone") / "bundle")


def two_utterances(rate: int) -> np.ndarray:
    """ "ab cd", silence, then "ef" with no trailing silence: only a flush can finish the second."""
    audio = np.concatenate(
        [tone_audio("ab cd"), np.zeros(SAMPLE_RATE * 3 // 2, np.float32), tone_audio("ef")]
    )
    return soxr.resample(audio, SAMPLE_RATE, rate).astype(np.float32)


def install(monkeypatch, fake: FakeSoundDevice) -> FakeSoundDevice:
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return fake


def kill_self(signum: int):
    return lambda: os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_listen_from_a_microphone_and_a_signal_flushes_the_last_utterance(
    bundle, monkeypatch, capsys, signum
):
    fake = install(monkeypatch, FakeSoundDevice(DEVICES, 2, two_utterances(44100), after=kill_self(signum)))
    previous = signal.getsignal(signum)
    code = main(["listen", "-m", str(bundle)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.splitlines() == ["ab cd", "ef"]
    # captured at the device's own rate, mono, resampled by the stream
    assert fake.opened == [{"device": 2, "samplerate": 44100, "channels": 1, "dtype": "float32"}]
    assert "USB PnP Sound Device" in captured.err
    assert f"stopped by {signal.Signals(signum).name}" in captured.err
    assert "0 audio block(s) dropped" in captured.err
    assert signal.getsignal(signum) is previous


def test_device_by_name_and_samplerate_option(bundle, monkeypatch, capsys, tmp_path):
    fake = install(
        monkeypatch, FakeSoundDevice(DEVICES, 0, two_utterances(48000), after=kill_self(signal.SIGINT))
    )
    out_file = tmp_path / "log" / "transcript.jsonl"
    code = main(
        [
            "listen",
            "-m",
            str(bundle),
            "--device",
            "webcam",
            "--samplerate",
            "48000",
            "-f",
            "jsonl",
            "--output",
            str(out_file),
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert fake.opened[0]["device"] == 3 and fake.opened[0]["samplerate"] == 48000
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["text"] for e in events if e["type"] == "final"] == ["ab cd", "ef"]
    assert any(e["type"] == "partial" for e in events)
    saved = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [e["text"] for e in saved] == ["ab cd", "ef"] and all(e["type"] == "final" for e in saved)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("7", "no input device has that index"),
        ("1", "no input device has that index"),  # HDMI: output only
        ("bluetooth", "no input device name contains it"),
        ("usb", "matches 2 input devices"),
    ],
)
def test_bad_device_values_give_clear_errors(bundle, monkeypatch, capsys, spec, message):
    install(monkeypatch, FakeSoundDevice(DEVICES, 0))
    assert main(["listen", "-m", str(bundle), "--device", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and "USB PnP Sound Device" in err


def test_refused_sample_rate_suggests_the_fix(bundle, monkeypatch, capsys):
    install(monkeypatch, FakeSoundDevice(DEVICES, 2))
    assert main(["listen", "-m", str(bundle), "--samplerate", "16000"]) == 2
    err = capsys.readouterr().err
    assert "refused 16000 Hz" in err and "--samplerate 44100" in err


def test_no_input_device_and_missing_portaudio_name_the_fix(bundle, monkeypatch, capsys, tmp_path):
    install(monkeypatch, FakeSoundDevice([DEVICES[1]], -1))
    assert main(["listen", "-m", str(bundle)]) == 2
    assert "no audio input device found" in capsys.readouterr().err
    assert main(["devices"]) == 2
    assert "libportaudio2" in capsys.readouterr().err

    # sounddevice raises OSError at import when libportaudio.so is missing
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert "PortAudio library not found" in err and "sudo apt install libportaudio2" in err

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    assert main(["listen", "-m", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "pip install sounddevice" in err and "pip install '.[mic]'" in err  # edge-asr is not on PyPI
    assert "edge-asr[mic]" not in err


def test_devices_lists_inputs_with_the_default_marked(monkeypatch, capsys):
    install(monkeypatch, FakeSoundDevice(DEVICES, 2))
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and not any("HDMI" in line for line in lines)
    assert lines[1].split()[0] == "2" and lines[1].endswith("(default)")
    assert "44100 Hz" in lines[1]


def test_resolve_device_prefers_an_exact_name_and_falls_back_to_the_first_input():
    fake = FakeSoundDevice(DEVICES + [device("USB", 1)], -1)
    devices = list_input_devices(fake)
    assert resolve_device("usb", devices).index == 4
    assert resolve_device(None, devices).index == 0
    with pytest.raises(DeviceError, match="no audio input device"):
        resolve_device(None, [])


class UnpluggedInputStream(FakeInputStream):
    """Delivers its audio, then goes inactive as an unplugged USB microphone does; stopping it fails."""

    def _run(self) -> None:
        super()._run()
        self.active = False

    def stop(self) -> None:
        raise FakePortAudioError("Error stopping stream: Unanticipated host error [PaErrorCode -9999]")


def test_an_unplugged_microphone_is_a_device_error_not_a_portaudio_traceback(bundle, monkeypatch, capsys):
    fake = install(monkeypatch, FakeSoundDevice(DEVICES, 2, two_utterances(44100)))
    fake.InputStream = lambda **kwargs: UnpluggedInputStream(fake, **kwargs)
    assert main(["listen", "-m", str(bundle)]) == 2
    err = capsys.readouterr().err
    # The failed stop while leaving is not what the user needs to hear: the cause is.
    assert "stopped delivering audio (unplugged?)" in err and "Traceback" not in err

    source = MicSource(sd=fake).open()
    with pytest.raises(DeviceError, match="cannot close USB PnP Sound Device.*Unanticipated host error"):
        source.close()


def test_queue_overflow_is_counted_warned_and_summarized(bundle, monkeypatch):
    stop = StopFlag()
    audio = two_utterances(44100)
    fake = FakeSoundDevice(DEVICES, 2, audio)
    source = MicSource(block_seconds=0.05, queue_seconds=0.1, sd=fake)  # room for 2 blocks
    block = source.block_frames
    from edge_asr import EdgeTranscriber

    stream = EdgeTranscriber(bundle).stream()
    out, warn = io.StringIO(), io.StringIO()
    # The fake stream delivers every block at once, before the consumer has taken any.
    started = threading.Event()
    real_get = source.queue.get

    def slow_get(timeout: float):
        started.wait(5)
        return real_get(timeout)

    monkeypatch.setattr(source.queue, "get", slow_get)
    fake.after = lambda: (stop.stop("test"), started.set())
    with source:
        summary = run_session(stream, source, EventPrinter(out), stop, warn=warn)
    total = -(-len(audio) // block)
    assert summary.dropped_blocks == total - 2 == source.dropped_blocks
    assert summary.dropped_seconds == pytest.approx((len(audio) - 2 * block) / 44100, abs=0.06)
    assert "dropped" in warn.getvalue() and str(total - 2) in warn.getvalue()
    assert f"{total - 2} audio block(s) dropped" in summary.describe()


def test_block_queue_drops_the_newest_when_full():
    q = BlockQueue(2)
    assert [q.put(np.zeros(10)) for _ in range(5)] == [True, True, False, False, False]
    assert (q.dropped_blocks, q.dropped_samples) == (3, 30)
    assert q.get(0.01) is not None and q.get_nowait() is not None and q.get_nowait() is None


def test_listen_input_file_matches_transcribe_and_appends_output(bundle, tmp_path, capsys):
    wav = tmp_path / "two.flac"
    sf.write(wav, two_utterances(44100), 44100)
    out_file = tmp_path / "out.txt"
    out_file.write_text("earlier line\n")
    assert main(["listen", "-m", str(bundle), "--input", str(wav), "--output", str(out_file)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["ab cd", "ef"]
    assert out_file.read_text().splitlines() == ["earlier line", "ab cd", "ef"]
    assert main(["file", "-m", str(bundle), str(wav)]) == 0
    # offline has no utterances; the 1.5 s of silence ends "cd" as a word, as it ends the utterance
    assert capsys.readouterr().out == "ab cd ef\n"


def test_listen_input_realtime_paces_the_file(bundle, tmp_path, capsys):
    wav = tmp_path / "short.wav"
    audio = tone_audio("ab")
    sf.write(wav, audio, SAMPLE_RATE)
    started = time.monotonic()
    assert main(["listen", "-m", str(bundle), "--input", str(wav), "--realtime", "-q"]) == 0
    assert time.monotonic() - started >= 0.9 * len(audio) / SAMPLE_RATE
    assert capsys.readouterr().out == "ab\n"


def test_listen_input_reads_a_fifo_from_its_first_byte(bundle, tmp_path, capsys):
    # Issue 29: a look at the file's rate read the FIFO's WAV header, and the stream began mid-data.
    wav = tmp_path / "two.wav"
    sf.write(wav, two_utterances(44100), 44100, subtype="PCM_16")
    fifo = tmp_path / "audio.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(wav.read_bytes()), daemon=True)
    writer.start()
    assert main(["listen", "-m", str(bundle), "--input", str(fifo), "-q"]) == 0
    writer.join(timeout=10)
    assert capsys.readouterr().out.splitlines() == ["ab cd", "ef"]
    assert not writer.is_alive()


def test_listen_input_says_one_line_for_a_corrupt_mp3(bundle, tmp_path, capfd):
    # libmpg123's own "Note: Illegal Audio-MPEG-Header" lines came before ours (`file` had been fixed).
    good = tmp_path / "good.mp3"
    sf.write(good, tone_audio("ab"), SAMPLE_RATE, format="MP3")
    rng = np.random.default_rng(3)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(good.read_bytes()[:100] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    capfd.readouterr()
    assert main(["listen", "-m", str(bundle), "--input", str(broken), "-q"]) == 2
    assert capfd.readouterr().err.splitlines() == [
        f"edge-asr: error: {broken}: not a readable audio file (no audio frames found: the file is "
        "corrupt, or not the format its name says); use WAV, FLAC or OGG (convert with e.g. "
        "`ffmpeg -i INPUT -ar 16000 -ac 1 out.wav`)"
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--realtime"], "--realtime paces an --input FILE"),
        (["--input", "x.wav", "--device", "1"], "do not apply to --input"),
        (["--hop", "0"], "hop_seconds must be between 0.05 and 10, got 0.0"),
        (["--input", "missing.wav"], "missing.wav: no such file"),
    ],
)
def test_bad_listen_options(bundle, capsys, extra, message):
    assert main(["listen", "-m", str(bundle), *extra]) == 2
    assert message in capsys.readouterr().err


def test_output_that_is_a_folder_is_refused(bundle, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone_audio("ab"), SAMPLE_RATE)
    assert main(["listen", "-m", str(bundle), "--input", str(wav), "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_terminal_shows_partials_on_one_updating_line():
    out = io.StringIO()
    printer = EventPrinter(out, tty=True)
    printer.show(StreamEvent("ab", 0.0, 1.0, False, 0))
    printer.show(StreamEvent("ab cd", 0.0, 1.5, False, 0))
    printer.show(StreamEvent("ab cd", 0.0, 1.6, True, 0))
    printer.show(StreamEvent("e", 3.0, 4.0, False, 1))
    printer.close()
    assert out.getvalue() == "\r\x1b[Kab\r\x1b[Kab cd\r\x1b[Kab cd\n\r\x1b[Ke\n"
    piped = io.StringIO()
    plain = EventPrinter(piped, tty=False)
    plain.show(StreamEvent("ab", 0.0, 1.0, False, 0))
    plain.show(StreamEvent("ab cd", 0.0, 1.6, True, 0))
    assert piped.getvalue() == "ab cd\n"


def test_a_closed_stdout_pipe_ends_listen_quietly_and_the_output_file_keeps_the_finals(bundle, tmp_path):
    import subprocess

    gap = np.zeros(int(0.6 * SAMPLE_RATE), np.float32)
    wav = tmp_path / "three.wav"
    sf.write(
        wav,
        np.concatenate([tone_audio("ab"), gap, tone_audio("cd"), gap, tone_audio("ef"), gap]),
        SAMPLE_RATE,
    )
    saved = tmp_path / "saved.txt"
    cmd = [
        sys.executable,
        "-m",
        "edge_asr",
        "listen",
        "-m",
        str(bundle),
        "--input",
        str(wav),
        "--realtime",
        "--endpoint-silence",
        "0.3",
        "--output",
        str(saved),
        "-q",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    assert proc.stdout.readline() == b"ab\n"
    proc.stdout.close()  # like `| head -1`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert err == b""
    # the session ends at the first final stdout cannot take, and that final is saved all the same
    assert saved.read_text().splitlines() == ["ab", "cd"]


def test_vad_threshold_option_reaches_the_detector(bundle, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.concatenate([tone_audio("ab"), np.zeros(SAMPLE_RATE, np.float32)]), SAMPLE_RATE)
    assert main(["listen", "-m", str(bundle), "--input", str(wav), "-q"]) == 0
    assert capsys.readouterr().out == "ab\n"
    assert main(["listen", "-m", str(bundle), "--input", str(wav), "-q", "--vad-threshold", "200"]) == 0
    assert capsys.readouterr().out == ""  # nothing is ever loud enough: no utterance
