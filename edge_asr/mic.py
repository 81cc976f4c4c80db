"""Live audio sources for `edge-asr listen`: a microphone (sounddevice) or a file replayed as if live.

Both are what `listen.LiveSource` describes (mypy checks it where listen.py picks one): they yield mono
float32 blocks at their own rate; `stream.Stream` resamples, so a file and a microphone take exactly the
same path. The microphone opens at the device's default rate because many USB microphones on a Pi refuse
16 kHz ("Invalid sample rate").

The PortAudio callback runs on a real-time audio thread: it only copies the block into a bounded queue.
If decoding falls behind, new blocks are dropped and counted (never silently): `dropped_blocks`.

sounddevice is imported lazily, here only (the `mic` extra), so transcribing files never needs PortAudio.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Type

import numpy as np

from .audio import open_audio
from .errors import DeviceError

log = logging.getLogger(__name__)
PORTAUDIO_FIX = "install PortAudio: `sudo apt install libportaudio2` (Raspberry Pi OS / Debian / Ubuntu)"


def import_sounddevice() -> ModuleType:
    """The sounddevice module, or a DeviceError that names the fix."""
    try:
        import sounddevice
    except ImportError:
        raise DeviceError(
            "live audio needs the sounddevice package: pip install sounddevice (or, from a clone of "
            "edge-asr, pip install '.[mic]'); or use `edge-asr listen --input FILE`"
        ) from None
    except OSError as exc:  # sounddevice raises OSError when it cannot load libportaudio
        raise DeviceError(f"cannot load the PortAudio library ({exc}); {PORTAUDIO_FIX}") from None
    module: ModuleType = sounddevice
    return module


@dataclass(frozen=True)
class InputDevice:
    """An audio input as PortAudio lists it."""

    index: int
    name: str
    channels: int
    default_samplerate: int
    hostapi: str = ""
    is_default: bool = False

    def describe(self) -> str:
        mark = " (default)" if self.is_default else ""
        api = f", {self.hostapi}" if self.hostapi else ""
        return f"{self.index:>3}  {self.name}  [{self.channels} ch, {self.default_samplerate} Hz{api}]{mark}"


def _default_input_index(sd: Any) -> int:
    """sounddevice's default input index (its default.device is an (input, output) pair); -1 if none."""
    device: Any = getattr(getattr(sd, "default", None), "device", -1)
    try:
        index = device[0]
    except (TypeError, IndexError):
        index = device
    try:
        return int(index)
    except (TypeError, ValueError):
        return -1


def list_input_devices(sd: Optional[Any] = None) -> List[InputDevice]:
    """Every device with at least one input channel (sounddevice module passed in for tests)."""
    sd = sd or import_sounddevice()
    try:
        devices = list(sd.query_devices())
    except Exception as exc:  # PortAudioError: the audio system itself is broken
        raise DeviceError(
            f"cannot list audio devices ({exc}); {PORTAUDIO_FIX}, and check `arecord -l`"
        ) from None
    default = _default_input_index(sd)
    hostapis: Sequence[Any] = ()
    if hasattr(sd, "query_hostapis"):
        try:
            hostapis = list(sd.query_hostapis())
        except Exception:  # only cosmetic
            hostapis = ()
    found = []
    for position, info in enumerate(devices):
        channels = int(info.get("max_input_channels", 0))
        if channels <= 0:
            continue
        index = int(info.get("index", position))
        api_index = info.get("hostapi")
        api = hostapis[api_index]["name"] if isinstance(api_index, int) and api_index < len(hostapis) else ""
        found.append(
            InputDevice(
                index=index,
                name=str(info.get("name", f"device {index}")),
                channels=channels,
                default_samplerate=int(round(float(info.get("default_samplerate") or 0))),
                hostapi=api,
                is_default=index == default,
            )
        )
    return found


def no_inputs_message() -> str:
    return (
        "no audio input device found: plug in a microphone (USB microphones show up in `arecord -l`); "
        f"if one is plugged in, PortAudio may lack ALSA support: {PORTAUDIO_FIX}"
    )


def resolve_device(spec: Optional[str], devices: Sequence[InputDevice]) -> InputDevice:
    """Pick an input: None = the default input, digits = a device index, else a name substring."""
    if not devices:
        raise DeviceError(no_inputs_message())
    listing = "; ".join(f"{d.index}: {d.name}" for d in devices)
    if spec is None or not spec.strip():
        for device in devices:
            if device.is_default:
                return device
        return devices[0]  # PortAudio has no default input (common with ALSA): take the first
    text = spec.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        for device in devices:
            if device.index == index:
                return device
        raise DeviceError(
            f"--device {index}: no input device has that index (inputs: {listing}); "
            "`edge-asr devices` lists them"
        )
    lowered = text.lower()
    matches = [d for d in devices if lowered in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == lowered]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"--device {text!r}: no input device name contains it (inputs: {listing})")
    names = "; ".join(f"{d.index}: {d.name}" for d in matches)
    raise DeviceError(
        f"--device {text!r} matches {len(matches)} input devices ({names}); pass the index instead"
    )


class BlockQueue:
    """A bounded queue that never blocks its producer: when full, the new block is dropped and counted."""

    def __init__(self, max_blocks: int):
        if max_blocks < 1:
            raise ValueError("max_blocks must be 1 or more")
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max_blocks)
        self.dropped_blocks = 0
        self.dropped_samples = 0

    def put(self, block: np.ndarray) -> bool:
        try:
            self._queue.put_nowait(block)
            return True
        except queue.Full:
            self.dropped_blocks += 1
            self.dropped_samples += len(block)
            return False

    def get(self, timeout: float) -> Optional[np.ndarray]:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> Optional[np.ndarray]:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


def _mono(block: np.ndarray) -> np.ndarray:
    if block.ndim == 2:
        return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
    return block


class MicSource:
    """Microphone capture into a bounded queue; iterate `blocks(stop)` from the decoding thread.

    Args:
        device: None (default input), an index, or a name substring (see `resolve_device`).
        samplerate: capture rate; None = the device's default rate.
        block_seconds: audio per callback (smaller = lower latency, more wake-ups).
        queue_seconds: how much audio may wait for the decoder before blocks are dropped.
        sd: the sounddevice module (tests pass a fake one).
    """

    def __init__(
        self,
        device: Optional[str] = None,
        samplerate: Optional[int] = None,
        block_seconds: float = 0.05,
        queue_seconds: float = 5.0,
        sd: Optional[Any] = None,
    ):
        self._sd = sd or import_sounddevice()
        self.device = resolve_device(device, list_input_devices(self._sd))
        rate = samplerate or self.device.default_samplerate
        if not rate or rate <= 0:
            raise DeviceError(
                f"device {self.device.name!r} reports no default sample rate; pass --samplerate"
            )
        self.sample_rate = int(rate)
        self.block_frames = max(1, int(round(block_seconds * self.sample_rate)))
        self.queue = BlockQueue(max(2, math.ceil(queue_seconds / block_seconds)))
        self.overflows = 0  # PortAudio's own input overflows (the OS buffer overran before our callback)
        self._stream: Any = None
        self._channels = 1

    @property
    def dropped_blocks(self) -> int:
        return self.queue.dropped_blocks

    @property
    def dropped_seconds(self) -> float:
        return self.queue.dropped_samples / self.sample_rate

    def describe(self) -> str:
        return f"{self.device.name} (device {self.device.index}) at {self.sample_rate} Hz"

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's audio thread: copy and hand over, nothing else (no logging, no locks held).
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        self.queue.put(indata.copy())

    def _errors(self) -> Tuple[Type[BaseException], ...]:
        """What sounddevice raises when the audio system fails: PortAudioError, OSError, ValueError."""
        return (getattr(self._sd, "PortAudioError", OSError), OSError, ValueError)

    def open(self) -> MicSource:
        sd = self._sd
        errors = self._errors()
        attempts = [1] if self.device.channels <= 1 else [1, self.device.channels]
        last: Optional[BaseException] = None
        for channels in attempts:  # some devices open only with all their channels
            try:
                stream = sd.InputStream(
                    device=self.device.index,
                    samplerate=self.sample_rate,
                    channels=channels,
                    dtype="float32",
                    blocksize=self.block_frames,
                    callback=self._callback,
                )
                stream.start()
            except errors as exc:
                last = exc
                if "channel" not in str(exc).lower():
                    break
                continue
            self._stream, self._channels = stream, channels
            return self
        raise self._open_error(last)

    def _open_error(self, exc: Optional[BaseException]) -> DeviceError:
        detail = str(exc) if exc else "unknown error"
        name = f"{self.device.name!r} (device {self.device.index})"
        if "sample rate" in detail.lower():
            return DeviceError(
                f"{name} refused {self.sample_rate} Hz ({detail}); its default rate is "
                f"{self.device.default_samplerate} Hz: try --samplerate {self.device.default_samplerate}, "
                "48000 or 44100"
            )
        if "busy" in detail.lower() or "unanticipated host error" in detail.lower():
            return DeviceError(f"cannot open {name}: {detail}; is another program using the microphone?")
        return DeviceError(f"cannot open {name}: {detail}")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            try:
                stream.stop()
            finally:
                stream.close()
        except self._errors() as exc:  # e.g. the device was unplugged while open
            raise DeviceError(f"cannot close {self.describe()}: {exc}") from None

    def __enter__(self) -> MicSource:
        return self.open()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close()
        except DeviceError as error:
            if exc_type is None:
                raise
            # Already leaving on an error (say "stopped delivering audio"): that one says more.
            log.debug("%s", error)

    def blocks(self, stop: threading.Event, poll_seconds: float = 0.1) -> Iterator[np.ndarray]:
        """Mono float32 blocks until `stop` is set; then the blocks already captured, and the end."""
        while not stop.is_set():
            block = self.queue.get(poll_seconds)
            if block is not None:
                yield _mono(block)
            elif self._stream is not None and not getattr(self._stream, "active", True):
                raise DeviceError(f"{self.describe()} stopped delivering audio (unplugged?)")
        self.close()
        while True:
            block = self.queue.get_nowait()
            if block is None:
                return
            yield _mono(block)


class FileSource:
    """A file (or "-" for stdin) replayed block by block, as fast as possible or at real-time pace.

    Blocks keep the file's own rate, so the stream's resampler runs exactly as for a microphone.
    """

    dropped_blocks = 0
    dropped_seconds = 0.0
    overflows = 0

    def __init__(self, path: str, realtime: bool = False, block_seconds: float = 0.05):
        self.path = path
        self.realtime = realtime
        # Opened once, at its own rate: a FIFO or `<(...)` can be read only once (a look at its header
        # first ate it), and `open_audio` keeps a corrupt file's decoder chatter out of the terminal.
        info, self._blocks = open_audio(path, None, block_seconds)
        self.sample_rate = info.sample_rate
        self.duration = info.duration

    def describe(self) -> str:
        pace = "real-time" if self.realtime else "as fast as possible"
        return f"{self.path} ({self.duration:.1f} s at {self.sample_rate} Hz, {pace})"

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        started = time.monotonic()
        sent = 0
        for block in self._blocks:
            if stop.is_set():
                return
            sent += block.size
            if self.realtime:
                # A microphone delivers a block once it has been recorded: wait for its end.
                delay = started + sent / self.sample_rate - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            yield block
