"""Device-runtime figures: import + load time, real-time factor and peak RSS of `edge-asr file`.

For a wav2vec2-base-sized model (random weights) exported fp32 and int8, and a tiny model, on 10 s
and 10 min of audio. Each measurement runs in a fresh child process so peak RSS is its own.

    python benchmarks/runtime.py [--work /tmp/edge-asr-bench] [--long-seconds 600] [--threads 2]

Building the bundles needs the desktop extra (torch, transformers); measuring needs only edge_asr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS: Dict[str, Dict[str, object]] = {
    "base": {},  # Wav2Vec2Config() defaults are the wav2vec2-base architecture
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "conv_dim": (32, 32, 32, 32, 32, 32, 32),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
}


def build_bundle(name: str, work: Path) -> Path:
    bundle = work / f"{name}-bundle"
    if (bundle / "bundle.json").exists():
        return bundle
    from quantize.synthetic import make_random_model

    hf_dir = make_random_model(work / f"{name}-hf", config=CONFIGS[name])
    cmd = [sys.executable, "-m", "quantize", "convert", "--model", str(hf_dir), "--out", str(bundle)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return bundle


def make_audio(path: Path, seconds: float) -> Path:
    if path.exists():
        return path
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    # Speech-like enough for timing: a wobbling tone under noise (random weights ignore content).
    audio = 0.2 * np.sin(2 * np.pi * (220 + 80 * np.sin(t)) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, audio.astype("float32"), 16000, subtype="PCM_16")
    return path


def child(bundle: str, audio: str, int8: bool, threads: int) -> None:
    """One measurement, as `edge-asr file` runs it, printed as JSON: import, load, transcribe, peak RSS."""
    t0 = time.perf_counter()
    from edge_asr import EdgeTranscriber

    t1 = time.perf_counter()
    from edge_asr.model import limit_heap_growth

    limit_heap_growth()  # as `edge-asr file` does
    asr = EdgeTranscriber(bundle, quantized=int8, threads=threads)
    t2 = time.perf_counter()
    result = asr.transcribe(audio)
    t3 = time.perf_counter()
    from edge_asr.sysinfo import peak_rss_kib

    peak_kb = peak_rss_kib()
    print(
        json.dumps(
            {
                "import_s": t1 - t0,
                "load_s": t2 - t1,
                "transcribe_s": t3 - t2,
                "audio_s": result.duration,
                "rtf": (t3 - t2) / result.duration,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


def measure(bundle: Path, audio: Path, int8: bool, threads: int) -> Dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(bundle), str(audio), "1" if int8 else "0", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-asr-bench"))
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="base,tiny")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    clips = {
        "10 s": make_audio(args.work / "clip-10s.wav", 10.0),
        f"{args.long_seconds / 60:g} min": make_audio(
            args.work / f"clip-{args.long_seconds:g}s.wav", args.long_seconds
        ),
    }
    rows: List[Dict[str, Any]] = []  # JSON rows: names (str) and figures (float)
    for name in args.models.split(","):
        bundle = build_bundle(name, args.work)
        sizes = {p.name: p.stat().st_size / 1e6 for p in bundle.glob("*.onnx")}
        for int8 in (False, True):
            for clip_name, clip in clips.items():
                figures = measure(bundle, clip, int8, args.threads)
                rows.append(
                    {"model": name, "variant": "int8" if int8 else "fp32", "clip": clip_name, **figures}
                )
                print(f"  measured {name} {'int8' if int8 else 'fp32'} {clip_name}", file=sys.stderr)
        print(f"{name}: " + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items()))
    print(f"\nthreads={args.threads}, cpu={os.cpu_count()} logical cores")
    header = (
        f"{'model':6} {'variant':7} {'clip':8} {'import s':>8} {'load s':>7} {'RTF':>7} {'peak RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:6} {r['variant']:7} {r['clip']:8} {r['import_s']:8.2f} {r['load_s']:7.2f} "
            f"{r['rtf']:7.4f} {r['peak_rss_mb']:11.0f}"
        )
    by_key = {(r["model"], r["variant"], r["clip"]): r for r in rows}
    print("\nratios:")
    for name in args.models.split(","):
        for clip_name in clips:
            fp32_row, int8_row = by_key[(name, "fp32", clip_name)], by_key[(name, "int8", clip_name)]
            print(f"  {name} {clip_name}: int8 speed-up over fp32 x{fp32_row['rtf'] / int8_row['rtf']:.2f}")
        short, long = list(clips)
        for variant in ("fp32", "int8"):
            a, b = by_key[(name, variant, short)], by_key[(name, variant, long)]
            print(
                f"  {name} {variant}: peak RSS {long} / {short} = x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}"
            )
    (args.work / "runtime.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {args.work / 'runtime.json'}")


if __name__ == "__main__":
    main()
