"""The `edge-asr listen` session: a live source -> `Stream` -> lines on stdout (and a file).

Separate from cli.py so that the loop, the printer and the signal handling can be tested and reused.
Ctrl-C and SIGTERM only set a flag: the loop stops taking new audio, decodes what was already captured,
prints the final line of the utterance in progress and returns normally (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Optional, Protocol, TextIO, Type, Union

import numpy as np

from . import limits
from .errors import DeviceError, InputError
from .model import limit_heap_growth
from .stream import Stream, StreamEvent, StreamOptions
from .vad import EnergyVadOptions

TEXT, JSONL = "text", "jsonl"
LISTEN_FORMATS = (TEXT, JSONL)
_CLEAR_LINE = "\r\x1b[K"


class EventPrinter:
    """Shows stream events.

    text: final lines; when `out` is a terminal, the partial hypothesis on one line updated in place.
    jsonl: one JSON object per event, partials included.
    `output`: each final utterance is appended to this file, flushed and fsynced before the next one,
    so a crash or a power cut loses nothing already final.
    With a grammar, a final line is the recognized command (`CommandMatch.line`); utterances that are
    no command print "none ..." only with `show_rejected`.
    """

    def __init__(
        self,
        out: TextIO,
        fmt: str = TEXT,
        output: Optional[Union[str, Path]] = None,
        tty: Optional[bool] = None,
        show_rejected: bool = False,
    ):
        if fmt not in LISTEN_FORMATS:
            raise InputError(f"unknown listen format {fmt!r}; use one of {', '.join(LISTEN_FORMATS)}")
        self.out = out
        self.fmt = fmt
        self.tty = out.isatty() if tty is None else tty
        self.show_rejected = show_rejected
        self._partial_shown = False
        self._file: Optional[TextIO] = None
        if output is not None:
            path = Path(output)
            if path.is_dir():
                raise InputError(f"--output {path}: is a folder; give a file to append the transcript to")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the session
            except OSError as exc:
                raise InputError(f"--output {path}: cannot open for appending ({exc.strerror})") from None

    def _final_text(self, event: StreamEvent) -> str:
        """What a final line says: its text, or with a grammar the command ("" prints nothing)."""
        command = event.command
        if command is None:
            return event.text
        return command.line() if command.matched or self.show_rejected else ""

    def show(self, event: StreamEvent) -> None:
        final_text = self._final_text(event) if event.is_final else ""
        # The file first: if stdout is gone (a closed pipe), the final is still saved.
        if final_text and self._file is not None:
            line = json.dumps(event.to_dict(), ensure_ascii=False) if self.fmt == JSONL else final_text
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        if self.fmt == JSONL:
            self.out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
            self.out.flush()
        elif event.is_final:
            prefix = _CLEAR_LINE if self._partial_shown else ""
            self.out.write(prefix + (final_text + "\n" if final_text else ""))
            self.out.flush()
            self._partial_shown = False
        elif self.tty:
            width = max(10, shutil.get_terminal_size((80, 24)).columns - 1)
            text = event.text if len(event.text) <= width else "\u2026" + event.text[-(width - 1) :]
            self.out.write(_CLEAR_LINE + text)
            self.out.flush()
            self._partial_shown = True

    def end_partial_line(self) -> None:
        """Move off the partial line (before a message on the same terminal); the next partial redraws."""
        if self._partial_shown:
            self.out.write("\n")
            self.out.flush()
            self._partial_shown = False

    def close(self) -> None:
        self.end_partial_line()
        self.close_file()

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class ListenSummary:
    """What a session did, for the closing line."""

    audio_seconds: float
    utterances: int
    dropped_blocks: int
    dropped_seconds: float
    overflows: int
    model_seconds: float
    wall_seconds: float
    stopped_by: str = ""  # the signal's name, or "" when the input ended

    def describe(self) -> str:
        parts = [
            f"{self.audio_seconds:.1f} s of audio",
            f"{self.utterances} utterance(s)",
            f"{self.dropped_blocks} audio block(s) dropped ({self.dropped_seconds:.1f} s)",
        ]
        if self.overflows:
            parts.append(f"{self.overflows} input overflow(s) reported by PortAudio")
        if self.audio_seconds:
            parts.append(f"model time {self.model_seconds / self.audio_seconds:.2f} s per audio s")
        return "listened to " + ", ".join(parts)


class LiveSource(Protocol):
    """Audio for a live session: `mic.MicSource` (a microphone) and `mic.FileSource` (a file as if live).

    Entered (`with source:`) for the session, it yields mono float32 blocks at its own `sample_rate`
    from `blocks(stop)` until it ends or `stop` is set; what it had to drop is counted, never hidden.
    """

    @property
    def sample_rate(self) -> int:
        """Hz of the blocks (the stream resamples)."""

    @property
    def dropped_blocks(self) -> int:
        """Blocks lost because decoding fell behind, so far."""

    @property
    def dropped_seconds(self) -> float:
        """The audio those blocks held."""

    @property
    def overflows(self) -> int:
        """Overruns the audio system itself reported (0 for a file)."""

    def describe(self) -> str:
        """What is being listened to, for the status line."""

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Mono float32 blocks until the source ends or `stop` is set."""

    def __enter__(self) -> LiveSource: ...

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> None: ...


class StopFlag(threading.Event):
    """Set to end a session; `reason` says why (e.g. the signal's name)."""

    reason = ""

    def stop(self, reason: str) -> None:
        self.reason = reason
        self.set()


@contextmanager
def stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` instead of killing the process; a second SIGINT interrupts for real.

    Handlers can only be installed from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_session(
    stream: Stream,
    source: LiveSource,
    printer: EventPrinter,
    stop: Optional[StopFlag] = None,
    warn: Optional[TextIO] = None,
    warn_interval: float = 2.0,
) -> ListenSummary:
    """Feed `source.blocks(stop)` through `stream` until the source ends or `stop` is set, then flush.

    Drops are warned about on `warn` at most every `warn_interval` seconds.
    """
    stop = stop if stop is not None else StopFlag()
    started = time.monotonic()
    warned_drops, warned_at = 0, 0.0
    try:
        for block in source.blocks(stop):
            for event in stream.accept(np.asarray(block), source.sample_rate):
                printer.show(event)
            drops = source.dropped_blocks
            if drops > warned_drops and warn is not None and time.monotonic() - warned_at >= warn_interval:
                printer.end_partial_line()
                warn.write(
                    f"edge-asr: warning: {drops} audio block(s) ({source.dropped_seconds:.1f} s) dropped "
                    "so far: decoding is slower than real time; try more --threads, the int8 model or a "
                    "longer --hop\n"
                )
                warn.flush()
                warned_drops, warned_at = drops, time.monotonic()
    finally:
        for event in stream.flush():
            printer.show(event)
    stats = stream.stats
    return ListenSummary(
        audio_seconds=stats.audio_seconds,
        utterances=stats.utterances,
        dropped_blocks=source.dropped_blocks,
        dropped_seconds=source.dropped_seconds,
        overflows=source.overflows,
        model_seconds=stats.model_seconds,
        wall_seconds=time.monotonic() - started,
        stopped_by=stop.reason,
    )


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `edge-asr listen` beyond the runtime and language-model ones (cli_args.py)."""
    stream = StreamOptions()
    parser.add_argument(
        "--device", "-d", help="input device: its index or part of its name (`edge-asr devices`)"
    )
    parser.add_argument("--samplerate", "-r", type=int, help="capture rate in Hz (default: the device's own)")
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help="push an audio file (or - for stdin) through the live path instead",
    )
    parser.add_argument(
        "--realtime", action="store_true", help="with --input: feed the file at real-time pace"
    )
    parser.add_argument(
        "--format", "-f", choices=LISTEN_FORMATS, default=TEXT, help="stdout format (default text)"
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="append each final utterance to FILE as it ends"
    )
    parser.add_argument(
        "--hop", type=float, default=stream.hop_seconds, help="seconds of new audio per model run"
    )
    parser.add_argument(
        "--left-context",
        type=float,
        default=stream.left_context_seconds,
        help="seconds of audio before each hop",
    )
    parser.add_argument(
        "--right-context",
        type=float,
        default=stream.right_context_seconds,
        help="seconds of audio after each hop",
    )
    parser.add_argument(
        "--endpoint-silence",
        type=float,
        default=stream.endpoint_silence,
        help="trailing silence that ends an utterance (default %(default)s s)",
    )
    parser.add_argument(
        "--max-utterance",
        type=float,
        default=stream.max_utterance_seconds,
        help="cut utterances at this length",
    )
    parser.add_argument(
        "--vad-threshold",
        type=float,
        default=EnergyVadOptions.threshold_db,
        help="dB above the noise floor that counts as speech (default %(default)s)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no status lines on stderr")


def _stream_options(args: argparse.Namespace) -> StreamOptions:
    options = StreamOptions(
        hop_seconds=args.hop,
        left_context_seconds=args.left_context,
        right_context_seconds=args.right_context,
        endpoint_silence=args.endpoint_silence,
        max_utterance_seconds=args.max_utterance,
        blank_penalty=args.blank_penalty,
        vad=EnergyVadOptions(threshold_db=args.vad_threshold),
    )
    options.endpoint_silence_no_text = max(options.endpoint_silence_no_text, options.endpoint_silence)
    options.validate()
    return options


def run_listen_command(args: argparse.Namespace, out: TextIO, err: Optional[TextIO] = None) -> int:
    """`edge-asr listen`: microphone (or --input file) -> lines until the input ends or Ctrl-C/SIGTERM."""
    from .cli_args import load_grammar, runtime_kwargs, transcribe_options
    from .mic import FileSource, MicSource
    from .transcriber import EdgeTranscriber

    err = err or sys.stderr
    if args.input is None and args.realtime:
        raise InputError("--realtime paces an --input FILE; a microphone is always real time")
    if args.input is not None and (args.device is not None or args.samplerate is not None):
        raise InputError("--device and --samplerate choose a microphone; they do not apply to --input FILE")
    if args.samplerate is not None:
        limits.CAPTURE_SAMPLE_RATE.check(args.samplerate, "--samplerate")
    options = _stream_options(args)
    limit_heap_growth()
    # The audio source opens first: a missing microphone is reported before the model loads.
    source: LiveSource = (
        FileSource(args.input, realtime=args.realtime)
        if args.input
        else MicSource(args.device, args.samplerate)
    )
    transcriber = EdgeTranscriber(args.model, options=transcribe_options(args), **runtime_kwargs(args))
    grammar = load_grammar(args)
    stream = transcriber.stream(options, grammar=grammar, min_confidence=args.min_confidence)
    printer = EventPrinter(out, args.format, args.output, show_rejected=bool(getattr(args, "verbose", False)))
    stop = StopFlag()
    try:
        with stop_on_signals(stop), source:
            if not args.quiet:
                err.write(f"edge-asr: listening to {source.describe()}; Ctrl-C to stop\n")
                err.flush()
            summary = run_session(stream, source, printer, stop, warn=None if args.quiet else err)
        printer.close()
    except BrokenPipeError:
        # `edge-asr listen | head -3`: the reader has gone, which ends the session normally. Point stdout
        # at /dev/null so that Python's own flush at exit does not complain again.
        printer.close_file()
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException:
        printer.close_file()
        raise
    if not args.quiet:
        ended = f" (stopped by {summary.stopped_by})" if summary.stopped_by else ""
        err.write(f"edge-asr: {summary.describe()}{ended}\n")
    return 0


def run_devices_command(args: argparse.Namespace, out: TextIO) -> int:
    """`edge-asr devices`: the audio inputs, with the indices `--device` takes."""
    from .mic import list_input_devices, no_inputs_message

    devices = list_input_devices()
    if not devices:
        raise DeviceError(no_inputs_message())
    out.write("".join(device.describe() + "\n" for device in devices))
    return 0
