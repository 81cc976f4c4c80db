"""The HTTP service: OpenAI's speech-to-text endpoint, so that any app or library written for it works.

    POST /v1/audio/transcriptions   multipart: file (required), model, language, response_format
                                    (json | text | srt | vtt | verbose_json), prompt, temperature,
                                    timestamp_granularities[] (accepted; words and segments are always
                                    in verbose_json); an extension: grammar (phrases or templates,
                                    `grammars.py`) and min_confidence, for a voice command instead
    GET  /v1/models                 the served model
    GET  /health                    status, queue and counters (503 while shutting down)

Errors come as OpenAI does them, `{"error": {"message", "type", "param", "code"}}`, so its clients show
the message: 400 (no file, not audio, a language other than English, an unknown format), 408 (the
upload stalled for --read-timeout), 413 (larger than --max-upload-mb, refused from Content-Length before
the body is read, and before `100 Continue` for clients that ask; or longer than --max-audio-seconds,
from the file's header before decoding), 503 with Retry-After (busy, or shutting down).

The upload is read piece by piece into memory with the size cap and decoded from there
(`Engine.transcribe_upload`): its file name is never used, nothing is written to disk.

Why aiohttp: one well-kept dependency (plus its small helper packages, all with aarch64 wheels on PyPI,
so nothing compiles on a Pi); it runs on the same asyncio loop as the Wyoming service, so one
process serves both protocols from one loaded model; its multipart reader streams (we cap the size
ourselves instead of letting a framework buffer the body); and its runner shuts down gracefully, letting
requests in flight finish. starlette + uvicorn would be three packages (python-multipart too), and
uvicorn wants to own the event loop and the signals; Flask and similar WSGI servers block a worker per
request and, run with several workers, load the model once per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

from aiohttp import MultipartReader, hdrs, web

from ..errors import AudioError, InputError
from ..grammar import CommandMatch
from ..results import Transcript
from ..writers import get_writer, subtitle_cues
from .engine import Busy, Engine, Timing, TooLong, check_language, log_request
from .grammars import MAX_GRAMMAR_BYTES, GrammarError, parse_min_confidence

log = logging.getLogger("edge_asr.serve")

TRANSCRIPTIONS = "/v1/audio/transcriptions"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
COMMAND_FORMATS = ("json", "text", "verbose_json")  # with a grammar: no subtitles of a command
FIELD_BYTES = 4096  # a form field other than the file (model, language, prompt, ...)
READ_BYTES = 64 * 1024


class HttpError(Exception):
    """An answer other than 200: status, message and OpenAI's error code."""

    def __init__(self, status: int, message: str, code: str, param: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_response(status: int, message: str, code: str, param: Optional[str] = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = web.json_response(body, status=status)
    if status == 503:
        response.headers[hdrs.RETRY_AFTER] = "1"
    return response


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, ...) in OpenAI's shape too."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, "not_found" if exc.status == 404 else "http_error")


class HttpService:
    """The aiohttp application on HOST:PORT."""

    def __init__(self, engine: Engine, host: str, port: int):
        self.engine = engine
        self.host = host
        self.port = port
        self.address = ""
        self.in_flight = 0  # transcription requests being received or answered
        self._runner: Optional[web.AppRunner] = None
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()
        self._abort = asyncio.Event()  # set when the shutdown grace is over: answer 503 and stop

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[openai_errors], client_max_size=self.engine.limits.max_upload_bytes
        )
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post(TRANSCRIPTIONS, self.transcriptions, expect_handler=self.expect)
        return app

    async def start(self) -> str:
        limits = self.engine.limits
        self._runner = web.AppRunner(
            self.build_app(),
            handle_signals=False,  # `edge-asr serve` handles SIGTERM for both services
            access_log=None,  # one line per transcription comes from log_request instead
            keepalive_timeout=limits.idle_timeout,
            shutdown_timeout=2.0,  # what `stop` leaves for aiohttp: its grace period is over by then
            # After a response to a body not read (413), aiohttp reads and drops what the client still
            # sends so that it sees the answer; 10 s of that (the default) for nothing: 1 s.
            lingering_time=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        bound = self._runner.addresses[0]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.address = f"http://{shown}:{bound[1]}"
        return self.address

    async def stop(self, grace: float) -> None:
        """Stop listening; requests in flight get `grace` seconds to finish (uploads still arriving
        included), then the rest are answered 503 and every connection is closed.

        The grace period is ours rather than aiohttp's: its shutdown drops the data a client still
        sends, so an upload in progress could never finish."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()  # no new connections (new requests on open ones get 503)
        for wait, then_abort in ((grace, True), (2.0, False)):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), wait)
            if self.in_flight and then_abort:
                self._abort.set()
        await runner.cleanup()

    # -- endpoints -----------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        engine = self.engine
        stats = engine.stats
        body = {
            "status": "stopping" if engine.stopping else "ok",
            "model": engine.model_name,
            "running": engine.slots.in_use,
            "queued": engine.slots.waiting,
            "max_concurrent": engine.limits.max_concurrent,
            "max_queue": engine.limits.max_queue,
            "active": stats.active,
            "requests": stats.requests,
            "completed": stats.completed,
            "failed": stats.failed,
            "busy": stats.busy,
            "uptime_seconds": round(time.monotonic() - engine.started, 1),
        }
        return web.json_response(body, status=503 if engine.stopping else 200)

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": self.engine.model_name, "object": "model", "created": 0, "owned_by": "edge-asr"}
        return web.json_response({"object": "list", "data": [model]})

    async def expect(self, request: web.Request) -> Optional[web.StreamResponse]:
        """`Expect: 100-continue` (curl sends it for bodies over 1 MB): refuse a body that is too large
        before the client sends it."""
        refused = self.refuse_early(request)
        if refused is not None:
            client = request.remote or "?"
            log_request("http", client, 0.0, Timing(), f"{refused.status} refused before the upload was sent")
            return refused
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return error_response(417, "only 'Expect: 100-continue' is understood", "expectation_failed")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the response has not started
        return None

    def refuse_early(self, request: web.Request) -> Optional[web.Response]:
        """503 while shutting down; 413 when Content-Length is past --max-upload-mb (the connection then
        closes, so the body is never read)."""
        if self.engine.stopping:
            return error_response(503, "the server is shutting down", "shutting_down")
        limit = self.engine.limits.max_upload_bytes
        length = request.content_length
        if length is not None and length > limit:
            response = error_response(
                413,
                f"the upload is {length / 1e6:.1f} MB; this server takes at most {limit / 1e6:g} MB "
                "(--max-upload-mb)",
                "upload_too_large",
                "file",
            )
            response.force_close()
            return response
        return None

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        engine = self.engine
        client = request.remote or "?"
        refused = self.refuse_early(request)
        if refused is not None:
            log_request("http", client, 0.0, Timing(), f"{refused.status} refused before reading the upload")
            return refused
        try:
            engine.admit()
        except Busy as exc:
            log_request("http", client, 0.0, Timing(), f"503 {exc}")
            return error_response(503, str(exc), "server_busy")
        self.in_flight += 1
        self._idle.clear()
        timing = Timing()
        audio_seconds = 0.0
        outcome = "failed"
        try:
            data, fields = await self.read_form(request)
            response_format = fields.get("response_format") or "json"
            if response_format not in RESPONSE_FORMATS:
                raise HttpError(
                    400,
                    f"response_format {response_format[:40]!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                    "invalid_response_format",
                    "response_format",
                )
            check_language(fields.get("language"))
            if fields.get("stream", "").lower() == "true":
                raise HttpError(
                    400, "streaming responses (stream=true) are not supported", "unsupported", "stream"
                )
            grammar = fields.get("grammar")
            if grammar:
                if response_format not in COMMAND_FORMATS:
                    raise HttpError(
                        400,
                        f"response_format {response_format} does not go with a grammar; use "
                        f"{', '.join(COMMAND_FORMATS)}",
                        "invalid_response_format",
                        "response_format",
                    )
                min_confidence = parse_min_confidence(fields.get("min_confidence"))
                timing = Timing()
                command = engine.run(partial(engine.recognize_upload, data, grammar, min_confidence), timing)
                match, audio_seconds = await self._in_time(command, engine.limits.queue_timeout + 3600)
                del data
                engine.stats.completed += 1
                outcome = f"ok, command {match.line()}, {response_format}"
                return render_command(match, response_format)
            timing = Timing()  # the clock runs from the end of the upload
            job = engine.run(partial(engine.transcribe_upload, data), timing)
            transcript = await self._in_time(job, engine.limits.queue_timeout + 3600)
            del data
            audio_seconds = transcript.duration
            response = render(transcript, response_format)
            engine.stats.completed += 1
            outcome = f"ok, {len(transcript.words)} words, {response_format}"
            return response
        except HttpError as exc:
            outcome = f"{exc.status} {exc.message}"
            response = error_response(exc.status, exc.message, exc.code, exc.param)
            if exc.status in (408, 413) or self._abort.is_set():
                response.force_close()
            return response
        except GrammarError as exc:
            outcome = f"400 {exc}"
            param = "min_confidence" if str(exc).startswith("min_confidence") else "grammar"
            return error_response(400, str(exc), "invalid_grammar", param)
        except InputError as exc:
            outcome = f"400 {exc}"
            return error_response(400, str(exc), "unsupported_language", "language")
        except TooLong as exc:
            outcome = f"413 {exc}"
            return error_response(413, str(exc), "audio_too_long", "file")
        except AudioError as exc:
            outcome = f"400 {exc}"
            return error_response(400, str(exc), "invalid_audio", "file")
        except Busy as exc:
            engine.stats.busy += 1
            outcome = f"503 {exc}"
            return error_response(503, str(exc), "server_busy")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            outcome = f"client disconnected ({type(exc).__name__})"
            return error_response(400, "the upload was cut off", "incomplete_upload")
        finally:
            engine.stats.active -= 1
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            if not outcome.startswith("ok"):
                engine.stats.failed += 1
            log_request("http", client, audio_seconds, timing, outcome)

    async def read_form(self, request: web.Request) -> Tuple[bytes, Dict[str, str]]:
        """The upload's file (bytes, at most --max-upload-mb) and its other fields (short strings),
        read piece by piece, each piece within --read-timeout."""
        if not request.content_type.startswith("multipart/"):
            raise HttpError(
                400,
                "send multipart/form-data with the audio in a 'file' field (as OpenAI's API takes it)",
                "invalid_content_type",
            )
        limits = self.engine.limits
        limit = limits.max_upload_bytes
        total = 0
        data: Optional[bytearray] = None
        fields: Dict[str, str] = {}
        reader = await request.multipart()
        while True:
            part = await self._in_time(reader.next())
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise HttpError(400, "nested multipart bodies are not supported", "invalid_request")
            is_file = part.name == "file"
            if is_file and data is not None:
                raise HttpError(400, "more than one 'file' field", "invalid_request", "file")
            value = bytearray()
            while True:
                chunk = await self._in_time(part.read_chunk(READ_BYTES))
                if not chunk:
                    break
                value += chunk
                total += len(chunk)
                if total > limit:
                    raise HttpError(
                        413,
                        f"the upload is larger than {limit / 1e6:g} MB, the most this server takes "
                        "(--max-upload-mb)",
                        "upload_too_large",
                        "file",
                    )
                if not is_file and len(value) > (
                    MAX_GRAMMAR_BYTES if part.name == "grammar" else FIELD_BYTES
                ):
                    raise HttpError(
                        400,
                        f"field {str(part.name)[:40]!r} is too long"
                        + (f" (at most {MAX_GRAMMAR_BYTES // 1024} KB)" if part.name == "grammar" else ""),
                        "invalid_request",
                        str(part.name)[:40] if part.name == "grammar" else None,
                    )
            if is_file:
                data = value
            elif part.name:
                fields[part.name] = value.decode("utf-8", "replace").strip()
        if data is None:
            raise HttpError(
                400, "no 'file' field: send the audio as multipart field 'file'", "missing_file", "file"
            )
        return bytes(data), fields

    async def _in_time(self, step: Any, timeout: Optional[float] = None) -> Any:
        """`step`'s result, unless --read-timeout (or `timeout`) passes first (408) or the shutdown's
        grace period ends first (503)."""
        limit = self.engine.limits.read_timeout if timeout is None else timeout
        work = asyncio.ensure_future(step)
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait((work, abort), timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        if self._abort.is_set():
            raise HttpError(503, "the server is shutting down", "shutting_down")
        raise HttpError(408, f"the upload sent nothing for {limit:g} s (--read-timeout)", "timeout")


def render(transcript: Transcript, response_format: str) -> web.Response:
    """A transcript in one of OpenAI's response formats."""
    if response_format in ("text", "srt", "vtt"):
        writer = get_writer("txt" if response_format == "text" else response_format)
        return web.Response(text=writer.render(transcript), content_type="text/plain")
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    if response_format == "json":
        return web.json_response({"text": transcript.text, "usage": usage})
    return web.json_response(
        {
            "task": "transcribe",
            "language": "english",
            "duration": round(transcript.duration, 3),
            "text": transcript.text,
            "words": [{"word": w.text, "start": w.start, "end": w.end} for w in transcript.words],
            "segments": segments(transcript),
            "usage": usage,
        }
    )


def render_command(match: CommandMatch, response_format: str) -> web.Response:
    """A command (`CommandMatch`): its phrase as text ("" for none), or its fields with "text" as JSON."""
    text = match.phrase or ""
    if response_format == "text":
        return web.Response(text=text + "\n" if text else "", content_type="text/plain")
    return web.json_response({"text": text, **match.to_dict()})


def segments(transcript: Transcript) -> List[Dict[str, Any]]:
    """verbose_json segments: the words grouped as subtitle cues are (pauses, length), with OpenAI's
    fields. avg_logprob is the mean log of the words' confidences; edge-asr has no tokens to list and
    no no-speech probability (0.0)."""
    out: List[Dict[str, Any]] = []
    words = transcript.words
    first = 0
    for index, cue in enumerate(subtitle_cues(words)):
        count = len(cue.text.split())
        group = words[first : first + count]
        first += count
        logprob = sum(math.log(max(w.confidence, 1e-6)) for w in group) / max(1, len(group))
        encoded = cue.text.encode("utf-8")
        out.append(
            {
                "id": index,
                "seek": 0,
                "start": cue.start,
                "end": cue.end,
                "text": cue.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(logprob, 4),
                "compression_ratio": round(len(encoded) / len(zlib.compress(encoded)), 4) if encoded else 0.0,
                "no_speech_prob": 0.0,
            }
        )
    return out
