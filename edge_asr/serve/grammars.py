"""Voice-command grammars sent with a request: parsed from text, compiled once, kept in a small cache.

Both services take a grammar as text, in the syntax of a grammar file (`Grammar.from_file`): phrases
one a line, or Home Assistant style templates (`edge_asr.templates`, needs hassil), "#" comments.
(JSON, which `Grammar.save` writes, is for files only.) Compiling turns the text into the trie over the
served model's vocabulary; a client that sends the same grammar with every request (the usual case)
finds it compiled in `GrammarCache`, keyed by the text's SHA-256.

Parsing and compiling run in the model's pool threads, inside the request's job, so a large template
expansion neither stalls the event loop nor escapes --max-concurrent.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Optional

from .. import limits
from ..errors import InputError
from ..grammar import DEFAULT_MIN_CONFIDENCE, CompiledGrammar, Grammar
from ..phrases import MAX_PHRASES
from ..transcriber import EdgeTranscriber

MAX_GRAMMAR_BYTES = 256 * 1024
"""The largest grammar text a request may carry (templates expand to at most --max-grammar-phrases)."""
CACHE_BYTES = 256 * 1000 * 1000


class GrammarError(InputError):
    """A grammar a request sent that cannot be used: too large, no phrases, bad template syntax, or
    characters the model cannot spell."""

    code = "bad_grammar"


def parse_grammar(text: str, where: str = "grammar", max_phrases: int = MAX_PHRASES) -> Grammar:
    """A grammar from its text, read as `Grammar.from_file` reads a phrase or template file; templates
    that would expand to more than `max_phrases` are refused before they are expanded."""
    if len(text.encode("utf-8")) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"{where}: larger than {MAX_GRAMMAR_BYTES // 1024} KB, the most this server takes")
    try:
        return Grammar.from_text(text, where, max_phrases)
    except GrammarError:
        raise
    except InputError as exc:
        raise GrammarError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None


def parse_min_confidence(value: object, where: str = "min_confidence") -> float:
    """The rejection threshold a request gave (a number or its text), or the default for none."""
    if value is None or value == "":
        return DEFAULT_MIN_CONFIDENCE
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = value
    problem = limits.MIN_CONFIDENCE.problem(number)
    if problem is not None:
        raise GrammarError(f"{where} {problem}", field="min_confidence")
    assert isinstance(number, (int, float))
    return float(number)


class GrammarCache:
    """Grammars compiled for the served model, by their text's SHA-256, the most recently used first,
    up to `max_bytes` of them (`CompiledGrammar.nbytes`); at most `max_phrases` phrases each.
    Thread-safe: pool threads use it; two requests that bring the same new grammar at once may both
    compile it."""

    def __init__(
        self, transcriber: EdgeTranscriber, max_bytes: int = CACHE_BYTES, max_phrases: int = MAX_PHRASES
    ):
        self.transcriber = transcriber
        self.max_bytes = max_bytes
        self.max_phrases = max_phrases
        self.nbytes = 0  # what the grammars kept hold
        self.compiled = 0  # how many times a grammar was compiled (the tests read it)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()

    def get(self, text: str, where: str = "grammar") -> CompiledGrammar:
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            found: Optional[CompiledGrammar] = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        try:
            compiled = self.transcriber.compile_grammar(parse_grammar(text, where, self.max_phrases))
        except GrammarError:
            raise
        except InputError as exc:  # a character the model cannot spell
            raise GrammarError(f"{where}: {exc}") from None
        with self._lock:
            self.compiled += 1
            if key not in self._cache and compiled.nbytes <= self.max_bytes:
                self._cache[key] = compiled
                self.nbytes += compiled.nbytes
            while self.nbytes > self.max_bytes:  # the least recently used go first
                _, dropped = self._cache.popitem(last=False)
                self.nbytes -= dropped.nbytes
        return compiled

    def __len__(self) -> int:
        return len(self._cache)
