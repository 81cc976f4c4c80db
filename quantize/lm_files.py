"""Language model files: ARPA text in and out, the device's models made from n-grams, and the bundle's
lm.npz and words.npz written (`edge_asr.lm` reads them back; their array layouts, `CharLmArrays` and
`WordLmArrays`, are defined there).

N-gram tables here are dicts: symbol sequences (a str of characters, or a tuple of words) to
natural-log probabilities or backoff weights. The ARPA format keeps log10 values.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, TextIO, Tuple, TypeVar

import numpy as np

from edge_asr.atomic import PathLike
from edge_asr.errors import BundleError
from edge_asr.lm import (
    BOS,
    BOS_CHAR,
    EOS,
    EOS_CHAR,
    NPZ_FORMAT,
    WORDS_FORMAT,
    CharLmArrays,
    CharNgramLM,
    NgramTable,
    WordLmArrays,
    WordNgramLM,
    check_fits,
    check_vocabulary,
)

LN10 = math.log(10.0)
SymbolsT = TypeVar("SymbolsT", bound=Sequence[str])  # an n-gram: a str of characters or a tuple of words
# ARPA entries: `entries[n - 1]` lists (tokens, log10 probability, log10 backoff) of the n-grams.
ArpaEntries = List[List[Tuple[Tuple[str, ...], float, float]]]


def open_text(path: PathLike) -> TextIO:
    """Open a text file for reading, gunzipping it when its name ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


# --- models from n-gram dicts ---------------------------------------------------------------------


def table_from_dicts(ngrams: Mapping[SymbolsT, float], backoffs: Mapping[SymbolsT, float]) -> NgramTable:
    """The packed table of n-grams and backoff weights; keys are strings of characters or word tuples."""
    alphabet = sorted({symbol for key in ngrams for symbol in key})
    check_fits(max(map(len, ngrams), default=1), len(alphabet))
    packer = NgramTable.packer(alphabet)

    def packed(table: Mapping[SymbolsT, float]) -> Tuple[np.ndarray, np.ndarray]:
        keys = np.array([packer.pack(key) for key in table], dtype=np.int64)
        return keys, np.array(list(table.values()), dtype=np.float32)

    return NgramTable.from_unsorted(alphabet, *packed(ngrams), *packed(backoffs))


def char_lm_from_dicts(ngrams: Mapping[str, float], backoffs: Mapping[str, float], order: int) -> CharNgramLM:
    """`ngrams`: context + token (one character per token) -> natural-log probability;
    `backoffs`: context -> natural-log backoff weight (absent means 0)."""
    return CharNgramLM(table_from_dicts(ngrams, backoffs), order)


def word_lm_from_dicts(
    ngrams: Mapping[Tuple[str, ...], float], backoffs: Mapping[Tuple[str, ...], float], order: int
) -> WordNgramLM:
    """`ngrams`: word tuple (context + word) -> natural-log probability; `backoffs`: context ->
    natural-log backoff weight (absent means 0). <s> and </s> mark the sentence's ends."""
    return WordNgramLM(table_from_dicts(ngrams, backoffs), order)


def ngram_dict(table: NgramTable) -> Dict[str, float]:
    """A character table's n-grams, as text, in key order -> natural-log probability."""
    return {table.unpack(k): v for k, v in zip(table.ngram_keys, table.ngram_logprobs)}


def backoff_dict(table: NgramTable) -> Dict[str, float]:
    """A character table's contexts, as text, in key order -> natural-log backoff weight."""
    return {table.unpack(k): v for k, v in zip(table.backoff_keys, table.backoff_values)}


# --- the bundle's files ---------------------------------------------------------------------------


def save_char_lm(lm: CharNgramLM, path: PathLike) -> None:
    """Write a bundle's lm.npz (`edge_asr.lm.CharLmArrays`)."""
    ngrams, backoffs = ngram_dict(lm.table), backoff_dict(lm.table)
    blob = "\n".join(ngrams)
    if blob.count("\n") != len(ngrams) - 1:
        raise ValueError("a language model token may not be a newline")
    arrays = CharLmArrays(
        format=np.array(NPZ_FORMAT),
        order=np.array(lm.order),
        ngram_keys=np.frombuffer(blob.encode("utf-8"), dtype=np.uint8),
        ngram_logprobs=np.array(list(ngrams.values()), dtype=np.float32),
        backoff_keys=np.frombuffer("\n".join(backoffs).encode("utf-8"), dtype=np.uint8),
        backoff_values=np.array(list(backoffs.values()), dtype=np.float32),
    )
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays._asdict())


def save_word_lm(words: WordNgramLM, path: PathLike) -> None:
    """Write a bundle's words.npz (`edge_asr.lm.WordLmArrays`)."""
    table = words.table
    text = "\n".join(table.alphabet)
    if text.count("\n") != len(table.alphabet) - 1 or any(not w or " " in w for w in table.alphabet):
        raise ValueError("a word may not be empty or hold a space or a newline")
    arrays = WordLmArrays(
        format=np.array(WORDS_FORMAT),
        order=np.array(words.order),
        words=np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
        ngram_key_steps=np.diff(np.asarray(table.ngram_keys, dtype=np.int64), prepend=0),
        ngram_logprobs=np.asarray(table.ngram_logprobs, dtype=np.float32),
        backoff_key_steps=np.diff(np.asarray(table.backoff_keys, dtype=np.int64), prepend=0),
        backoff_values=np.asarray(table.backoff_values, dtype=np.float32),
    )
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays._asdict())


# --- ARPA -----------------------------------------------------------------------------------------


def write_arpa(handle: TextIO, entries: Sequence[Sequence[Tuple[Tuple[str, ...], float, float]]]) -> None:
    """Write an ARPA file: `entries[n - 1]` lists (tokens, log10 prob, log10 backoff) of the n-grams.

    A backoff of 0.0 is left out, as the format allows.
    """
    handle.write("\\data\\\n")
    for n, grams in enumerate(entries, 1):
        handle.write(f"ngram {n}={len(grams)}\n")
    for n, grams in enumerate(entries, 1):
        handle.write(f"\n\\{n}-grams:\n")
        for tokens, logprob, backoff in grams:
            line = f"{logprob:.5f}\t{' '.join(tokens)}"
            handle.write(f"{line}\t{backoff:.5f}\n" if backoff else line + "\n")
    handle.write("\n\\end\\\n")


def char_lm_from_arpa(path: PathLike, vocabulary: Iterable[str] = ()) -> CharNgramLM:
    """Read an ARPA file (gzip when the name ends in .gz), e.g. one that KenLM's lmplz wrote.

    Every token must be a single character (a character LM) or <s>/</s>; <unk> is ignored.
    `vocabulary`, when given, must hold every token the LM uses.
    """
    path = Path(path)
    try:
        with open_text(path) as handle:
            return char_lm_from_arpa_lines(handle, str(path), vocabulary)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise BundleError(f"{path}: cannot read the language model ({exc})") from None


def char_lm_from_arpa_lines(lines: Iterable[str], where: str, vocabulary: Iterable[str] = ()) -> CharNgramLM:
    """Parse ARPA text; `where` names it in error messages."""
    ngrams, backoffs, order = _parse_arpa(lines, where)
    check_vocabulary({ch for key in ngrams for ch in key}, vocabulary, where)
    try:
        return char_lm_from_dicts(ngrams, backoffs, order)
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from None


def _token_char(token: str, where: str) -> str:
    if token == BOS:
        return BOS_CHAR
    if token == EOS:
        return EOS_CHAR
    if len(token) != 1:
        raise BundleError(f"{where}: token {token!r} is not a single character; only character LMs are read")
    return token


def _check_complete(
    where: str, declared: Dict[int, int], listed: Dict[int, int], ended: bool, lines: int
) -> None:
    """A cut ARPA file still parses, with the n-grams it lost backing off to shorter ones: refuse it."""
    if not ended:
        raise BundleError(
            f"{where}: ends at line {lines} without the closing \\end\\: the file is truncated; "
            "copy or export it again"
        )
    for n, count in sorted(declared.items()):
        if listed.get(n, 0) != count:
            raise BundleError(
                f"{where}: the header declares {count} {n}-grams but {listed.get(n, 0)} are listed: the "
                "file is truncated or damaged; copy or export it again"
            )


def _parse_arpa(lines: Iterable[str], where: str) -> Tuple[Dict[str, float], Dict[str, float], int]:
    ngrams: Dict[str, float] = {}
    backoffs: Dict[str, float] = {}
    declared: Dict[int, int] = {}
    listed: Dict[int, int] = {}  # n -> n-gram lines read
    section = -1  # -1 before \data\, 0 in \data\, n in \n-grams:
    order = 0
    ended = False
    number = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = 0
        elif line == "\\end\\":
            ended = True
            break
        elif line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-", 1)[0])
            order = max(order, section)
        elif section == 0 and line.startswith("ngram "):
            n, count = line[6:].split("=")
            declared[int(n)] = int(count)
        elif section > 0:
            fields = line.split()
            if len(fields) not in (section + 1, section + 2):
                raise BundleError(f"{where}:{number}: expected {section} token(s) in a {section}-gram line")
            listed[section] = listed.get(section, 0) + 1
            if "<unk>" in fields[1 : section + 1]:
                continue
            key = "".join(_token_char(t, f"{where}:{number}") for t in fields[1 : section + 1])
            ngrams[key] = float(fields[0]) * LN10
            if len(fields) == section + 2:
                backoffs[key] = float(fields[section + 1]) * LN10
    if section < 0 or not ngrams:
        raise BundleError(f"{where}: not an ARPA language model (no \\data\\ section or no n-grams)")
    _check_complete(where, declared, listed, ended, number)
    if declared and max(declared) != order:
        raise BundleError(
            f"{where}: the header declares {max(declared)}-grams but the file has {order}-grams"
        )
    return ngrams, backoffs, order
