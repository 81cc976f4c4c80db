"""The `edge-asr` command line: parse_args / run / main, so tests call it without a subprocess."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from . import __version__, limits
from .atomic import check_output_folder, write_text_atomic
from .audio import STDIN, is_audio_path
from .bundle import load_bundle
from .cli_args import (
    add_command_args,
    add_decoding_args,
    add_model_args,
    add_runtime_args,
    load_grammar,
    runtime_kwargs,
    transcribe_options,
)
from .errors import BundleError, EdgeASRError, InputError
from .grammar import CommandMatch
from .model import limit_heap_growth
from .progress import Progress
from .serve.command import add_serve_command  # light: wyoming and aiohttp load when `serve` runs
from .transcriber import DECODER_CHOICES, EdgeTranscriber, TranscribeOptions
from .windows import cache_is_exact
from .writers import FORMATS, get_writers

log = logging.getLogger("edge_asr")
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class InputItem:
    """One input to transcribe, and the output name (relative, without extension) its results get."""

    source: str
    output_stem: Path


def expand_inputs(paths: Sequence[str]) -> List[InputItem]:
    """Files stay as given; folders expand to the audio files inside (recursively, sorted)."""
    items: List[InputItem] = []
    for raw in paths:
        path = Path(raw)
        if raw == STDIN:
            items.append(InputItem(STDIN, Path("stdin")))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_path(p))
            if not found:
                raise InputError(f"{raw}: folder holds no audio files (looked for .wav, .flac, .ogg, ...)")
            items.extend(InputItem(str(p), p.relative_to(path).with_suffix("")) for p in found)
        else:
            items.append(InputItem(raw, Path(path.stem)))
    return items


def unique_output_names(items: Sequence[InputItem]) -> List[InputItem]:
    """Give every input its own output name, so no transcript of a run overwrites another.

    `c1/x.wav c2/x.wav`, or `x.wav` beside `x.flac`, would both write x.txt. The first input keeps
    the name; each later one gets the first free `NAME-2`, `NAME-3`... that no input of the run holds
    as its own name either, with a warning saying which is which. Names are compared case-folded:
    on the FAT/exFAT cards and the macOS disks that outputs often land on, X.txt and x.txt are one file.
    """
    # A rename never takes a name that another input of the run has as its own (a real x-2.wav).
    own = {item.output_stem.as_posix().casefold() for item in items}
    taken: Dict[str, str] = {}  # case-folded name -> the input that writes it
    unique: List[InputItem] = []
    for item in items:
        stem = item.output_stem
        key = stem.as_posix().casefold()
        if key in taken:
            number = 2
            while f"{key}-{number}" in taken or f"{key}-{number}" in own:
                number += 1
            renamed = stem.with_name(f"{stem.name}-{number}")
            log.warning(
                "%s: its output name %s is taken by %s in this run; writing %s.* instead",
                item.source,
                stem.as_posix(),
                taken[key],
                renamed.as_posix(),
            )
            stem, key = renamed, renamed.as_posix().casefold()
        taken[key] = item.source
        unique.append(InputItem(item.source, stem))
    return unique


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; `args.handler` is the command's run_* function (`run` calls it)."""
    parser = argparse.ArgumentParser(
        prog="edge-asr", description="Offline speech-to-text with CTC models in ONNX."
    )
    parser.add_argument("--version", action="version", version=f"edge-asr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_file_command(commands)
    add_info_command(commands)
    add_bench_command(commands)
    add_listen_commands(commands)
    add_serve_command(commands)
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None and limits.THREADS.problem(threads):
        parser.error(f"--threads {limits.THREADS.problem(threads)}")
    return args


def add_file_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    file_cmd = commands.add_parser(
        "file",
        help="transcribe audio files or folders",
        description="Transcribe audio files (wav, flac, ogg; '-' reads stdin). Folders expand to the "
        "audio files inside. Without --output-dir the transcript goes to stdout.",
    )
    file_cmd.add_argument("paths", nargs="+", metavar="PATH", help="audio file, folder, or - for stdin")
    add_runtime_args(file_cmd)
    file_cmd.add_argument(
        "--format", "-f", choices=FORMATS, default="txt", help="output format (default txt)"
    )
    file_cmd.add_argument(
        "--output-dir", "-o", metavar="DIR", help="write one file per input (and format) here"
    )
    file_cmd.add_argument(
        "--chunk-seconds",
        type=float,
        default=TranscribeOptions.chunk_seconds,
        help="window core for long audio",
    )
    add_decoding_args(file_cmd, file=True)
    add_command_args(file_cmd)
    file_cmd.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    file_cmd.set_defaults(handler=run_file)


def add_info_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    info_cmd = commands.add_parser(
        "info",
        help="show what a model bundle holds",
        description="Print a model bundle's metadata and check its files.",
    )
    add_model_args(info_cmd)
    info_cmd.add_argument(
        "--verify",
        action="store_true",
        help="check the sha256 of every file, load and run each graph, load the language models",
    )
    info_cmd.add_argument("--json", action="store_true", help="print bundle.json as loaded")
    info_cmd.set_defaults(handler=run_info)


def add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .bench import arenas_arg, seconds_arg, threads_arg  # light: numpy only

    bench_cmd = commands.add_parser(
        "bench",
        help="measure speed and memory on this machine",
        description="Time a model bundle on this machine: load time, real-time factor per clip length, "
        "peak memory, fp32 against int8, 1..N threads. Each configuration runs in its own process.",
    )
    add_model_args(bench_cmd)
    bench_cmd.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help="time this audio file, tiled or cut to each --seconds (default: generated audio)",
    )
    bench_cmd.add_argument(
        "--seconds",
        "-s",
        type=seconds_arg,
        metavar="LIST",
        help="clip lengths, e.g. 5,10,30 (the default; with --input: the file's length)",
    )
    bench_cmd.add_argument(
        "--threads",
        "-t",
        dest="thread_counts",
        type=threads_arg,
        metavar="LIST",
        help="thread counts, e.g. 1,2,4 (default: 1, 2, 4... up to the physical cores)",
    )
    bench_cmd.add_argument(
        "--arena",
        dest="arenas",
        type=arenas_arg,
        metavar="LIST",
        help="onnxruntime CPU memory arena settings to compare: on, off, auto (default: on,off; "
        "--quick: auto, what `file` uses)",
    )
    bench_cmd.add_argument(
        "--variant",
        choices=("all", "fp32", "int8"),
        default="all",
        help="which graphs of the bundle to time (default: all it has)",
    )
    bench_cmd.add_argument(
        "--repeats", type=int, default=1, help="runs per clip; the fastest counts (default 1)"
    )
    bench_cmd.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: one 5 s clip, default threads, the graph `file` would use",
    )
    bench_cmd.add_argument(
        "--in-process",
        action="store_true",
        help="no child processes (peak RSS then accumulates across configurations)",
    )
    bench_cmd.add_argument(
        "--no-lm", dest="use_lm", action="store_false", help="time greedy decoding even with a bundle LM"
    )
    bench_cmd.add_argument(
        "--decoder",
        choices=DECODER_CHOICES,
        default="auto",
        help="time joint decoding with the bundle's text decoder (auto: when it has one) or CTC alone",
    )
    bench_cmd.add_argument("--json", metavar="OUT", help="also write the results (with machine info) as JSON")
    bench_cmd.set_defaults(handler=run_bench)


def add_listen_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`listen` and `devices`: live transcription (edge_asr/listen.py, stream.py, mic.py)."""
    from .listen import add_listen_arguments  # light: numpy only; sounddevice loads when a mic opens

    listen_cmd = commands.add_parser(
        "listen",
        help="live transcription from a microphone (or a file played as if live)",
        description="Transcribe a microphone live: the partial text updates in place on a terminal, and "
        "a final line is printed when you stop speaking. Ctrl-C (or SIGTERM) finishes the current "
        "utterance and exits. --input FILE pushes a file through the same path.",
    )
    add_runtime_args(listen_cmd)
    add_listen_arguments(listen_cmd)
    add_decoding_args(listen_cmd, file=False)
    add_command_args(listen_cmd)
    listen_cmd.set_defaults(handler=run_listen)
    devices_cmd = commands.add_parser(
        "devices", help="list audio input devices", description="List the inputs `listen --device` takes."
    )
    devices_cmd.set_defaults(handler=run_devices)


def run_file(args: argparse.Namespace, out: TextIO) -> int:
    options = transcribe_options(args)
    items: List[InputItem] = []
    failures = 0
    for raw in args.paths:  # one bad folder must not stop the other inputs
        try:
            items.extend(expand_inputs([raw]))
        except InputError as exc:
            print(f"edge-asr: {exc}", file=sys.stderr)
            failures += 1
    bad_inputs = failures
    if not args.output_dir and args.format not in ("txt",) and len(items) > 1:
        raise InputError(f"--format {args.format} with several inputs needs --output-dir DIR")
    if not args.output_dir and args.format == "all":
        raise InputError("--format all needs --output-dir DIR")
    if args.output_dir:
        check_output_folder(args.output_dir, "-o")
        items = unique_output_names(items)
    grammar = load_grammar(args)
    if grammar is not None and args.format not in ("txt", "json"):
        raise InputError(f"--grammar writes one command per input as txt or json, not --format {args.format}")
    transcriber = EdgeTranscriber(args.model, options=options, **runtime_kwargs(args))
    compiled = transcriber.compile_grammar(grammar) if grammar is not None else None
    writers = get_writers(args.format)
    progress = Progress(len(items), enabled=args.progress)
    for item in items:
        progress.start_file(item.source)
        try:
            if compiled is not None:
                match = transcriber.recognize(item.source, compiled, min_confidence=args.min_confidence)
                progress.clear()
                _write_command(match, item, args, out, several=len(items) > 1)
                continue
            transcript = transcriber.transcribe(item.source, progress=progress.update)
            progress.clear()
            if args.output_dir:
                for writer in writers:
                    writer.write(
                        transcript, Path(args.output_dir) / item.output_stem.parent, item.output_stem.name
                    )
            elif len(items) > 1:
                print(f"{item.source}: {transcript.text}", file=out, flush=True)
            else:
                out.write(writers[0].render(transcript))
                out.flush()
            log.info(
                "%s: %.1f s of audio in %.2f s", item.source, transcript.duration, transcript.processing_time
            )
        except BundleError:
            progress.clear()
            raise  # the model, not this file: every other input would fail the same way (exit 2)
        except (EdgeASRError, OSError) as exc:
            progress.clear()
            print(f"edge-asr: {exc}", file=sys.stderr)
            failures += 1
    if failures:
        print(f"edge-asr: {failures} of {len(items) + bad_inputs} input(s) failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _write_command(
    match: CommandMatch, item: InputItem, args: argparse.Namespace, out: TextIO, several: bool
) -> None:
    """A --grammar result: a line (txt) or an object (json), to --output-dir or stdout."""
    if args.format == "json":
        text = json.dumps({"source": item.source, **match.to_dict()}, ensure_ascii=False) + "\n"
    else:
        text = match.line() + "\n"
    if args.output_dir:
        target = Path(args.output_dir) / item.output_stem.parent / f"{item.output_stem.name}.{args.format}"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)
    else:
        out.write(f"{item.source}: {text}" if several else text)
        out.flush()


def run_info(args: argparse.Namespace, out: TextIO) -> int:
    bundle = load_bundle(args.model, verify=False)
    checked: List[str] = []
    if args.verify:
        from .verify import verify_bundle  # loads onnxruntime and the LMs: only when asked

        checked = verify_bundle(bundle)
    meta = bundle.metadata
    if args.json:
        out.write(meta.to_json())
        return EXIT_OK
    lines = [
        f"bundle:          {bundle.path}",
        f"name:            {meta.name or '-'}",
        f"format version:  {meta.format_version}",
        f"sample rate:     {meta.sample_rate} Hz, {meta.frame_stride} samples per frame "
        f"({1000 * meta.frame_seconds:.0f} ms), receptive field {meta.receptive_field}",
        f"vocabulary:      {meta.vocab_size} tokens, blank {meta.vocabulary[meta.blank_id]!r}, "
        f"word delimiter {meta.word_delimiter!r}",
        f"input:           normalize={meta.do_normalize} (in graph: {meta.normalization_in_graph}), "
        f"log-softmax in graph: {meta.log_softmax_in_graph}",
        f"text:            {json.dumps(meta.text_normalization.to_dict())}",
        f"int8:            {'recommended' if meta.int8_recommended else 'NOT recommended'}"
        if "int8" in meta.models
        else "int8:            none",
    ]
    for variant, name in meta.models.items():
        size = (bundle.path / name).stat().st_size / 1e6
        lines.append(f"model {variant + ':':<9} {name} ({size:.1f} MB)")
    split = meta.split
    if split is not None:
        for variant in meta.models:
            front, encoder = split.front_end[variant], split.encoder[variant]
            size = sum((bundle.path / n).stat().st_size for n in {front, encoder}) / 1e6
            lines.append(f"split {variant + ':':<9} {front} + {encoder} ({size:.1f} MB)")
        cache = (
            "on by default (exact)" if cache_is_exact(meta) else "opt-in (--front-end-cache on; not exact)"
        )
        where = "local" if split.frames_local else "not local"
        lines.append(f"front-end cache: {cache}; front-end {where}, {split.feature_dim} features a frame")
    decoder = meta.decoder
    if decoder is not None:
        size = sum((bundle.path / n).stat().st_size for n in decoder.files()) / 1e6
        lines.append(
            f"text decoder:    {decoder.cross} + {decoder.step} ({size:.1f} MB with {decoder.tokens}); "
            f"joint with CTC weight {decoder.ctc_weight}, beam {decoder.beam_size}, at most "
            f"{decoder.max_tokens_per_second:g} tokens a second (default --decoder joint)"
        )
    lm = meta.language_model
    if lm is not None:
        size = (bundle.path / lm.file).stat().st_size / 1e6
        lines.append(
            f"language model:  {lm.file} ({size:.1f} MB, {lm.kind}, order {lm.order or '?'}); "
            f"beam {lm.beam_size}, lm_weight {lm.lm_weight}, insertion_bonus {lm.insertion_bonus}"
        )
        words = lm.words
        if words is not None:
            size = (bundle.path / words.file).stat().st_size / 1e6
            lines.append(
                f"word LM:         {words.file} ({size:.1f} MB, order {words.order or '?'}); "
                f"word_weight {words.word_weight}, unknown_word_penalty {words.unknown_word_penalty}"
            )
    else:
        lines.append("language model:  none (greedy decoding)")
    if meta.source:
        lines.append(f"source:          {json.dumps(meta.source)}")
    lines.extend(checked)
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


def run_bench(args: argparse.Namespace, out: TextIO) -> int:
    from .bench import run_cli  # imported here: bench pulls in multiprocessing machinery

    return run_cli(args, out)


def run_listen(args: argparse.Namespace, out: TextIO) -> int:
    from .listen import run_listen_command

    return run_listen_command(args, out)


def run_devices(args: argparse.Namespace, out: TextIO) -> int:
    from .listen import run_devices_command

    return run_devices_command(args, out)


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run a parsed command; errors meant for the user become a one-line message and exit status."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    # The CLI owns the process, so it may tune the allocator (see limit_heap_growth); bench's child
    # processes get the same setting through the environment glibc reads at start-up.
    limit_heap_growth()
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    try:
        return int(args.handler(args, out or sys.stdout))
    except EdgeASRError as exc:
        print(f"edge-asr: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-asr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
