"""wav2vec2-base (random weights), 10 s of audio: PyTorch eager fp32 vs ORT fp32 vs int8 vs int8-conv.

One process builds the graphs (quantize/'s exporter, the dynamic int8 recipe, and `--int8-conv`'s static
Conv recipe with a few variations), then times them side by side at each thread count: every round runs
every variant once, so a change in the shared machine's load hits them alike; the median of --repeats
rounds counts. The model has random weights, so the accuracy rule has nothing to judge: only the GEMM
depth rule picks layers here (accuracy on a trained model: `python -m quantize convert --int8-conv
--eval`, see docs/benchmarks.md).

    nice python benchmarks/int8_conv.py --threads 1,2 --json /tmp/int8_conv.json

--quick uses a tiny model to check that the script works.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALIBRATION_CLIPS = 8


def _signal(seconds: float, seed: int, rate: int = 16000):
    from quantize.parity import probe_signal

    return probe_signal(int(seconds * rate), rate, seed)


def build(work: Path, quick: bool) -> Dict[str, Path]:
    """Random model -> ONNX fp32 -> int8 (dynamic) and int8-conv variants; returns name -> path."""
    from quantize.export import export_onnx
    from quantize.int8 import Int8Options, quantize_int8
    from quantize.int8_conv import ConvInt8Options, quantize_int8_conv
    from quantize.source import load_source
    from quantize.synthetic import BASE_CONFIG, TINY_CONFIG, make_random_model

    folder = make_random_model(work / "hf", config=TINY_CONFIG if quick else BASE_CONFIG, head_scale=10.0)
    fp32 = work / "model.onnx"
    export_onnx(load_source(str(folder)), fp32)
    paths = {"pytorch eager fp32": folder, "ort fp32": fp32, "int8 (dynamic MatMul)": work / "int8.onnx"}
    quantize_int8(fp32, paths["int8 (dynamic MatMul)"], Int8Options())
    audio = [_signal(3.0 + i, seed=i) for i in range(CALIBRATION_CLIPS)]
    recipes = {
        "int8-conv (the recipe)": ConvInt8Options(),
        "int8-conv, first conv int8 too": ConvInt8Options(min_depth=0),
        "int8-conv, feature encoder only": ConvInt8Options(nodes=("feature_extractor",)),
        "int8-conv, QOperator format": ConvInt8Options(quant_format="QOperator"),
        "int8-conv, int8 activations": ConvInt8Options(activation_type="QInt8"),
    }
    for index, (name, recipe) in enumerate(recipes.items()):
        path = work / f"int8conv-{index}.onnx"
        started = time.perf_counter()
        quantize_int8_conv(fp32, path, audio, recipe, Int8Options())
        print(f"  built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        paths[name] = path
    return paths


def runner(path: Path, threads: int, seconds: float) -> Callable[[], None]:
    """Load one variant (a model folder for PyTorch, else an ONNX file) and return a function running it."""
    import numpy as np

    x = _signal(seconds, seed=99)[None, :]
    if path.is_dir():
        import torch
        from transformers import Wav2Vec2ForCTC

        model = Wav2Vec2ForCTC.from_pretrained(path, attn_implementation="eager").eval()
        tensor = torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))

        def run_torch() -> None:
            torch.set_num_threads(threads)  # set per call: the variants share this process
            with torch.inference_mode():
                torch.log_softmax(model(tensor).logits, -1)

        return run_torch
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"input_values": x, "input_lengths": np.array([x.shape[1]], dtype=np.int64)}

    def run_ort() -> None:
        session.run(None, feeds)

    return run_ort


def time_side_by_side(paths: Dict[str, Path], threads: int, args: argparse.Namespace) -> Dict[str, float]:
    """Median seconds per run of each variant, measured in interleaved rounds."""
    runs = {name: runner(path, threads, args.seconds) for name, path in paths.items()}
    for run in runs.values():
        run()  # warm-up
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for round_index in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
        print(f"  {threads} thread(s): round {round_index + 1}/{args.repeats}", file=sys.stderr, flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def size_mb(path: Path) -> float:
    files = list(path.glob("*.safetensors")) if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def run(args: argparse.Namespace) -> Dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="int8_conv-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = build(work, args.quick)
    rows = []
    for threads in args.threads:
        seconds = time_side_by_side(paths, threads, args)
        eager, fp32 = seconds["pytorch eager fp32"], seconds["ort fp32"]
        for name, value in seconds.items():
            rows.append(
                {
                    "variant": name,
                    "threads": threads,
                    "seconds": round(value, 4),
                    "x_eager": round(eager / value, 2),
                    "x_ort_fp32": round(fp32 / value, 2),
                    "size_mb": round(size_mb(paths[name]), 1),
                }
            )
    return {
        "model": "tiny (script check)" if args.quick else "wav2vec2-base architecture, random weights",
        "audio_seconds": args.seconds,
        "repeats": args.repeats,
        "rows": rows,
    }


def markdown(data: Dict[str, Any]) -> str:
    lines = [
        f"{data['model']}, {data['audio_seconds']} s audio, median of {data['repeats']} interleaved rounds",
        "",
        "| variant | threads | seconds | x eager | x ORT fp32 | size MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['seconds']:.3f} | {r['x_eager']} | {r['x_ort_fp32']} | "
            f"{r['size_mb']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default: 10)")
    parser.add_argument(
        "--threads",
        type=lambda text: [int(t) for t in text.split(",")],
        default=[1, 2],
        help="comma-separated thread counts (default: 1,2)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (each runs every variant)")
    parser.add_argument("--quick", action="store_true", help="tiny model: check the script, not speed")
    parser.add_argument("--work", default="", help="folder for the models (default: a temp folder)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data = run(args)
    print(markdown(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
