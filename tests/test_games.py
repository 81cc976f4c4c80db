"""train.corpus.games and train.corpus.rnc on small synthetic archives built here (no game data needed).

The RNC method-1 packer below is the tests' own, written from the format description (greedy LZ77 with
fixed Huffman tables, one of them with code lengths 2-14): the unpacker has to follow literal runs,
overlapping back-references, several blocks and a block that reuses the previous block's tables.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import soundfile as sf

from train.corpus import games, rnc

# --- a test-side RNC method-1 packer ---------------------------------------------------------------


class BitWriter:
    """Mirror of the unpacker's reader: bits go LSB-first into 16-bit little-endian words, a new word is
    reserved at the end of the output when a bit needs one, literal bytes are appended as they come."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.slot = -1
        self.used = 16

    def bits(self, value: int, n: int) -> None:
        for i in range(n):
            if self.used == 16:
                self.slot = len(self.out)
                self.out += b"\0\0"
                self.used = 0
            if value >> i & 1:
                self.out[self.slot + self.used // 8] |= 1 << (self.used % 8)
            self.used += 1

    def literal(self, data: bytes) -> None:
        self.out += data


def canonical(lengths: Sequence[int]) -> Dict[int, Tuple[int, int]]:
    """symbol -> (length, code, MSB-first): codes in order of (length, symbol)."""
    codes, code, previous = {}, 0, 0
    for length, symbol in sorted((n, s) for s, n in enumerate(lengths) if n):
        code <<= length - previous
        codes[symbol] = (length, code)
        code += 1
        previous = length
    return codes


FLAT = [4] * 16  # a complete code of 16 four-bit codes
SKEWED = [2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14]  # Kraft sum exactly 1


class Packer:
    def __init__(self) -> None:
        self.w = BitWriter()

    def table(self, lengths: Optional[Sequence[int]]) -> None:
        if lengths is None:  # "no symbols": the unpacker keeps the previous block's table
            self.w.bits(0, 5)
            return
        self.w.bits(len(lengths), 5)
        for n in lengths:
            self.w.bits(n, 4)

    def value(self, lengths: Sequence[int], value: int) -> None:
        symbol = value if value < 2 else value.bit_length()
        length, code = canonical(lengths)[symbol]
        self.w.bits(int(f"{code:0{length}b}"[::-1], 2), length)  # the stream holds codes LSB-first
        if symbol >= 2:
            self.w.bits(value - (1 << (symbol - 1)), symbol - 1)


Token = Tuple[bytes, Optional[Tuple[int, int]]]  # literal run, then (offset, length) or None


def tokenize(data: bytes, window: int = 4096, tries: int = 8) -> List[Token]:
    """Greedy LZ77: the longest of the last `tries` earlier matches (overlap allowed) of 2+ bytes within
    `window`, else one more literal."""
    tokens: List[Token] = []
    literal = bytearray()
    seen: Dict[bytes, List[int]] = {}
    i = 0
    while i < len(data):
        best_len, best_off = 0, 0
        for start in reversed(seen.get(data[i : i + 2], [])[-tries:]):
            if i - start > window:
                break
            n = 0
            while i + n < len(data) and data[start + n] == data[i + n] and n < 2000:
                n += 1
            if n > best_len:
                best_len, best_off = n, i - start
        step = best_len if best_len >= 2 else 1
        for j in range(i, i + step):
            seen.setdefault(data[j : j + 2], []).append(j)
        if best_len >= 2:
            tokens.append((bytes(literal), (best_off, best_len)))
            literal = bytearray()
        else:
            literal.append(data[i])
        i += step
    tokens.append((bytes(literal), None))
    return tokens


def rnc_pack(data: bytes, blocks: int = 1, reuse_tables: bool = False) -> Tuple[bytes, int]:
    """An RNC method-1 block of `data` and how many back-references it holds."""
    tokens = tokenize(data)
    size = -(-len(tokens) // blocks)
    groups = [tokens[i : i + size] for i in range(0, len(tokens), size)]
    packer = Packer()
    packer.w.bits(0, 2)  # lock and key flags
    matches = 0
    for index, group in enumerate(groups):
        if group[-1][1] is not None:
            group = [*group, (b"", None)]  # a block ends on a literal run with no match after it
        reuse = reuse_tables and index > 0
        packer.table(None if reuse else FLAT)  # literal-run lengths
        packer.table(None if reuse else SKEWED)  # match offsets (minus 1)
        packer.table(None if reuse else FLAT)  # match lengths (minus 2)
        packer.w.bits(len(group), 16)
        for run, (literal, match) in enumerate(group):
            packer.value(FLAT, len(literal))
            packer.w.literal(literal)
            if run + 1 < len(group):
                assert match is not None
                packer.value(SKEWED, match[0] - 1)
                packer.value(FLAT, match[1] - 2)
                matches += 1
    body = bytes(packer.w.out)
    head = b"RNC\x01" + struct.pack(">IIHH", len(data), len(body), rnc.crc16(data), rnc.crc16(body))
    return head + bytes([0, len(groups)]) + body, matches


# --- RNC ------------------------------------------------------------------------------------------


def test_crc16_is_crc16_arc():
    assert rnc.crc16(b"123456789") == 0xBB3D  # the catalogued check value of CRC-16/ARC
    assert rnc.crc16(b"") == 0


def test_canonical_codes_match_the_format():
    # lengths 2,1,3,3 -> symbol 1 gets "0", symbol 0 "10", symbols 2 and 3 "110" and "111",
    # stored bit-reversed because the stream is read LSB-first.
    assert rnc.canonical_codes([2, 1, 3, 3]) == [(2, 0b01), (1, 0b0), (3, 0b011), (3, 0b111)]
    assert rnc.canonical_codes([0, 1, 1]) == [None, (1, 0), (1, 1)]


def test_unpack_literal_only_block():
    data = bytes(range(7, 97))  # no byte pair repeats: one literal run
    packed, matches = rnc_pack(data)
    assert matches == 0
    assert rnc.unpack(packed) == data


@pytest.mark.parametrize(
    ("data", "blocks", "reuse"),
    [
        (b"abcabcabcabcabcabc-xyz-abcabc", 1, False),
        (b"a" * 300 + b"b" + b"ab" * 100, 1, False),  # offsets 1 and 2: the copy overlaps its source
        (bytes(range(256)) * 3 + b"tail", 2, False),  # a match 256 back: long offset codes
        (b"".join(b"fox %d jumps over dog %d; " % (i, i * 7 % 13) for i in range(60)), 4, True),
    ],
    ids=["repeats", "overlapping", "long-offset", "blocks-reusing-tables"],
)
def test_unpack_back_references_and_blocks(data, blocks, reuse):
    packed, matches = rnc_pack(data, blocks, reuse)
    assert matches > 0
    assert packed[17] == blocks
    assert rnc.unpack(packed) == data


def test_unpack_pcm_like_data_and_trailing_bytes():
    rng = np.random.default_rng(3)
    wave = (128 + 40 * np.sin(np.arange(3000) / 9.0) + rng.integers(-2, 3, 3000)).astype(np.uint8).tobytes()
    packed, matches = rnc_pack(wave, blocks=2)
    assert matches > 10
    assert rnc.unpack(packed + b"\0" * 7) == wave  # what follows the block is not its business


def test_unpack_refuses_bad_input():
    packed, _ = rnc_pack(b"hello hello hello hello")
    with pytest.raises(rnc.RncError, match="signature"):
        rnc.unpack(b"RNC\x02" + packed[4:])
    corrupt = bytearray(packed)
    corrupt[-1] ^= 0x40
    with pytest.raises(rnc.RncError, match="packed data CRC"):
        rnc.unpack(bytes(corrupt))
    with pytest.raises(rnc.RncError, match="packed bytes"):
        rnc.unpack(packed[:-3])
    # A consistent packed CRC but a wrong unpacked length: the unpacker must notice.
    lying = packed[:4] + struct.pack(">I", 24) + packed[8:]
    with pytest.raises(rnc.RncError, match="header says 24"):
        rnc.unpack(lying)


# --- synthetic game audio -------------------------------------------------------------------------

RATE = 11025


def voice(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like: a buzz at 120-200 Hz with syllable-rate loudness, in [-0.6, 0.6]."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 150 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
    buzz = np.sign(np.sin(2 * np.pi * np.cumsum(pitch) / RATE)) * 0.3 + 0.3 * np.sin(2 * np.pi * 700 * t)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    return (buzz * envelope).astype(np.float32)


def click(seconds: float) -> np.ndarray:
    """A 20 ms bang, then hiss 38 dB below it: a clip of full length, but with too little voice in it."""
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(int(seconds * RATE)) * 0.01).astype(np.float32)  # -38 dB: not trimmed
    audio[: int(0.02 * RATE)] = 0.8
    return audio


def u8(audio: np.ndarray) -> bytes:
    return np.clip(np.round(audio * 127 + 128), 0, 255).astype(np.uint8).tobytes()


def mp3(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    try:
        sf.write(buffer, audio, RATE, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as exc:  # a libsndfile without an MP3 encoder
        pytest.skip(f"this libsndfile cannot write MP3: {exc}")
    return buffer.getvalue()


# --- a synthetic queen.1c -------------------------------------------------------------------------


def counted(text: str, align: int = 1, at: int = 0) -> bytes:
    """A length byte and the text, zero-padded so that what follows starts where the game's reader
    looks: the next multiple of `align` counted from the start of the data (`at` = this string's
    offset there). An empty string takes one byte."""
    raw = bytes([len(text)]) + text.encode("latin-1")
    if text:
        raw += b"\0" * (-(at + len(raw)) % align)
    return raw


def dog_file(
    talk_key: int, joe: List[Tuple[int, str]], person: List[Tuple[int, str]], again: Tuple[str, str]
) -> bytes:
    """A .DOG dialogue file laid out as the game's (1 dialogue level), behind a 20-byte bank header."""
    levels = 1
    body = bytearray(32 + 96 * levels)  # the header, then the dialogue tree (unused here)

    def add_list(items: List[Tuple[int, str]]) -> int:
        start = len(body)
        for line_id, text in items:
            body.extend(b"\0\0" + struct.pack(">h", line_id))
            body.extend(counted(text, 4, len(body)))
        return start

    assert add_list(joe) == 32 + 96 * levels  # where the game looks for Joe's lines
    person_offset = add_list(person)
    person2_offset = len(body)
    body.extend(counted(again[0], 2, len(body)))
    body.extend(counted(again[1], 2, len(body)))
    body[:10] = struct.pack(">5h", levels, 7, talk_key, len(joe), len(person))
    body[22:28] = struct.pack(">3H", person_offset, 0, person2_offset)
    return b"AmBk\0\x0f\0\x01\x80\0\x0f^Datas   " + bytes(body)


def queen_archive(path: Path, entries: Dict[str, bytes]) -> None:
    names = sorted(entries)
    table = b"QTBL" + b"CEM10\0" + b"\0\0" + b"\x01" + struct.pack(">H", len(names))
    offset = len(table) + 21 * len(names)
    rows, blobs = b"", b""
    for name in names:
        rows += (
            name.encode().ljust(12, b"\0")
            + b"\x01"
            + struct.pack(">II", offset + len(blobs), len(entries[name]))
        )
        blobs += entries[name]
    path.write_bytes(table + rows + blobs)


ZOMBIE_JOE = [(0, "Hello there.*03Anybody home?"), (6, "Who are you?*FL*01"), (0x1E, "Bye.")]
ZOMBIE_PERSON = [
    (6, "I am the GUARDIAN of this temple.*03Leave now!"),
    (0x1E, "Farewell, stranger."),
    (0x20, "Ha ha ha!"),
]


@pytest.fixture()
def queen_file(tmp_path):
    a, b, c = voice(1.6), voice(2.2, 1), voice(0.08, 2)
    entries = {
        "ZOMBIE1.DOG": dog_file(61, ZOMBIE_JOE, ZOMBIE_PERSON, ("You again?", "Yes, me again.")),
        "C18D.CUT": b"\0\x03\x12" + counted("Joe, meet the head guard.*00*FRTell him!") + b"\x01\x02JOE",
        "QUEEN2.JAS": b"It looks nice*03\r\nGive Up\r\nFLODA.CUT\r\n",
        "61SSSSJ1.SB": mp3(a),  # "Hello there."
        "610006P1.SB": mp3(b),  # "I am the GUARDIAN of this temple."
        "61001EJ1.SB": mp3(c),  # too short after trimming
        "610020P1.SB": mp3(b),  # a laugh, by its script line
        "JOE00011.SB": mp3(a),
        "C18D_011.SB": mp3(b),
    }
    path = tmp_path / "queen.1c"
    queen_archive(path, entries)
    return path


def test_queen_table(queen_file):
    archive = games.QueenArchive(queen_file)
    assert archive.version == "CEM10" and archive.compression == 1
    assert len(archive.entries) == 9
    assert archive.read("QUEEN2.JAS").startswith(b"It looks nice")
    assert archive.names(".SB") == [
        "610006P1.SB",
        "61001EJ1.SB",
        "610020P1.SB",
        "61SSSSJ1.SB",
        "C18D_011.SB",
        "JOE00011.SB",
    ]
    audio, rate = games.decode_mp3(archive.read("610006P1.SB"))
    assert rate == RATE and abs(len(audio) / rate - 2.2) < 0.1


def test_queen_table_refuses_other_files(tmp_path):
    with pytest.raises(games.GamesError, match="QTBL"):
        games.parse_queen_table(b"RIFF" + b"\0" * 40)
    with pytest.raises(games.GamesError, match="truncated"):
        games.parse_queen_table(b"QTBLCEM10\0\0\0\x01\x00\x05" + b"\0" * 30)
    with pytest.raises(games.GamesError, match="apt-get install flight-of-the-amazon-queen"):
        games.QueenArchive(tmp_path / "missing.1c")


def test_script_segments_follow_speech_commands():
    assert games.script_segments("I'm Joe King.*03Who...*01What are you?*02") == [
        (1, "I'm Joe King."), (2, "Who..."), (3, "What are you?")
    ]  # fmt: skip
    # '*XY' carries 11 more characters; an empty segment keeps its number.
    assert games.script_segments("*XY00(237,112)Over here.*00*FRNow!") == [(2, "Over here."), (4, "Now!")]


def test_dialogue_voice_lines_name_the_files_as_the_game_does():
    dog = dog_file(61, ZOMBIE_JOE, ZOMBIE_PERSON, ("You again?", "Yes, me again."))
    lines = games.dialogue_voice_lines(dog)
    assert lines == {
        "61SSSSJ1": "Hello there.", "61SSSSJ2": "Anybody home?",
        "610006J1": "Who are you?",
        "61001EJ1": "Bye.",
        "610006P1": "I am the GUARDIAN of this temple.", "610006P2": "Leave now!",
        "61001EP1": "Farewell, stranger.",
        "610020P1": "Ha ha ha!",
        "61XXXXP1": "You again?", "61XXXXJ1": "Yes, me again.",
    }  # fmt: skip


def test_queen_speaker_hints():
    people = {61: "zombie", 2: "and"}
    assert games.queen_speaker("610006P1.SB", people) == "zombie"
    assert games.queen_speaker("61SSSSJ2.SB", people) == "joe"
    assert games.queen_speaker("JOE00451.SB", people) == "joe"
    assert games.queen_speaker("C18D_083.SB", people) == ""
    assert games.queen_speaker("990006P1.SB", people) == ""


def test_counted_strings_skip_binary_and_partial_lines():
    line = "At least I look fine, and so do you, my dear pal."
    assert len(line) == ord("1")  # its length byte is a printable '1'
    # \x06 before it, read as a length, would give "1At le": not a line (starts with a digit, cut mid-word).
    data = b"\x00\x06" + counted(line) + b"\x02\x00" + counted("FLODA.CUT") + b"\x07"
    assert list(games.counted_strings(data)) == [line]


@pytest.mark.parametrize(
    ("line", "non_speech"),
    [("(sigh)", True), ("(gulp)!", True), ("Ha ha ha!", True), ("Hmmm...", True), ("Heh, heh.", True),
     ("Grrrrr!", True), ("Ah...", False), ("A", False), ("Oh.", False), ("Ha! You wish.", False),
     ("Hmm, (sigh) fine.", False)],
)  # fmt: skip
def test_non_speech_script(line, non_speech):
    assert games.non_speech_script(line) is non_speech


def test_label_of_script_lines():
    assert games.label_of("I am the GUARDIAN of this temple.") == "i am the guardian of this temple"
    assert games.label_of("You owe me $5.") == "you owe me five dollars"
    assert games.label_of("") == ""


# --- a synthetic sky.dnr + sky.dsk ----------------------------------------------------------------


def sky_file(audio: np.ndarray, packed: bool = True) -> bytes:
    """A speech file as the game stores it: 22-byte header (flag bit 7 = packed, size in flag's high
    byte and s_tot_size), then an RNC block of the unsigned 8-bit PCM (or the PCM itself)."""
    pcm = u8(audio)
    total = 22 + len(pcm)
    flag = (total >> 16) << 8 | (0x80 if packed else 0)
    header = struct.pack("<7H", flag, 0, 0, 0, 0, 0, total & 0xFFFF) + b"\0" * 8
    return header + (rnc_pack(pcm, blocks=2)[0] if packed else pcm)


def sky_archive(folder: Path, files: Dict[int, Tuple[bytes, bool]]) -> None:
    """Write sky.dnr/sky.dsk; each file is 16-byte aligned and addressed in 16-byte units, except that a
    stored (unpacked) one is addressed in bytes and flagged with bit 23."""
    dsk, dnr = bytearray(b"\xaa" * 16), struct.pack("<I", len(files))
    for number, (data, stored) in files.items():
        dsk += b"\0" * (-len(dsk) % 16)
        offset = len(dsk) if stored else (len(dsk) >> 4) | 0x800000
        flags = len(data) | (0x800000 if stored else 0)
        dnr += struct.pack("<H", number) + offset.to_bytes(3, "little") + flags.to_bytes(3, "little")
        dsk += data
    (folder / "sky.dnr").write_bytes(dnr)
    (folder / "sky.dsk").write_bytes(bytes(dsk))


@pytest.fixture()
def sky_dir(tmp_path):
    folder = tmp_path / "sky"
    folder.mkdir()
    sky_archive(folder, {
        60100: (b"not speech, never read", True),
        50001: (sky_file(voice(1.4)), False),
        50002: (sky_file(voice(0.9, 3), packed=False), True),
        50003: (sky_file(np.zeros(RATE, dtype=np.float32)), False),
        50004: (sky_file(click(1.2)), False),
        55296: (sky_file(voice(1.0)), False),  # past the speech range
    })  # fmt: skip
    return folder


def test_sky_table_and_files(sky_dir):
    archive = games.SkyArchive(sky_dir)
    assert sorted(archive.entries) == [50001, 50002, 50003, 50004, 55296, 60100]
    assert archive.entries[50001].offset % 16 == 0 and not archive.entries[50001].stored
    assert archive.entries[50002].stored
    unpacked = archive.load(50001)
    audio = games.sky_speech_audio(unpacked)
    assert len(audio) == int(1.4 * RATE)
    assert np.max(np.abs(audio - voice(1.4))) < 0.01  # 8-bit rounding only
    stored = archive.load(50002)
    assert stored == sky_file(voice(0.9, 3), packed=False)


def test_sky_table_refuses_truncated(tmp_path):
    with pytest.raises(games.GamesError, match="truncated"):
        games.parse_sky_table(struct.pack("<I", 3) + b"\0" * 10)
    with pytest.raises(games.GamesError, match="apt-get install beneath-a-steel-sky"):
        games.SkyArchive(tmp_path)


# --- the filter and the build ---------------------------------------------------------------------


def test_prepare_rules():
    pcm, duration, reason = games.prepare(voice(2.0), RATE)
    assert reason == "" and pcm is not None and pcm.dtype == np.int16
    assert abs(duration - 2.0) < 0.05 and len(pcm) == pytest.approx(duration * 16000, abs=1)
    assert abs(int(np.abs(pcm).max()) - round(games.PEAK * 32767)) <= 1
    padded = np.concatenate([np.zeros(RATE, np.float32), voice(1.0), np.zeros(RATE, np.float32)])
    assert abs(games.prepare(padded, RATE)[1] - 1.4) < 0.05  # 0.2 s of silence kept each side
    assert games.prepare(voice(0.2), RATE)[2] == "short"
    assert games.prepare(voice(29.0), RATE)[2] == "long"
    assert games.prepare(np.zeros(RATE, np.float32), RATE)[2] == "silent"
    assert games.prepare(click(1.2), RATE)[2] == "no-voice"


def read_csv(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_build_writes_clips_manifest_and_script(tmp_path, queen_file, sky_dir):
    out = tmp_path / "out"
    facts = games.build(out, ["queen", "sky"], queen_file, sky_dir)
    rows = {r["entry"]: r for r in read_csv(out / "clips.csv")}
    assert list(read_csv(out / "clips.csv")[0]) == list(games.MANIFEST_HEADER)
    assert sorted(rows) == ["50001", "50002", "610006P1", "61SSSSJ1", "C18D_011", "JOE00011"]
    assert rows["610006P1"] == {
        "path": "wavs/queen/610006P1.wav", "text": "i am the guardian of this temple",
        "source": "flight-of-the-amazon-queen", "speaker": "zombie", "origin": "script",
        "entry": "610006P1", "duration": rows["610006P1"]["duration"],
        "script": "I am the GUARDIAN of this temple.",
    }  # fmt: skip
    assert (rows["61SSSSJ1"]["speaker"], rows["61SSSSJ1"]["text"]) == ("joe", "hello there")
    for entry in ("C18D_011", "50001", "50002"):
        assert rows[entry]["origin"] == "none" and rows[entry]["text"] == ""
    assert rows["50001"]["source"] == "beneath-a-steel-sky" and rows["50001"]["speaker"] == ""
    for row in rows.values():
        info = sf.info(str(out / row["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.duration - float(row["duration"])) < 0.002
    dropped = {(r["entry"], r["reason"]) for r in read_csv(out / "dropped.csv")}
    assert dropped == {
        ("61001EJ1", "short"),
        ("610020P1", "non-speech"),
        ("50003", "silent"),
        ("50004", "no-voice"),
    }
    # The laugh is kept apart, as a clip a decoder should write nothing for, never as training data.
    nonspeech = read_csv(out / "nonspeech.csv")
    assert [(r["entry"], r["path"], r["source"]) for r in nonspeech] == [
        ("610020P1", "nonspeech/queen/610020P1.wav", "flight-of-the-amazon-queen")
    ]
    assert games.non_speech_script(nonspeech[0]["script"])
    assert sf.info(str(out / nonspeech[0]["path"])).samplerate == 16000
    script = (out / "queen-script.txt").read_text().splitlines()
    for line in (
        "Hello there.",
        "Leave now!",
        "Joe, meet the head guard.",
        "Tell him!",
        "It looks nice",
        "Give Up",
    ):
        assert line in script
    assert "FLODA.CUT" not in script and "JOE" not in script
    assert json.loads((out / "games.json").read_text()) == facts
    assert facts["kept"]["flight-of-the-amazon-queen"]["clips"] == 4
    assert facts["kept"]["flight-of-the-amazon-queen"]["script_labels"] == 2
    assert facts["kept"]["beneath-a-steel-sky"]["clips"] == 2
    assert facts["dropped"] == {"flight-of-the-amazon-queen": {"short": 1, "non-speech": 1},
                                "beneath-a-steel-sky": {"silent": 1, "no-voice": 1}}  # fmt: skip


def test_build_records_a_broken_file_and_goes_on(tmp_path, sky_dir):
    archive = games.SkyArchive(sky_dir)
    data = bytearray(archive.dsk)
    entry = archive.entries[50001]
    data[entry.offset + 60] ^= 0xFF  # inside the packed block: its CRC no longer holds
    (sky_dir / "sky.dsk").write_bytes(bytes(data))
    facts = games.build(tmp_path / "out", ["sky"], sky_dir=sky_dir)
    assert facts["failures"] == ["sky: file 50001: packed data CRC mismatch"]
    assert [r["entry"] for r in read_csv(tmp_path / "out" / "clips.csv")] == ["50002"]


def test_main_errors_in_one_line(tmp_path, capsys):
    assert games.main(["--out", str(tmp_path / "o"), "--games", "sky", "--sky-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.corpus.games: error:") and "apt-get install beneath-a-steel-sky" in err
    assert err.count("\n") == 1
    assert games.main(["--out", str(tmp_path / "o"), "--games", "doom"]) == 2
    assert "unknown game(s) doom" in capsys.readouterr().err
