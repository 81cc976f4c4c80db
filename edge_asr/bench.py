"""On-device benchmark: load time, real-time factor per clip length, peak memory, fp32 vs int8, threads,
onnxruntime's CPU memory arena on vs off.

It needs nothing but the runtime (numpy, onnxruntime, soundfile, soxr), so it runs on the board itself
and its JSON can be pasted into an issue to compare boards.

Each (variant, threads, arena) configuration runs in a fresh child process (multiprocessing "spawn") by
default: ru_maxrss is a high-water mark for the whole process, so a configuration run after another
would inherit the earlier one's peak. Clips run shortest first, so the high-water mark read after each
clip is that clip length's peak. The machine facts and the peak RSS come from `edge_asr.sysinfo`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from . import limits
from .atomic import check_output_file, write_text_atomic
from .bundle import BundleMetadata
from .errors import BenchError, InputError
from .sysinfo import machine_info, peak_rss_mb

# peak_rss_kib lived here; quantize/measure.py and benchmarks/ still import it from edge_asr.bench.
from .sysinfo import peak_rss_kib as peak_rss_kib

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8")
DEFAULT_SECONDS = (5.0, 10.0, 30.0)
QUICK_SECONDS = (5.0,)
DEFAULT_ARENAS = ("on", "off")  # measured side by side: what `--arena auto` chooses is in the docs
WARMUP_SECONDS = 1.0
NOISE_SEED = 20240607


@dataclass
class BenchOptions:
    """What to measure.

    Attributes:
        model: bundle folder, or None for the default model.
        input: an audio file to time instead of generated audio; it is tiled or cut to each length in
            `seconds` (or used whole when `seconds` is empty).
        seconds: clip lengths to time, in seconds.
        threads: onnxruntime thread counts to try.
        variants: "fp32" / "int8"; those the bundle lacks are skipped.
        repeats: runs per clip; the fastest counts (the others are disturbed by the rest of the system).
        isolate: one child process per configuration, so each gets its own peak RSS. None: only when
            there is more than one configuration.
        first_variant_only: time only the first of `variants` that the bundle has (for --quick).
        use_lm: decode as `edge-asr file` does: beam search with the bundle's LM when it has one.
        decoder: "auto", "joint" or "ctc", as `edge-asr file --decoder` (joint decoding with the
            bundle's text decoder by default when it has one).
        arenas: onnxruntime CPU memory arena settings to compare ("on", "off", "auto"); each is its own
            configuration, in its own process, so that each gets its own peak RSS.
    """

    model: Optional[str] = None
    input: Optional[str] = None
    seconds: Sequence[float] = DEFAULT_SECONDS
    threads: Optional[Sequence[int]] = None
    variants: Sequence[str] = VARIANTS
    repeats: int = 1
    isolate: Optional[bool] = None
    first_variant_only: bool = False
    use_lm: bool = True
    arenas: Sequence[str] = DEFAULT_ARENAS
    decoder: str = "auto"


@dataclass
class ClipResult:
    """One clip length. `cpu_s` is CPU time over all threads: far below `processing_s` x threads means
    other programs had the cores (a busy board gives slow figures)."""

    seconds: float
    processing_s: float
    rtf: float
    peak_rss_mb: float
    cpu_s: float = 0.0


@dataclass
class ConfigResult:
    """One (variant, threads, arena) configuration; `arena` is what ran ("on"/"off"), `arena_setting`
    what was asked ("auto" resolves by `model.resolve_arena`)."""

    variant: str
    threads: int
    model_file: str
    model_mb: float
    load_s: float
    first_run_s: float
    rss_before_load_mb: float
    rss_after_load_mb: float
    clips: List[ClipResult] = field(default_factory=list)
    text: str = ""
    arena: str = "off"
    arena_setting: str = "auto"

    @property
    def peak_rss_mb(self) -> float:
        return max([self.rss_after_load_mb] + [c.peak_rss_mb for c in self.clips])


@dataclass
class BenchReport:
    machine: Dict[str, Any]
    model: Dict[str, Any]
    settings: Dict[str, Any]
    results: List[ConfigResult]
    created: str = ""

    def to_dict(self) -> Dict[str, Any]:
        results = []
        for r in self.results:
            item = asdict(r)
            item["peak_rss_mb"] = round(r.peak_rss_mb, 1)
            results.append(item)
        return {
            "created": self.created,
            "machine": self.machine,
            "model": self.model,
            "settings": self.settings,
            "results": results,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def parse_seconds(text: str) -> List[float]:
    """Parse a list of clip lengths: "5,10,30" -> [5.0, 10.0, 30.0]."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--seconds {text!r}: expected comma-separated numbers, e.g. 5,10,30") from None
    if not values or any(not 0 < v <= 3600 for v in values):
        raise InputError(f"--seconds {text!r}: lengths must be between 0 and 3600 seconds")
    return values


def parse_threads(text: str) -> List[int]:
    """Parse a list of thread counts: "1,2,4" -> [1, 2, 4]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--threads {text!r}: expected comma-separated whole numbers, e.g. 1,2,4") from None
    bad = [v for v in values if limits.THREADS.problem(v)]
    if not values or bad:
        raise InputError(
            f"--threads {text!r}: thread counts must be between {limits.THREADS.low:g} and "
            f"{limits.THREADS.high:g}"
        )
    return values


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_arenas(text: str) -> List[str]:
    """Parse a list of arena settings: "on,off" -> ["on", "off"]."""
    from .model import ARENA_CHOICES

    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in ARENA_CHOICES for v in values):
        raise InputError(f"--arena {text!r}: expected a comma-separated list of {', '.join(ARENA_CHOICES)}")
    return list(dict.fromkeys(values))


seconds_arg = _argparse_type(parse_seconds)
threads_arg = _argparse_type(parse_threads)
arenas_arg = _argparse_type(parse_arenas)


def default_thread_counts() -> List[int]:
    """1, 2, 4, ... up to the physical cores, and the core count itself."""
    from .sysinfo import physical_cores

    cores = physical_cores()
    counts = []
    n = 1
    while n < cores:
        counts.append(n)
        n *= 2
    counts.append(cores)
    return counts


def generated_audio(seconds: float, sample_rate: int) -> np.ndarray:
    """Speech-like load for the graph: quiet noise with a few tones, reproducible.

    The ONNX graph's cost does not depend on what the audio says; only CTC decoding does, and it is a
    small share, so generated audio times the same work as speech of that length.
    """
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(NOISE_SEED)
    out = np.empty(n, dtype=np.float32)
    # One second at a time, so the benchmark's own scratch arrays never set the peak RSS it reports.
    for start in range(0, n, sample_rate):
        t = np.arange(start, min(n, start + sample_rate)) / sample_rate
        block = 0.02 * rng.standard_normal(t.size)
        for k, f in enumerate((440.0, 700.0, 1100.0), start=1):
            block += 0.1 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 0.7 * k * t) > 0)
        out[start : start + t.size] = block
    return out


def clip_audio(seconds: float, sample_rate: int, source: Optional[np.ndarray]) -> np.ndarray:
    if source is None:
        return generated_audio(seconds, sample_rate)
    # np.resize tiles the file when the clip is longer than it.
    return np.resize(source, int(round(seconds * sample_rate))).astype(np.float32)


def run_configuration(
    model: Optional[str],
    variant: str,
    threads: int,
    seconds: Sequence[float],
    input_path: Optional[str],
    repeats: int,
    use_lm: bool = True,
    arena: str = "auto",
    decoder: str = "auto",
) -> ConfigResult:
    """Time one configuration in this process. Runs in the child when configurations are isolated."""
    from .audio import read_audio
    from .transcriber import EdgeTranscriber, TranscribeOptions

    rss_before = peak_rss_mb()
    started = time.perf_counter()
    options = TranscribeOptions(use_lm=use_lm, decoder=decoder)
    transcriber = EdgeTranscriber(
        model, quantized=variant == "int8", threads=threads, options=options, arena=arena
    )
    load_s = time.perf_counter() - started
    rss_loaded = peak_rss_mb()
    rate = transcriber.sample_rate
    source = read_audio(input_path, rate) if input_path else None
    # The first run pays for onnxruntime's lazy allocations and kernel selection; report it apart.
    warm = time.perf_counter()
    transcriber.transcribe(clip_audio(WARMUP_SECONDS, rate, source), sample_rate=rate)
    first_run_s = time.perf_counter() - warm
    result = ConfigResult(
        variant=variant,
        threads=transcriber.model.threads,
        model_file=" + ".join(p.name for p in transcriber.model.graph_files),
        model_mb=round(sum(p.stat().st_size for p in set(transcriber.model.graph_files)) / 1e6, 3),
        load_s=round(load_s, 3),
        first_run_s=round(first_run_s, 3),
        rss_before_load_mb=round(rss_before, 1),
        rss_after_load_mb=round(rss_loaded, 1),
        arena="on" if transcriber.model.arena else "off",
        arena_setting=arena,
    )
    for length in sorted(seconds):
        audio = clip_audio(length, rate, source)
        best, best_cpu = float("inf"), 0.0
        for _ in range(max(1, repeats)):
            cpu = time.process_time()
            transcript = transcriber.transcribe(audio, sample_rate=rate)
            if transcript.processing_time < best:
                best, best_cpu = transcript.processing_time, time.process_time() - cpu
        if source is not None and length == max(seconds):
            result.text = transcript.text
        result.clips.append(
            ClipResult(
                seconds=length,
                processing_s=round(best, 6),
                rtf=round(best / length, 6),
                peak_rss_mb=round(peak_rss_mb(), 1),
                cpu_s=round(best_cpu, 6),
            )
        )
    return result


def _run_isolated(args: Tuple[Any, ...]) -> ConfigResult:
    # Logging in a spawned child starts unconfigured; keep it as quiet as the parent's default.
    logging.basicConfig(level=logging.WARNING)
    return run_configuration(*args)


def run_bench(options: BenchOptions, on_result: Optional[Any] = None) -> BenchReport:
    """Run every configuration and return the report. `on_result(ConfigResult)` is called as each ends."""
    from .audio import open_audio
    from .bundle import load_bundle

    bundle = load_bundle(options.model, verify=False)
    meta = bundle.metadata
    variants = [v for v in options.variants if v in meta.models]
    if options.first_variant_only:
        variants = variants[:1]
    if not variants:
        raise InputError(
            f"{bundle.path}: the bundle has no {'/'.join(options.variants)} model "
            f"(it has {', '.join(meta.models)})"
        )
    seconds = list(options.seconds)
    if options.input:
        info, _ = open_audio(options.input, meta.sample_rate)  # a bad file fails here, before any child
        if not seconds:
            seconds = [round(info.duration, 3)]
    if not seconds:
        raise InputError("no clip lengths to time: pass --seconds, e.g. 5,10,30")
    threads = list(options.threads) if options.threads else default_thread_counts()
    arenas = list(options.arenas)
    configs = [(v, t, a) for v in variants for t in threads for a in arenas]
    isolate = options.isolate if options.isolate is not None else len(configs) > 1
    model_arg = str(bundle.path)
    machine = machine_info()  # before the runs, so the load average is other programs' load
    results: List[ConfigResult] = []
    for variant, count, arena in configs:
        args = (
            model_arg, variant, count, seconds, options.input, options.repeats, options.use_lm, arena,
            options.decoder,
        )  # fmt: skip
        log.info(
            "bench: %s, %d thread(s), arena %s%s",
            variant,
            count,
            arena,
            " (child process)" if isolate else "",
        )
        result = _in_child(args) if isolate else run_configuration(*args)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return BenchReport(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine,
        model={
            "path": str(bundle.path),
            "name": meta.name,
            "variants": {v: meta.models[v] for v in variants},
            "int8_recommended": meta.int8_recommended,
            "sample_rate": meta.sample_rate,
            "vocab_size": meta.vocab_size,
        },
        settings={
            "seconds": seconds,
            "threads": threads,
            "arenas": arenas,
            "repeats": options.repeats,
            "input": options.input,
            "audio": "file" if options.input else "generated noise and tones",
            "isolated": isolate,
            "chunk_seconds": _default_chunk_seconds(),
            "decoding": _decoding(meta, options.use_lm, options.decoder),
        },
        results=results,
    )


def _decoding(meta: BundleMetadata, use_lm: bool, decoder: str = "auto") -> str:
    settings = meta.decoder
    if settings is not None and decoder != "ctc":
        return (
            f"joint CTC/attention decoding with the bundle's text decoder (CTC weight "
            f"{settings.ctc_weight}, beam {settings.beam_size})"
        )
    language_model = meta.language_model
    if language_model is None or not use_lm:
        return "greedy"
    lms = "character and word language models" if language_model.words else "language model"
    return f"beam search (beam {language_model.beam_size}) with the bundle's {lms}"


def _default_chunk_seconds() -> float:
    from .transcriber import TranscribeOptions

    return TranscribeOptions.chunk_seconds


def _in_child(args: Tuple[Any, ...]) -> ConfigResult:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_run_isolated, args).result()
        except BrokenProcessPool:
            variant, threads = args[1], args[2]
            raise BenchError(
                f"the {variant} model with {threads} thread(s) was killed (most likely out of memory: "
                "check `dmesg` for the OOM killer); try shorter --seconds, or add swap"
            ) from None


def format_table(report: BenchReport) -> str:
    """A plain-text table: one row per configuration, RTF per clip length (lower is faster)."""
    m = report.machine
    lines = [
        f"machine: {m.get('board') or m.get('machine')}, {m.get('cpu_model') or 'CPU model unknown'}, "
        f"{m.get('physical_cores')} cores, {m.get('memory_mb') or '?'} MB RAM, "
        f"onnxruntime {m.get('onnxruntime')}, load average {m.get('load_average_1m')}"
        + (f", {m['throttled']}" if m.get("throttled") else ""),
        f"model:   {report.model['path']} ({report.model['name'] or 'unnamed'}), "
        f"audio: {report.settings['audio']}",
        f"decoding: {report.settings.get('decoding', 'greedy')}",
        "",
    ]
    seconds = report.settings["seconds"]
    head = ["variant", "threads", "arena", "file MB", "load s", "1st run s"]
    head += [f"RTF {s:g}s" for s in seconds] + ["CPU %", "RSS before load MB", "peak RSS MB"]
    rows = []
    for r in report.results:
        by_len = {c.seconds: c for c in r.clips}
        rows.append(
            [r.variant, str(r.threads), _arena_label(r), f"{r.model_mb:.3g}", f"{r.load_s:.2f}"]
            + [f"{r.first_run_s:.2f}"]
            + [f"{by_len[s].rtf:.3g}" if s in by_len else "-" for s in seconds]
            + [_cpu_percent(r), f"{r.rss_before_load_mb:.0f}", f"{r.peak_rss_mb:.0f}"]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    lines.append("")
    lines.append(
        "RTF = processing time / audio length (below 1 is faster than real time). CPU % = CPU time / "
        "processing time on the longest clip: well below 100 x threads, other programs had the cores.\n"
        "Peak RSS includes Python, numpy and onnxruntime themselves (the 'before load' column)."
    )
    return "\n".join(lines) + "\n"


def _arena_label(result: ConfigResult) -> str:
    return f"auto:{result.arena}" if result.arena_setting == "auto" else result.arena


def _cpu_percent(result: ConfigResult) -> str:
    if not result.clips or result.clips[-1].processing_s <= 0:
        return "-"
    longest = result.clips[-1]
    return f"{100 * longest.cpu_s / longest.processing_s:.0f}"


def write_report(report: BenchReport, path: str) -> Path:
    return write_text_atomic(path, report.to_json())


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The `edge-asr bench` flags -> BenchOptions. --quick: one 5 s clip, one configuration."""
    from .model import default_threads

    variants: Sequence[str] = VARIANTS if args.variant == "all" else (args.variant,)
    seconds = args.seconds
    threads = args.thread_counts
    arenas = getattr(args, "arenas", None)
    if args.quick:
        seconds = seconds or ([] if args.input else list(QUICK_SECONDS))
        threads = threads or [default_threads()]
        arenas = arenas or ["auto"]
        if args.variant == "all":
            variants = ("int8", "fp32")  # the first one the bundle has, as `edge-asr file` picks
    elif seconds is None and not args.input:
        seconds = list(DEFAULT_SECONDS)
    limits.BENCH_REPEATS.check(args.repeats, "--repeats")
    return BenchOptions(
        model=args.model,
        input=args.input,
        seconds=seconds or [],
        threads=threads,
        variants=variants,
        repeats=args.repeats,
        isolate=False if args.in_process else None,
        first_variant_only=bool(args.quick and args.variant == "all"),
        use_lm=getattr(args, "use_lm", True),
        arenas=arenas or DEFAULT_ARENAS,
        decoder=getattr(args, "decoder", "auto"),
    )


def run_cli(args: argparse.Namespace, out: TextIO) -> int:
    """`edge-asr bench`: print the table to `out`, a line per finished configuration to stderr."""
    options = options_from_args(args)
    if args.json:
        check_output_file(args.json, "--json")  # before minutes of measuring, not after

    def progress(result: ConfigResult) -> None:
        worst = max((c.rtf for c in result.clips), default=float("nan"))
        print(
            f"bench: {result.variant}, {result.threads} thread(s), arena {_arena_label(result)}: "
            f"load {result.load_s:.2f} s, "
            f"RTF up to {worst:.3f}, peak RSS {result.peak_rss_mb:.0f} MB",
            file=sys.stderr,
            flush=True,
        )

    report = run_bench(options, on_result=progress)
    out.write(format_table(report))
    if args.json:
        try:
            path = write_report(report, args.json)
        except OSError as exc:  # checked before measuring, so e.g. a full disk
            raise BenchError(
                f"--json {args.json}: cannot write the report ({exc.strerror or exc}); "
                "the table above holds the figures"
            ) from None
        out.write(f"JSON written to {path}\n")
    out.flush()
    return 0
