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
from ..transcriber import EdgeTranscriber

MAX_GRAMMAR_BYTES = 256 * 1024
"""The largest grammar text a request may carry (templates expand to at most `grammar.MAX_PHRASES`)."""
CACHED_GRAMMARS = 8


class GrammarError(InputError):
    """A grammar a request sent that cannot be used: too large, no phrases, bad template syntax, or
    characters the model cannot spell."""

    code = "bad_grammar"


def parse_grammar(text: str, where: str = "grammar") -> Grammar:
    """A grammar from its text, read as `Grammar.from_file` reads a phrase or template file."""
    if len(text.encode("utf-8")) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"{where}: larger than {MAX_GRAMMAR_BYTES // 1024} KB, the most this server takes")
    try:
        return Grammar.from_text(text, where)
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
    """The last `size` grammars compiled for the served model, by their text's SHA-256 (thread-safe:
    pool threads use it; two requests that bring the same new grammar at once may both compile it)."""

    def __init__(self, transcriber: EdgeTranscriber, size: int = CACHED_GRAMMARS):
        self.transcriber = transcriber
        self.size = size
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
            compiled = self.transcriber.compile_grammar(parse_grammar(text, where))
        except GrammarError:
            raise
        except InputError as exc:  # a character the model cannot spell
            raise GrammarError(f"{where}: {exc}") from None
        with self._lock:
            self.compiled += 1
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return compiled
