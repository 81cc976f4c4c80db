"""The front-end feature cache (`windows.FeatureCache`), on and off side by side in one process.

    python benchmarks/front_end_cache.py --model BUNDLE [--model BUNDLE ...] \
        [--manifest data/test.csv --utterances 6] [--threads 1] [--rounds 2]

For each bundle (format 2, with split graphs), with the cache on and off:

1. `listen`-style streaming: the utterances with 1.5 s pauses in a quiet room, fed in 50 ms blocks as
   fast as possible through `EdgeTranscriber.stream()` (default `StreamOptions`, final pass on);
   process CPU seconds per audio second;
2. file mode: the same audio as one file (`transcribe`), CPU seconds per audio second;
3. whether the final lines and the file transcript are the same with the cache as without, and, with a
   manifest, the CER of each against the references; and the same against the split graphs run
   without a cache ("split"), which separates the cache's effect from the split graphs' float rounding
   against the single graph.

Runs alternate off, on, off, on... and the fastest of each counts, so that other programs' load hits
both alike. Without --manifest the audio is espeak-ng speech (meaningful text with a trained model).

    python benchmarks/front_end_cache.py --int8-conv-base data/corpus-v1/valid.csv [--utterances 3]

instead builds a wav2vec2-base-architecture model (random weights, layer-norm front end, no
do_normalize: the cache is exact), converts it to int8 and, from that bundle, to int8-conv (`python -m
quantize quantize --int8-conv`, calibrated on the manifest's first clips), and times `listen` with the
cache off and on for both, side by side: the 4 figures of "int8 convs and the front-end cache".
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr import EdgeTranscriber, TranscribeOptions  # noqa: E402
from edge_asr.audio import read_audio  # noqa: E402
from edge_asr.bundle import load_bundle  # noqa: E402
from edge_asr.stream import StreamOptions  # noqa: E402
from edge_asr.windows import cache_is_exact  # noqa: E402

RATE = 16000
BLOCK = RATE // 20
GAP_SECONDS = 1.5
SENTENCES = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore"]


def utterances(manifest: Optional[Path], count: int) -> Tuple[List[np.ndarray], List[str]]:
    if manifest is None:
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(SENTENCES):
                wav = Path(tmp) / f"{i}.wav"
                subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
                out.append(read_audio(wav, RATE))
        return out, list(SENTENCES)
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:count]
    return [read_audio(manifest.parent / r["path"], RATE) for r in rows], [r["text"] for r in rows]


def session_audio(parts: List[np.ndarray]) -> Tuple[np.ndarray, List[int]]:
    gap = np.zeros(int(GAP_SECONDS * RATE), np.float32)
    pieces, ends = [gap], []
    for part in parts:
        pieces += [part, gap]
        ends.append(sum(p.size for p in pieces) - gap.size)
    audio = np.concatenate(pieces)
    audio += 0.001 * np.random.default_rng(1).standard_normal(audio.size).astype(np.float32)
    return audio, ends


def listen(asr: EdgeTranscriber, audio: np.ndarray, ends: List[int]) -> Tuple[float, List[str]]:
    """CPU seconds per audio second, and each utterance's final text (the finals whose end of speech
    falls in its span joined: an utterance cut in two still compares as one)."""
    stream = asr.stream(StreamOptions())
    finals: List[Tuple[float, str]] = []
    cpu = time.process_time()
    for i in range(0, audio.size, BLOCK):
        finals += [(e.end, e.text) for e in stream.accept(audio[i : i + BLOCK], RATE) if e.is_final]
    finals += [(e.end, e.text) for e in stream.flush() if e.is_final]
    cost = (time.process_time() - cpu) / (audio.size / RATE)
    texts: List[List[str]] = [[] for _ in ends]
    for end, text in finals:
        index = next((i for i, e in enumerate(ends) if end <= e / RATE + GAP_SECONDS / 2), len(ends) - 1)
        texts[index].append(text)
    return cost, [" ".join(parts) for parts in texts]


def file_mode(asr: EdgeTranscriber, audio: np.ndarray) -> Tuple[float, str]:
    cpu = time.process_time()
    text = asr.transcribe(audio, sample_rate=RATE).text
    return (time.process_time() - cpu) / (audio.size / RATE), text


def cer(asr: EdgeTranscriber, refs: List[str], hyps: List[str]) -> float:
    import jiwer

    norm = asr.metadata.text_normalization
    return round(float(jiwer.cer(norm(" ".join(refs)), norm(" ".join(hyps)))), 4)


def measure(
    bundle: str,
    audio: np.ndarray,
    ends: List[int],
    refs: List[str],
    threads: int,
    rounds: int,
    quantized: bool = True,
) -> Dict[str, object]:
    options = TranscribeOptions(use_lm=False)
    models = {
        name: EdgeTranscriber(
            bundle, quantized=quantized, threads=threads, options=options, front_end_cache=name != "off"
        )
        for name in ("off", "split", "on")
    }
    # "split": the split graphs without a cache (every window whole through both): tells the cache's
    # own effect on the output apart from the split graphs' float rounding against the single graph.
    models["split"].split_stages = lambda: None  # type: ignore[method-assign]
    best: Dict[str, Dict[str, float]] = {k: {"listen": 1e9, "file": 1e9} for k in models}
    finals: Dict[str, List[str]] = {}
    texts: Dict[str, str] = {}
    for asr in models.values():  # warm-up: onnxruntime's first runs allocate and pick kernels
        asr.transcribe(audio[: 3 * RATE], sample_rate=RATE)
    for _ in range(rounds):
        for name, asr in models.items():
            cost, finals[name] = listen(asr, audio, ends)
            best[name]["listen"] = min(best[name]["listen"], cost)
            cost, texts[name] = file_mode(asr, audio)
            best[name]["file"] = min(best[name]["file"], cost)
    frames = {k: np.concatenate(list(m.log_probs(audio, RATE))) for k, m in models.items()}

    def agreement(a: str, b: str) -> float:
        return round(float((frames[a].argmax(-1) == frames[b].argmax(-1)).mean()), 5)

    meta = load_bundle(bundle, verify=False).metadata
    result: Dict[str, object] = {
        "bundle": bundle,
        "variant": "int8" if quantized else "fp32",
        "frames_local": meta.split.frames_local if meta.split else None,
        "do_normalize": meta.do_normalize,
        "cache_exact": cache_is_exact(meta),
        "audio_seconds": round(audio.size / RATE, 1),
        "listen_cpu_per_audio_s": {k: round(v["listen"], 4) for k, v in best.items()},
        "listen_speedup": round(best["off"]["listen"] / best["on"]["listen"], 2),
        "file_cpu_per_audio_s": {k: round(v["file"], 4) for k, v in best.items()},
        "file_speedup": round(best["off"]["file"] / best["on"]["file"], 2),
        "listen_cpu_split_no_cache": round(best["split"]["listen"], 4),
        "utterances": len(ends),
        "listen_utterances_differing_on_vs_off": _differing(finals["on"], finals["off"]),
        "listen_utterances_differing_on_vs_split": _differing(finals["on"], finals["split"]),
        "file_text_identical_on_vs_off": texts["on"] == texts["off"],
        "file_frames_agreeing_on_vs_off": agreement("on", "off"),
        "file_frames_agreeing_on_vs_split": agreement("on", "split"),
        "file_max_abs_diff_on_vs_split": round(float(np.abs(frames["on"] - frames["split"]).max()), 6),
    }
    if refs:
        asr = models["off"]
        result["listen_cer"] = {k: cer(asr, refs, v) for k, v in finals.items()}
        result["file_cer"] = {k: cer(asr, refs, [v]) for k, v in texts.items()}
    return result


def int8_conv_base(manifest: Path, count: int, threads: int, rounds: int) -> Dict[str, object]:
    """`listen` CPU seconds per audio second: int8 vs int8-conv, cache off vs on, wav2vec2-base."""
    from quantize.convert import ConvertOptions, convert
    from quantize.int8 import Int8Options
    from quantize.int8_conv import ConvInt8Options
    from quantize.rework import add_int8
    from quantize.synthetic import BASE_CONFIG, make_random_model

    parts, _ = utterances(manifest, count)
    audio, ends = session_audio(parts)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = dict(BASE_CONFIG, feat_extract_norm="layer", conv_bias=True)
        folder = make_random_model(work / "hf", config=config, do_normalize=False, head_scale=10.0)
        say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        bundles = {"int8": convert(ConvertOptions(model=str(folder), out=work / "int8"), say).bundle}
        conv = ConvInt8Options(calibration=manifest, calibration_limit=count, probe_utterances=0)
        bundles["int8-conv"] = add_int8(bundles["int8"], work / "int8-conv", Int8Options(), False, say, conv)
        options = TranscribeOptions(use_lm=False)
        models = {
            f"{name}, cache {'on' if cache else 'off'}": EdgeTranscriber(
                bundle, threads=threads, options=options, front_end_cache=cache
            )
            for name, bundle in bundles.items()
            for cache in (False, True)
        }
        for asr in models.values():  # warm-up
            asr.transcribe(audio[: 3 * RATE], sample_rate=RATE)
        best = {name: 1e9 for name in models}
        for _ in range(rounds):
            for name, asr in models.items():
                best[name] = min(best[name], listen(asr, audio, ends)[0])
    return {
        "model": "wav2vec2-base architecture, random weights, layer-norm front end, no do_normalize",
        "threads": threads,
        "audio_seconds": round(audio.size / RATE, 1),
        "calibration_clips": count,
        "listen_cpu_per_audio_s": {name: round(cost, 4) for name, cost in best.items()},
    }


def _differing(a: List[str], b: List[str]) -> int:
    return sum(x != y for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], help="a bundle with split graphs")
    parser.add_argument(
        "--int8-conv-base",
        type=Path,
        metavar="MANIFEST",
        help="int8 vs int8-conv on a wav2vec2-base-architecture model, calibrated on MANIFEST's clips",
    )
    parser.add_argument("--manifest", type=Path, help="path,text CSV of utterances (default: espeak-ng)")
    parser.add_argument("--utterances", type=int, default=6, help="how many of the manifest's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fp32", action="store_true", help="the fp32 graphs (default: int8)")
    args = parser.parse_args()
    if args.int8_conv_base is not None:
        print(json.dumps(int8_conv_base(args.int8_conv_base, args.utterances, args.threads, args.rounds)))
        return
    if not args.model:
        parser.error("--model BUNDLE (or --int8-conv-base MANIFEST) is required")
    parts, refs = utterances(args.manifest, args.utterances)
    audio, ends = session_audio(parts)
    for bundle in args.model:
        result = measure(bundle, audio, ends, refs, args.threads, args.rounds, quantized=not args.fp32)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
