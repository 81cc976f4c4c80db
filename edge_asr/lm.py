"""A character n-gram language model for CTC beam search, read from an ARPA file.

The model is a backoff n-gram model as in ARPA files (the plain-text format of SRILM and KenLM):
`python -m quantize lm` builds one from text, or converts an ARPA file (e.g. from KenLM's lmplz run on
text spelled one token per "word"). Its tokens are the bundle's vocabulary tokens plus <s> and </s>,
and "|" (`WORD_BOUNDARY`) for the space between words whatever the vocabulary calls it.

Why our own code instead of kenlm: kenlm needs a C++ build on the device, and a character LM of a
few hundred thousand n-grams fits in Python dicts with lookups fast enough for a beam of 8 at 50
frames per second. Every token is mapped to one character, so an n-gram is a plain `str` key and a
context is a suffix of the decoded text. In a bundle it is stored as lm.npz (plain arrays, no
pickle): for the same 158k n-grams on our busy 2-core x86, parsing ARPA text took 1.8 s and
loading the npz 0.3 s.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, TextIO, Tuple

import numpy as np

from .atomic import PathLike
from .errors import BundleError

NPZ_FORMAT = 1
BOS, EOS = "<s>", "</s>"
WORD_BOUNDARY = "|"
LN10 = math.log(10.0)
# Internal one-character codes for the sentence markers; vocabulary tokens keep their own character.
_BOS, _EOS = "\x02", "\x03"


def open_text(path: PathLike) -> TextIO:
    """Open a text file for reading, gunzipping it when its name ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


class CharNgramLM:
    """Backoff character n-gram model; `logprob(context, token)` in natural log.

    Args:
        ngrams: n-gram (context + token, one character per token) -> natural-log probability.
        backoffs: context -> natural-log backoff weight (absent means 0).
        order: the longest n-gram.
    """

    def __init__(self, ngrams: Dict[str, float], backoffs: Dict[str, float], order: int):
        if order < 1:
            raise ValueError(f"order must be 1 or more, got {order}")
        self.ngrams = ngrams
        self.backoffs = backoffs
        self.order = order
        # Anything the LM never saw (a token outside its text) gets the rarest unigram's probability.
        unigrams = [p for key, p in ngrams.items() if len(key) == 1 and key != _BOS]
        self.floor = min(unigrams) if unigrams else math.log(1e-6)
        self.logprob = lru_cache(maxsize=1 << 16)(self._logprob)

    @property
    def start(self) -> str:
        """The context before the first token of a sentence."""
        return _BOS

    @property
    def end(self) -> str:
        """The token that closes a sentence; score it last."""
        return _EOS

    def extend(self, context: str, token: str) -> str:
        """The context after `token`: the last order-1 characters."""
        keep = self.order - 1
        return (context + token)[-keep:] if keep else ""

    def _logprob(self, context: str, token: str) -> float:
        context = context[-(self.order - 1) :] if self.order > 1 else ""
        penalty = 0.0
        while True:
            found = self.ngrams.get(context + token)
            if found is not None:
                return penalty + found
            if not context:
                return penalty + self.floor
            penalty += self.backoffs.get(context, 0.0)
            context = context[1:]

    def sentence_logprob(self, tokens: Sequence[str]) -> float:
        """Log-probability of a whole token sequence, </s> included (for tests and diagnostics)."""
        context, total = self.start, 0.0
        for token in [*tokens, self.end]:
            total += self.logprob(context, token)
            context = self.extend(context, token)
        return total

    def save(self, path: PathLike) -> None:
        """Write the model as a compressed .npz of plain arrays (no pickle), the bundle's LM format."""
        blob = "\n".join(self.ngrams)
        if blob.count("\n") != len(self.ngrams) - 1:
            raise ValueError("a language model token may not be a newline")
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                format=np.array(NPZ_FORMAT),
                order=np.array(self.order),
                ngram_keys=np.frombuffer(blob.encode("utf-8"), dtype=np.uint8),
                ngram_logprobs=np.array(list(self.ngrams.values()), dtype=np.float32),
                backoff_keys=np.frombuffer("\n".join(self.backoffs).encode("utf-8"), dtype=np.uint8),
                backoff_values=np.array(list(self.backoffs.values()), dtype=np.float32),
            )

    @classmethod
    def load(cls, path: PathLike, vocabulary: Iterable[str] = ()) -> CharNgramLM:
        """Read a model written by `save` (a bundle's lm.npz).

        `vocabulary`, when given, must hold every token the LM uses, so that an LM built for another
        model is refused instead of silently scoring nothing.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != NPZ_FORMAT:
                    raise BundleError(
                        f"{path}: language model format {int(data['format'])} is not {NPZ_FORMAT}; "
                        "rebuild it with this version's `python -m quantize lm`"
                    )
                order = int(data["order"])
                ngram_blob = data["ngram_keys"].tobytes().decode("utf-8")
                ngrams = dict(zip(ngram_blob.split("\n"), data["ngram_logprobs"].tolist()))
                backoff_blob = data["backoff_keys"].tobytes().decode("utf-8")
                values = data["backoff_values"].tolist()
                backoffs = dict(zip(backoff_blob.split("\n"), values)) if values else {}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: cannot read the language model ({exc})") from None
        _check_vocabulary(set(ngram_blob) - {"\n"}, vocabulary, str(path))
        return cls(ngrams, backoffs, order)

    @classmethod
    def from_arpa(cls, path: PathLike, vocabulary: Iterable[str] = ()) -> CharNgramLM:
        """Read an ARPA file (gzip when the name ends in .gz), e.g. one that KenLM's lmplz wrote.

        Every token must be a single character (a character LM) or <s>/</s>; <unk> is ignored.
        """
        path = Path(path)
        try:
            with open_text(path) as handle:
                return cls.from_arpa_lines(handle, str(path), vocabulary)
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
            raise BundleError(f"{path}: cannot read the language model ({exc})") from None

    @classmethod
    def from_arpa_lines(cls, lines: Iterable[str], where: str, vocabulary: Iterable[str] = ()) -> CharNgramLM:
        """Parse ARPA text; `where` names it in error messages."""
        ngrams, backoffs, order = _parse_arpa(lines, where)
        _check_vocabulary({ch for key in ngrams for ch in key}, vocabulary, where)
        return cls(ngrams, backoffs, order)


def _check_vocabulary(used: Set[str], vocabulary: Iterable[str], where: str) -> None:
    known = set(vocabulary)
    if not known:
        return
    strangers = sorted(used - known - {WORD_BOUNDARY, _BOS, _EOS})
    if strangers:
        raise BundleError(
            f"{where}: the language model uses token(s) {''.join(strangers)!r} that the model's "
            "vocabulary lacks; rebuild it for this bundle with `python -m quantize lm`"
        )


def _token_char(token: str, where: str) -> str:
    if token == BOS:
        return _BOS
    if token == EOS:
        return _EOS
    if len(token) != 1:
        raise BundleError(f"{where}: token {token!r} is not a single character; only character LMs are read")
    return token


def _parse_arpa(lines: Iterable[str], where: str) -> Tuple[Dict[str, float], Dict[str, float], int]:
    ngrams: Dict[str, float] = {}
    backoffs: Dict[str, float] = {}
    declared: Dict[int, int] = {}
    section = -1  # -1 before \data\, 0 in \data\, n in \n-grams:
    order = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = 0
        elif line == "\\end\\":
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
            if "<unk>" in fields[1 : section + 1]:
                continue
            key = "".join(_token_char(t, f"{where}:{number}") for t in fields[1 : section + 1])
            ngrams[key] = float(fields[0]) * LN10
            if len(fields) == section + 2:
                backoffs[key] = float(fields[section + 1]) * LN10
    if section < 0 or not ngrams:
        raise BundleError(f"{where}: not an ARPA language model (no \\data\\ section or no n-grams)")
    if declared and max(declared) != order:
        raise BundleError(
            f"{where}: the header declares {max(declared)}-grams but the file has {order}-grams"
        )
    return ngrams, backoffs, order


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


def tokens_of(text: str) -> List[str]:
    """A normalized sentence as LM tokens: its characters, with WORD_BOUNDARY between words."""
    return list(WORD_BOUNDARY.join(text.split()))
