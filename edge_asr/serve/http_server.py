"""The HTTP service: OpenAI's speech-to-text endpoint, so that any app or library written for it works.

    POST /v1/audio/transcriptions   multipart: file (required), model, language, response_format
                                    (json | text | srt | vtt | verbose_json), prompt, temperature,
                                    timestamp_granularities[] (accepted; words and segments are always
                                    in verbose_json); an extension: grammar (phrases or templates,
                                    `grammars.py`) and min_confidence, for a voice command instead
    GET  /v1/models                 the served model
    GET  /health                    status, queue and counters (503 while shutting down)

Errors come as OpenAI does them, `{"error": {"message", "type", "param", "code"}}`, so its clients show
the message: every failure is an `EdgeASRError`, and `ANSWERS` turns its protocol-neutral code into the
status and OpenAI's code: 400 (no file, not audio, a malformed form, a language other than English, an
unknown format, a bad grammar), 408 (the upload stalled for --read-timeout, or the upload and the
compilation of its grammar passed --request-timeout), 413 (larger than --max-upload-mb, refused from
Content-Length before the body is read, and before `100 Continue` for clients that ask; or longer than
--max-audio-seconds, from the file's header before decoding, or while decoding when the header does
not say), 503 with Retry-After (busy, or shutting down).

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

from ..errors import EdgeASRError, InputError
from ..grammar import CommandMatch
from ..results import Transcript
from ..writers import get_writer, subtitle_cues
from .engine import Disconnected, Engine, Request, ShuttingDown, Timeout, TooLong, check_language
from .grammars import MAX_GRAMMAR_BYTES, parse_min_confidence

log = logging.getLogger("edge_asr.serve")

TRANSCRIPTIONS = "/v1/audio/transcriptions"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
COMMAND_FORMATS = ("json", "text", "verbose_json")  # with a grammar: no subtitles of a command
FIELD_BYTES = 4096  # a form field other than the file (model, language, prompt, ...)
READ_BYTES = 64 * 1024


# An error's code (edge_asr.errors) -> HTTP status, OpenAI's error code, and the field it concerns
# when the error does not name one. Any other code is the server's own trouble: 500.
ANSWERS: Dict[str, Tuple[int, str, Optional[str]]] = {
    "bad_request": (400, "invalid_request", None),
    "bad_audio": (400, "invalid_audio", "file"),
    "bad_grammar": (400, "invalid_grammar", "grammar"),
    "unsupported_language": (400, "unsupported_language", "language"),
    "incomplete": (400, "incomplete_upload", "file"),
    "timeout": (408, "timeout", None),
    "too_long": (413, "audio_too_long", "file"),
    "too_large": (413, "upload_too_large", "file"),
    "busy": (503, "server_busy", None),
    "shutdown": (503, "shutting_down", None),
}
INTERNAL = (500, "internal_error", None)


def error_response(status: int, message: str, code: str, param: Optional[str] = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = web.json_response(body, status=status)
    if status == 503:
        response.headers[hdrs.RETRY_AFTER] = "1"
    return response


def error_answer(error: EdgeASRError) -> web.Response:
    """The HTTP answer to a failed request; the connection closes after a 408 or 413 (the rest of
    the body is not read) and after a 500."""
    status, code, field = ANSWERS.get(error.code, INTERNAL)
    response = error_response(status, str(error), code, error.field or field)
    if status in (408, 413, 500):
        response.force_close()
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
            access_log=None,  # one line per transcription comes from engine.Request instead
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
        try:
            self.refuse_early(request)
        except EdgeASRError as exc:
            refused = self.engine.request("http", request.remote or "?")
            refused.fail(exc)
            refused.close()
            return error_answer(exc)
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return error_response(417, "only 'Expect: 100-continue' is understood", "expectation_failed")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the response has not started
        return None

    def refuse_early(self, request: web.Request) -> None:
        """`ShuttingDown` while shutting down; `TooLong` ("too_large") when Content-Length is past
        --max-upload-mb (the connection then closes, so the body is never read)."""
        if self.engine.stopping:
            raise ShuttingDown("the server is shutting down")
        limit = self.engine.limits.max_upload_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise TooLong(
                f"the upload is {length / 1e6:.1f} MB; this server takes at most {limit / 1e6:g} MB "
                "(--max-upload-mb)",
                code="too_large",
            )

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        job = self.engine.request("http", request.remote or "?")
        self.in_flight += 1
        self._idle.clear()
        try:
            self.refuse_early(request)
            job.admit()
            return await self.answer(request, job)
        except EdgeASRError as exc:
            response = error_answer(job.fail(exc))
            if self._abort.is_set():
                response.force_close()
            return response
        finally:
            job.close()
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def answer(self, request: web.Request, job: Request) -> web.StreamResponse:
        """Read the form, check its fields, run the transcription or the command, render the answer."""
        engine = self.engine
        data, fields = await self.read_form(request, job)
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise InputError(
                f"response_format {response_format[:40]!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                field="response_format",
            )
        check_language(fields.get("language"))
        if fields.get("stream", "").lower() == "true":
            raise InputError("streaming responses (stream=true) are not supported", field="stream")
        grammar = fields.get("grammar")
        job.input_done()  # the clock runs from the end of the upload
        answer_time = engine.limits.queue_timeout + 3600
        if grammar:
            if response_format not in COMMAND_FORMATS:
                raise InputError(
                    f"response_format {response_format} does not go with a grammar; use "
                    f"{', '.join(COMMAND_FORMATS)}",
                    field="response_format",
                )
            min_confidence = parse_min_confidence(fields.get("min_confidence"))
            # Compiled off the model threads, within the request's deadline (`Request.grammar`)
            compiled = await self._in_time(job.grammar(grammar, "grammar field"), answer_time)
            command = job.run(partial(engine.recognize_upload, data, compiled, min_confidence))
            match, job.audio_seconds = await self._in_time(command, answer_time)
            job.succeed(f"command {match.line()}, {response_format}")
            return render_command(match, response_format)
        transcript = await self._in_time(job.run(partial(engine.transcribe_upload, data)), answer_time)
        job.audio_seconds = transcript.duration
        job.succeed(f"{len(transcript.words)} words, {response_format}")
        return render(transcript, response_format)

    async def read_form(self, request: web.Request, job: Request) -> Tuple[bytes, Dict[str, str]]:
        """The upload's file (bytes, at most --max-upload-mb) and its other fields (short strings),
        read piece by piece, each piece within --read-timeout and all of it before the request's
        deadline. A client that goes away is `Disconnected`; a malformed body (no boundary, no
        closing boundary) an InputError saying so."""
        if not request.content_type.startswith("multipart/"):
            raise InputError(
                "send multipart/form-data with the audio in a 'file' field (as OpenAI's API takes it)"
            )
        try:
            return await self._read_parts(await request.multipart(), job)
        except ValueError as exc:  # what aiohttp's multipart reader raises for a malformed body
            detail = str(exc).splitlines()[0][:100] if str(exc) else "unreadable"
            raise InputError(f"the multipart/form-data body is malformed ({detail})") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise Disconnected(f"the upload was cut off ({type(exc).__name__})") from None

    async def _read_parts(self, reader: MultipartReader, job: Request) -> Tuple[bytes, Dict[str, str]]:
        limit = self.engine.limits.max_upload_bytes
        total = 0
        data: Optional[bytearray] = None
        fields: Dict[str, str] = {}
        while True:
            part = await self._in_time(reader.next(), job=job)
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise InputError("nested multipart bodies are not supported")
            is_file = part.name == "file"
            if is_file and data is not None:
                raise InputError("more than one 'file' field", field="file")
            most = limit if is_file else MAX_GRAMMAR_BYTES if part.name == "grammar" else FIELD_BYTES
            value = bytearray()
            while True:
                chunk = await self._in_time(part.read_chunk(READ_BYTES), job=job)
                if not chunk:
                    break
                value += chunk
                total += len(chunk)
                if total > limit:
                    raise TooLong(
                        f"the upload is larger than {limit / 1e6:g} MB, the most this server takes "
                        "(--max-upload-mb)",
                        code="too_large",
                    )
                if len(value) > most:
                    grammar = part.name == "grammar"
                    raise InputError(
                        f"field {str(part.name)[:40]!r} is too long"
                        + (f" (at most {MAX_GRAMMAR_BYTES // 1024} KB)" if grammar else ""),
                        field="grammar" if grammar else None,
                    )
            if is_file:
                data = value
            elif part.name:
                fields[part.name] = value.decode("utf-8", "replace").strip()
        if data is None:
            raise InputError("no 'file' field: send the audio as multipart field 'file'", field="file")
        return bytes(data), fields

    async def _in_time(
        self, step: Any, timeout: Optional[float] = None, job: Optional[Request] = None
    ) -> Any:
        """`step`'s result, unless --read-timeout (or `timeout`), or `job`'s deadline, passes first
        (`Timeout`) or the shutdown's grace period ends first (`ShuttingDown`)."""
        limit = self.engine.limits.read_timeout if timeout is None else timeout
        deadline_first = job is not None and job.left() < limit
        if job is not None:
            limit = min(limit, job.left())
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
            raise ShuttingDown("the server is shutting down")
        if deadline_first and job is not None:
            job.left()  # raises Timeout, naming --request-timeout
        raise Timeout(f"the upload sent nothing for {limit:g} s (--read-timeout)")


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
