"""What the Wyoming and HTTP services share: one model, the threads that run it, and the queue in front.

One `EdgeTranscriber` serves every request. Its onnxruntime session is shared (`InferenceSession.run` is
thread-safe, and `CtcModel.log_probs` keeps no state between calls); every request gets its own window
runner, decoder and stream, so requests never see each other's state. Model work runs in a thread pool
of `max_concurrent` threads, off the event loop, so that a transcription never stalls the sockets.

Grammars sent with requests are compiled on a thread of their own (`grammars.GrammarCache.compile`),
never in the model pool, each request waiting for its grammar only until its deadline: nothing holds a
model thread but a transcription or a command's recognition.

In front of the pool, `ModelSlots`: at most `max_concurrent` jobs run, up to `max_queue` more wait for a
slot (first come, first served) for at most `queue_timeout` seconds, and a job beyond that is refused
at once with `Busy`, which the services turn into a clear "busy" answer. Nothing waits without bound.

A `Request` owns one request from admission to answer, whichever protocol brought it: it admits it
(or refuses it as busy or shutting down), keeps its deadline, runs its model jobs, counts it in
`ServeStats` (the only place the counters change) and logs its one line. Every failure is an
`EdgeASRError` whose `code` (edge_asr.errors) each service translates in one place.

numpy and the standard library only: the protocol libraries are imported by the services.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Deque, List, Optional, Tuple, TypeVar

import numpy as np
import soundfile as sf

from .. import limits
from ..audio import (
    MAX_CHANNELS,
    SampleGuard,
    _Resampler,
    clean_mono,
    known_frames,
    open_audio,
    redirect_native_stderr,
    sample_rate_hz,
)
from ..errors import AudioError, EdgeASRError, InputError
from ..grammar import CommandMatch, CompiledGrammar
from ..phrases import MAX_PHRASES
from ..results import Transcript
from ..transcriber import EdgeTranscriber
from .grammars import GrammarCache

log = logging.getLogger("edge_asr.serve")
T = TypeVar("T")

LANGUAGES = ("en",)
"""What the served model speaks. Bundles do not record a language; every model edge-asr builds is English."""

PCM_WIDTHS = (1, 2, 3, 4)  # bytes per sample: unsigned 8-bit, signed 16, 24 and 32-bit little-endian


class Busy(EdgeASRError):
    """Every model slot is taken and the queue is full, or a request waited too long for a slot."""

    code = "busy"


class TooLong(EdgeASRError):
    """An input longer than --max-audio-seconds (code "too_long") or --max-upload-mb ("too_large")."""

    code = "too_long"


class Timeout(EdgeASRError):
    """A request that sent nothing for --read-timeout, or passed its --request-timeout deadline."""

    code = "timeout"


class ShuttingDown(EdgeASRError):
    """The server is stopping (SIGTERM): new requests are refused, unfinished ones end with this."""

    code = "shutdown"


class Disconnected(EdgeASRError):
    """The client went away in the middle of its request (nobody reads the answer)."""

    code = "incomplete"


@dataclass(frozen=True)
class ServeLimits:
    """How much the server takes on at once, how long it waits, and how large a request may be.

    Attributes:
        max_concurrent: model jobs running at once (threads of the pool).
        max_queue: jobs that may wait for a slot; one more is refused at once as busy.
        queue_timeout: seconds a job may wait for a slot before it is refused as busy.
        max_audio_seconds: longest audio a request may carry (Wyoming: as it arrives; HTTP: from the
            file's header, before decoding it).
        max_upload_mb: largest HTTP request body (megabytes); refused from Content-Length before it is
            read, or as soon as a body without one passes it.
        idle_timeout: seconds a connection may stay open with no request in progress.
        read_timeout: seconds a request may go without sending anything (between Wyoming events, between
            pieces of an upload), and the time allowed to write an answer to a client that reads nothing.
        request_timeout: seconds a request's input may take to arrive, whatever its pace: an HTTP
            request's headers and upload; a Wyoming request's audio from audio-start to audio-stop, plus
            the duration of the audio received (a client sending live audio in real time never runs out);
            and its grammar, if it sends one, to compile.
        max_grammar_phrases: the most phrases a request's grammar may expand to (each costs about 2 KB
            and 30 us to compile); counted before anything is expanded.
        grammar_cache_mb: megabytes of compiled grammars kept for requests that send them again.
        shutdown_timeout: on SIGTERM, seconds that requests in flight get to finish.
    """

    max_concurrent: int = 1
    max_queue: int = 8
    queue_timeout: float = 30.0
    max_audio_seconds: float = 900.0
    max_upload_mb: float = 25.0
    idle_timeout: float = 60.0
    read_timeout: float = 15.0
    request_timeout: float = 120.0
    max_grammar_phrases: int = 100_000
    grammar_cache_mb: float = 256.0
    shutdown_timeout: float = 10.0

    def validate(self) -> None:
        """InputError naming the first limit out of its range, as its command-line flag."""
        for name, allowed in RANGES.items():
            allowed.check(getattr(self, name), "--" + name.replace("_", "-"))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


RANGES = {
    "max_concurrent": limits.Range(1, 64, integer=True),
    "max_queue": limits.Range(0, 10_000, integer=True),
    "queue_timeout": limits.Range(0.01, 3600),
    "max_audio_seconds": limits.Range(1, 24 * 3600),
    "max_upload_mb": limits.Range(0.001, 4096),
    "idle_timeout": limits.Range(0.1, 24 * 3600),
    "read_timeout": limits.Range(0.1, 3600),
    "request_timeout": limits.Range(0.1, 24 * 3600),
    "max_grammar_phrases": limits.Range(1, MAX_PHRASES, integer=True),
    "grammar_cache_mb": limits.Range(0, 65536),
    "shutdown_timeout": limits.Range(0, 3600),
}


class ModelSlots:
    """`running` slots for model jobs and a first-come-first-served queue of at most `queue` waiters.

    `acquire` takes a slot at once when one is free and nobody waits before it; else it queues, and raises
    `Busy` when the queue is full or after `timeout` seconds. `release` hands the slot straight to the
    oldest waiter. Event-loop only (not thread-safe): the services call it from the loop.
    """

    def __init__(self, running: int, queue: int, timeout: float):
        self.running = running
        self.queue = queue
        self.timeout = timeout
        self.in_use = 0
        self.peak_waiting = 0  # the most requests that ever waited at once (never above `queue`)
        self._waiters: Deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.in_use < self.running and not self._waiters:
            self.in_use += 1
            return
        if len(self._waiters) >= self.queue:
            raise Busy(
                f"server busy: {self.in_use} request(s) running and {len(self._waiters)} waiting "
                f"(--max-concurrent {self.running}, --max-queue {self.queue}); try again in a moment"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.peak_waiting = max(self.peak_waiting, len(self._waiters))
        timer = loop.call_later(self.timeout, self._expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # the slot came, but our caller was cancelled meanwhile: pass it on
            raise
        finally:
            timer.cancel()
            with suppress(ValueError):
                self._waiters.remove(waiter)

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(
                Busy(
                    f"server busy: no model slot came free within {self.timeout:g} s (--queue-timeout); "
                    "try again later"
                )
            )

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # skip those that timed out or were cancelled
                waiter.set_result(None)  # the slot passes on: in_use stays the same
                return
        self.in_use -= 1


@dataclass
class Timing:
    """One request's clock: started at the end of its input; `queued` is time spent waiting for slots."""

    start: float = 0.0
    queued: float = 0.0

    def __post_init__(self) -> None:
        self.start = self.start or time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class ServeStats:
    """Counters over the server's life (GET /health shows them; the tests read them)."""

    requests: int = 0
    completed: int = 0
    failed: int = 0
    busy: int = 0
    active: int = 0  # requests in progress: receiving audio, waiting for a slot or running


class Engine:
    """The loaded model, its thread pool and its queue, shared by both services of one process."""

    def __init__(self, transcriber: EdgeTranscriber, limits: Optional[ServeLimits] = None):
        self.limits = limits or ServeLimits()
        self.limits.validate()
        self.transcriber = transcriber
        self.slots = ModelSlots(self.limits.max_concurrent, self.limits.max_queue, self.limits.queue_timeout)
        self._executor = ThreadPoolExecutor(
            max_workers=self.limits.max_concurrent, thread_name_prefix="edge-asr-model"
        )
        self.stats = ServeStats()
        self.grammars = GrammarCache(
            transcriber, int(self.limits.grammar_cache_mb * 1_000_000), self.limits.max_grammar_phrases
        )
        # No process-wide fd 2 swaps around decodes on the pool's threads (audio.redirect_native_stderr)
        self._redirected_before = redirect_native_stderr(False)
        self.stopping = False  # set on SIGTERM: new requests are refused, those in flight finish
        self.started = time.monotonic()
        metadata = transcriber.metadata
        self.model_name = metadata.name or transcriber.bundle.path.name
        self.sample_rate = metadata.sample_rate

    def request(self, protocol: str, client: str) -> Request:
        """A new request's owner (`Request`): admit it, run it, then close it."""
        return Request(self, protocol, client)

    def _admit(self) -> None:
        """Count a request in as active: `ShuttingDown` after SIGTERM, `Busy` when --max-concurrent +
        --max-queue requests are already in progress, receiving audio, waiting or running: that bounds
        the audio the server holds at once, not only the model work."""
        if self.stopping:
            raise ShuttingDown("the server is shutting down")
        stats = self.stats
        most = self.limits.max_concurrent + self.limits.max_queue
        if stats.active >= most:
            raise Busy(
                f"server busy: {stats.active} requests in progress (--max-concurrent "
                f"{self.limits.max_concurrent} + --max-queue {self.limits.max_queue}); try again in a moment"
            )
        stats.active += 1

    async def run(self, job: Callable[[], T], timing: Optional[Timing] = None) -> T:
        """`job()` in the model pool once a slot is free (`Busy` when none comes); `timing.queued`
        grows by the time spent waiting for the slot.

        If the caller goes away (its client disconnected) the job still finishes in its thread, but its
        slot is held until it does, so the pool never runs more than `max_concurrent` jobs.
        """
        asked = time.perf_counter()
        await self.slots.acquire()
        if timing is not None:
            timing.queued += time.perf_counter() - asked
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(self._job_done)
        return await asyncio.shield(future)

    def _job_done(self, future: asyncio.Future[Any]) -> None:
        self.slots.release()
        if not future.cancelled():
            future.exception()  # retrieved, so a job whose client left logs no "never retrieved" warning

    def close(self) -> None:
        """Wait for the jobs still running (each is one transcription) and stop the threads; grammars
        still compiling are abandoned."""
        self.grammars.close()
        self._executor.shutdown(wait=True)
        redirect_native_stderr(self._redirected_before)

    def transcribe_upload(self, data: bytes) -> Transcript:
        """An uploaded file, decoded from memory: nothing a client sends is written to disk or taken as
        a path. `TooLong` when its header says it is past --max-audio-seconds (before any decoding),
        or as soon as decoding passes it (a header that understates the length, or leaves it open),
        `AudioError` when it is no audio libsndfile reads. Runs in a pool thread."""
        limit = self.limits.max_audio_seconds
        buffer, _ = self._open_upload(data)

        def check_length(done: float, total: float) -> None:
            if done > limit + 1.0:  # a header that under-stated the length
                raise TooLong(
                    f"upload: the audio runs past {limit:g} s, the most this server takes", field="file"
                )

        return self.transcriber.transcribe(buffer, progress=check_length)

    def recognize_upload(
        self, data: bytes, grammar: CompiledGrammar, min_confidence: float
    ) -> Tuple[CommandMatch, float]:
        """The command an uploaded file says, against `grammar` (compiled beforehand: `Request.grammar`),
        and the audio's duration. Checked as `transcribe_upload` checks. Runs in a pool thread."""
        buffer, _ = self._open_upload(data)
        samples = self._decode_capped(buffer)
        match = self.transcriber.recognize(
            samples, grammar, sample_rate=self.sample_rate, min_confidence=min_confidence
        )
        return match, samples.size / self.sample_rate

    def _decode_capped(self, buffer: io.BytesIO) -> np.ndarray:
        """The upload's samples at the model's rate, decoded block by block: `TooLong` as soon as they
        pass --max-audio-seconds, whatever the header said."""
        limit = self.limits.max_audio_seconds
        _, blocks = open_audio(buffer, self.sample_rate, block_seconds=1.0)
        parts: List[np.ndarray] = []
        total = 0
        for block in blocks:
            parts.append(block)
            total += block.size
            if total > (limit + 1.0) * self.sample_rate:
                raise TooLong(
                    f"upload: the audio runs past {limit:g} s, the most this server takes", field="file"
                )
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def recognize_samples(
        self, samples: np.ndarray, grammar: CompiledGrammar, min_confidence: float
    ) -> CommandMatch:
        """The command in float32 mono samples at the model's rate (a Wyoming session's audio)."""
        if samples.size == 0:
            return CommandMatch(phrase=None, slots={}, confidence=0.0)
        return self.transcriber.recognize(
            samples, grammar, sample_rate=self.sample_rate, min_confidence=min_confidence
        )

    def _open_upload(self, data: bytes) -> Tuple[io.BytesIO, Optional[float]]:
        """The upload as a named in-memory file and its header's duration; `TooLong` past the limit."""
        limit = self.limits.max_audio_seconds
        buffer = io.BytesIO(data)
        buffer.name = "upload"  # what error messages call it (never the client's file name)
        seconds = _header_seconds(buffer)
        if seconds is not None and seconds > limit:
            raise TooLong(
                f"upload: the audio is {seconds:.0f} s long; this server takes at most {limit:g} s",
                field="file",
            )
        return buffer, seconds

    def transcribe_samples(self, samples: np.ndarray) -> Transcript:
        """Float32 mono samples at the model's rate (a Wyoming session's audio); silence for none."""
        if samples.size == 0:
            return Transcript(text="", source="<wyoming>")
        return self.transcriber.transcribe(samples, sample_rate=self.sample_rate)


def _header_seconds(buffer: io.BytesIO) -> Optional[float]:
    """The duration a file's header gives, or None when it does not say (a FLAC of open length) or
    libsndfile cannot tell (decoding then reports what is wrong with it). Leaves `buffer` at its start."""
    try:
        info = sf.info(buffer)
        frames = known_frames(info.frames)
        return float(frames) / float(info.samplerate) if info.samplerate and frames is not None else None
    except Exception:  # noqa: BLE001 - any failure here is reported properly by the decoder
        return None
    finally:
        buffer.seek(0)


def check_language(language: object) -> None:
    """InputError unless `language` is empty or one this server speaks ("en", "en-US", "en_GB", "english")."""
    if language is None or language == "":
        return
    if isinstance(language, str):
        code = language.strip().lower().replace("_", "-")
        if code.split("-")[0] in LANGUAGES or code == "english":
            return
    raise InputError(
        f"language {limits.brief(language)} is not served: this model speaks {', '.join(LANGUAGES)} only",
        code="unsupported_language",
        field="language",
    )


def check_pcm_format(rate: object, width: object, channels: object) -> int:
    """The sample rate of a raw PCM stream (Wyoming's audio-start/audio-chunk), once rate, width and
    channel count are checked; AudioError naming what is wrong."""
    try:
        hz = sample_rate_hz(rate, "audio")
    except InputError as exc:  # not a number: as bad as any other format problem
        raise AudioError(str(exc)) from None
    if isinstance(width, bool) or width not in PCM_WIDTHS:
        raise AudioError(f"audio: width must be 1, 2, 3 or 4 bytes per sample, got {limits.brief(width)}")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"audio: channels must be 1..{MAX_CHANNELS}, got {limits.brief(channels)}")
    return hz


def pcm_array(data: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM -> integer samples (frames, channels): uint8 for width 1 (as WAV
    stores it), int16, and int32 for 24 and 32-bit (24-bit in the upper bytes), which
    `edge_asr.audio.as_float32` scales to -1..1 as libsndfile does for files."""
    if width == 1:
        samples = np.frombuffer(data, dtype=np.uint8)
    elif width == 2:
        samples = np.frombuffer(data, dtype="<i2")
    elif width == 3:
        packed = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((packed.shape[0], 4), dtype=np.uint8)
        wide[:, 1:] = packed  # little-endian: the 24 bits become the top of an int32
        samples = wide.view("<i4").reshape(-1)
    else:
        samples = np.frombuffer(data, dtype="<i4")
    return samples.reshape(-1, channels)


class PcmInput:
    """One raw PCM stream (a Wyoming session): its format, checked once, and each chunk as float32 mono.

    A chunk that ends inside a frame keeps the rest for the next one. Samples go through the same
    `SampleGuard` policy as files.
    """

    def __init__(self, rate: object, width: object, channels: object):
        self.rate = check_pcm_format(rate, width, channels)
        assert isinstance(width, int) and isinstance(channels, int)
        self.width = width
        self.channels = channels
        self.frames = 0
        self._rest = b""
        self._guard = SampleGuard("wyoming audio")

    def same_format(self, rate: object, width: object, channels: object) -> bool:
        return (rate, width, channels) == (self.rate, self.width, self.channels)

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def mono(self, payload: bytes) -> np.ndarray:
        data = self._rest + payload if self._rest else payload
        frame_bytes = self.width * self.channels
        whole = len(data) - len(data) % frame_bytes
        self._rest = data[whole:]
        samples = pcm_array(data[:whole], self.width, self.channels)
        self.frames += samples.shape[0]
        mono = clean_mono(samples, self._guard)
        self._guard.report()
        return mono


class AudioBuffer:
    """A session's audio at the model's rate, resampled as it arrives (as files are, block by block)."""

    def __init__(self, from_rate: int, to_rate: int):
        self._resampler = _Resampler(from_rate, to_rate)
        self._parts: List[np.ndarray] = []

    def add(self, mono: np.ndarray) -> None:
        out = self._resampler(np.ascontiguousarray(mono, dtype=np.float32))
        if out.size:
            self._parts.append(out)

    def finish(self) -> np.ndarray:
        """Everything, with the resampler's tail; the buffer is empty afterwards."""
        tail = self._resampler(np.zeros(0, dtype=np.float32), last=True)
        parts, self._parts = self._parts, []
        if tail.size:
            parts.append(tail)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class Request:
    """One request, from admission to answer: admitted (`admit`), timed against its deadline, its model
    jobs run (`run`), then closed once (`close`) with its outcome (`succeed` / `fail`), which counts it
    in `ServeStats` and logs its line. Event-loop only, like the stats."""

    def __init__(self, engine: Engine, protocol: str, client: str):
        self.engine = engine
        self.protocol = protocol
        self.client = client
        self.timing = Timing()  # restarted by `input_done`: answers are timed from the end of the input
        self.audio_seconds = 0.0
        self.deadline = time.monotonic() + engine.limits.request_timeout
        self.error: Optional[EdgeASRError] = None
        self._outcome = "failed: unfinished"
        self._admitted = False
        self._closed = False
        engine.stats.requests += 1

    def admit(self) -> None:
        """Take the request on (`Busy` or `ShuttingDown` when it cannot be)."""
        self.engine._admit()
        self._admitted = True

    def extend(self, seconds: float) -> None:
        """Move the deadline by `seconds` (a Wyoming request earns the duration of the audio it sent)."""
        self.deadline += seconds

    def left(self, what: str = "to arrive") -> float:
        """Seconds to the deadline; `Timeout` when it has passed, saying what took too long."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout(
                f"the request took longer than {self.engine.limits.request_timeout:g} s {what} "
                "(--request-timeout)"
            )
        return left

    async def grammar(self, text: str, where: str) -> CompiledGrammar:
        """`text` compiled for the served model, off the model threads and found in the cache when it
        was seen before; `Timeout` when the deadline passes first, `GrammarError` when it cannot be
        used."""
        return await self.engine.grammars.compile(
            text, where, partial(self.left, "to arrive and its grammar to compile")
        )

    def input_done(self) -> None:
        """The input is complete: the answer's clock starts."""
        self.timing = Timing(queued=self.timing.queued)

    async def run(self, job: Callable[[], T]) -> T:
        """`job()` in the model pool (`Engine.run`), its queueing added to this request's."""
        return await self.engine.run(job, self.timing)

    def succeed(self, outcome: str) -> None:
        self._outcome = "ok, " + outcome

    def fail(self, error: EdgeASRError) -> EdgeASRError:
        """Record why the request failed (its log line says so); returns `error` for the answer."""
        self.error = error
        self._outcome = f"error {error.code}: {error}"
        return error

    @property
    def ok(self) -> bool:
        return self._outcome.startswith("ok")

    def close(self) -> None:
        """Count the request's end and log its one line (only the first call does anything)."""
        if self._closed:
            return
        self._closed = True
        stats = self.engine.stats
        if self._admitted:
            stats.active -= 1
        if self.ok:
            stats.completed += 1
        else:
            stats.failed += 1
            if self.error is not None and self.error.code == "busy":
                stats.busy += 1
        log_request(self.protocol, self.client, self.audio_seconds, self.timing, self._outcome)


def log_request(protocol: str, client: str, audio_seconds: float, timing: Timing, outcome: str) -> None:
    """The one INFO line per request: who, how much audio, how long the answer took (from the end of
    the input to the answer, queueing included), the real-time factor of that, and the outcome."""
    seconds = timing.elapsed
    rtf = seconds / audio_seconds if audio_seconds > 0 else 0.0
    queued = f", {timing.queued:.3f} s of it queued" if timing.queued >= 0.0005 else ""
    log.info(
        "%s %s: %.2f s of audio in %.3f s (RTF %.3f%s): %s",
        protocol,
        client,
        audio_seconds,
        seconds,
        rtf,
        queued,
        outcome,
    )
