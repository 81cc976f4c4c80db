"""Audio in: decode files (or stdin), mix to mono, resample to the model's rate.

Files are read in blocks and resampled with a streaming resampler, so a one-hour file never sits in
memory whole. soxr is used because it is small, fast on ARM and streams; numpy alone has no good
band-limited resampler.
"""

from __future__ import annotations

import contextlib
import io
import logging
import numbers
import os
import stat
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Protocol, Tuple, Union

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, InputError
from .limits import brief
from .pipe_audio import WavStreamReader, open_pipe

log = logging.getLogger(__name__)
AudioSource = Union[str, "os.PathLike[str]", BinaryIO]
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".au",
        ".caf",
        ".w64",
        ".rf64",
    }
)
STDIN = "-"
# More channels than this in an array is a (channels, frames) array read the wrong way round.
MAX_CHANNELS = 64
# Full scale. Integer PCM cannot exceed it; float audio beyond it is damaged or mis-scaled, and one such
# sample dominates the variance that wav2vec2 normalizes each window by: a single 1e30 left the
# rest of its 12 s window at ~1e-15 and the transcript empty.
MAX_AMPLITUDE = 1.0


@dataclass(frozen=True)
class AudioInfo:
    """What a source holds before resampling."""

    name: str
    sample_rate: int
    channels: int
    frames: Optional[int]  # None: a stream whose length is known only at its end

    @property
    def duration(self) -> float:
        """Seconds; 0.0 when the length is not known in advance."""
        return self.frames / self.sample_rate if self.sample_rate and self.frames else 0.0


def source_name(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return "<stdin>" if str(source) == STDIN else str(source)
    return getattr(source, "name", "<stream>")


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: (frames, channels) -> (frames,). Mono input passes through."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(
            f"audio array must be 1-D (mono) or 2-D (frames, channels), got shape {samples.shape}"
        )
    frames, channels = samples.shape
    # Tiny stream blocks may have fewer frames than channels ((1, 2): one stereo frame); a block of
    # more than 8 channels shorter than its channel count, or more than MAX_CHANNELS, is channels-first.
    if channels > MAX_CHANNELS or (channels > frames and channels > 8):
        raise AudioError(
            f"audio array of shape {samples.shape} would be {frames} frame(s) of {channels} channels: "
            "arrays are (frames, channels). If yours is (channels, frames), pass samples.T"
        )
    mono: np.ndarray = samples.mean(axis=1, dtype=np.float32)
    return mono


def as_float32(samples: np.ndarray) -> np.ndarray:
    """Integer PCM to float in [-1, 1); float input is kept as it is."""
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        if info.min == 0:  # unsigned (8-bit WAV): centre first
            return ((samples.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)).astype(
                np.float32
            )
        return samples.astype(np.float32) / float(-info.min)
    raise AudioError(f"unsupported sample type {samples.dtype}; pass float or integer PCM")


class SampleGuard:
    """The one policy for samples that are not audio, which files, arrays and streams all pass through
    (`clean_mono`): NaN and +-Inf become 0 (silence) and samples beyond full scale are clipped to
    +-`MAX_AMPLITUDE`.

    Why here, before anything else sees them: a NaN spreads. Window normalization turns one NaN into a
    window of NaNs, the beam search keeps NaN scores in every prefix after it, and the live VAD's noise
    floor becomes NaN, after which no frame ever counts as speech again. Zero is what a dropout sounds
    like, so the words around a damaged stretch survive.

    Counts what it changed; `report()` logs one warning per source with the counts, and only once.
    """

    def __init__(self, name: str):
        self.name = name
        self.non_finite = 0
        self.clipped = 0
        self._warned = False

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Float samples -> the same array when all are fine, else a repaired copy (never in place:
        the array may be the caller's)."""
        if samples.size == 0:
            return samples
        low, high = samples.min(), samples.max()  # NaN makes both NaN and every test below False
        if low >= -MAX_AMPLITUDE and high <= MAX_AMPLITUDE:
            return samples
        finite = np.isfinite(samples)
        self.non_finite += samples.size - int(np.count_nonzero(finite))
        repaired = np.where(finite, samples, np.float32(0.0)).astype(samples.dtype, copy=False)
        self.clipped += int(np.count_nonzero(np.abs(repaired) > MAX_AMPLITUDE))
        return np.clip(repaired, -MAX_AMPLITUDE, MAX_AMPLITUDE, out=repaired)

    @property
    def changed(self) -> int:
        return self.non_finite + self.clipped

    def report(self) -> None:
        """Warn once (per guard) about what was repaired so far; nothing when nothing was."""
        if self._warned or not self.changed:
            return
        self._warned = True
        parts = []
        if self.non_finite:
            parts.append(f"{self.non_finite} NaN/Inf sample(s) replaced with silence")
        if self.clipped:
            parts.append(f"{self.clipped} sample(s) beyond full scale clipped to +-{MAX_AMPLITUDE:g}")
        log.warning(
            "%s: %s; the audio is damaged (or float audio not scaled to -1..1), so words there may be "
            "missing",
            self.name,
            " and ".join(parts),
        )


def clean_mono(samples: np.ndarray, guard: SampleGuard) -> np.ndarray:
    """Any PCM block (integer or float, mono or (frames, channels)) -> float32 mono with `guard`'s
    policy applied. Files, arrays and streams all come through here."""
    return guard(to_mono(as_float32(np.asarray(samples))))


def sample_rate_hz(rate: object, name: str) -> int:
    """A sample rate given to the API as an int (numpy ints and whole floats too), checked."""
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
        raise InputError(f"{name}: sample_rate must be a whole number of Hz, e.g. 16000, got {brief(rate)}")
    hz = int(rate)
    check_sample_rate(hz, name)
    return hz


def check_sample_rate(rate: int, name: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is not supported (need {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)"
        )


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a whole mono signal (for arrays already in memory)."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def prepare_array(
    samples: np.ndarray, sample_rate: int, target_rate: int, name: str = "<array>"
) -> np.ndarray:
    """An in-memory array (any dtype, mono or (frames, channels)) -> float32 mono at `target_rate`."""
    sample_rate = sample_rate_hz(sample_rate, name)
    guard = SampleGuard(name)
    mono = clean_mono(samples, guard)
    if mono.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    guard.report()
    return resample(mono, sample_rate, target_rate)


class _Resampler:
    """Streaming resampler that is a no-op when the rates already match."""

    def __init__(self, from_rate: int, to_rate: int):
        self._stream = (
            None if from_rate == to_rate else soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32")
        )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return np.asarray(self._stream.resample_chunk(block, last=last), dtype=np.float32)


def _wav_shortfall(handle: BinaryIO, size: int) -> Optional[Tuple[int, int]]:
    """(bytes promised by the WAV data chunk, bytes present) when the file was cut short, else None.

    libsndfile quietly reads whatever part of a truncated WAV exists; a cut-off copy would then be
    transcribed as if it were whole, so we compare the header with the file size ourselves. `handle`
    is seekable; it is left where it was.
    """
    start = handle.tell()
    try:
        riff = handle.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            handle.seek(start + offset)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                present = size - offset - 8
                return (chunk_size, present) if present < chunk_size else None
            offset += 8 + chunk_size + (chunk_size & 1)
    except (OSError, struct.error):
        return None
    finally:
        handle.seek(start)
    return None


def truncated_wav(path: Path) -> Optional[Tuple[int, int]]:
    """(bytes of audio the WAV header promises, bytes present) for a WAV file cut short, else None
    (also for files that are no WAV or cannot be read: opening them reports that)."""
    try:
        with open(path, "rb") as handle:
            return _wav_shortfall(handle, os.fstat(handle.fileno()).st_size)
    except OSError:
        return None


class PcmReader(Protocol):
    """A decoder of one source: float32 [frames, channels] blocks. `frames` is None for a stream
    whose length is known only at its end."""

    samplerate: int
    channels: int
    frames: Optional[int]

    def read(self, frames: int) -> np.ndarray:
        """Up to `frames` frames; fewer only at the end, none after it."""
        ...

    def close(self) -> None: ...


OPEN_LENGTH_PIECE = 1024
"""Frames read at a time from a file of open length (`_SoundFileReader._read_open_length`)."""
UNKNOWN_FRAMES = 2**62
"""libsndfile reports a length it cannot tell (a FLAC whose header leaves it open, as streaming encoders
write) as SF_COUNT_MAX, 2**63 - 1: any count this large means "unknown"."""


def known_frames(frames: int) -> Optional[int]:
    """libsndfile's frame count, or None when it means "unknown" (`UNKNOWN_FRAMES`)."""
    return int(frames) if 0 <= frames < UNKNOWN_FRAMES else None


_REDIRECT_NATIVE_STDERR = [True]  # in a list: changed by `redirect_native_stderr`, read by every decode


def redirect_native_stderr(enabled: bool) -> bool:
    """Whether decoder calls swap file descriptor 2 (`_native_stderr_to_log`); returns the setting
    before. `edge-asr serve` turns it off: the swap is process-wide, so on a server's threads it would
    race with other decodes (two swaps at once left fd 2 on a deleted file, and every later log line
    was lost) and swallow other threads' log lines meanwhile. The server's logs may then hold
    libmpg123's own lines about a corrupt MP3 upload."""
    before = _REDIRECT_NATIVE_STDERR[0]
    _REDIRECT_NATIVE_STDERR[0] = enabled
    return before


@contextlib.contextmanager
def _native_stderr_to_log(name: str) -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 meanwhile to the debug log instead.

    libmpg123, which libsndfile decodes MP3 with, prints its own lines ("Note: Illegal Audio-MPEG-
    Header ...", "[src/libmpg123/layer3.c:...] error: ...") straight to stderr, around our one-line
    error or in the middle of a progress line. `-v` still shows them. The redirection is process-wide,
    so it is kept to the decoder calls themselves, and made only in single-threaded command-line use
    (`redirect_native_stderr`).
    """
    if not _REDIRECT_NATIVE_STDERR[0]:
        yield
        return
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 - a pipe could fill up and block the decoder
    except OSError:  # nowhere to put it: leave stderr as it is
        yield
        return
    with capture:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            yield
            return
        with contextlib.suppress(AttributeError, ValueError, OSError):  # a replaced or closed stderr
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            said = capture.read(4096).decode("utf-8", "replace").strip()
            if said:
                log.debug("%s: the decoder said: %s", name, " | ".join(said.splitlines()))


class _SoundFileReader:
    """libsndfile on a path or a seekable binary file (`owned` is closed with it: a temporary copy)."""

    def __init__(self, snd: sf.SoundFile, name: str, owned: Optional[BinaryIO] = None):
        self._snd = snd
        self._name = name
        self._owned = owned
        self._chatty = snd.format in ("MP3", "MPEG")  # see _native_stderr_to_log
        self.samplerate = int(snd.samplerate)
        self.channels = int(snd.channels)
        self.frames: Optional[int] = known_frames(snd.frames)
        self._ended = False

    def read(self, frames: int) -> np.ndarray:
        if self.frames is None:
            return self._read_open_length(frames)
        return self._read(frames)

    def _read(self, frames: int) -> np.ndarray:
        if not self._chatty:
            return np.asarray(self._snd.read(frames, dtype="float32", always_2d=True))
        with _native_stderr_to_log(self._name):
            return np.asarray(self._snd.read(frames, dtype="float32", always_2d=True))

    def _read_open_length(self, frames: int) -> np.ndarray:
        """A file whose header leaves its length open: libsndfile fails the read that reaches its end
        ("psf_fseek() failed") and that read's frames are lost, so read in pieces of `OPEN_LENGTH_PIECE`
        frames and take the failure as the end: at most one piece of the tail is lost."""
        pieces: List[np.ndarray] = []
        got = 0
        while got < frames and not self._ended:
            try:
                piece = self._read(min(OPEN_LENGTH_PIECE, frames - got))
            except (sf.LibsndfileError, RuntimeError) as exc:
                log.debug("%s: the end of a stream of open length (%s)", self._name, exc)
                self._ended = True
                break
            if not len(piece):
                self._ended = True
            pieces.append(piece)
            got += len(piece)
        return np.concatenate(pieces) if pieces else np.zeros((0, self.channels), dtype=np.float32)

    def close(self) -> None:
        self._snd.close()
        if self._owned is not None:
            self._owned.close()


def _soundfile(handle: Union[str, BinaryIO], name: str) -> sf.SoundFile:
    try:
        with _native_stderr_to_log(name):
            return sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        detail = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        if "possibly a pipe" in detail:
            # libsndfile's words when its MP3 decoder finds no frame, about a file that does exist
            detail = "no audio frames found: the file is corrupt, or not the format its name says"
        raise AudioError(
            f"{name}: not a readable audio file ({detail.strip()}); use WAV, FLAC or OGG "
            "(convert with e.g. `ffmpeg -i INPUT -ar 16000 -ac 1 out.wav`)"
        ) from None


def _check_whole(handle: BinaryIO, size: int, name: str) -> None:
    shortfall = _wav_shortfall(handle, size)
    if shortfall:
        promised, present = shortfall
        raise AudioError(
            f"{name}: truncated WAV: the header promises {promised} bytes of audio but only "
            f"{present} are present; the file was cut off while copying or recording"
        )


def _open_seekable(handle: BinaryIO, name: str) -> PcmReader:
    """An open binary file that can seek (a file object, stdin redirected from a file)."""
    start = handle.tell()
    size = handle.seek(0, io.SEEK_END) - start
    handle.seek(start)
    if size <= 0:
        raise AudioError(f"{name}: no data (0 bytes)")
    _check_whole(handle, size, name)
    return _SoundFileReader(_soundfile(handle, name), name)


def _open_pipe(raw: BinaryIO, name: str) -> PcmReader:
    """A pipe, FIFO or socket: WAV decoded as it arrives, other formats from a temporary copy."""
    opened = open_pipe(raw, name)
    if isinstance(opened, WavStreamReader):
        return opened
    try:
        return _SoundFileReader(_soundfile(opened, name), name, owned=opened)
    except BaseException:
        opened.close()
        raise


def _open_stdin() -> PcmReader:
    name = "<stdin>"
    stdin = sys.stdin
    if stdin is None:
        raise AudioError(f"{name}: this process has no standard input")
    isatty = getattr(stdin, "isatty", None)
    if callable(isatty) and isatty():
        raise AudioError(
            f"{name}: standard input is a terminal, not audio; pipe a file in (`cat talk.wav | edge-asr "
            "file -`) or give its path"
        )
    buffer = stdin.buffer
    try:
        regular = stat.S_ISREG(os.fstat(buffer.fileno()).st_mode)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        regular = buffer.seekable()  # no descriptor: an in-memory stand-in
    # `< file.wav` gives a real file, which libsndfile reads in place; a pipe must be streamed.
    return _open_seekable(buffer, name) if regular else _open_pipe(buffer, name)


def _open_path(path: Path, name: str) -> PcmReader:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except OSError as exc:
        raise AudioError(f"{name}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"{name}: is a folder, not an audio file")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
        # A FIFO or `<(...)` (/dev/fd/N): a stream like stdin. Its size reads 0, which once got it
        # refused as empty while the writer blocked forever.
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by the reader
        except OSError as exc:
            raise AudioError(f"{name}: cannot open ({exc.strerror})") from None
        try:
            return _open_pipe(raw, name)
        except BaseException:
            raw.close()
            raise
    if not stat.S_ISREG(mode):
        raise AudioError(f"{name}: not a file, a pipe or a FIFO")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    try:
        with open(path, "rb") as handle:
            _check_whole(handle, size, name)
    except OSError as exc:
        raise AudioError(f"{name}: cannot read ({exc.strerror})") from None
    return _SoundFileReader(_soundfile(str(path), name), name)


def _open(source: AudioSource) -> Tuple[PcmReader, str]:
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        if str(source) == STDIN:
            return _open_stdin(), name
        return _open_path(Path(source), name), name
    if not hasattr(source, "read"):
        raise InputError(
            f"expected a file path, an open binary file or a numpy array, got {type(source).__name__}; "
            "pass samples as np.asarray(samples) with sample_rate=, and several files to transcribe_many()"
        )
    if isinstance(source, io.TextIOBase) or "b" not in str(getattr(source, "mode", "b")):
        # libsndfile would read str from it and print a traceback from inside a cffi callback.
        raise InputError(f"{name}: the file is open in text mode; open it in binary mode: open(path, 'rb')")
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        return _open_seekable(source, name), name
    return _open_pipe(source, name), name


def open_audio(
    source: AudioSource, target_rate: Optional[int], block_seconds: float = 10.0
) -> Tuple[AudioInfo, Iterator[np.ndarray]]:
    """Open a file (or "-" for stdin, a FIFO, a pipe) and return its info and an iterator of mono
    float32 blocks at `target_rate` (None: the file's own rate, as `AudioInfo.sample_rate` says).
    Memory stays at one block whatever the input's length."""
    reader, name = _open(source)
    info = AudioInfo(name=name, sample_rate=reader.samplerate, channels=reader.channels, frames=reader.frames)
    try:
        check_sample_rate(info.sample_rate, name)
        if info.frames == 0:
            raise AudioError(f"{name}: contains no audio samples (zero length)")
    except AudioError:
        reader.close()
        raise
    block_frames = max(1, int(block_seconds * info.sample_rate))

    def blocks() -> Iterator[np.ndarray]:
        resampler = _Resampler(info.sample_rate, target_rate or info.sample_rate)
        guard = SampleGuard(name)
        received = 0
        try:
            while True:
                block = reader.read(block_frames)
                if not len(block):
                    break
                received += len(block)
                out = resampler(clean_mono(block, guard))
                if out.size:
                    yield out
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{name}: decoding failed part-way ({exc}); the file may be corrupt") from None
        finally:
            reader.close()
        if received == 0:
            raise AudioError(f"{name}: contains no audio samples (zero length)")
        guard.report()
        tail = resampler(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail

    return info, blocks()


def read_audio(source: AudioSource, target_rate: int) -> np.ndarray:
    """Read a whole file as float32 mono at `target_rate`."""
    _, blocks = open_audio(source, target_rate)
    parts = list(blocks)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS
