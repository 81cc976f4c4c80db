"""Voice-command grammars sent with a request: parsed from text, compiled once, kept in a small cache.

Both services take a grammar as text, in the syntax of a grammar file (`Grammar.from_file`): phrases
one a line, or Home Assistant style templates (`edge_asr.templates`, needs hassil), "#" comments.
(JSON, which `Grammar.save` writes, is for files only.) Compiling turns the text into the trie over the
served model's vocabulary; a client that sends the same grammar with every request (the usual case)
finds it compiled in `GrammarCache`, keyed by the text's SHA-256.

Parsing and compiling run on a thread of their own (`GrammarCache.compile`), one grammar at a time,
never on the model's threads: a grammar that takes seconds to expand holds neither the event loop nor
a model slot, so other requests go on being answered meanwhile. What takes milliseconds to refuse (too
large, bad syntax, templates counted past --max-grammar-phrases) is checked first on another thread,
so that it never waits behind a long compilation. A request waits for its grammar only
until its deadline; when every request that wanted a grammar has given up, its compilation stops at
its next check (`phrases.Check`) instead of running to the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional

from .. import limits
from ..errors import InputError
from ..grammar import DEFAULT_MIN_CONFIDENCE, CompiledGrammar, Grammar, count_phrases
from ..phrases import MAX_PHRASES, Check, no_check
from ..transcriber import EdgeTranscriber

MAX_GRAMMAR_BYTES = 256 * 1024
"""The largest grammar text a request may carry (templates expand to at most --max-grammar-phrases)."""
CACHE_BYTES = 256 * 1000 * 1000


class GrammarError(InputError):
    """A grammar a request sent that cannot be used: too large, no phrases, bad template syntax, or
    characters the model cannot spell."""

    code = "bad_grammar"


class Abandoned(Exception):
    """Raised by a compilation's `Check` once no request waits for it any more (nobody sees it)."""


def parse_grammar(
    text: str, where: str = "grammar", max_phrases: int = MAX_PHRASES, check: Check = no_check
) -> Grammar:
    """A grammar from its text, read as `Grammar.from_file` reads a phrase or template file; templates
    that would expand to more than `max_phrases` are refused before they are expanded."""
    check_grammar_size(text, where)
    try:
        return Grammar.from_text(text, where, max_phrases, check)
    except InputError as exc:
        raise as_grammar_error(exc, where) from None


def check_grammar(text: str, where: str = "grammar", max_phrases: int = MAX_PHRASES) -> None:
    """What can be checked of a grammar in milliseconds, before it is queued for compiling: its size,
    its template syntax and how many phrases its templates make (`count_phrases`); GrammarError."""
    check_grammar_size(text, where)
    try:
        count_phrases(text, where, max_phrases)
    except InputError as exc:
        raise as_grammar_error(exc, where) from None


def check_grammar_size(text: str, where: str) -> None:
    if len(text.encode("utf-8")) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"{where}: larger than {MAX_GRAMMAR_BYTES // 1024} KB, the most this server takes")


def as_grammar_error(exc: InputError, where: str) -> GrammarError:
    """`exc` as a GrammarError whose message starts with `where`."""
    if isinstance(exc, GrammarError):
        return exc
    return GrammarError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc))


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


@dataclass
class _Compiling:
    """A compilation in progress on the grammar thread, and how many requests wait for it."""

    future: asyncio.Future[CompiledGrammar]
    abandon: threading.Event  # set when nobody waits any more: its `Check` then raises `Abandoned`
    waiters: int = 0


class GrammarCache:
    """Grammars compiled for the served model, by their text's SHA-256, the most recently used first,
    up to `max_bytes` of them (`CompiledGrammar.nbytes`); at most `max_phrases` phrases each.

    `compile` (event loop) checks a grammar (`check_grammar`: milliseconds) on one thread of the
    cache's, then compiles it on another, one grammar at a time (so one grammar's memory at a time, not
    one per request): a grammar refused for its size or syntax never waits behind another's
    compilation. Requests that bring the same new grammar at once share its compilation. `get` (any
    thread) compiles on the caller's thread. The cache itself is thread-safe."""

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
        self._compiling: Dict[str, _Compiling] = {}  # event loop only
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-asr-grammar-check")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-asr-grammar")

    @property
    def compiling(self) -> int:
        """Compilations started and still wanted (the tests read it)."""
        return len(self._compiling)

    def cached(self, text: str) -> Optional[CompiledGrammar]:
        """The compiled grammar of `text` if it is kept (it becomes the most recently used)."""
        key = _key(text)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
            return found

    async def compile(self, text: str, where: str, left: Callable[[], float]) -> CompiledGrammar:
        """`text` compiled (`get`) on the grammar thread. `left()` gives the seconds to the caller's
        deadline, and raises once it has passed (asked again after each wait, so a deadline that moves
        later is honoured). A caller that gives up (that error, or cancelled) stops waiting at once;
        the compilation stops too when nobody else waits for it."""
        found = self.cached(text)
        if found is not None:
            return found
        key = _key(text)
        job = self._compiling.get(key) or self._start(key, text, where)
        job.waiters += 1
        try:
            while True:
                done, _ = await asyncio.wait({job.future}, timeout=left())
                if done:
                    return job.future.result()
        finally:
            job.waiters -= 1
            if not job.waiters and not job.future.done():
                job.abandon.set()
                if self._compiling.get(key) is job:
                    del self._compiling[key]  # a later request for this grammar starts afresh

    def _start(self, key: str, text: str, where: str) -> _Compiling:
        abandon = threading.Event()

        def check() -> None:
            if abandon.is_set():
                raise Abandoned(where)

        future = asyncio.ensure_future(self._check_then_compile(text, where, check))
        job = self._compiling[key] = _Compiling(future, abandon)
        future.add_done_callback(partial(self._finished, key, job))
        return job

    async def _check_then_compile(self, text: str, where: str, check: Check) -> CompiledGrammar:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._checker, partial(check_grammar, text, where, self.max_phrases))
        check()  # abandoned meanwhile: queue nothing
        return await loop.run_in_executor(self._executor, partial(self.get, text, where, check))

    def _finished(self, key: str, job: _Compiling, future: asyncio.Future[CompiledGrammar]) -> None:
        if self._compiling.get(key) is job:
            del self._compiling[key]
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned compilation's error is nobody's to report

    def close(self) -> None:
        """Abandon the compilations in progress and stop the grammar thread (any thread)."""
        for job in list(self._compiling.values()):
            job.abandon.set()
        for executor in (self._checker, self._executor):
            executor.shutdown(wait=True, cancel_futures=True)

    def get(self, text: str, where: str = "grammar", check: Check = no_check) -> CompiledGrammar:
        """`text` compiled on this thread (or found kept), and kept; `check` as `phrases.Check`."""
        found = self.cached(text)
        if found is not None:
            return found
        key = _key(text)
        try:
            compiled = self.transcriber.compile_grammar(
                parse_grammar(text, where, self.max_phrases, check), check
            )
        except InputError as exc:  # a character the model cannot spell
            raise as_grammar_error(exc, where) from None
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


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
