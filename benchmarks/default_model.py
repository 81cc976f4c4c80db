"""The default model against its targets (issue 21: the v2 whisper-ctc default), on this machine.

    python benchmarks/default_model.py [--threads N] [--corpus data/corpus-v1]

Accuracy comes from the report that `scripts/package_default_model.py` stored in the bundle (the corpus
test split: voices never heard in training). Speed and memory are measured here: a 10 s clip (a bundled
sample tiled) in a child process as `edge-asr file` runs it, and a 5 s clip end to end through the real
command (process start, imports, model load, transcription), median of 5 runs. With --corpus (the
folder of the report's manifest), greedy CER and WER are also broken down per held-out voice. With a
language model in the bundle, the accuracy targets are judged on its evaluation (beam search with
the LM, the decoding `edge-asr file` uses), and speed includes the beam search.
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

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.bundle import DEFAULT_BUNDLE_DIR  # noqa: E402
from train.metrics import ErrorCounts, count_errors  # noqa: E402

SAMPLES = ROOT / "edge_asr" / "samples"
# Real speech is measured by benchmarks/real_dev.py (WER <= 20% on real-dev's sentence subsets and
# <= 35% on klettres-words with the shipped decoding); these are the synthetic-voice and device targets.
TARGETS: dict[str, float | None] = {
    "cer_greedy": 0.10,
    "cer": None,
    "wer": None,
    "int8_cer_cost": 0.005,
    "size_mb": 20.0,
    "rtf": 0.05,
    "rss_mb": 150.0,
    "wall_5s": 1.0,
}


def tiled_clip(seconds: float, path: Path) -> Path:
    first = sorted(SAMPLES.glob("*.wav"))[0]
    audio, rate = sf.read(first, dtype="float32")
    reps = int(np.ceil(seconds * rate / audio.size))
    sf.write(path, np.tile(audio, reps)[: int(seconds * rate)], rate)
    return path


def per_voice_errors(report: dict, variant: str, corpus: Path | None) -> dict[str, ErrorCounts] | None:
    """Errors of one variant per speaker, from the report's transcripts and the corpus' utterances.csv.

    The shipped report names its manifest without the build machine's folders ("corpus-v1/test.csv"),
    so the corpus folder is `corpus`, or the manifest's own folder when that is a path here."""
    folder = corpus if corpus is not None else Path(report["manifest"]).parent
    table = folder / "utterances.csv"
    if not table.is_file():
        return None
    with table.open(newline="", encoding="utf-8") as handle:
        speaker_of = {row["id"]: row["speaker"] for row in csv.DictReader(handle)}
    by_voice: dict[str, tuple[list[str], list[str]]] = {}
    for item in report["utterances"]:
        speaker = speaker_of.get(Path(item["path"]).stem, "unknown")
        refs, hyps = by_voice.setdefault(speaker, ([], []))
        refs.append(item["reference"])
        hyps.append(item[variant])
    return {speaker: count_errors(refs, hyps) for speaker, (refs, hyps) in sorted(by_voice.items())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--corpus", type=Path, help="the corpus folder of the report's manifest, for the per-voice table"
    )
    args = parser.parse_args()
    report = json.loads((DEFAULT_BUNDLE_DIR / "report.json").read_text())
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    size_mb = sum(p.stat().st_size for p in DEFAULT_BUNDLE_DIR.iterdir() if p.is_file()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        clip10 = tiled_clip(10.0, Path(tmp) / "clip10.wav")
        clip5 = tiled_clip(5.0, Path(tmp) / "clip5.wav")
        child = [sys.executable, str(ROOT / "benchmarks" / "runtime.py"), "--child", str(DEFAULT_BUNDLE_DIR)]
        runs = [
            json.loads(
                subprocess.run(
                    [*child, str(clip10), "1", str(args.threads)], check=True, capture_output=True, text=True
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(3)
        ]
        walls = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "edge_asr", "file", str(clip5), "--threads", str(args.threads)],
                check=True,
                capture_output=True,
                cwd=tmp,
            )
            walls.append(time.perf_counter() - started)
    rtf = statistics.median(r["rtf"] for r in runs)
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    wall = statistics.median(walls)
    bundle = json.loads((DEFAULT_BUNDLE_DIR / "bundle.json").read_text())
    lm_eval = bundle.get("extra", {}).get("language_model", {}).get("evaluation")
    # The accuracy that counts is the shipped decoding: beam search with the LM when the bundle has one.
    shipped = (lm_eval["cer_lm"], lm_eval["wer_lm"]) if lm_eval else (int8["cer"], int8["wer"])
    decoding = "int8, greedy"
    if lm_eval:
        decoding = "int8 + char & word LMs" if "cer_chars" in lm_eval else "int8 + LM"
    rows = [
        ("CER, held-out voices (int8, greedy)", int8["cer"], TARGETS["cer_greedy"]),
        (f"CER, held-out voices ({decoding})", shipped[0], TARGETS["cer"]),
        (f"WER, held-out voices ({decoding})", shipped[1], TARGETS["wer"]),
        ("CER int8 - fp32 (greedy)", int8["cer"] - fp32["cer"], TARGETS["int8_cer_cost"]),
        ("bundle size, MB", size_mb, TARGETS["size_mb"]),
        (f"RTF, 10 s clip ({decoding})", rtf, TARGETS["rtf"]),
        ("peak RSS, 10 s clip, MB", rss, TARGETS["rss_mb"]),
        ("5 s clip end to end, s", wall, TARGETS["wall_5s"]),
    ]
    print(
        f"default model: {report.get('utterances_count')} test utterances "
        f"({report.get('audio_seconds')} s); greedy CER fp32 {fp32['cer']:.4f} int8 {int8['cer']:.4f}, "
        f"WER fp32 {fp32['wer']:.4f} int8 {int8['wer']:.4f}"
    )
    if lm_eval:
        print(
            f"language model on {lm_eval['utterances']} test utterances: CER {lm_eval['cer_greedy']:.4f} -> "
            f"{lm_eval['cer_lm']:.4f}, WER {lm_eval['wer_greedy']:.4f} -> {lm_eval['wer_lm']:.4f}"
            + (
                f" (character LM alone: CER {lm_eval['cer_chars']:.4f}, WER {lm_eval['wer_chars']:.4f})"
                if "cer_chars" in lm_eval
                else ""
            )
        )
    print(f"{'measure':46} {'value':>9} {'target':>8}  met")
    for name, value, target in rows:
        if target is None:
            print(f"{name:46} {value:9.4f} {'-':>8}  -")
        else:
            print(f"{name:46} {value:9.4f} {target:8.3f}  {'yes' if value <= target else 'NO'}")
    voices = per_voice_errors(report, "int8", args.corpus)
    if voices is None:
        print(f"per-voice breakdown skipped: pass --corpus, the folder of {report['manifest']}")
        return
    print(f"\n{'held-out voice (int8, greedy)':32} {'utts':>5} {'CER':>7} {'WER':>7}")
    for speaker, counts in voices.items():
        print(f"{speaker:32} {counts.utterances:5d} {counts.cer:7.4f} {counts.wer:7.4f}")


if __name__ == "__main__":
    main()
