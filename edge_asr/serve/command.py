"""`edge-asr serve`: its flags, and the loop that runs the Wyoming and HTTP services from one model.

Importing this module is light (argparse and edge-asr's own modules): the `serve` extra's libraries,
`wyoming` and `aiohttp`, are imported when the command runs, so every other command works without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from dataclasses import fields
from typing import Awaitable, Callable, Dict, List, Optional, TextIO, Tuple

from ..cli_args import add_decoding_args, add_runtime_args
from ..errors import InputError
from .engine import Engine, ServeLimits

log = logging.getLogger("edge_asr.serve")

DEFAULT_WYOMING = "tcp://127.0.0.1:10300"
LOOPBACK = ("127.", "::1", "localhost")
# Each `ServeLimits` field is a flag of its own name: metavar and help ({default} is the field's default).
LIMIT_FLAGS: Dict[str, Tuple[str, str]] = {
    "max_concurrent": (
        "N",
        "transcriptions run at once (default {default}; measured on 2 cores in docs/serve.md)",
    ),
    "max_queue": ("N", "requests that may wait for a free slot; more get a busy error (default {default})"),
    "queue_timeout": ("S", "seconds a request may wait for a slot before a busy error (default {default})"),
    "max_audio_seconds": ("S", "longest audio one request may carry (default {default})"),
    "max_upload_mb": ("MB", "largest HTTP upload (default {default}, as OpenAI's API)"),
    "idle_timeout": ("S", "close connections idle this long (default {default})"),
    "read_timeout": (
        "S",
        "end a request that sends nothing for this long (between Wyoming events, within an upload; "
        "default {default})",
    ),
    "request_timeout": (
        "S",
        "the most time a request's input may take to arrive, whatever its pace: an HTTP upload; Wyoming "
        "audio from audio-start to audio-stop, plus the audio's duration; and its grammar, if any, to "
        "compile (default {default})",
    ),
    "max_grammar_phrases": (
        "N",
        "the most phrases a request's grammar may expand to; each costs about 2 KB of memory and 30 us "
        "to compile (default {default}: about 200 MB and 3 s)",
    ),
    "grammar_cache_mb": ("MB", "memory for compiled grammars kept for reuse (default {default})"),
    "shutdown_timeout": ("S", "on SIGTERM, time requests in flight get to finish (default {default})"),
}


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_cmd = commands.add_parser(
        "serve",
        help="speech-to-text server: Wyoming (Home Assistant) and OpenAI-style HTTP",
        description="Serve one loaded model to Home Assistant and other Wyoming clients (--wyoming) and "
        "to apps that speak OpenAI's POST /v1/audio/transcriptions (--http), from one process. Binds to "
        "127.0.0.1 unless told otherwise. Needs the serve extra: pip install '.[serve]' in the "
        "repository. SIGTERM or Ctrl-C lets requests in flight finish (--shutdown-timeout), then exits 0.",
    )
    serve_cmd.add_argument(
        "--wyoming",
        metavar="URI",
        help=f"Wyoming server on tcp://HOST:PORT or unix://PATH (default {DEFAULT_WYOMING} when --http "
        "is not given either)",
    )
    serve_cmd.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="HTTP server for POST /v1/audio/transcriptions, GET /v1/models, GET /health "
        "(e.g. 127.0.0.1:8080; 0.0.0.0:8080 for every interface)",
    )
    serve_cmd.add_argument(
        "--wyoming-streaming",
        action="store_true",
        help="offer the streaming program first, so that Wyoming clients that select none get a "
        "transcript-chunk per utterance while audio arrives (default: the whole utterance at "
        "audio-stop, the same text as `edge-asr file`)",
    )
    add_runtime_args(serve_cmd)
    defaults = ServeLimits()
    group = serve_cmd.add_argument_group("limits and timeouts")
    for name, (metavar, text) in LIMIT_FLAGS.items():
        default = getattr(defaults, name)
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=default,
            metavar=metavar,
            help=text.format(default=f"{default:g}"),
        )
    add_decoding_args(serve_cmd, file=True)
    serve_cmd.set_defaults(handler=run_serve_command)


def serve_limits(args: argparse.Namespace) -> ServeLimits:
    limits = ServeLimits(**{f.name: getattr(args, f.name) for f in fields(ServeLimits)})
    limits.validate()
    return limits


def parse_http_address(text: str) -> Tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, http://HOST:PORT, or a bare PORT (on 127.0.0.1) -> (host, port)."""
    raw = text.strip()
    for prefix in ("http://", "https://"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :].rstrip("/")
    host, port_text = "127.0.0.1", raw
    if raw.startswith("["):
        host, _, port_text = raw[1:].partition("]:")
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
    if not host:
        raise InputError(
            f"--http {text}: give the host too: 127.0.0.1:PORT (this machine) or 0.0.0.0:PORT (all)"
        )
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(f"--http {text}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port_text)


def run_serve_command(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import aiohttp  # noqa: F401
        import wyoming  # noqa: F401
    except ImportError as exc:
        raise InputError(
            f"edge-asr serve needs the serve extra ({exc.name} is missing): in the repository, "
            "pip install '.[serve]' (edge-asr is not on PyPI), or pip install wyoming aiohttp"
        ) from None
    from ..cli_args import runtime_kwargs, transcribe_options
    from ..transcriber import EdgeTranscriber
    from .wyoming_server import parse_wyoming_uri

    limits = serve_limits(args)
    wyoming_uri = args.wyoming or (None if args.http else DEFAULT_WYOMING)
    if wyoming_uri is not None:
        parse_wyoming_uri(wyoming_uri)  # a bad address fails before the model loads
    http_address = parse_http_address(args.http) if args.http else None
    logging.getLogger("edge_asr.serve").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    transcriber = EdgeTranscriber(args.model, options=transcribe_options(args), **runtime_kwargs(args))
    engine = Engine(transcriber, limits)
    return asyncio.run(serve(engine, wyoming_uri, http_address, args.wyoming_streaming))


async def serve(
    engine: Engine,
    wyoming_uri: Optional[str],
    http_address: Optional[Tuple[str, int]],
    streaming_first: bool = False,
    ready: Optional[Callable[[Dict[str, str]], None]] = None,
    stop: Optional[asyncio.Event] = None,
) -> int:
    """Run the services until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully: stop
    listening, let requests in flight finish for --shutdown-timeout seconds, answer the rest with an
    error, wait for model jobs still running. `ready` gets {"wyoming": address, "http": address} once
    both listen (tests and benchmarks bind port 0 and read the ports from there). Returns 0."""
    from .http_server import HttpService
    from .wyoming_server import WyomingService

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = _catch_signals(loop, stop)
    wyoming: Optional[WyomingService] = None
    http: Optional[HttpService] = None
    try:
        addresses: Dict[str, str] = {}
        if wyoming_uri is not None:
            wyoming = WyomingService(engine, wyoming_uri, streaming_first)
            addresses["wyoming"] = await _listen(wyoming.start(), f"--wyoming {wyoming_uri}")
        if http_address is not None:
            http = HttpService(engine, *http_address)
            addresses["http"] = await _listen(http.start(), f"--http {http_address[0]}:{http_address[1]}")
        for kind, address in addresses.items():
            log.info("%s: serving %s on %s", kind, engine.model_name, address)
            if not any(part in address for part in ("//127.", "//[::1]", "//localhost", "unix://")):
                log.warning(
                    "%s listens beyond this machine: anyone who can reach %s can use it; allow only your "
                    "Home Assistant host in the firewall (see deploy.md)",
                    kind,
                    address,
                )
        if ready is not None:
            ready(addresses)
        await stop.wait()
        stats = engine.stats
        log.info(
            "stopping: %d request(s) in flight get up to %g s to finish",
            stats.active,
            engine.limits.shutdown_timeout,
        )
        engine.stopping = True
        await asyncio.gather(
            *(
                step
                for step in (
                    wyoming.stop(engine.limits.shutdown_timeout) if wyoming is not None else None,
                    http.stop(engine.limits.shutdown_timeout) if http is not None else None,
                )
                if step is not None
            )
        )
    finally:
        engine.stopping = True
        for sig in signals:
            loop.remove_signal_handler(sig)
        if wyoming is not None and not wyoming.draining:
            await wyoming.stop(0)
        if http is not None:
            await http.stop(0)
    await loop.run_in_executor(None, engine.close)  # model jobs still running in the pool
    stats = engine.stats
    log.info(
        "stopped: %d request(s), %d answered, %d failed (%d busy)",
        stats.requests,
        stats.completed,
        stats.failed,
        stats.busy,
    )
    return 0


async def _listen(start: Awaitable[str], flag: str) -> str:
    try:
        return await start
    except OSError as exc:  # the port is taken, the address is not this machine's, no permission
        raise InputError(f"{flag}: cannot listen there ({exc.strerror or exc})") from None


def _catch_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> List[int]:
    """SIGTERM and SIGINT set `stop` (only possible in the main thread; tests run servers in others)."""
    caught: List[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            caught.append(sig)
    return caught
