"""Streaming figures for `edge-asr listen` / `EdgeTranscriber.stream()` on this machine.

    python benchmarks/stream_latency.py --model BUNDLE [--threads 2] [--session-minutes 30]
    python benchmarks/stream_latency.py --build-random base --work /tmp/stream-bench   # no model yet

Measures, with speech synthesized by espeak-ng (a warbling tone if it is missing):

1. latency from the end of speech to the final event, feeding 50 ms blocks at real-time pace (as a
   microphone would), split into the endpoint wait (the trailing-silence rule) and the processing after it,
   with the final pass (`StreamOptions.final_pass`) on and off, side by side in one process; with each,
   the final lines' CER against the sentences (espeak-ng only), CPU and model time per audio second
   (the same audio fed as fast as possible), next to `edge-asr file`'s CER on the same audio (each
   utterance with its surrounding pauses as one file, and the whole recording as one file);
2. partial updates per second of speech;
3. CPU seconds per second of audio (process CPU time, as fast as possible);
4. model time and samples per hop for a 5 s and a 60 s utterance (must be the same), and the final
   pass's model time for each;
5. RSS sampled every simulated minute of a long session (speech and pauses, as fast as possible).

`--build-random base|tiny` exports a random-init wav2vec2 with `python -m quantize convert` (needs the
desktop extra) so that the figures are for a real-sized graph; the text it prints is meaningless.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr import EdgeTranscriber  # noqa: E402
from edge_asr.audio import resample  # noqa: E402
from edge_asr.listen import limit_heap_growth  # noqa: E402
from edge_asr.stream import StreamOptions  # noqa: E402
from edge_asr.windows import FeatureCache  # noqa: E402

RATE = 16000
BLOCK = RATE // 20  # 50 ms, what `listen` asks PortAudio for
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step",
    "please call stella and ask her to bring these things with her from the store",
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
]
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def build_random(kind: str, work: Path) -> Path:
    """A random-init wav2vec2 (base or tiny) bundle, via the project's own converter."""
    bundle = work / f"random-{kind}"
    if (bundle / "bundle.json").is_file():
        return bundle
    sys.path.insert(0, str(ROOT))
    from quantize.synthetic import make_random_model

    hf = make_random_model(work / f"random-{kind}-hf", config=TINY if kind == "tiny" else {})
    cmd = [sys.executable, "-m", "quantize", "convert", "--model", str(hf), "--out", str(bundle)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return bundle


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def synthesize() -> Tuple[List[np.ndarray], Optional[List[str]]]:
    """Utterances at 16 kHz with no leading/trailing silence, so the end of speech is known exactly, and
    what they say (None for the tone fallback)."""
    if shutil.which("espeak-ng"):
        import soundfile as sf

        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(SENTENCES):
                wav = Path(tmp) / f"{i}.wav"
                subprocess.run(
                    ["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True
                )
                audio, rate = sf.read(wav, dtype="float32")
                out.append(trim(resample(audio, rate, RATE) * 0.8))
        return out, list(SENTENCES)
    rng = np.random.default_rng(0)
    out = []
    for seconds in (2.1, 2.7, 3.3, 1.8):
        t = np.arange(int(seconds * RATE)) / RATE
        out.append((0.2 * np.sin(2 * np.pi * (220 + 80 * np.sin(3 * t)) * t)).astype(np.float32))
    return [o + 0.002 * rng.standard_normal(o.size).astype(np.float32) for o in out], None


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


GAP_SECONDS = 1.5


def session_audio(utterances: List[np.ndarray], rounds: int) -> Tuple[np.ndarray, List[int]]:
    """The utterances `rounds` times over with 1.5 s pauses in a quiet room, and where each one's speech
    ends (samples)."""
    gap = np.zeros(int(GAP_SECONDS * RATE), np.float32)
    audio_parts, speech_ends = [gap], []
    for _ in range(rounds):
        for utt in utterances:
            audio_parts.append(utt)
            speech_ends.append(sum(p.size for p in audio_parts))
            audio_parts.append(gap)
    audio = np.concatenate(audio_parts)
    noise = np.random.default_rng(1)
    audio += 0.001 * noise.standard_normal(audio.size).astype(np.float32)  # a quiet room, not digital zero
    return audio, speech_ends


def cer(asr: EdgeTranscriber, references: List[str], hypotheses: List[str]) -> float:
    import jiwer

    norm = asr.metadata.text_normalization
    return round(float(jiwer.cer([norm(r) for r in references], [norm(h) for h in hypotheses])), 4)


def by_utterance(finals: List[Tuple[float, str]], speech_ends: List[int]) -> List[str]:
    """Each utterance's final text: the finals whose end of speech falls in its span (a cut utterance
    gives several)."""
    texts: List[List[str]] = [[] for _ in speech_ends]
    for end, text in finals:
        index = next((i for i, e in enumerate(speech_ends) if end <= e / RATE + GAP_SECONDS / 2), -1)
        texts[index].append(text)
    return [" ".join(t for t in parts if t) for parts in texts]


def latency(
    asr: EdgeTranscriber,
    utterances: List[np.ndarray],
    options: StreamOptions,
    references: Optional[List[str]] = None,
    rounds: int = 1,
) -> Dict[str, float]:
    """Real-time paced: wall time from the block holding the last speech sample to the final event;
    then the same audio as fast as possible for CPU and model time per audio second (the least of
    three runs)."""
    stream = asr.stream(options)
    audio, speech_ends = session_audio(utterances, rounds)
    delivered: List[float] = []  # wall time at which each block "arrived"
    finals: List[Tuple[float, float]] = []  # (wall time of the final, stream end-of-speech)
    texts: List[Tuple[float, str]] = []
    partials = 0
    processing: List[float] = []
    start = time.perf_counter()
    for i in range(0, audio.size, BLOCK):
        arrive = start + (i + BLOCK) / RATE
        delay = arrive - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        delivered.append(arrive)
        t0 = time.perf_counter()
        events = stream.accept(audio[i : i + BLOCK], RATE)
        now = time.perf_counter()
        for event in events:
            if event.is_final:
                finals.append((now, event.end))
                texts.append((event.end, event.text))
                processing.append(now - t0)
            else:
                partials += 1
    for event in stream.flush():
        texts.append((event.end, event.text))
    ms = []
    for end_sample in speech_ends:
        block_index = (end_sample - 1) // BLOCK
        wall_final = next((w for w, _ in finals if w >= delivered[block_index]), None)
        if wall_final is not None:
            ms.append(1000 * (wall_final - delivered[block_index]))
    speech_seconds = rounds * sum(u.size for u in utterances) / RATE
    paced = stream.stats
    runs = []  # as fast as possible, three times: the least CPU (other work on the machine adds noise)
    for _ in range(3):
        fast = asr.stream(options)
        cpu0 = time.process_time()
        for i in range(0, audio.size, BLOCK):
            fast.accept(audio[i : i + BLOCK], RATE)
        fast.flush()
        runs.append((time.process_time() - cpu0, fast.stats))
    cpu, fast_stats = min(runs, key=lambda run: run[0])
    audio_s = fast_stats.audio_seconds
    figures: Dict[str, float] = {
        "final_pass": options.final_pass,
        "utterances": len(speech_ends),
        "finals": len(texts),
        "end_of_speech_to_final_ms_median": round(statistics.median(ms), 1),
        "end_of_speech_to_final_ms_p90": round(float(np.percentile(ms, 90)), 1),
        "end_of_speech_to_final_ms_max": round(max(ms), 1),
        "endpoint_wait_ms": 1000 * options.endpoint_silence,
        "processing_after_endpoint_ms_median": round(1000 * statistics.median(processing), 1),
        "processing_after_endpoint_ms_p90": round(1000 * float(np.percentile(processing, 90)), 1),
        "processing_after_endpoint_ms_max": round(1000 * max(processing), 1),
        "final_pass_ms_per_utterance": round(1000 * paced.final_pass_seconds / max(1, paced.final_passes), 1),
        "partials_per_speech_second": round(partials / speech_seconds, 2),
        "cpu_s_per_audio_s": round(cpu / audio_s, 4),
        "model_s_per_audio_s": round(fast_stats.model_seconds / audio_s, 4),
        "final_pass_model_s_per_audio_s": round(fast_stats.final_pass_seconds / audio_s, 4),
    }
    if references is not None:
        figures["final_cer"] = cer(asr, references * rounds, by_utterance(texts, speech_ends))
    return figures


def file_cer(asr: EdgeTranscriber, utterances: List[np.ndarray], references: List[str]) -> Dict[str, float]:
    """`edge-asr file`'s CER on the latency run's audio: each utterance with the pauses around it as
    one file, and the whole recording as one file."""
    audio, speech_ends = session_audio(utterances, 1)
    gap = int(GAP_SECONDS * RATE)
    clips = [audio[end - u.size - gap : end + gap] for u, end in zip(utterances, speech_ends)]
    cpu0 = time.process_time()
    each = [asr.transcribe(clip, sample_rate=RATE).text for clip in clips]
    cpu = time.process_time() - cpu0
    whole = asr.transcribe(audio, sample_rate=RATE).text
    return {
        "file_cer_each_utterance": cer(asr, references, each),
        "file_cer_whole_recording": cer(asr, [" ".join(references)], [whole]),
        "file_cpu_s_per_audio_s": round(cpu / (sum(c.size for c in clips) / RATE), 4),
    }


def compare(on: Dict[str, float], off: Dict[str, float], files: Dict[str, float]) -> str:
    """The side-by-side table the latency step prints."""
    rows = [
        ("final CER", "final_cer"),
        ("end of speech -> final, median ms", "end_of_speech_to_final_ms_median"),
        ("end of speech -> final, p90 ms", "end_of_speech_to_final_ms_p90"),
        ("processing after endpoint, median ms", "processing_after_endpoint_ms_median"),
        ("final pass model ms per utterance", "final_pass_ms_per_utterance"),
        ("CPU s per audio s", "cpu_s_per_audio_s"),
        ("model s per audio s", "model_s_per_audio_s"),
    ]
    lines = [f"{'':40} {'final pass on':>14} {'off':>10}"]
    for label, key in rows:
        lines.append(f"{label:40} {on.get(key, '-')!s:>14} {off.get(key, '-')!s:>10}")
    for key, value in files.items():
        lines.append(f"{key.replace('_', ' '):40} {value!s:>14}")
    return "\n".join(lines)


def per_hop(asr: EdgeTranscriber, utterances: List[np.ndarray], seconds: int, options: StreamOptions) -> Dict:
    """One utterance of `seconds` of continuous speech: model time and samples of each run."""
    joined = np.concatenate([np.concatenate([u, np.zeros(RATE // 10, np.float32)]) for u in utterances])
    audio = np.tile(joined, int(np.ceil(seconds * RATE / joined.size)))[: seconds * RATE]
    long_options = StreamOptions(**{**options.__dict__, "max_utterance_seconds": 600, "endpoint_silence": 60})
    stream = asr.stream(long_options)
    times: List[float] = []
    cpu: List[float] = []
    sizes: List[int] = []
    real = stream._log_probs
    cached = FeatureCache.log_probs

    def timed_with(run: Callable[[np.ndarray], np.ndarray], window: np.ndarray) -> np.ndarray:
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(window)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        sizes.append(window.size)
        return out

    def timed_cache(cache: FeatureCache, window: np.ndarray, first_frame: int) -> np.ndarray:
        return timed_with(lambda w: cached(cache, w, first_frame), window)

    stream._log_probs = lambda window: timed_with(real, window)
    # With a front-end cache (split bundles) windows run through FeatureCache.log_probs instead: timed
    # the same way, with the window's samples (its front-end runs on the new ones only).
    FeatureCache.log_probs = timed_cache  # type: ignore[method-assign,assignment]
    try:
        for i in range(0, audio.size, BLOCK):
            stream.accept(audio[i : i + BLOCK], RATE)
        # The utterance ends at the flush: with the final pass, the runs from here on are the final
        # pass (the hop runner's last run is skipped); without it, the hop runner's last run.
        hop_runs = len(times) if options.final_pass else len(times) + 1
        stream.flush()
    finally:
        FeatureCache.log_probs = cached  # type: ignore[method-assign]
    final = times[hop_runs:]
    times, cpu, sizes = times[:hop_runs], cpu[:hop_runs], sizes[:hop_runs]
    steady = times[3:-1] or times
    steady_cpu = cpu[3:-1] or cpu
    return {
        "seconds": seconds,
        "model_runs": len(times),
        "window_samples_max": max(sizes),
        "window_samples_steady": sorted(set(sizes[3:-1])),
        "ms_per_hop_median": round(1000 * statistics.median(steady), 1),
        "ms_per_hop_p90": round(1000 * float(np.percentile(steady, 90)), 1),
        "cpu_ms_per_hop_median": round(1000 * statistics.median(steady_cpu), 1),
        "final_pass_runs": len(final),
        "final_pass_ms": round(1000 * sum(final), 1),
    }


def session(
    asr: EdgeTranscriber, utterances: List[np.ndarray], minutes: float, options: StreamOptions
) -> Dict:
    """A long session as fast as possible: utterances with 1-4 s pauses; RSS every simulated minute."""
    rng = np.random.default_rng(2)
    stream = asr.stream(options)

    def blocks() -> Iterator[np.ndarray]:
        total = 0
        k = 0
        while total < minutes * 60 * RATE:
            piece = np.concatenate(
                [utterances[k % len(utterances)], np.zeros(int(rng.uniform(1, 4) * RATE), np.float32)]
            )
            piece = piece + 0.001 * rng.standard_normal(piece.size).astype(np.float32)
            k += 1
            for i in range(0, piece.size, BLOCK):
                yield piece[i : i + BLOCK]
            total += piece.size

    samples: List[Tuple[float, float]] = []
    next_minute = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    finals = 0
    for block in blocks():
        finals += sum(e.is_final for e in stream.accept(block, RATE))
        audio_s = stream.stats.audio_seconds
        if audio_s >= next_minute:
            samples.append((round(audio_s / 60, 1), round(rss_mb(), 1)))
            next_minute += 60
    finals += sum(e.is_final for e in stream.flush())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    audio_s = stream.stats.audio_seconds
    rss = [r for _, r in samples]
    after_warmup = rss[1:] or rss
    return {
        "audio_minutes": round(audio_s / 60, 1),
        "finals": finals,
        "cpu_s_per_audio_s": round(cpu / audio_s, 4),
        "wall_s_per_audio_s": round(wall / audio_s, 4),
        "model_s_per_audio_s": round(stream.stats.model_seconds / audio_s, 4),
        "rss_mb_by_minute": samples,
        "rss_mb_first_minute": rss[0],
        "rss_mb_min_after_1min": min(after_warmup),
        "rss_mb_max_after_1min": max(after_warmup),
        "rss_mb_last": rss[-1],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model bundle folder")
    parser.add_argument(
        "--build-random", choices=("base", "tiny"), help="export a random-init wav2vec2 first"
    )
    parser.add_argument("--work", default="/tmp/edge-asr-stream-bench", help="where --build-random writes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fp32", action="store_true")
    parser.add_argument("--session-minutes", type=float, default=30.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="times over the sentences in the latency step (default 2)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("latency", "hop", "session"))
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--default-malloc", action="store_true", help="skip listen's limit_heap_growth() (to compare RSS)"
    )
    args = parser.parse_args()
    if args.build_random:
        model = str(build_random(args.build_random, Path(args.work)))
    elif args.model:
        model = args.model
    else:
        parser.error("give --model BUNDLE or --build-random base|tiny")
    if not args.default_malloc:
        limit_heap_growth()  # as `edge-asr listen` does
    asr = EdgeTranscriber(model, quantized=not args.fp32, threads=args.threads)
    options = StreamOptions()
    utterances, references = synthesize()
    report: Dict[str, object] = {
        "model": str(asr.model_path),
        "threads": asr.model.threads,
        "mmap_threshold_pinned": not args.default_malloc,
        "options": asdict(options),
        "speech_seconds": round(sum(u.size for u in utterances) / RATE, 1),
    }
    asr.stream(options).accept(np.zeros(RATE, np.float32), RATE)  # load/warm onnxruntime
    asr.model.log_probs(np.zeros(3 * RATE, np.float32))
    report["rss_mb_loaded"] = rss_mb()
    print(json.dumps({"rss_mb_loaded": report["rss_mb_loaded"], "peak": peak_rss_mb()}), flush=True)
    if "latency" not in args.skip:
        on = latency(asr, utterances, replace(options, final_pass=True), references, args.rounds)
        on["rss_mb_after"], on["peak_rss_mb_so_far"] = rss_mb(), peak_rss_mb()
        off = latency(asr, utterances, replace(options, final_pass=False), references, args.rounds)
        files = file_cer(asr, utterances, references) if references is not None else {}
        report["latency"] = {"final_pass_on": on, "final_pass_off": off, "file": files}
        print(json.dumps({"latency": report["latency"]}), flush=True)
        print(compare(on, off, files), flush=True)
    if "hop" not in args.skip:
        hops = [per_hop(asr, utterances, s, options) for s in (5, 60)]
        hops[-1]["rss_mb_after"], hops[-1]["peak_rss_mb_so_far"] = rss_mb(), peak_rss_mb()
        report["per_hop"] = hops
        print(json.dumps({"per_hop": report["per_hop"]}), flush=True)
    if "session" not in args.skip:
        report["session"] = session(asr, utterances, args.session_minutes, options)
        print(json.dumps({"session": report["session"]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
