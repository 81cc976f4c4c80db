"""Audio from pipes: standard input, FIFOs and `<(...)`, which cannot seek.

libsndfile needs to seek for most formats, and reading a pipe whole first (as stdin once was) grows
without bound: `edge-asr file - < /dev/zero` died with a MemoryError after gigabytes, a 60-minute
WAV on stdin peaked 50% above the same file by path, and a FIFO was refused as "empty" while its
writer blocked forever. So:

* WAV (PCM 8/16/24/32-bit or float 32/64, plain or WAVE_FORMAT_EXTENSIBLE; RIFF or RF64) is parsed
  here and decoded block by block as it arrives: memory holds one block, and there is no length
  limit (a WAV whose writer left the sizes open, as `arecord` and `sox ... -` do, is read to the end
  of the stream). Its samples scale exactly as libsndfile's do.
* Other formats that libsndfile reads (FLAC, OGG/Opus, MP3, AIFF, AU, CAF, W64, and WAV codecs
  beyond PCM/float such as u-law or ADPCM) are copied to an anonymous temporary file (in $TMPDIR),
  at most MAX_SPOOL_BYTES, and decoded from there like any file: memory stays flat.
* Anything else is refused from its first bytes, so `< /dev/zero` fails at once rather than after
  filling the disk.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Optional, Union

import numpy as np

from .errors import AudioError

MAX_SPOOL_BYTES = 2 << 30
SPOOL_CHUNK = 1 << 20
# Chunks before "fmt " are a few bytes (JUNK, ds64, bext); more is not a WAV header.
MAX_HEADER_BYTES = 16 << 20
_OPEN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in a size they cannot know yet
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
# First bytes of the containers libsndfile reads that are worth copying to a temporary file.
_SPOOLED_MAGIC = {
    b"fLaC": "FLAC",
    b"OggS": "OGG",
    b"FORM": "AIFF",
    b".snd": "AU",
    b"caff": "CAF",
    b"RIFX": "big-endian WAV",
    b"riff": "W64",
    b"ID3": "MP3",
}


@dataclass(frozen=True)
class WavFormat:
    """The "fmt " chunk, as far as decoding needs it."""

    tag: int  # _PCM or _FLOAT (an EXTENSIBLE chunk's sub-format)
    channels: int
    sample_rate: int
    bits: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


class _Pipe:
    """A non-seekable byte source read exactly, keeping what it read while `keep` is set (so that a
    WAV codec this module does not decode can be handed on to libsndfile whole)."""

    def __init__(self, raw: BinaryIO, name: str):
        self.raw = raw
        self.name = name
        self.kept: Optional[bytearray] = bytearray()

    def read(self, count: int) -> bytes:
        """`count` bytes, or fewer at the end of the stream."""
        parts = []
        wanted = count
        while wanted > 0:
            try:
                part = self.raw.read(wanted)
            except OSError as exc:
                raise AudioError(f"{self.name}: reading failed ({exc.strerror or exc})") from None
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        data = b"".join(parts)
        if self.kept is not None:
            self.kept += data
            if len(self.kept) > MAX_HEADER_BYTES:
                raise AudioError(f"{self.name}: not a WAV stream (no audio data in its first 16 MiB)")
        return data


class WavStreamReader:
    """Decodes a WAV stream block by block; `frames` is None when the writer left the size open."""

    def __init__(self, pipe: _Pipe, fmt: WavFormat, data_bytes: Optional[int]):
        self._pipe = pipe
        self.format = fmt
        self.samplerate = fmt.sample_rate
        self.channels = fmt.channels
        self.frames = None if data_bytes is None else data_bytes // fmt.frame_bytes
        self._promised = data_bytes
        self._left = data_bytes  # bytes of audio still to come when the size is known
        self._read_bytes = 0

    def read(self, frames: int) -> np.ndarray:
        """Up to `frames` frames as float32 [n, channels]; fewer only at the end, 0 after it."""
        fmt = self.format
        wanted = frames * fmt.frame_bytes
        if self._left is not None:
            wanted = min(wanted, self._left)
        data = self._pipe.read(wanted)
        self._read_bytes += len(data)
        if self._left is not None:
            self._left -= len(data)
            if len(data) < wanted:
                raise AudioError(
                    f"{self._pipe.name}: truncated WAV: the header promises {self._promised} bytes of "
                    f"audio but the stream ended after {self._read_bytes}; the writer stopped early"
                )
        whole = len(data) - len(data) % fmt.frame_bytes  # a torn last frame at the end is dropped
        return decode_pcm(data[:whole], fmt)

    def close(self) -> None:
        self._pipe.raw.close()


def decode_pcm(data: bytes, fmt: WavFormat) -> np.ndarray:
    """Little-endian PCM bytes -> float32 [frames, channels], scaled as libsndfile scales them."""
    if fmt.tag == _FLOAT:
        samples = np.frombuffer(data, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float32)
    elif fmt.bits == 8:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.bits == 24:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        samples = values.astype(np.float32) / float(1 << 23)
    else:
        dtype = "<i2" if fmt.bits == 16 else "<i4"
        samples = np.frombuffer(data, dtype=dtype).astype(np.float32) / float(1 << (fmt.bits - 1))
    return samples.reshape(-1, fmt.channels)


def _parse_fmt(body: bytes, name: str) -> Optional[WavFormat]:
    """The format, or None for a codec this module leaves to libsndfile."""
    if len(body) < 16:
        raise AudioError(f"{name}: broken WAV header (fmt chunk of {len(body)} bytes)")
    tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the plain tag
    supported = (tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits in (32, 64))
    if not supported:
        return None
    if channels < 1 or align != channels * bits // 8:
        raise AudioError(f"{name}: broken WAV header ({channels} channels, {align}-byte frames)")
    return WavFormat(tag, channels, rate, bits)


def open_pipe(raw: BinaryIO, name: str) -> Union[WavStreamReader, BinaryIO]:
    """A WAV reader for a WAV stream, else a seekable temporary copy for libsndfile to open."""
    pipe = _Pipe(raw, name)
    head = pipe.read(12)
    if not head:
        raise AudioError(f"{name}: no data (the stream was empty)")
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        reader = _open_wav(pipe, name, rf64=head[:4] == b"RF64")
        if reader is not None:
            return reader
        kind = "WAV"
    else:
        found = _spooled_kind(head)
        if found is None:
            raise AudioError(
                f"{name}: not a readable audio stream (it starts with bytes {head[:8].hex(' ')}); "
                "pipe WAV, FLAC, OGG or MP3, or pass the file by path"
            )
        kind = found
    assert pipe.kept is not None
    return _spool(bytes(pipe.kept), raw, name, kind)


def _open_wav(pipe: _Pipe, name: str, rf64: bool) -> Optional[WavStreamReader]:
    fmt: Optional[WavFormat] = None
    while True:
        header = pipe.read(8)
        if len(header) < 8:
            raise AudioError(f"{name}: the WAV stream ended before its audio data")
        chunk, size = struct.unpack("<4sI", header)
        padded = size + (size & 1)
        if chunk == b"data":
            if fmt is None:
                raise AudioError(f"{name}: broken WAV header (audio data before the fmt chunk)")
            # RF64 keeps the real size in its ds64 chunk; reading to the end of the stream is enough.
            return WavStreamReader(pipe, fmt, None if rf64 or size in _OPEN_SIZES else size)
        if chunk == b"fmt ":
            if size > 1024:
                raise AudioError(f"{name}: broken WAV header (fmt chunk of {size} bytes)")
            body = pipe.read(padded)
            if len(body) < size:
                raise AudioError(f"{name}: the WAV stream ended inside its header")
            fmt = _parse_fmt(body[:size], name)
            if fmt is None:
                return None  # u-law, ADPCM...: libsndfile decodes those from a temporary copy
            pipe.kept = None  # decoded here: nothing more to hand on
            continue
        while padded > 0:  # another chunk (LIST, JUNK...): skipped in pieces, whatever its size
            piece = pipe.read(min(padded, SPOOL_CHUNK))
            if not piece:
                raise AudioError(f"{name}: the WAV stream ended inside its header")
            padded -= len(piece)


def _spooled_kind(head: bytes) -> Optional[str]:
    for magic, kind in _SPOOLED_MAGIC.items():
        if head.startswith(magic):
            return kind
    # An MPEG audio frame header: 11 sync bits, then a version, layer, bitrate and rate that exist.
    if len(head) >= 4 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
        if version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3:
            return "MP3"
    return None


def _spool(first: bytes, raw: BinaryIO, name: str, kind: str) -> BinaryIO:
    """Copy the stream to an anonymous temporary file (gone when closed, or if the process dies)."""
    limit_gib = MAX_SPOOL_BYTES / (1 << 30)
    try:
        spool = tempfile.TemporaryFile(prefix="edge-asr-")  # noqa: SIM115 - returned open
    except OSError as exc:
        raise AudioError(
            f"{name}: cannot make a temporary file for the {kind} stream ({exc.strerror}); set TMPDIR to "
            "a writable folder, or pass the file by path"
        ) from None
    try:
        spool.write(first)
        total = len(first)
        while True:
            chunk = raw.read(SPOOL_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_SPOOL_BYTES:
                raise AudioError(
                    f"{name}: more than {limit_gib:g} GiB of {kind} on a stream. {kind} from a pipe is "
                    f"copied to a temporary file before decoding, and {limit_gib:g} GiB is the limit; "
                    "pass the file by path, or pipe WAV, which is decoded as it arrives"
                )
            spool.write(chunk)
        spool.seek(0)
    except OSError as exc:
        spool.close()
        raise AudioError(
            f"{name}: cannot copy the {kind} stream to a temporary file ({exc.strerror}); set TMPDIR to "
            "a folder with room, or pass the file by path"
        ) from None
    except BaseException:
        spool.close()
        raise
    return spool
