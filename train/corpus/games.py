"""Real acted English speech from two freeware adventure games in Debian main (issue 28).

| source (Debian main)               | archive            | speech                                     |
|------------------------------------|--------------------|--------------------------------------------|
| flight-of-the-amazon-queen 1.0.0-9 | queen.1c           | `.SB` entries: MP3, 11.025 kHz mono        |
| beneath-a-steel-sky 0.0372-8       | sky.dnr + sky.dsk  | files 50000-55295: RNC-packed u8 PCM       |

Both are under custom free licences that Debian accepts for main (`/usr/share/doc/<package>/copyright`):
give the game away, keep the readme and notices, mark modified versions. The audio is never committed or
shipped: `python -m train.corpus.games` extracts it at build time from the installed packages.

    apt-get install flight-of-the-amazon-queen beneath-a-steel-sky
    python -m train.corpus.games --out data/games

Output folder::

    wavs/<game>/<entry>.wav   16 kHz mono int16, silence trimmed to 0.2 s, peak -1 dBFS
    clips.csv                 kept clips: path, text, source, speaker, origin, entry, duration, script
    dropped.csv               source, entry, reason, duration (short, long, silent, no-voice, non-speech)
    nonspeech/<game>/<entry>.wav, nonspeech.csv
                              the clips dropped as non-speech (laughs, sighs, growls: what their script
                              line says), prepared the same way: path, script, source, speaker, entry,
                              duration. Never training data: what a decoder should write nothing for
                              (`benchmarks/joint_decoder.py --nonspeech`)
    queen-script.txt          every script segment of the amazon-queen (what a clip can say), one a line
    games.json                counts and hours per source, drops per reason, failures

`origin` is "script" where the clip's line is known from the game's dialogue files (`text` is then the
spoken-form label of it, `script` the line as written) and "none" where it is not (`text` empty: the
pseudo-labelling step fills it and sets "pseudo"). A script line is what the actor was given, not a
transcript: the pseudo-labelling step should still check it against the audio.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import soxr

from edge_asr.atomic import write_text_atomic
from edge_asr.spoken import to_spoken
from edge_asr.text import TextNormalization

from . import rnc
from .render import PEAK, SAMPLE_RATE, trim_silence, write_wav_atomic

log = logging.getLogger(__name__)

QUEEN_PACKAGE = "flight-of-the-amazon-queen"
SKY_PACKAGE = "beneath-a-steel-sky"
QUEEN_FILE = Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
SKY_DIR = Path("/usr/share/scummvm/beneath-a-steel-sky")
GAMES = ("queen", "sky")

GAME_RATE = 11025
MIN_SECONDS = 0.5
MAX_SECONDS = 28.0
SILENT_PEAK = 1e-3  # below this (-60 dBFS) the clip holds nothing
VOICE_FLOOR_DB = -30.0  # a 10 ms frame within 30 dB of the clip's loudest frame counts as voiced
MIN_VOICED_SECONDS = 0.25  # "What..." said alone has 0.29 s voiced; a lone click far less

SKY_SPEECH = range(50000, 55296)
SKY_HEADER_SIZE = 22  # the game's per-file header (11 little-endian uint16), before the packed data
SKY_FLAG_PACKED = 0x80  # header flag bit 7: the data after the header is RNC-packed

QUEEN_SIGNATURE = b"QTBL"
QUEEN_ENTRY_SIZE = 21  # 12-byte name, bundle byte, uint32 offset, uint32 size
DOG_HEADER_SIZE = 20  # the AMOS bank header ("AmBk" ... "Datas   ") in front of a .DOG file's data
SCRIPT_TEXT_ENTRY = "QUEEN2.JAS"  # the game's text lines (object descriptions, Joe's responses), CRLF

_LABEL = TextNormalization()


class GamesError(ValueError):
    """A missing or malformed game archive (the message says which and what to do)."""


# --- archives -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueenEntry:
    name: str
    bundle: int
    offset: int
    size: int


class QueenArchive:
    """The amazon-queen's resource file: 'QTBL', a 6-byte version (e.g. 'CEM10' = CD English), 2 bytes,
    a compression byte (1 = MP3 speech), a big-endian uint16 count, then per entry a 12-byte name, a
    bundle byte and big-endian uint32 offset and size (offsets from the start of the file)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise GamesError(f"{path}: cannot read it ({exc}); apt-get install {QUEEN_PACKAGE}") from exc
        self.version, self.compression, entries = parse_queen_table(self.data, str(path))
        self.entries: Dict[str, QueenEntry] = {e.name: e for e in entries}

    def read(self, name: str) -> bytes:
        entry = self.entries[name]
        return self.data[entry.offset : entry.offset + entry.size]

    def names(self, suffix: str) -> List[str]:
        return sorted(n for n in self.entries if n.endswith(suffix))


def parse_queen_table(data: bytes, where: str = "queen.1c") -> Tuple[str, int, List[QueenEntry]]:
    """(version, compression, entries) of a queen.1c resource table."""
    if data[:4] != QUEEN_SIGNATURE:
        raise GamesError(f"{where}: not a queen.1c resource file (no 'QTBL' signature)")
    version = data[4:10].split(b"\0")[0].decode("ascii", "replace")
    compression = data[12]
    (count,) = struct.unpack(">H", data[13:15])
    table_end = 15 + count * QUEEN_ENTRY_SIZE
    if len(data) < table_end:
        raise GamesError(f"{where}: truncated resource table ({count} entries announced)")
    entries = []
    for pos in range(15, table_end, QUEEN_ENTRY_SIZE):
        name = data[pos : pos + 12].split(b"\0")[0].decode("ascii", "replace")
        offset, size = struct.unpack(">II", data[pos + 13 : pos + 21])
        if offset + size > len(data):
            raise GamesError(f"{where}: entry {name} lies past the end of the file")
        entries.append(QueenEntry(name, data[pos + 12], offset, size))
    return version, compression, entries


@dataclass(frozen=True)
class SkyEntry:
    number: int
    offset: int
    size: int
    stored: bool  # flags bit 23: stored as is, never packed
    packed_header: bool  # flags bit 22: the header is inside the packed data


class SkyArchive:
    """Beneath a Steel Sky's data disk: sky.dnr is a little-endian uint32 count and 8-byte entries
    (uint16 file number; 24-bit offset into sky.dsk, in 16-byte units when bit 23 is set; 24-bit flags:
    low 22 bits the stored size, bit 22 header packed too, bit 23 stored uncompressed)."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        try:
            dnr = (folder / "sky.dnr").read_bytes()
            self.dsk = (folder / "sky.dsk").read_bytes()
        except OSError as exc:
            raise GamesError(
                f"{folder}: cannot read sky.dnr/sky.dsk ({exc}); apt-get install {SKY_PACKAGE}"
            ) from exc
        self.entries: Dict[int, SkyEntry] = {e.number: e for e in parse_sky_table(dnr)}

    def read_stored(self, number: int) -> bytes:
        entry = self.entries[number]
        data = self.dsk[entry.offset : entry.offset + entry.size]
        if len(data) != entry.size:
            raise GamesError(f"sky.dsk: file {number} lies past the end of the disk")
        return data

    def load(self, number: int) -> bytes:
        """The file as the game uses it: its 22-byte header, then the (unpacked) data."""
        entry, stored = self.entries[number], self.read_stored(number)
        if entry.stored or len(stored) < SKY_HEADER_SIZE or not stored[0] & SKY_FLAG_PACKED:
            return stored
        unpacked = rnc.unpack(stored[SKY_HEADER_SIZE:])
        return unpacked if entry.packed_header else stored[:SKY_HEADER_SIZE] + unpacked


def parse_sky_table(dnr: bytes) -> List[SkyEntry]:
    if len(dnr) < 4:
        raise GamesError("sky.dnr: too short for its entry count")
    (count,) = struct.unpack("<I", dnr[:4])
    if len(dnr) < 4 + 8 * count:
        raise GamesError(f"sky.dnr: truncated ({count} entries announced, {(len(dnr) - 4) // 8} present)")
    entries = []
    for pos in range(4, 4 + 8 * count, 8):
        (number,) = struct.unpack("<H", dnr[pos : pos + 2])
        offset = int.from_bytes(dnr[pos + 2 : pos + 5], "little")
        flags = int.from_bytes(dnr[pos + 5 : pos + 8], "little")
        if offset & 0x800000:
            offset = (offset & 0x7FFFFF) << 4
        entries.append(
            SkyEntry(number, offset, flags & 0x3FFFFF, bool(flags >> 23 & 1), bool(flags >> 22 & 1))
        )
    return entries


def sky_speech_audio(file_data: bytes) -> np.ndarray:
    """Unsigned 8-bit PCM after the 22-byte header, as float32 in [-1, 1)."""
    pcm = np.frombuffer(file_data[SKY_HEADER_SIZE:], dtype=np.uint8)
    return (pcm.astype(np.float32) - 128.0) / 128.0


def decode_mp3(data: bytes) -> Tuple[np.ndarray, int]:
    """Mono float32 samples and rate of an MP3 stream (libsndfile >= 1.1 reads MPEG layer III)."""
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


# --- the amazon-queen's script --------------------------------------------------------------------

# A speech command inside a script line: '*' and two characters; '*XY' also carries "nn(xxx,yyy)".
_COMMAND = re.compile(r"\*(?:XY.{11}|..)", re.DOTALL)
_SCRIPT_CHARS = re.compile(r"^[\x20-\x7e]+$")


def script_segments(line: str) -> List[Tuple[int, str]]:
    """(segment number, text) of a script line split at its speech commands, numbered from 1 as the
    voice files are (`<prefix><number in hex>.SB`); empty segments are left out but keep their number."""
    segments = []
    for number, text in enumerate(_COMMAND.split(line), start=1):
        text = " ".join(text.split())
        if re.search(r"[A-Za-z]", text):
            segments.append((number, text))
    return segments


def _is_script_line(text: str) -> bool:
    # Dialogue has lower-case letters; file names, animation strings and person names do not.
    return bool(_SCRIPT_CHARS.match(text)) and re.search(r"[a-z]", text) is not None


def _whole_string(data: bytes, pos: int, text: str) -> bool:
    """Whether a candidate looks like a whole line, not a byte of something else read as a length: it
    starts like a sentence and does not stop in the middle of a word."""
    after = data[pos + 1 + len(text) : pos + 2 + len(text)]
    mid_word = text[-1].isalpha() and after.isalpha() and after.islower()
    return (text[0].isalpha() or text[0] in "\"'(*.") and not mid_word


def counted_strings(data: bytes) -> Iterator[str]:
    """Printable strings stored as a length byte and the text, as the .DOG/.CUT files keep their lines."""
    pos = 0
    while pos < len(data):
        length = data[pos]
        text = data[pos + 1 : pos + 1 + length].decode("latin-1")
        if length >= 2 and len(text) == length and _is_script_line(text) and _whole_string(data, pos, text):
            yield text
            pos += 1 + length
        else:
            pos += 1


def script_lines(archive: QueenArchive, dialogue: Dict[str, str]) -> List[str]:
    """Every script segment of the game, deduplicated in order: the lines a pseudo-label may snap to.

    `dialogue` (from `dialogue_people`) holds the .DOG lines, parsed exactly. The .CUT files' layout is
    not parsed: their lines come from a scan for counted strings, which also yields a few fragments
    (a length byte mistaken inside a line); QUEEN2.JAS is plain text, one line per CRLF."""
    seen: Dict[str, None] = dict.fromkeys(dialogue.values())
    for name in archive.names(".CUT"):
        for line in counted_strings(archive.read(name)):
            seen.update((text, None) for _, text in script_segments(line))
    if SCRIPT_TEXT_ENTRY in archive.entries:
        for line in archive.read(SCRIPT_TEXT_ENTRY).decode("latin-1").splitlines():
            if _is_script_line(line):
                seen.update((text, None) for _, text in script_segments(line))
    return list(seen)


def _counted_string(data: bytes, offset: int, align: int) -> Tuple[str, int]:
    """The string at `offset` (length byte, text) and the offset after it, padded to `align` bytes."""
    length = data[offset]
    offset += 1
    text = data[offset : offset + length].decode("latin-1")
    if length:
        offset = (offset + length + align - 1) & ~(align - 1)
    return text, offset


def _dialogue_list(data: bytes, offset: int, count: int) -> Iterator[Tuple[int, str]]:
    """(id, line) of a .DOG list: per entry 2 bytes, a big-endian int16 id, the line padded to 4."""
    for _ in range(count):
        (line_id,) = struct.unpack(">h", data[offset + 2 : offset + 4])
        text, offset = _counted_string(data, offset + 4, 4)
        yield line_id, text


def _voice_prefix(talk_key: int, head: str, who: str) -> str:
    return f"{talk_key:2d}{head}{who}".replace(" ", "0").upper()


def dialogue_voice_lines(dog: bytes) -> Dict[str, str]:
    """Voice-file name (without .SB) -> script segment, for one .DOG dialogue file.

    Layout after the 20-byte bank header (all big-endian int16): level count, unique key, talk key,
    Joe's and the person's line counts, 6 game-state words, then the offsets of the person's lines,
    the cutaway and the person's second greeting; Joe's lines start at 32 + 96 * levels. A voice file is
    named talk key (2 decimal digits), line id (4 hex digits, or SSSS/XXXX for Joe's first and second
    greeting), J (Joe) or P (the person), and the segment number in hex."""
    data = dog[DOG_HEADER_SIZE:]
    levels, _, talk_key, joe_count, person_count = struct.unpack(">5h", data[:10])
    person_offset, _, person2_offset = struct.unpack(">3H", data[22:28])
    lines: Dict[str, str] = {}

    def add(prefix: str, line: str) -> None:
        for number, text in script_segments(line):
            lines[f"{prefix}{number:X}"] = text

    for line_id, line in _dialogue_list(data, 32 + abs(levels) * 96, joe_count):
        head = "SSSS" if line_id == 0 else f"{line_id:4x}"
        add(_voice_prefix(talk_key, head, "J"), line)
    for line_id, line in _dialogue_list(data, person_offset, person_count):
        add(_voice_prefix(talk_key, f"{line_id:4x}", "P"), line)
    person2, offset = _counted_string(data, person2_offset, 2)
    joe2, _ = _counted_string(data, offset, 2)
    add(_voice_prefix(talk_key, "XXXX", "P"), person2)
    add(_voice_prefix(talk_key, "XXXX", "J"), joe2)
    return lines


def dialogue_people(archive: QueenArchive) -> Tuple[Dict[str, str], Dict[int, str]]:
    """(voice name -> script segment, talk key -> the person spoken to) over every .DOG file."""
    lines: Dict[str, str] = {}
    people: Dict[int, str] = {}
    for name in archive.names(".DOG"):
        data = archive.read(name)
        try:
            lines.update(dialogue_voice_lines(data))
        except (struct.error, IndexError) as exc:
            log.warning("%s: unreadable dialogue file (%s); its clips stay unlabelled", name, exc)
            continue
        (talk_key,) = struct.unpack(">h", data[DOG_HEADER_SIZE + 4 : DOG_HEADER_SIZE + 6])
        # ZOMBIE1.DOG, ZOMBIE2.DOG: one person over several files; the name is the hint.
        people.setdefault(talk_key, re.sub(r"\d+$", "", name[: -len(".DOG")]).lower())
    return lines, people


def queen_speaker(entry: str, people: Dict[int, str]) -> str:
    """The speaker a voice-file name gives: 'joe' (Joe's dialogue lines and JOEnnnnn descriptions), the
    person of a dialogue file (NNhhhhP.), or '' (cutaways and the rest)."""
    stem = entry.rsplit(".", 1)[0]
    if stem.startswith("JOE"):
        return "joe"
    match = re.fullmatch(r"(\d\d)[0-9A-FSX]{4}([JP])[0-9A-F]", stem)
    if not match:
        return ""
    return "joe" if match.group(2) == "J" else people.get(int(match.group(1)), "")


# --- clips ----------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One voice file, decoded: what `prepare` needs and what the manifest records."""

    source: str
    entry: str
    audio: np.ndarray
    rate: int
    speaker: str = ""
    script: str = ""


def voiced_seconds(audio: np.ndarray, rate: int, floor_db: float = VOICE_FLOOR_DB) -> float:
    """Time in 10 ms frames within `floor_db` of the loudest frame: a grunt or a click has little."""
    frame = max(1, rate // 100)
    n = len(audio) // frame
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    return float(np.count_nonzero(rms >= rms.max() * 10 ** (floor_db / 20))) * frame / rate


def prepare(audio: np.ndarray, rate: int) -> Tuple[Optional[np.ndarray], float, str]:
    """(16 kHz int16 samples or None, duration in s, why dropped or ''): resample, trim silence to
    0.2 s, then drop silent clips, clips under 0.5 s or over 28 s, and clips with under 0.25 s voiced."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < SILENT_PEAK:
        return None, len(audio) / SAMPLE_RATE, "silent"
    audio = trim_silence(audio, SAMPLE_RATE)
    duration = len(audio) / SAMPLE_RATE
    if duration < MIN_SECONDS:
        return None, duration, "short"
    if duration > MAX_SECONDS:
        return None, duration, "long"
    if voiced_seconds(audio, SAMPLE_RATE) < MIN_VOICED_SECONDS:
        return None, duration, "no-voice"
    peak = float(np.abs(audio).max())
    return np.round(audio * (PEAK / peak) * 32767.0).astype(np.int16), duration, ""


# Words that name a laugh, a hum or a growl rather than say something ("Ha ha ha!", "Hmmm...", "Grrrr!").
_NON_SPEECH_WORD = re.compile(r"^(?:ha+|hah+|he+h+|hee+|hm+|m{2,}h*m*|gr+|a+r+g+h+|u+g+h+)$")


def non_speech_script(script: str) -> bool:
    """Whether a script line is no speech: a stage direction ("(sigh)", "(gulp)") or only laughs, hums
    and growls. The audio then holds a noise that a transcript would not write the same way twice."""
    if re.fullmatch(r"\(.*\)[.!?]*", script.strip()):
        return True
    words = _LABEL(script).split()
    return bool(words) and all(_NON_SPEECH_WORD.match(w) for w in words)


def label_of(script: str) -> str:
    """The training label of a script line (spoken form, normalized), or '' if it has no safe spoken form.

    Capitals in a line that has lower case are emphasis ("At least MY plane"), not acronyms: folded
    first, or `to_spoken` would refuse the line."""
    if re.search(r"[a-z]", script):
        script = re.sub(r"\b[A-Z]{2,}\b", lambda m: m.group(0).capitalize(), script)
    spoken = to_spoken(script) if script else None
    return _LABEL(spoken) if spoken else ""


# A clip not yet decoded: (entry, a function that decodes it). Decoding happens one clip at a time in
# `extract`, so that one bad file is recorded and the other thousands still come out.
PendingClip = Tuple[str, Callable[[], Clip]]


def queen_clips(
    archive: QueenArchive, lines: Dict[str, str], people: Dict[int, str], limit: Optional[int] = None
) -> List[PendingClip]:
    def load(name: str) -> Clip:
        stem = name[: -len(".SB")]
        try:
            audio, rate = decode_mp3(archive.read(name))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise GamesError(f"{name}: cannot decode its MP3 ({exc})") from exc
        return Clip(QUEEN_PACKAGE, stem, audio, rate, queen_speaker(name, people), lines.get(stem, ""))

    return [(name, functools.partial(load, name)) for name in archive.names(".SB")[:limit]]


def sky_clips(archive: SkyArchive, limit: Optional[int] = None) -> List[PendingClip]:
    def load(number: int) -> Clip:
        try:
            audio = sky_speech_audio(archive.load(number))
        except rnc.RncError as exc:
            raise GamesError(f"file {number}: {exc}") from exc
        return Clip(SKY_PACKAGE, str(number), audio, GAME_RATE)

    numbers = sorted(n for n in archive.entries if n in SKY_SPEECH)[:limit]
    return [(str(n), functools.partial(load, n)) for n in numbers]


# --- the build ------------------------------------------------------------------------------------

MANIFEST_HEADER = ("path", "text", "source", "speaker", "origin", "entry", "duration", "script")


NONSPEECH_HEADER = ("path", "script", "source", "speaker", "entry", "duration")


@dataclass
class GamesResult:
    kept: List[Tuple[str, ...]] = field(default_factory=list)
    dropped: List[Tuple[str, str, str, str]] = field(default_factory=list)
    nonspeech: List[Tuple[str, ...]] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def extract(clips: Sequence[PendingClip], out: Path, game: str, result: GamesResult) -> None:
    """Write each kept clip to out/wavs/<game>/<entry>.wav and record it (or why it was dropped)."""
    folder = out / "wavs" / game
    folder.mkdir(parents=True, exist_ok=True)
    for _, load in clips:
        try:
            clip = load()
        except GamesError as exc:
            result.failures.append(f"{game}: {exc}")
            log.warning("%s: %s", game, exc)
            continue
        pcm, duration, reason = prepare(clip.audio, clip.rate)
        if pcm is not None and clip.script and non_speech_script(clip.script):
            path = f"nonspeech/{game}/{clip.entry}.wav"
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            write_wav_atomic(out / path, pcm)
            result.nonspeech.append(
                (path, clip.script, clip.source, clip.speaker, clip.entry, f"{duration:.3f}")
            )
            pcm, reason = None, "non-speech"
        if pcm is None:
            result.dropped.append((clip.source, clip.entry, reason, f"{duration:.3f}"))
            continue
        write_wav_atomic(folder / f"{clip.entry}.wav", pcm)
        text = label_of(clip.script)
        origin = "script" if text else "none"
        path = f"wavs/{game}/{clip.entry}.wav"
        result.kept.append(
            (path, text, clip.source, clip.speaker, origin, clip.entry, f"{duration:.3f}", clip.script)
        )
        result.seconds[clip.source] = result.seconds.get(clip.source, 0.0) + duration


def summary(result: GamesResult, wall: float) -> Dict[str, object]:
    per_source: Dict[str, Dict[str, float]] = {}
    for row in result.kept:
        entry = per_source.setdefault(row[2], {"clips": 0, "hours": 0.0, "script_labels": 0})
        entry["clips"] += 1
        entry["hours"] += float(row[6]) / 3600.0
        entry["script_labels"] += row[4] == "script"
    drops: Dict[str, Dict[str, int]] = {}
    for source, _, reason, _ in result.dropped:
        drops.setdefault(source, {}).setdefault(reason, 0)
        drops[source][reason] += 1
    return {
        "kept": {k: {**v, "hours": round(v["hours"], 4)} for k, v in sorted(per_source.items())},
        "dropped": drops,
        "failures": result.failures,
        "rule": {"min_s": MIN_SECONDS, "max_s": MAX_SECONDS, "silent_peak": SILENT_PEAK,
                 "voiced_floor_db": VOICE_FLOOR_DB, "min_voiced_s": MIN_VOICED_SECONDS},
        "wall_s": round(wall, 1),
    }  # fmt: skip


def build(out: Path, games: Sequence[str], queen_file: Path = QUEEN_FILE, sky_dir: Path = SKY_DIR,
          limit: Optional[int] = None) -> Dict[str, object]:  # fmt: skip
    """Extract the chosen games' speech into `out`; returns what games.json holds."""
    unknown = [g for g in games if g not in GAMES]
    if unknown:
        raise GamesError(f"unknown game(s) {', '.join(unknown)}; choose from {', '.join(GAMES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = GamesResult()
    openers: Dict[str, Callable[[], List[PendingClip]]] = {}
    if "queen" in games:
        queen = QueenArchive(queen_file)
        lines, people = dialogue_people(queen)
        script = script_lines(queen, lines)
        write_text_atomic(out / "queen-script.txt", "".join(f"{line}\n" for line in script))
        openers["queen"] = lambda: queen_clips(queen, lines, people, limit)
    if "sky" in games:
        sky = SkyArchive(sky_dir)
        openers["sky"] = lambda: sky_clips(sky, limit)
    for game, clips in openers.items():
        extract(clips(), out, game, result)
    write_text_atomic(out / "clips.csv", _csv_text(MANIFEST_HEADER, result.kept))
    write_text_atomic(out / "nonspeech.csv", _csv_text(NONSPEECH_HEADER, result.nonspeech))
    write_text_atomic(
        out / "dropped.csv", _csv_text(("source", "entry", "reason", "duration"), result.dropped)
    )
    facts = summary(result, time.monotonic() - started)
    write_text_atomic(out / "games.json", json.dumps(facts, indent=2) + "\n")
    return facts


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.corpus.games", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder (created; clips rewritten)")
    p.add_argument(
        "--games", default=",".join(GAMES), help=f"comma list from {','.join(GAMES)} (default: both)"
    )
    p.add_argument("--queen-file", type=Path, default=QUEEN_FILE)
    p.add_argument("--sky-dir", type=Path, default=SKY_DIR, help="folder with sky.dnr and sky.dsk")
    p.add_argument("--limit", type=int, help="at most this many voice files per game (a quick look)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    try:
        facts = build(args.out, games, args.queen_file, args.sky_dir, args.limit)
    except GamesError as exc:
        print(f"train.corpus.games: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
