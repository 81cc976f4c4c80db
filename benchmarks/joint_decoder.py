"""The text decoder's device targets (default model v3): joint CTC/attention decoding against CTC
alone on this machine, side by side.

    python benchmarks/joint_decoder.py [--model BUNDLE] [--threads 2] [--repeats 3]

- bundle size;
- a 10 s clip (a bundled sample tiled, real speech-like audio): RTF and peak RSS, each run in a fresh
  child process as `edge-asr file` runs it (median of `--repeats`), `--decoder joint` and `ctc`: the
  first file of the process (onnxruntime's first runs allocate and plan) and the best of two more;
- a 5 s clip end to end through the real command (process start to text), median of 5;
- probes that must give no text with either decoder: 10 s of digital silence, 10 s of white noise
  (-20 dBFS), a 10 ms file;
- the joint search's own counts on the bundled samples (tokens, segments gated, token-bound hits);
- with `--nonspeech CSV...` (manifests with a path column, such as the `nonspeech.csv` that
  `python -m train.corpus.games` writes: the games' laughs, sighs and growls), how many of those real
  non-speech clips each decoder writes text for, and what: a gate or a decoder that writes less for
  speech-like noise shows here, where generated silence and noise cannot tell.

Accuracy on real speech is benchmarks/real_dev.py's job (`--decoding lm,joint --faster-whisper`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from default_model import tiled_clip  # noqa: E402  (benchmarks/ is this script's import root)

SAMPLES = ROOT / "edge_asr" / "samples"
DECODERS = ("joint", "ctc")
TARGETS: Dict[str, float] = {"rtf": 0.05, "rtf_warm": 0.05, "rss_mb": 200.0, "wall_5s": 1.2, "size_mb": 60.0}


def probes(folder: Path) -> Dict[str, Path]:
    rng = np.random.default_rng(0)
    clips = {
        "10 s silence": np.zeros(160000, dtype=np.float32),
        "10 s white noise": (0.1 * rng.standard_normal(160000)).astype(np.float32),
        "10 ms": (0.1 * rng.standard_normal(160)).astype(np.float32),
    }
    paths = {}
    for name, audio in clips.items():
        paths[name] = folder / (name.replace(" ", "-") + ".wav")
        sf.write(paths[name], audio, 16000, subtype="PCM_16")
    return paths


def nonspeech_clips(manifests: List[Path]) -> List[Path]:
    """The audio paths of path-column CSVs (relative to each CSV's folder)."""
    paths: List[Path] = []
    for manifest in manifests:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise SystemExit(f"{manifest}: no 'path' column")
            paths += [manifest.parent / row["path"] for row in reader]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} non-speech clip(s) missing, e.g. {missing[0]}")
    return paths


def child(bundle: str, audio: str, decoder: str, threads: int) -> None:
    """One measurement printed as JSON: load, transcribe, peak RSS (as `edge-asr file` runs it)."""
    from edge_asr import EdgeTranscriber, TranscribeOptions
    from edge_asr.model import limit_heap_growth
    from edge_asr.sysinfo import peak_rss_kib

    limit_heap_growth()
    started = time.perf_counter()
    asr = EdgeTranscriber(bundle or None, threads=threads, options=TranscribeOptions(decoder=decoder))
    loaded = time.perf_counter()
    result = asr.transcribe(audio)
    done = time.perf_counter()
    warm = [asr.transcribe(audio).processing_time / result.duration for _ in range(2)]
    print(
        json.dumps(
            {
                "load_s": loaded - started,
                "rtf": (done - loaded) / result.duration,
                "rtf_warm": min(warm),
                "peak_rss_mb": peak_rss_kib() / 1024,
                "text": result.text,
            }
        )
    )


def measure(bundle: Optional[str], audio: Path, decoder: str, threads: int) -> Dict[str, float]:
    cmd = [sys.executable, __file__, "--child", bundle or "", str(audio), decoder, str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result: Dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def end_to_end(bundle: Optional[str], clip: Path, decoder: str, threads: int, cwd: str) -> float:
    walls: List[float] = []
    model = ["--model", bundle] if bundle else []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "edge_asr", "file", str(clip), "--decoder", decoder,
             "--threads", str(threads), *model],
            check=True, capture_output=True, cwd=cwd,
        )  # fmt: skip
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="bundle with a text decoder (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--nonspeech", type=Path, nargs="+", default=[], metavar="CSV",
        help="manifests of real non-speech clips (path column): count the clips each decoder writes text for",
    )  # fmt: skip
    args = parser.parse_args()
    nonspeech = nonspeech_clips(args.nonspeech)
    if args.model is not None and Path(args.model).exists():
        args.model = str(Path(args.model).resolve())  # the child processes run in other folders
    from edge_asr import EdgeTranscriber, TranscribeOptions
    from edge_asr.bundle import load_bundle

    bundle = load_bundle(args.model, verify=False)
    if bundle.metadata.decoder is None:
        raise SystemExit(f"{bundle.path}: no text decoder in this bundle")
    size_mb = sum(p.stat().st_size for p in bundle.path.iterdir() if p.is_file()) / 1e6
    print(f"bundle {bundle.path}: {size_mb:.1f} MB (target <= {TARGETS['size_mb']:g})")
    figures: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip10 = tiled_clip(10.0, Path(tmp) / "clip10.wav")
        clip5 = tiled_clip(5.0, Path(tmp) / "clip5.wav")
        for decoder in DECODERS:  # interleaved repeats: both see the same load on the machine
            figures[decoder] = {"rtf": 0.0, "rss_mb": 0.0}
        runs: Dict[str, List[Dict[str, float]]] = {d: [] for d in DECODERS}
        for _ in range(args.repeats):
            for decoder in DECODERS:
                runs[decoder].append(measure(args.model, clip10, decoder, args.threads))
        for decoder in DECODERS:
            figures[decoder] = {
                "rtf": statistics.median(r["rtf"] for r in runs[decoder]),
                "rtf_warm": statistics.median(r["rtf_warm"] for r in runs[decoder]),
                "rss_mb": statistics.median(r["peak_rss_mb"] for r in runs[decoder]),
                "load_s": statistics.median(r["load_s"] for r in runs[decoder]),
                "wall_5s": end_to_end(args.model, clip5, decoder, args.threads, tmp),
            }
        probe_texts = {}
        nonspeech_texts: Dict[str, List[str]] = {}
        for decoder in DECODERS:
            asr = EdgeTranscriber(
                args.model, threads=args.threads, options=TranscribeOptions(decoder=decoder)
            )
            for name, path in probes(Path(tmp)).items():
                probe_texts[(decoder, name)] = asr.transcribe(str(path)).text
            nonspeech_texts[decoder] = [asr.transcribe(str(path)).text for path in nonspeech]
    heading = f"measure (10 s clip, {args.threads} threads)"
    print(f"\n{heading:40} {'joint':>9} {'ctc':>9} {'target':>8}")
    for key, label in (("rtf", "RTF, first file of a process"), ("rtf_warm", "RTF, later files"),
                       ("rss_mb", "peak RSS, MB"), ("wall_5s", "5 s clip end to end, s"),
                       ("load_s", "model load, s")):  # fmt: skip
        target = TARGETS.get(key)
        met = "" if target is None else ("  met" if figures["joint"][key] <= target else "  NOT met")
        print(
            f"{label:40} {figures['joint'][key]:9.4f} {figures['ctc'][key]:9.4f} "
            f"{'-' if target is None else format(target, 'g'):>8}{met}"
        )
    print("\nprobes (must be empty):")
    for (decoder, name), text in probe_texts.items():
        print(f"  {decoder:5} {name:18} {text!r}  {'ok' if not text else 'NOT empty'}")
    if nonspeech:
        print(f"\nreal non-speech clips ({len(nonspeech)}; text written for them):")
        for decoder in DECODERS:
            wrote = [(p.name, t) for p, t in zip(nonspeech, nonspeech_texts[decoder]) if t]
            shown = ", ".join(f"{name}: {text!r}" for name, text in wrote)
            print(f"  {decoder:5} {len(wrote)} of {len(nonspeech)}{'  ' + shown if shown else ''}")
    asr = EdgeTranscriber(args.model, threads=args.threads, options=TranscribeOptions(decoder="joint"))
    for path in sorted(SAMPLES.glob("*.wav")):
        print(f"  {path.name}: {asr.transcribe(str(path)).text}")
    stats = asr.joint_stats
    print(
        f"joint search on the bundled samples: {stats.segments} segments, {stats.tokens} tokens, "
        f"{stats.gated} gated, {stats.hit_bound} hit the token bound"
    )


if __name__ == "__main__":
    main()
