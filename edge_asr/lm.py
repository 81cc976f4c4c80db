"""The device's language models for CTC beam search: a character n-gram model and a word one beside it,
loaded from a bundle's lm.npz and words.npz and scored here.

They are backoff n-gram models as in ARPA files (the plain-text format of SRILM and KenLM).
`python -m quantize lm` builds them from text, or converts an ARPA file (e.g. from KenLM's lmplz run on
text spelled one token per "word"), and writes them (quantize/lm_files.py, with the array layouts
`CharLmArrays` and `WordLmArrays` defined here). The character model's tokens are the bundle's
vocabulary tokens plus <s> and </s>, and "|" (`WORD_BOUNDARY`) for the space between words whatever
the vocabulary calls it.

Why our own code instead of kenlm: kenlm needs a C++ build on the device, and a character LM of a
few hundred thousand n-grams fits in two sorted integer arrays (`NgramTable`) with lookups fast
enough for a beam of 8 at 50 frames per second. Every token is mapped to one character, so a context
is a suffix of the decoded text. In a bundle it is stored as lm.npz (plain arrays, no pickle).
Measured on our 2-core x86 with the default model's 188k n-grams: the npz loads in 0.07 s and adds
11 MB of RSS (dicts of str keys added 38 MB); a beam of 8 over 10 s of audio takes 0.06 s (0.04 s
with dicts, an RTF cost of 0.002 we pay for the memory).
"""

from __future__ import annotations

import math
import zipfile
from array import array
from bisect import bisect_left
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from .atomic import PathLike
from .errors import BundleError

NPZ_FORMAT = 1
WORDS_FORMAT = 1
BOS, EOS = "<s>", "</s>"
WORD_BOUNDARY = "|"
# The character LM's one-character codes for the sentence markers; vocabulary tokens keep their own.
BOS_CHAR, EOS_CHAR = "\x02", "\x03"


class CharLmArrays(NamedTuple):
    """The arrays of a character LM file (a bundle's lm.npz), in the order they are written.

    A compressed .npz of plain arrays (no pickle): quantize/lm_files.py writes one, `CharNgramLM.load`
    reads it. N-grams are text, one per line, a character per token (<s> and </s> as `BOS_CHAR` and
    `EOS_CHAR`), so that the file does not depend on the packing of keys in memory.
    """

    format: np.ndarray  # NPZ_FORMAT
    order: np.ndarray  # the longest n-gram
    ngram_keys: np.ndarray  # uint8: the n-grams, UTF-8, newline-separated
    ngram_logprobs: np.ndarray  # float32: their natural-log probabilities, in the same order
    backoff_keys: np.ndarray  # uint8: the contexts that have a backoff weight, as `ngram_keys`
    backoff_values: np.ndarray  # float32: their natural-log backoff weights


class WordLmArrays(NamedTuple):
    """The arrays of a word LM file (a bundle's words.npz), in the order they are written.

    A compressed .npz of plain arrays (no pickle): quantize/lm_files.py writes one, `WordNgramLM.load`
    reads it. Keys are `NgramTable` keys over the sorted words, ascending, each stored as its
    difference from the previous key: small numbers that compress to about a third of the keys' size.
    """

    format: np.ndarray  # WORDS_FORMAT
    order: np.ndarray  # the longest n-gram
    words: np.ndarray  # uint8: every word, <s> and </s> included, sorted, UTF-8, newline-separated
    ngram_key_steps: np.ndarray  # int64: the packed n-grams' differences
    ngram_logprobs: np.ndarray  # float32: their natural-log probabilities
    backoff_key_steps: np.ndarray  # int64: the packed contexts' differences
    backoff_values: np.ndarray  # float32: their natural-log backoff weights


class NgramTable:
    """N-grams and backoff weights as sorted packed integers, looked up by bisection.

    Why not a dict: a `str -> float` dict costs ~200 bytes an entry, so the default model's 188k
    n-grams took 38 MB of a device's memory; packed they take 12 bytes an entry. Each character gets
    a code 1..K (K + 1 for a character the table never saw), `bits` wide; an n-gram is its codes with
    the first character most significant, so appending a token is a shift and dropping the oldest
    character of a context is a mask. Codes start at 1, so keys of different lengths never collide.

    The symbols are characters for `CharNgramLM` and whole words for `WordNgramLM`.

    Args:
        alphabet: every symbol the n-grams use, sorted; a symbol's code is its index + 1.
        ngram_keys, ngram_logprobs: packed n-grams, ascending, and their natural-log probabilities.
        backoff_keys, backoff_values: packed contexts, ascending, and their natural-log backoff weights.
    """

    def __init__(
        self,
        alphabet: Sequence[str],
        ngram_keys: np.ndarray,
        ngram_logprobs: np.ndarray,
        backoff_keys: np.ndarray,
        backoff_values: np.ndarray,
    ):
        self.alphabet = alphabet
        self.codes = {ch: code for code, ch in enumerate(alphabet, 1)}
        self.unknown = len(alphabet) + 1
        self.bits = self.unknown.bit_length()
        # array.array, not numpy: bisect indexes it element by element, and numpy scalars are slow.
        self.ngram_keys = _as_array(ngram_keys, "q")
        self.ngram_logprobs = _as_array(ngram_logprobs, "f")
        self.backoff_keys = _as_array(backoff_keys, "q")
        self.backoff_values = _as_array(backoff_values, "f")

    @classmethod
    def from_unsorted(
        cls,
        alphabet: Sequence[str],
        ngram_keys: np.ndarray,
        ngram_logprobs: np.ndarray,
        backoff_keys: np.ndarray,
        backoff_values: np.ndarray,
    ) -> NgramTable:
        """A table of packed keys in any order: sorted here, each value moving with its key."""
        return cls(
            alphabet, *_sorted_pair(ngram_keys, ngram_logprobs), *_sorted_pair(backoff_keys, backoff_values)
        )

    @classmethod
    def packer(cls, alphabet: Sequence[str]) -> NgramTable:
        """An empty table over `alphabet`, for packing keys before the real one is built."""
        empty = np.zeros(0)
        return cls(alphabet, empty, empty, empty, empty)

    def pack(self, symbols: Iterable[str]) -> int:
        # The character LM packs every context it is asked about: a plain loop, no generator.
        key, bits, codes, unknown = 0, self.bits, self.codes, self.unknown
        for symbol in symbols:
            key = (key << bits) | codes.get(symbol, unknown)
        return key

    def pack_codes(self, codes: Iterable[int]) -> int:
        key = 0
        for code in codes:
            key = (key << self.bits) | code
        return key

    def pack_lines(self, blob: np.ndarray, where: str) -> np.ndarray:
        """Pack newline-separated UTF-8 keys into int64s without building a Python object per key.

        One pass per character position over arrays of one entry per key, so that a device loading a
        few hundred thousand n-grams never holds several int64 copies of every character at once.
        """
        if blob.size == 0:
            return np.zeros(0, dtype=np.int64)
        if int(blob.max()) < 0x80:  # ASCII: the bytes are the code points
            points: np.ndarray = blob
        else:
            points = np.frombuffer(blob.tobytes().decode("utf-8").encode("utf-32-le"), dtype="<u4")
        code_of = np.full(max(int(points.max()), *map(ord, self.alphabet)) + 1, self.unknown, dtype=np.uint16)
        code_of[[ord(ch) for ch in self.alphabet]] = np.arange(1, self.unknown)
        codes = code_of[points]
        newlines = np.flatnonzero(points == ord("\n"))
        starts = np.concatenate([[0], newlines + 1])
        lengths = np.concatenate([newlines, [len(points)]]) - starts
        if (lengths < 1).any():
            raise BundleError(f"{where}: the language model has an empty n-gram")
        keys = np.zeros(len(starts), dtype=np.int64)
        for position in range(int(lengths.max())):
            longer = np.flatnonzero(lengths > position)
            keys[longer] = (keys[longer] << self.bits) | codes[starts[longer] + position]
        return keys

    def unpack(self, key: int) -> str:
        """The characters of a packed key (the inverse of `pack` for a character table)."""
        mask, chars = (1 << self.bits) - 1, []
        while key:
            chars.append(self.alphabet[(key & mask) - 1])
            key >>= self.bits
        return "".join(reversed(chars))

    def ngram(self, key: int) -> Optional[float]:
        return _lookup(self.ngram_keys, self.ngram_logprobs, key)

    def backoff(self, key: int) -> float:
        found = _lookup(self.backoff_keys, self.backoff_values, key)
        return 0.0 if found is None else found

    def logprob(self, context_key: int, length: int, code: int, floor: float) -> float:
        """Backoff log-probability of `code` after a packed context of `length` symbols.

        Where not even the symbol's unigram is known, `floor` stands in for it, after every backoff.
        """
        bits, penalty = self.bits, 0.0
        while True:
            found = self.ngram((context_key << bits) | code)
            if found is not None:
                return penalty + found
            if not length:
                return penalty + floor
            penalty += self.backoff(context_key)
            length -= 1
            context_key &= (1 << (bits * length)) - 1

    def ngram_lengths(self) -> Counter[int]:
        """How many n-grams there are of each length."""
        return Counter(-(-k.bit_length() // self.bits) for k in self.ngram_keys)


def check_fits(order: int, tokens: int) -> None:
    """Refuse an order whose n-grams of `tokens` symbols cannot be packed into an int64 key."""
    longest = 63 // (tokens + 1).bit_length()
    if order > longest:
        raise ValueError(
            f"a {order}-gram of {tokens} tokens does not fit in 63 bits; use order {longest} or less"
        )


def _lookup(keys: array[int], values: array[float], key: int) -> Optional[float]:
    at = bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        return float(values[at])
    return None


def _as_array(values: np.ndarray, typecode: str) -> array[Any]:
    packed = array(typecode)
    packed.frombytes(np.ascontiguousarray(values, dtype=packed.typecode).tobytes())
    return packed


def _sorted_pair(keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]


class _BackoffLM:
    """What the character and word models share: the table, its order, and a cached scorer.

    Args:
        table: the n-grams and backoff weights.
        order: the longest n-gram.
        sentence_start: the table's symbol for <s>, which is a context and never an outcome.
    """

    def __init__(self, table: NgramTable, order: int, sentence_start: str):
        if order < 1:
            raise ValueError(f"order must be 1 or more, got {order}")
        check_fits(order, len(table.alphabet))
        self.table = table
        self.order = order
        # Anything the LM never saw (a token outside its text) gets the rarest unigram's probability.
        keys = np.frombuffer(table.ngram_keys, dtype=np.int64)
        unigrams = (keys < 1 << table.bits) & (keys != table.codes.get(sentence_start, 0))
        known = np.frombuffer(table.ngram_logprobs, dtype=np.float32)[unigrams]
        self.floor = float(known.min()) if known.size else math.log(1e-6)
        # Small on purpose: a beam revisits few (context, token) pairs, and each entry costs ~200 bytes.
        self.logprob = lru_cache(maxsize=1 << 13)(self._logprob)

    # Set by each model: the context before a sentence's first token, and the symbol that closes it.
    start: Any
    end: Any

    def _logprob(self, context: Any, symbol: Any) -> float:
        raise NotImplementedError

    def _symbol(self, token: str) -> Any:
        """What `logprob` takes for a token of a sentence."""
        return token

    def extend(self, context: Any, symbol: Any) -> Any:
        raise NotImplementedError

    def sentence_logprob(self, tokens: Sequence[str]) -> float:
        """Log-probability of a whole sentence (characters or words), </s> included (for tests and
        diagnostics)."""
        context, total = self.start, 0.0
        for symbol in [*map(self._symbol, tokens), self.end]:
            total += self.logprob(context, symbol)
            context = self.extend(context, symbol)
        return total

    def ngram_counts(self) -> List[int]:
        """How many n-grams of each order, unigrams first."""
        by_length = self.table.ngram_lengths()
        return [by_length[n] for n in range(1, self.order + 1)]


class CharNgramLM(_BackoffLM):
    """Backoff character n-gram model; `logprob(context, token)` in natural log.

    The device reads one with `load`; quantize/lm_files.py builds one from n-grams or an ARPA file.
    """

    def __init__(self, table: NgramTable, order: int):
        super().__init__(table, order, BOS_CHAR)
        self.start = BOS_CHAR
        self.end = EOS_CHAR

    def extend(self, context: str, token: str) -> str:
        """The context after `token`: the last order-1 characters."""
        keep = self.order - 1
        return (context + token)[-keep:] if keep else ""

    def _logprob(self, context: str, token: str) -> float:
        table = self.table
        context = context[-(self.order - 1) :] if self.order > 1 else ""
        code = table.codes.get(token, table.unknown)
        return table.logprob(table.pack(context), len(context), code, self.floor)

    @classmethod
    def load(cls, path: PathLike, vocabulary: Iterable[str] = ()) -> CharNgramLM:
        """Read a bundle's lm.npz (`CharLmArrays`, written by quantize/lm_files.py).

        `vocabulary`, when given, must hold every token the LM uses, so that an LM built for another
        model is refused instead of silently scoring nothing.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                _check_format(data, NPZ_FORMAT, f"{path}: language model", "`python -m quantize lm`")
                arrays = CharLmArrays(*(data[name] for name in CharLmArrays._fields))
            order = int(arrays.order)
            ngram_blob, logprobs = arrays.ngram_keys, arrays.ngram_logprobs
            backoff_blob, backoff_values = arrays.backoff_keys, arrays.backoff_values
            alphabet = "".join(sorted(set(ngram_blob.tobytes().decode("utf-8")) - {"\n"}))
            packer = NgramTable.packer(alphabet)
            ngram_keys = packer.pack_lines(ngram_blob, str(path))
            backoff_keys = packer.pack_lines(backoff_blob, str(path))
            if len(ngram_keys) != len(logprobs) or len(backoff_keys) != len(backoff_values):
                raise ValueError("n-gram keys and values differ in number")
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: cannot read the language model ({exc})") from None
        check_vocabulary(set(alphabet), vocabulary, str(path))
        table = NgramTable.from_unsorted(alphabet, ngram_keys, logprobs, backoff_keys, backoff_values)
        try:
            return cls(table, order)
        except ValueError as exc:
            raise BundleError(f"{path}: {exc}") from None


class WordNgramLM(_BackoffLM):
    """Backoff word n-gram model; `logprob(context, code)` in natural log.

    The beam search scores each word it finishes with this model in place of the character LM's
    score for the same letters (`beam.PrefixBeamDecoder`), so that in-vocabulary words get a longer
    context than a character LM's few letters. A word it never saw is left to the character LM.
    Words are coded 1..V by their sorted order and a context is a tuple of the last order-1 codes,
    small enough for every beam prefix to carry its own. The device reads one with `load`;
    quantize/lm_files.py builds one from n-grams.
    """

    def __init__(self, table: NgramTable, order: int):
        super().__init__(table, order, BOS)
        self.unknown = table.unknown
        self.start: Tuple[int, ...] = (table.codes[BOS],) if BOS in table.codes and order > 1 else ()
        self.end = self.code(EOS)

    @property
    def vocabulary_size(self) -> int:
        """Words known, sentence markers left out."""
        return sum(1 for word in self.table.alphabet if word not in (BOS, EOS))

    def code(self, word: str) -> int:
        """The word's code, `unknown` for a word the model never saw."""
        return self.table.codes.get(word, self.unknown)

    def begins_word(self, letters: str) -> bool:
        """Whether some known word starts with `letters` (the words are sorted: one bisection)."""
        words = self.table.alphabet
        at = bisect_left(words, letters)
        return at < len(words) and words[at].startswith(letters)

    def extend(self, context: Tuple[int, ...], code: int) -> Tuple[int, ...]:
        keep = self.order - 1
        return (context + (code,))[-keep:] if keep else ()

    def _logprob(self, context: Tuple[int, ...], code: int) -> float:
        return self.table.logprob(self.table.pack_codes(context), len(context), code, self.floor)

    def _symbol(self, token: str) -> int:
        return self.code(token)

    @classmethod
    def load(cls, path: PathLike) -> WordNgramLM:
        """Read a bundle's words.npz (`WordLmArrays`, written by quantize/lm_files.py)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                _check_format(
                    data,
                    WORDS_FORMAT,
                    f"{path}: word language model",
                    "`python -m quantize lm --word-order N`",
                )
                arrays = WordLmArrays(*(data[name] for name in WordLmArrays._fields))
            order = int(arrays.order)
            words = arrays.words.tobytes().decode("utf-8").split("\n")
            ngram_keys = np.cumsum(arrays.ngram_key_steps)
            logprobs = arrays.ngram_logprobs
            backoff_keys = np.cumsum(arrays.backoff_key_steps)
            backoff_values = arrays.backoff_values
            if len(ngram_keys) != len(logprobs) or len(backoff_keys) != len(backoff_values):
                raise ValueError("n-gram keys and values differ in number")
            if (
                words != sorted(words)
                or (np.diff(ngram_keys) <= 0).any()
                or (np.diff(backoff_keys) <= 0).any()
            ):
                raise ValueError("the words or the keys are not in ascending order")
            return cls(NgramTable(words, ngram_keys, logprobs, backoff_keys, backoff_values), order)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: cannot read the word language model ({exc})") from None


def _check_format(data: Any, expected: int, what: str, command: str) -> None:
    found = int(data["format"])
    if found != expected:
        raise BundleError(
            f"{what} format {found} is not {expected}; rebuild it with this version's {command}"
        )


def check_vocabulary(used: Set[str], vocabulary: Iterable[str], where: str) -> None:
    """Refuse an LM whose tokens (`used`) are not all in `vocabulary` (no check when it is empty)."""
    known = set(vocabulary)
    if not known:
        return
    strangers = sorted(used - known - {WORD_BOUNDARY, BOS_CHAR, EOS_CHAR})
    if strangers:
        raise BundleError(
            f"{where}: the language model uses token(s) {''.join(strangers)!r} that the model's "
            "vocabulary lacks; rebuild it for this bundle with `python -m quantize lm`"
        )
