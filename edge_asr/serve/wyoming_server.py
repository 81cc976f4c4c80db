"""The Wyoming ASR service: what Home Assistant's Wyoming integration, Rhasspy and wyoming-satellite talk to.

Built on the `wyoming` package (the protocol's own library, as wyoming-faster-whisper and wyoming-vosk
use it): its event classes and its event writer. Events are read by `read_event` here instead of
`wyoming.event.async_read_event`, which trusts the sender's `data_length` and `payload_length` (a
client could announce a 10 GB payload and have it read into memory) and turns every malformed event into
a silent disconnect; ours bounds both and answers a bad event with an `error` event.

A connection runs any number of requests, one after another:

    -> describe                                   <- info
    -> transcribe (optional: language), audio-start, audio-chunk..., audio-stop
                                                  <- transcript

Two ASR programs are advertised, both on the same loaded model:

* `edge-asr` (first: what a client that selects nothing gets, such as Home Assistant): the whole
  utterance is buffered and transcribed at audio-stop exactly as `edge-asr file` transcribes a file,
  so the text is the same.
* `edge-asr-streaming` (`supports_transcript_streaming`), chosen with a `select-program` event (wyoming
  1.10), or made the first with `--wyoming-streaming`: audio goes through the streaming decoder of
  `edge-asr listen` (`EdgeTranscriber.stream()`) while it arrives, and the server answers
  `transcript-start` at audio-start, one `transcript-chunk` per utterance as soon as it ends (the
  speaker paused for the endpoint silence, 0.5 s), then the `transcript` and `transcript-stop` at
  audio-stop. Chunks are appended text (wyoming-vosk's reading of the protocol): their concatenation is
  the transcript. A partial hypothesis is not sent, because it may still change and an appended chunk
  cannot be taken back. Each chunk is an utterance's final, decoded by the stream's final pass over the
  utterance's whole audio (docs/streaming.md), so it is close to what the first program gives; the
  stream costs more model time (hops of 0.5 s run 2.5 s of audio each, then the final pass).

A voice command instead of text: `transcribe` may carry `context: {"grammar": TEXT}` (phrases one a
line or templates, as a grammar file; optional `"min_confidence"`) for the request that follows. The
grammar compiles from audio-start, off the model threads, while the audio arrives; the audio is
buffered whatever the program and matched at audio-stop, and the answer is one
`transcript` whose text is the recognized phrase ("" when no command was said) and whose context's
`command` is the match (phrase, slots, confidence, alternatives, ...); no transcript-start or chunks.

Any rate (8-192 kHz), width (1-4 bytes) and channel count is taken and converted with our own mixer and
resampler (soxr, as files are). Errors end the connection after an `error` event whose code is the
error's protocol-neutral code (edge_asr.errors) as `wyoming_code` spells it (`bad-event`, `bad-audio`,
`bad-grammar`, `unsupported-language`, `too-long`, `timeout`, `busy`, `shutdown`, `internal`); other
connections are not affected. A request's audio must arrive by its deadline: --request-timeout from
audio-start plus the duration of the audio received, so live audio always fits and a trickle does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import stat
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.ping import Ping, Pong

from .. import __version__
from ..errors import EdgeASRError, InputError
from ..grammar import CompiledGrammar
from ..stream import Stream
from .engine import (
    LANGUAGES,
    AudioBuffer,
    Disconnected,
    Engine,
    PcmInput,
    Request,
    ShuttingDown,
    Timeout,
    TooLong,
    check_language,
)
from .grammars import GrammarError, parse_min_confidence

log = logging.getLogger("edge_asr.serve")

PROGRAM = "edge-asr"
STREAMING_PROGRAM = "edge-asr-streaming"
SELECT_PROGRAM = "select-program"  # wyoming 1.10's event; read by type so that older wyoming versions work
MAX_HEADER_BYTES = 64 * 1024  # one event's JSON line
MAX_DATA_BYTES = 1024 * 1024  # its extra data
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # one audio chunk: 4 MB is 21 s of 48 kHz 16-bit stereo


# Protocol-neutral codes (edge_asr.errors) spelled otherwise in Wyoming's error events; the rest are
# spelled with "-" for "_", and the server's own trouble (a broken model, a bug) is "internal".
WYOMING_CODES = {
    "bad_request": "bad-event",
    "too_large": "too-long",
    "bad_model": "internal",
    "device": "internal",
}
# Refused in the middle of its audio for one of these, a request's remaining chunks are dropped until
# audio-stop, so that the client (still sending) reads the error rather than a reset connection.
DISCARD_AFTER = ("busy", "too_long", "bad_audio")


def wyoming_code(error: EdgeASRError) -> str:
    return WYOMING_CODES.get(error.code, error.code.replace("_", "-"))


class ProtocolError(InputError):
    """An event that is not Wyoming: bad JSON, a bad length, a required field missing."""


async def read_event(reader: asyncio.StreamReader) -> Optional[Event]:
    """The next event, or None at the end of the connection; ProtocolError for a malformed one.

    Like `wyoming.event.async_read_event`, with bounds: the header line (the reader's limit),
    `data_length` and `payload_length` are checked before anything is read.
    """
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: no newline within the reader's limit
        raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes") from None
    if not line.endswith(b"\n"):
        return None  # end of the connection (perhaps in the middle of a line)
    try:
        header = json.loads(line)
    except ValueError:
        raise ProtocolError("event header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header must be a JSON object with a 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{header['type']}: 'data' must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    if data_length:
        try:
            extra = json.loads(await reader.readexactly(data_length))
        except ValueError:
            raise ProtocolError(f"{header['type']}: its data is not JSON") from None
        if not isinstance(extra, dict):
            raise ProtocolError(f"{header['type']}: its data must be a JSON object")
        data = {**data, **extra}
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


def _length(header: Dict[str, Any], key: str, most: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ProtocolError(f"{header['type']}: {key} must be 0..{most}, got {str(value)[:20]}")
    return value


def service_info(engine: Engine, streaming_first: bool = False) -> Info:
    """The `info` answer to `describe`: two ASR programs on the served model (see the module's doc)."""
    meta = engine.transcriber.metadata
    digest = meta.files.get(Path(engine.transcriber.model_path).name, "")
    model = AsrModel(
        name=engine.model_name,
        description=f"{engine.model_name} ({Path(engine.transcriber.model_path).name})",
        attribution=_model_attribution(meta.source),
        installed=True,
        version=f"sha256:{digest[:12]}" if digest else None,
        languages=list(LANGUAGES),
    )
    ours = Attribution(name="edge-asr", url="")
    whole = AsrProgram(
        name=PROGRAM,
        description="edge-asr: offline speech-to-text on this device; the whole utterance at audio-stop",
        attribution=ours,
        installed=True,
        version=__version__,
        models=[model],
        supports_transcript_streaming=False,
    )
    streaming = AsrProgram(
        name=STREAMING_PROGRAM,
        description="edge-asr streaming: a transcript-chunk per utterance while audio arrives",
        attribution=ours,
        installed=True,
        version=__version__,
        models=[model],
        supports_transcript_streaming=True,
    )
    return Info(asr=[streaming, whole] if streaming_first else [whole, streaming])


def _model_attribution(source: Dict[str, Any]) -> Attribution:
    encoder = source.get("encoder")
    base = encoder.get("model") if isinstance(encoder, dict) else None
    if isinstance(base, str) and base.startswith("openai/whisper"):
        return Attribution(
            name=f"OpenAI {base.split('/')[-1]} encoder (MIT) with an edge-asr CTC head",
            url="https://github.com/openai/whisper",
        )
    return Attribution(name="edge-asr", url="")


class _Request:
    """One transcription on a connection: from audio-start (or the first chunk) to audio-stop."""

    def __init__(
        self,
        engine: Engine,
        job: Request,
        pcm: PcmInput,
        stream: Optional[Stream],
        grammar: Optional[Tuple[str, float]] = None,
    ):
        self.job = job  # counts, times and logs it
        self.pcm = pcm
        self.grammar = grammar  # (text, min_confidence) of a command request
        # The grammar compiles (off the model threads) while the audio arrives
        self.compiled: Optional[asyncio.Task[CompiledGrammar]] = None
        self.stream = stream  # None: whole utterance
        self.buffer = AudioBuffer(pcm.rate, engine.sample_rate) if stream is None else None
        self.pending: List[np.ndarray] = []  # streaming: audio not yet given to the stream
        self.work: Optional[asyncio.Task[None]] = None
        self.texts: List[str] = []


class WyomingHandler:
    """One client connection (the protocol's `AsyncEventHandler` role, with bounded reads and timeouts)."""

    def __init__(
        self,
        service: WyomingService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ):
        self.service = service
        self.engine = service.engine
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unix"
        self.streaming = service.streaming_first
        self.request: Optional[_Request] = None
        self.grammar: Optional[Tuple[str, float]] = None  # from `transcribe`, for the next request
        self.busy = False  # handling an event (a transcription at audio-stop may take a while)
        self.discarding = False  # a request was refused mid-audio: drop its chunks until audio-stop
        self.shutting_down = False

    # -- the connection ------------------------------------------------------------------------------

    async def run(self) -> None:
        limits = self.engine.limits
        try:
            while not (self.service.draining and self.request is None):
                in_audio = self.request is not None or self.discarding
                timeout = limits.read_timeout if in_audio else limits.idle_timeout
                try:
                    if self.request is not None:
                        timeout = min(timeout, self.request.job.left())  # Timeout past the deadline
                    event = await asyncio.wait_for(read_event(self.reader), timeout)
                except asyncio.TimeoutError:
                    if self.request is not None:
                        await self.fail(self.stalled(timeout))
                    break
                except (ProtocolError, Timeout) as exc:
                    await self.fail(exc)
                    break
                if event is None:
                    break
                self.busy = True
                try:
                    if not await self.handle_event(event):
                        break
                finally:
                    self.busy = False
        except asyncio.CancelledError:
            if self.shutting_down:  # SIGTERM and the grace period is over: say so, then close
                await self.fail(ShuttingDown("the server is shutting down"))
            else:
                raise
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self.end_request(Disconnected("client disconnected"))
            self.writer.close()

    def stalled(self, waited: float) -> Timeout:
        """Why a request that sent nothing for `waited` seconds ends: its deadline or --read-timeout."""
        assert self.request is not None
        try:
            self.request.job.left()
        except Timeout as exc:
            return exc
        return Timeout(f"no event for {waited:g} s in the middle of audio (--read-timeout)")

    async def write(self, event: Event) -> None:
        await asyncio.wait_for(async_write_event(event, self.writer), self.engine.limits.read_timeout)

    async def fail(self, error: EdgeASRError) -> None:
        """End the request in progress with `error` and send it as an error event (best effort: the
        client may be gone)."""
        code = wyoming_code(error)
        log.debug("wyoming %s: error %s: %s", self.client, code, error)
        self.end_request(error)
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, RuntimeError):
            await self.write(Error(text=str(error), code=code).event())

    def end_request(self, error: Optional[EdgeASRError] = None) -> None:
        """Free the request's state (audio, stream, work in progress); it fails with `error` unless it
        succeeded; its `Request` counts and logs it."""
        request, self.request = self.request, None
        if request is None:
            return
        for task in (request.work, request.compiled):
            if task is not None and not task.cancel() and not task.cancelled():
                task.exception()  # retrieved: a failure after the request ended is nobody's to report
        if error is not None and not request.job.ok:
            request.job.fail(error)
        request.job.audio_seconds = request.pcm.seconds
        request.job.close()

    # -- events --------------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; False ends the connection."""
        try:
            try:
                return await self._dispatch(event)
            except (KeyError, TypeError, ValueError) as exc:  # wyoming's from_event: a field missing or bad
                raise ProtocolError(f"{event.type}: missing or bad field ({exc})") from None
            except asyncio.TimeoutError:
                raise Timeout("the client did not read the answer") from None
        except EdgeASRError as exc:
            await self.fail(exc)
            if exc.code in DISCARD_AFTER and (
                AudioStart.is_type(event.type) or AudioChunk.is_type(event.type)
            ):
                # Refused in the middle of its audio: the client is still sending, and would see a reset
                # connection instead of this error if we closed now. Drop its audio until audio-stop.
                self.discarding = True
                return True
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:  # a bug: this connection ends, the server goes on
            log.exception("wyoming %s: %s failed", self.client, event.type[:40])
            await self.fail(EdgeASRError("internal error (logged on the server)"))
        return False

    async def _dispatch(self, event: Event) -> bool:
        kind = event.type
        if self.discarding:
            if AudioChunk.is_type(kind):
                return True
            self.discarding = False
            if AudioStop.is_type(kind):
                return False  # the refused request is over (its error was sent): close
        if Describe.is_type(kind):
            await self.write(service_info(self.engine, self.service.streaming_first).event())
        elif kind == SELECT_PROGRAM:
            name = event.data.get("name")
            if name not in (PROGRAM, STREAMING_PROGRAM):
                raise ProtocolError(
                    f"no ASR program named {str(name)[:40]!r}; use {PROGRAM} or {STREAMING_PROGRAM}"
                )
            self.streaming = name == STREAMING_PROGRAM
        elif Ping.is_type(kind):
            await self.write(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(kind):
            transcribe = Transcribe.from_event(event)
            check_language(transcribe.language)
            self.grammar = command_grammar(transcribe.context)
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            self.end_request(ProtocolError("abandoned: a new audio-start came before audio-stop"))
            await self.start_request(start.rate, start.width, start.channels)
        elif AudioChunk.is_type(kind):
            await self.add_audio(AudioChunk.from_event(event))
        elif AudioStop.is_type(kind):
            await self.finish_request()
        else:
            log.debug("wyoming %s: ignored event %r", self.client, kind[:40])
        return True

    async def start_request(self, rate: object, width: object, channels: object) -> None:
        grammar, self.grammar = self.grammar, None
        streaming = self.streaming and grammar is None
        job = self.engine.request("wyoming-stream" if streaming else "wyoming", self.client)
        try:
            pcm = PcmInput(rate, width, channels)
            job.admit()
        except EdgeASRError as exc:
            job.fail(exc)
            job.close()
            raise
        stream = self.engine.transcriber.stream() if streaming else None
        self.request = _Request(self.engine, job, pcm, stream, grammar)
        if grammar is not None:
            self.request.compiled = asyncio.create_task(job.grammar(grammar[0], "context grammar"))
        if stream is not None:
            await self.write(TranscriptStart(language=LANGUAGES[0]).event())

    async def add_audio(self, chunk: AudioChunk) -> None:
        request = self.request
        if request is None:  # no audio-start: the chunk's own format starts the request
            await self.start_request(chunk.rate, chunk.width, chunk.channels)
            request = self.request
            assert request is not None
        elif not request.pcm.same_format(chunk.rate, chunk.width, chunk.channels):
            pcm = request.pcm
            raise ProtocolError(
                f"audio format changed within one request (rate {chunk.rate}, width {chunk.width}, "
                f"channels {chunk.channels} after {pcm.rate}/{pcm.width}/{pcm.channels})"
            )
        before = request.pcm.seconds
        mono = request.pcm.mono(chunk.audio)
        request.job.extend(request.pcm.seconds - before)  # audio sent in real time never runs out of time
        limit = self.engine.limits.max_audio_seconds
        if request.pcm.seconds > limit:
            raise TooLong(f"audio longer than {limit:g} s, the most this server takes (--max-audio-seconds)")
        if request.buffer is not None:
            request.buffer.add(mono)
            return
        request.pending.append(mono)
        if request.work is not None and request.work.done():
            request.work.result()  # a failed run (busy) ends the request now
        if request.work is None or request.work.done():
            request.work = asyncio.create_task(self.stream_pending(request))

    async def stream_pending(self, request: _Request) -> None:
        """Give the stream the audio that arrived, one model job at a time, and send finished utterances."""
        stream = request.stream
        assert stream is not None
        while request.pending:
            block = np.concatenate(request.pending)
            request.pending = []
            events = await request.job.run(partial(stream.accept, block, request.pcm.rate))
            await self.send_finals(request, events)

    async def send_finals(self, request: _Request, events: List[Any]) -> None:
        for event in events:
            if event.is_final and event.text:
                await self.write(TranscriptChunk(text=(" " if request.texts else "") + event.text).event())
                request.texts.append(event.text)

    async def finish_request(self) -> None:
        request = self.request
        if request is None:  # audio-stop without audio: nothing was said
            await self.start_request(self.engine.sample_rate, 2, 1)
            request = self.request
            assert request is not None
        job = request.job
        job.input_done()
        if request.grammar is not None:
            assert request.buffer is not None and request.compiled is not None
            compiled = await request.compiled
            samples = request.buffer.finish()
            match = await job.run(
                partial(self.engine.recognize_samples, samples, compiled, request.grammar[1])
            )
            text = match.phrase or ""
            await self.write(
                Transcript(text=text, language=LANGUAGES[0], context={"command": match.to_dict()}).event()
            )
            job.succeed(f"command {match.line()}")
            self.end_request()
            return
        if request.stream is None:
            assert request.buffer is not None
            samples = request.buffer.finish()
            transcript = await job.run(partial(self.engine.transcribe_samples, samples))
            text = transcript.text
        else:
            if request.work is not None:
                await request.work
            await self.stream_pending(request)
            events = await job.run(request.stream.flush)
            await self.send_finals(request, events)
            text = " ".join(request.texts)
        await self.write(Transcript(text=text, language=LANGUAGES[0]).event())
        if request.stream is not None:
            await self.write(TranscriptStop().event())
        job.succeed(f"{len(text.split())} words")
        self.end_request()


def command_grammar(context: object) -> Optional[Tuple[str, float]]:
    """(grammar text, min_confidence) from a `transcribe` event's context, or None for plain text."""
    if not isinstance(context, dict) or context.get("grammar") is None:
        return None
    grammar = context["grammar"]
    if not isinstance(grammar, str):
        raise GrammarError("context grammar: must be text (phrases one a line, or templates)")
    if not grammar.strip():
        return None
    return grammar, parse_min_confidence(context.get("min_confidence"), "context min_confidence")


class WyomingService:
    """Listens on `uri` (tcp://HOST:PORT or unix://PATH) and runs a `WyomingHandler` per connection."""

    def __init__(self, engine: Engine, uri: str, streaming_first: bool = False):
        self.engine = engine
        self.uri = uri
        self.streaming_first = streaming_first
        self.draining = False
        self.address = ""
        self._server: Optional[asyncio.AbstractServer] = None
        self._socket_path: Optional[Path] = None
        self._handlers: Dict[asyncio.Task[Any], WyomingHandler] = {}

    async def start(self) -> str:
        """Start listening; the address actually bound (port 0 becomes the port the system chose)."""
        scheme, host, port, path = parse_wyoming_uri(self.uri)
        if scheme == "tcp":
            self._server = await asyncio.start_server(self._connected, host, port, limit=MAX_HEADER_BYTES)
            bound = self._server.sockets[0].getsockname()
            shown = f"[{host}]" if ":" in host else host
            self.address = f"tcp://{shown}:{bound[1]}"
        else:
            socket_path = Path(path)
            if socket_path.exists() or socket_path.is_symlink():
                if not stat.S_ISSOCK(socket_path.lstat().st_mode):
                    raise InputError(
                        f"--wyoming {self.uri}: {path} exists and is not a socket; not replacing it"
                    )
                socket_path.unlink()  # a socket left by an earlier run
            self._server = await asyncio.start_unix_server(self._connected, path, limit=MAX_HEADER_BYTES)
            self._socket_path = socket_path
            self.address = f"unix://{path}"
        return self.address

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = WyomingHandler(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = handler
        try:
            await handler.run()
        except asyncio.CancelledError:
            pass  # `stop` ended the connection; a cancelled callback task would be logged as an error
        finally:
            self._handlers.pop(task, None)

    @property
    def connections(self) -> int:
        return len(self._handlers)

    async def stop(self, grace: float) -> None:
        """Stop listening; close idle connections now, let requests in progress finish for up to `grace`
        seconds, then send the rest an error event (code `shutdown`) and close them."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for task, handler in list(self._handlers.items()):
            if handler.request is None and not handler.busy:
                task.cancel()  # idle: waiting for the next event
        pending = set(self._handlers)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            self._handlers[task].shutting_down = True
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
        if self._socket_path is not None:
            self._socket_path.unlink(missing_ok=True)


def parse_wyoming_uri(uri: str) -> Tuple[str, str, int, str]:
    """tcp://HOST:PORT or unix://PATH -> (scheme, host, port, path); InputError naming the form."""
    example = "use tcp://HOST:PORT (e.g. tcp://127.0.0.1:10300) or unix://PATH"
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise InputError(f"--wyoming {uri}: needs a host and a port; {example}")
        return "tcp", parsed.hostname, port, ""
    if parsed.scheme == "unix":
        path = parsed.netloc + parsed.path
        if not path:
            raise InputError(f"--wyoming {uri}: needs a socket path; {example}")
        return "unix", "", 0, path
    raise InputError(f"--wyoming {uri}: {example}")
