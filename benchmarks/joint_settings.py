"""Pick joint decoding's CTC weight and beam on synthetic validation voices (never on real recordings).

    python benchmarks/joint_settings.py --manifest work/data/valid-sentences/valid.csv \
        --manifest work/data/valid-short/valid.csv [--model BUNDLE] [--weights 0.1,0.2,0.3,0.5]
        [--beams 1,4] [--limit N] [--threads N] [--json OUT]

Each file runs the encoder once (joint decoding's windows, as `edge-asr file` runs them); every
setting then decodes the same windows, so the figures differ by the search alone. Scored as
benchmarks/real_dev.py scores (numbers spelled on both sides, the bundle's normalization, corpus-level
rates), per manifest and pooled. The setting with the lowest pooled WER is printed last (ties: the
faster one); write it into the bundle's decoder section (ctc_weight, beam_size).

Also counts what went wrong per setting: segments that hit the token bound (a decoder that loops),
and decode seconds per audio second (the search alone, not the encoder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr import EdgeTranscriber, TranscribeOptions  # noqa: E402
from edge_asr.attention import JointDecoder, finish_decoding  # noqa: E402
from edge_asr.audio import read_audio  # noqa: E402
from edge_asr.spoken import spell_numbers  # noqa: E402
from quantize.manifest import read_manifest  # noqa: E402
from train.metrics import ErrorCounts, count_errors  # noqa: E402

Window = Tuple[np.ndarray, int, int, int]  # rows, first frame, core start, core end


@dataclass
class SettingScore:
    weight: float
    beam: int
    counts: Dict[str, ErrorCounts] = field(default_factory=dict)
    decode_seconds: float = 0.0
    hit_bound: int = 0

    def add(self, manifest: str, counts: ErrorCounts) -> None:
        self.counts[manifest] = self.counts.get(manifest, ErrorCounts()) + counts

    def pooled(self) -> ErrorCounts:
        total = ErrorCounts()
        for counts in self.counts.values():
            total = total + counts
        return total


def windows_of(asr: EdgeTranscriber, path: str) -> Tuple[List[Window], float]:
    """The joint runner's windows of one file, and its duration."""
    samples = read_audio(path, asr.sample_rate)
    runner = asr.new_runner(rows=True)
    windows: List[Window] = []
    for first, core in [*runner.push(samples), *runner.finish()]:
        assert runner.last_window is not None
        windows.append((runner.last_window, runner.last_window_first, first, first + core.shape[0]))
    return windows, samples.size / asr.sample_rate


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", required=True, type=Path, help="path,text CSV (repeatable)")
    p.add_argument("--model", help="bundle with a text decoder (default: the shipped model)")
    p.add_argument("--weights", default="0.1,0.2,0.3,0.4,0.5", help="CTC weights to try")
    p.add_argument("--beams", default="1,4", help="beam sizes to try")
    p.add_argument("--limit", type=int, help="first N utterances of each manifest")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    asr = EdgeTranscriber(args.model, threads=args.threads, options=TranscribeOptions(decoder="joint"))
    assert asr.attention is not None
    meta = asr.metadata
    norm = meta.text_normalization
    settings = [
        SettingScore(float(w), int(b)) for b in args.beams.split(",") for w in args.weights.split(",")
    ]
    audio_seconds = 0.0
    for manifest in args.manifest:
        items = read_manifest(manifest, args.limit)
        print(f"{manifest}: {len(items)} utterances", flush=True)
        for item in items:
            windows, seconds = windows_of(asr, str(item.path))
            audio_seconds += seconds
            reference = spell_numbers(item.text)
            for setting in settings:
                decoder = JointDecoder(
                    asr.attention, asr.vocabulary, norm, meta.frame_seconds, setting.weight, setting.beam
                )
                started = time.perf_counter()
                for window in windows:
                    decoder.push_window(*window)
                text, _, _ = finish_decoding(decoder, asr.vocabulary, meta.frame_seconds)
                setting.decode_seconds += time.perf_counter() - started
                setting.hit_bound += decoder.stats.hit_bound
                setting.add(manifest.parent.name, count_errors([reference], [spell_numbers(text)], norm))
    print(
        f"\n{'weight':>6} {'beam':>4}  "
        + "  ".join(f"{m[:22]:>22}" for m in settings[0].counts)
        + f"  {'pooled':>14}  bound  decode s/s"
    )
    rows = []
    for s in settings:
        cells = "  ".join(f"{c.cer:.3f} / {c.wer:.3f}".rjust(22) for c in s.counts.values())
        pooled = s.pooled()
        rtf = s.decode_seconds / max(audio_seconds, 1e-9)
        figures = f"{pooled.cer:.3f} / {pooled.wer:.3f}  {s.hit_bound:>5}  {rtf:.4f}"
        print(f"{s.weight:>6g} {s.beam:>4}  {cells}  {figures}")
        rows.append({"ctc_weight": s.weight, "beam": s.beam, "wer": pooled.wer, "cer": pooled.cer,
                     "per_manifest": {m: {"cer": c.cer, "wer": c.wer} for m, c in s.counts.items()},
                     "hit_bound": s.hit_bound, "decode_rtf": rtf})  # fmt: skip
    best = min(settings, key=lambda s: (round(s.pooled().wer, 3), s.beam, s.decode_seconds))
    print(f"\npicked: ctc_weight {best.weight:g}, beam {best.beam} (pooled WER {best.pooled().wer:.3f})")
    if args.json:
        picked = {"ctc_weight": best.weight, "beam": best.beam}
        report = {"settings": rows, "audio_seconds": audio_seconds, "picked": picked}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
