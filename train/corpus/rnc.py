"""Rob Northen Computing "ProPack" method-1 decompression, in pure Python (Beneath a Steel Sky's speech).

Written from the format as documented by public decoders; no code of theirs is used. The format:

    offset  size  field
    0       4     b"RNC\\x01" (method 1)
    4       4     unpacked length, big-endian
    8       4     packed length (bytes after this 18-byte header), big-endian
    12      2     CRC-16 of the unpacked data, big-endian
    14      2     CRC-16 of the packed data, big-endian
    16      1     leeway (for in-place unpacking; unused here)
    17      1     number of blocks

The packed data is a bit stream read least-significant bit first out of 16-bit little-endian words, with
literal bytes stored inline: a literal run starts at the first byte after the last word the bit reader
has fetched. The stream opens with 2 flag bits (lock, key; ignored); then each block holds three Huffman
tables (literal-run lengths, match offsets, match lengths), a 16-bit count of literal runs, and that many
runs, each but the last followed by one match (offset = value + 1, length = value + 2).

A Huffman table is a 5-bit symbol count (at most 16) and a 4-bit code length per symbol (0 = unused);
codes are canonical (shorter first, then by symbol), stored bit-reversed because the stream is LSB-first.
Symbol s >= 2 stands for the value 2**(s-1) + (s-1 more bits); symbols 0 and 1 stand for themselves.
A table with no symbols keeps the previous block's table.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

SIGNATURE = b"RNC\x01"
HEADER_SIZE = 18
MIN_MATCH = 2
MAX_SYMBOLS = 16


class RncError(ValueError):
    """The data is not a valid RNC method-1 block (the message says which check failed)."""


def _crc_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, initial value 0): the checksum RNC headers carry."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class _BitReader:
    """LSB-first bits out of 16-bit little-endian words, fetched only when a bit of them is needed, so
    that `take_bytes` finds the literal bytes where the packer put them."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.pos = start  # byte offset of the next word (or literal byte) not yet fetched
        self.bits = 0
        self.count = 0

    def _word(self, pos: int) -> int:
        chunk = self.data[pos : pos + 2]
        return int.from_bytes(chunk, "little") if chunk else 0  # past the end reads as zero bits

    def peek16(self) -> int:
        """The next 16 bits, without consuming them (Huffman codes are matched against these)."""
        bits, count, pos = self.bits, self.count, self.pos
        while count < 16:
            bits |= self._word(pos) << count
            pos += 2
            count += 16
        return bits & 0xFFFF

    def read(self, n: int) -> int:
        while self.count < n:
            if self.pos >= len(self.data):
                raise RncError("packed data ends inside the bit stream")
            self.bits |= self._word(self.pos) << self.count
            self.pos += 2
            self.count += 16
        value = self.bits & ((1 << n) - 1)
        self.bits >>= n
        self.count -= n
        return value

    def take_bytes(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise RncError("packed data ends inside a literal run")
        self.pos += n
        return chunk


# A decoding table: (code length, bit-reversed code) -> symbol, plus the lengths in use, shortest first.
_Table = Tuple[Dict[Tuple[int, int], int], List[int]]


def canonical_codes(lengths: List[int]) -> List[Optional[Tuple[int, int]]]:
    """Per symbol, (length, code as stored in the LSB-first stream) or None for an unused symbol."""
    codes: List[Optional[Tuple[int, int]]] = [None] * len(lengths)
    next_code = 0  # left-aligned in 16 bits, as the canonical assignment walks lengths 1..16
    for length in range(1, 17):
        for symbol, symbol_length in enumerate(lengths):
            if symbol_length != length:
                continue
            code = next_code >> (16 - length)
            reversed_code = int(f"{code:0{length}b}"[::-1], 2)
            codes[symbol] = (length, reversed_code)
            next_code += 1 << (16 - length)
    if next_code > 1 << 16:
        raise RncError("Huffman code lengths over-subscribe the code space")
    return codes


def _read_table(reader: _BitReader, previous: Optional[_Table]) -> Optional[_Table]:
    count = reader.read(5)
    if count == 0:
        return previous
    if count > MAX_SYMBOLS:
        raise RncError(f"Huffman table with {count} symbols (at most {MAX_SYMBOLS})")
    lengths = [reader.read(4) for _ in range(count)]
    lookup: Dict[Tuple[int, int], int] = {}
    for symbol, entry in enumerate(canonical_codes(lengths)):
        if entry is not None:
            lookup[entry] = symbol
    return lookup, sorted({length for length, _ in lookup})


def _read_value(reader: _BitReader, table: Optional[_Table]) -> int:
    if table is None or not table[0]:
        raise RncError("a Huffman table is empty")
    lookup, lengths = table
    window = reader.peek16()
    for length in lengths:
        symbol = lookup.get((length, window & ((1 << length) - 1)))
        if symbol is not None:
            reader.read(length)
            if symbol < 2:
                return symbol
            return (1 << (symbol - 1)) | reader.read(symbol - 1)
    raise RncError("bit pattern matches no Huffman code")


def _copy_match(out: bytearray, offset: int, length: int) -> None:
    if offset > len(out):
        raise RncError(f"match reaches {offset} bytes back with only {len(out)} unpacked")
    start = len(out) - offset
    if offset >= length:
        out += out[start : start + length]
    else:
        # The source overlaps what is being written: the result repeats the last `offset` bytes.
        pattern = bytes(out[start:])
        out += (pattern * (length // offset + 1))[:length]


def header(data: bytes) -> Tuple[int, int, int, int, int]:
    """(unpacked length, packed length, unpacked CRC, packed CRC, blocks) of an RNC method-1 header."""
    if len(data) < HEADER_SIZE or data[:4] != SIGNATURE:
        raise RncError("no RNC method-1 signature ('RNC\\x01')")
    unpacked, packed, crc_unpacked, crc_packed = struct.unpack(">IIHH", data[4:16])
    return unpacked, packed, crc_unpacked, crc_packed, data[17]


def unpack(data: bytes) -> bytes:
    """The unpacked bytes of an RNC method-1 block (header included in `data`; trailing bytes ignored)."""
    unpacked_size, packed_size, crc_unpacked, crc_packed, blocks = header(data)
    body = bytes(data[HEADER_SIZE : HEADER_SIZE + packed_size])
    if len(body) != packed_size:
        raise RncError(f"header says {packed_size} packed bytes, {len(body)} present")
    if crc16(body) != crc_packed:
        raise RncError("packed data CRC mismatch")
    reader = _BitReader(body, 0)
    reader.read(2)  # lock and key flags: nothing here is encrypted
    out = bytearray()
    raw = offsets = lengths = None
    for _ in range(blocks):
        raw = _read_table(reader, raw)
        offsets = _read_table(reader, offsets)
        lengths = _read_table(reader, lengths)
        runs = reader.read(16)
        if runs == 0:
            raise RncError("a block with no literal runs")
        for run in range(runs):
            literal = _read_value(reader, raw)
            if literal:
                out += reader.take_bytes(literal)
            if run + 1 < runs:  # the last run of a block has no match after it
                offset = _read_value(reader, offsets) + 1
                _copy_match(out, offset, _read_value(reader, lengths) + MIN_MATCH)
        if len(out) > unpacked_size:
            raise RncError(f"unpacked past the {unpacked_size} bytes the header gives")
    if len(out) != unpacked_size:
        raise RncError(f"unpacked {len(out)} bytes, header says {unpacked_size}")
    if crc16(bytes(out)) != crc_unpacked:
        raise RncError("unpacked data CRC mismatch")
    return bytes(out)
