"""Transcribe an evaluation set with one bundle variant in a fresh process, through edge_asr only.

Run as `python -m quantize.measure` by `run_variant`: each variant gets its own process so that its
peak RSS is its own (onnxruntime's arena and the other variant's weights do not add up), and the
process imports what the device imports (edge_asr, numpy, onnxruntime) and never torch. It writes a
JSON result and the per-frame greedy token ids (for agreement figures) into files given on the
command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.sysinfo import peak_rss_kib

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class VariantRun:
    """What one variant did on the evaluation set."""

    variant: str
    model_file: str
    threads: int
    load_seconds: float
    audio_seconds: float
    processing_seconds: float
    peak_rss_mb: float
    transcripts: List[str]
    frame_ids: List[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def rtf(self) -> float:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def summary(self) -> Dict[str, object]:
        return {
            "model_file": self.model_file,
            "threads": self.threads,
            "load_seconds": round(self.load_seconds, 3),
            "audio_seconds": round(self.audio_seconds, 3),
            "processing_seconds": round(self.processing_seconds, 3),
            "rtf": round(self.rtf, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def _peak_rss_mb() -> float:
    return peak_rss_kib() / 1024.0


def _measure(
    bundle: Path, variant: str, paths: Sequence[str], threads: Optional[int]
) -> Tuple[Dict[str, object], List[np.ndarray]]:
    """The result fields of a VariantRun, and the per-frame argmax ids of each file."""
    from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions

    started = time.perf_counter()
    # The single graph of the variant: the report compares the bundle's fp32 and int8 models; split
    # graphs (format 2) were checked against these at export (quantize.parity.check_split_parity).
    # CTC decoding (not a text decoder's): the report compares the variants' CTC graphs.
    transcriber = EdgeTranscriber(
        bundle,
        quantized=variant == "int8",
        threads=threads,
        front_end_cache=False,
        options=TranscribeOptions(decoder="ctc"),
    )
    load_seconds = time.perf_counter() - started
    wanted = transcriber.metadata.models[variant]
    if Path(transcriber.model_path).name != wanted:
        raise SystemExit(
            f"{bundle}: variant {variant} resolved to {transcriber.model_path}, expected {wanted}"
        )
    transcriber.transcribe(paths[0])  # warm-up: first-run allocations are not what a device sees per file
    texts, audio, busy = [], 0.0, 0.0
    for path in paths:
        transcript = transcriber.transcribe(path)
        texts.append(transcript.text)
        audio += transcript.duration
        busy += transcript.processing_time
    peak = _peak_rss_mb()
    ids: List[np.ndarray] = []
    for path in paths:  # after the RSS reading: the same windowed path, keeping per-frame argmax ids
        chunks = transcriber.log_probs(path)
        ids.append(np.concatenate([lp.argmax(-1) for lp in chunks]).astype(np.int32))
    result: Dict[str, object] = {
        "variant": variant,
        "model_file": wanted,
        "threads": transcriber.model.threads,
        "load_seconds": load_seconds,
        "audio_seconds": audio,
        "processing_seconds": busy,
        "peak_rss_mb": peak,
        "transcripts": texts,
    }
    return result, ids


DEVICE_VARIANTS = ("fp32", "int8")


def variant_view(bundle: Path, variant: str, folder: Path) -> Path:
    """A bundle in `folder` whose int8 graph is `variant`'s file, hard-linked (or copied) from `bundle`.

    The device runs a bundle's "fp32" or "int8" graph only; another variant (the dynamic-only int8
    graph measured beside int8-conv) goes through the same code path as this view's int8 graph.
    """
    from edge_asr.bundle import load_bundle, write_bundle

    meta = load_bundle(bundle, verify=False).metadata
    chosen = meta.models[variant]
    others = set(meta.models.values()) - {chosen}
    folder.mkdir(parents=True, exist_ok=True)
    for name in meta.files:
        if name not in others:  # the LMs come along, so decoding is the same as for the other variants
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            # A bundle refuses symbolic links; a hard link costs nothing (the folders share a disk).
            try:
                os.link(bundle / name, folder / name)
            except OSError:
                shutil.copyfile(bundle / name, folder / name)
    meta.models = {"int8": chosen}
    split = meta.split
    if split is not None:  # its split graphs too (the measurement runs the single graph, but a bundle
        # names both graphs of each variant it has)
        meta.split = replace(
            split, front_end={"int8": split.front_end[variant]}, encoder={"int8": split.encoder[variant]}
        )
    write_bundle(folder, meta)
    return folder


def run_variant(
    bundle: Path, variant: str, paths: Sequence[Path], scratch: Path, threads: Optional[int] = None
) -> VariantRun:
    """Measure one variant in a child process; raises QuantizeError with its stderr on failure."""
    from .errors import QuantizeError

    scratch.mkdir(parents=True, exist_ok=True)
    if variant not in DEVICE_VARIANTS:
        view = variant_view(bundle, variant, scratch / f"view-{variant}")
        run = run_variant(view, "int8", paths, scratch / f"measure-{variant}", threads)
        run.variant = variant
        return run
    items = scratch / f"{variant}.items.json"
    items.write_text(json.dumps([str(p) for p in paths]), encoding="utf-8")
    out, ids = scratch / f"{variant}.result.json", scratch / f"{variant}.ids.npz"
    command = [sys.executable, "-m", "quantize.measure", str(bundle), variant, str(items), str(out), str(ids)]
    if threads:
        command += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise QuantizeError(
            f"measuring the {variant} model with edge_asr failed (exit {done.returncode}):\n{tail}"
        )
    data = json.loads(out.read_text(encoding="utf-8"))
    with np.load(ids) as arrays:
        frame_ids = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return VariantRun(frame_ids=frame_ids, **data)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m quantize.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("variant", choices=["fp32", "int8"])
    parser.add_argument("items", type=Path, help="JSON list of audio paths")
    parser.add_argument("out", type=Path, help="where to write the JSON result")
    parser.add_argument("ids", type=Path, help="where to write per-frame token ids (.npz)")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    paths = json.loads(args.items.read_text(encoding="utf-8"))
    result, ids = _measure(args.bundle, args.variant, paths, args.threads)
    np.savez(args.ids, *ids)
    args.out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
