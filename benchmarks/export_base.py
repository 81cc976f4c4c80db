"""wav2vec2-base (random weights) on 10 s of audio: PyTorch eager fp32 vs ORT fp32 vs ORT int8.

One run exports the model with quantize/'s exporter, quantizes it with the default recipe and a few
alternatives, then measures every variant: real-time factor (median of --repeats interleaved rounds in
this one process, after a warm-up), speed-up over PyTorch eager, file size, and (each in a fresh
child process, so each figure is its own) peak RSS and load time. CPU heavy: run it niced, e.g.

    nice python benchmarks/export_base.py --threads 2 --json /tmp/export_base.json

--quick uses a tiny model to check that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


@dataclass
class Variant:
    """One thing to measure: a runtime ("torch" or "ort"), a model file and session settings."""

    name: str
    runtime: str
    path: Path
    level: str = "all"
    arena: bool = False
    threads: Optional[int] = None
    note: str = ""


def _peak_rss_mb() -> float:
    from edge_asr.sysinfo import peak_rss_kib

    return peak_rss_kib() / 1024.0


def _signal(seconds: float, rate: int = 16000):
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)[
        None, :
    ]


def load_runner(args: argparse.Namespace) -> Callable[[], None]:
    """Load one variant (torch folder or ONNX file) and return a function that runs it on the signal."""
    import numpy as np

    x = _signal(args.seconds)
    if args.runtime == "torch":
        import torch
        from transformers import Wav2Vec2ForCTC

        torch.set_num_threads(args.threads)
        model = Wav2Vec2ForCTC.from_pretrained(args.path, attn_implementation="eager").eval()
        tensor = torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))

        def run() -> None:
            with torch.inference_mode():
                torch.log_softmax(model(tensor).logits, -1)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel(LEVELS[args.level])
        options.enable_cpu_mem_arena = args.arena
        if args.save_optimized:
            options.optimized_model_filepath = args.save_optimized
        session = ort.InferenceSession(args.path, options, providers=["CPUExecutionProvider"])
        feeds = {"input_values": x}
        if any(i.name == "input_lengths" for i in session.get_inputs()):
            feeds["input_lengths"] = np.array([x.shape[1]], dtype=np.int64)

        def run() -> None:
            session.run(None, feeds)

    return run


def child(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs in a fresh process: load one variant, run it twice, report peak RSS and load time."""
    started = time.perf_counter()
    run = load_runner(args)
    load = time.perf_counter() - started
    run()
    run()
    return {"peak_rss_mb": _peak_rss_mb(), "load_seconds": load}


def time_interleaved(variants: List[Variant], args: argparse.Namespace) -> List[List[float]]:
    """Seconds per run of each variant, in rounds that visit every variant once.

    All variants live in this one process and take turns, so a change in the machine's load (it is
    shared) hits them alike instead of skewing whichever variant ran during the busy minute.
    """
    runners = []
    for variant in variants:
        opts = argparse.Namespace(**vars(args))
        opts.runtime, opts.path, opts.level = variant.runtime, str(variant.path), variant.level
        opts.arena, opts.threads, opts.save_optimized = variant.arena, variant.threads or args.threads, ""
        runner = load_runner(opts)
        runner()  # warm-up
        runners.append(runner)
    times: List[List[float]] = [[] for _ in variants]
    for round_index in range(args.repeats):
        for i, runner in enumerate(runners):
            if variants[i].runtime == "torch":
                import torch

                torch.set_num_threads(variants[i].threads or args.threads)
            t0 = time.perf_counter()
            runner()
            times[i].append(time.perf_counter() - t0)
        print(f"  round {round_index + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    return times


def measure(variant: Variant, args: argparse.Namespace, save_optimized: str = "") -> Dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", variant.runtime, str(variant.path),
        "--seconds", str(args.seconds),
        "--threads", str(variant.threads or args.threads), "--level", variant.level,
    ]  # fmt: skip
    if variant.arena:
        command.append("--arena")
    if save_optimized:
        command += ["--save-optimized", save_optimized]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(work: Path, quick: bool) -> Dict[str, Any]:
    """Random model -> ONNX fp32 (+ parity) -> int8 variants. Returns paths and step timings."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from quantize.export import export_onnx
    from quantize.int8 import Int8Options, quantize_int8
    from quantize.parity import check_parity
    from quantize.source import load_source
    from quantize.synthetic import BASE_CONFIG, TINY_CONFIG, make_random_model

    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    folder = make_random_model(work / "hf", config=TINY_CONFIG if quick else BASE_CONFIG, head_scale=10.0)
    source = load_source(str(folder))
    timings["create+load"] = time.perf_counter() - t0
    fp32 = work / "model.onnx"
    timings["export"] = export_onnx(source, fp32).seconds
    t0 = time.perf_counter()
    parity = check_parity(source, fp32)
    timings["parity"] = time.perf_counter() - t0
    paths = {"hf": folder, "fp32": fp32}
    recipes = {
        "int8": Int8Options(),
        "int8-per-tensor": Int8Options(per_channel=False),
        "int8-quint8": Int8Options(weight_type="QUInt8"),
        "int8-preprocess": Int8Options(preprocess=True),
        "int8-matmul+conv": Int8Options(op_types=("MatMul", "Conv")),
    }
    for name, recipe in recipes.items():
        t0 = time.perf_counter()
        try:
            quantize_int8(fp32, work / f"{name}.onnx", recipe)
            paths[name] = work / f"{name}.onnx"
        except Exception as exc:  # an alternative recipe failing is a finding, not a crash
            print(f"{name}: {exc}", file=sys.stderr)
        timings[name] = time.perf_counter() - t0
    # Graph optimized offline (basic level: constant folding, no CPU-specific fusions) then quantized.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(work / "fp32-basic.onnx")
    ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
    quantize_dynamic(
        str(work / "fp32-basic.onnx"),
        str(work / "int8-after-basic-opt.onnx"),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    paths["int8-after-basic-opt"] = work / "int8-after-basic-opt.onnx"
    return {"paths": paths, "timings": timings, "parity": parity.to_dict()}


def load_built(work: Path) -> Dict[str, Any]:
    """The models of an earlier run in `work` (--reuse), without timings."""
    paths: Dict[str, Path] = {"hf": work / "hf", "fp32": work / "model.onnx"}
    for path in sorted(work.glob("int8*.onnx")):
        if path.stem != "int8-ort-optimized":
            paths[path.stem] = path
    return {"paths": paths, "timings": {}, "parity": {"max_abs_diff": None, "agreement": None}}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="export_base-"))
    work.mkdir(parents=True, exist_ok=True)
    built = load_built(work) if args.reuse else build(work, args.quick)
    paths = built["paths"]
    variants: List[Variant] = [
        Variant("pytorch eager fp32", "torch", paths["hf"]),
        Variant("ort fp32", "ort", paths["fp32"]),
        Variant("ort int8 (default recipe)", "ort", paths["int8"]),
        Variant("ort int8, 1 thread", "ort", paths["int8"], threads=1),
        Variant("ort int8, arena on", "ort", paths["int8"], arena=True),
        Variant("ort int8, level basic", "ort", paths["int8"], level="basic"),
        Variant("ort int8, level extended", "ort", paths["int8"], level="extended"),
    ]
    variants += [Variant(f"ort {name}", "ort", paths[name]) for name in paths if name.startswith("int8-")]
    # The default int8 model saved after onnxruntime's own optimization, then loaded without it.
    saved = work / "int8-ort-optimized.onnx"
    measure(Variant("save", "ort", paths["int8"]), args, save_optimized=str(saved))
    variants.append(Variant("ort int8, pre-optimized file, level disable", "ort", saved, level="disable"))
    results = []
    for variant in variants:  # memory first, each in a fresh process
        figures = measure(variant, args)
        figures.update(name=variant.name, size_mb=round(variant_size(variant.path) / 1e6, 1))
        results.append(figures)
    for figures, times in zip(results, time_interleaved(variants, args)):
        figures["rtf"] = statistics.median(times) / args.seconds
        figures["rtf_min"] = min(times) / args.seconds
        print(
            f"  {figures['name']}: RTF {figures['rtf']:.4f} (min {figures['rtf_min']:.4f})", file=sys.stderr
        )
    eager = results[0]["rtf"]
    fp32 = results[1]["rtf"]
    for r in results:
        r["x_vs_eager"] = round(eager / r["rtf"], 2)
        r["x_vs_ort_fp32"] = round(fp32 / r["rtf"], 2)
    return {
        "model": "wav2vec2-base architecture, random weights" if not args.quick else "tiny",
        "seconds": args.seconds,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "build_seconds": {k: round(v, 1) for k, v in built["timings"].items()},
        "parity": {k: built["parity"][k] for k in ("max_abs_diff", "agreement")},
        "results": results,
    }


def variant_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return path.stat().st_size


def markdown(data: Dict[str, Any]) -> str:
    lines = [
        f"{data['model']}, {data['seconds']} s audio, {data['threads']} thread(s)",
        f"build seconds: {data['build_seconds']}",
        f"parity fp32: {data['parity']}",
        "",
        "| variant | RTF | x eager | x ORT fp32 | size MB | peak RSS MB | load s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        lines.append(
            f"| {r['name']} | {r['rtf']:.4f} | {r['x_vs_eager']} | {r['x_vs_ort_fp32']} | {r['size_mb']} | "
            f"{r['peak_rss_mb']:.0f} | {r['load_seconds']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (each runs every variant)")
    parser.add_argument("--reuse", action="store_true", help="reuse the models already in --work")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny model: check the script, not speed")
    parser.add_argument("--work", default="", help="folder for the models (default: a temp folder)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=["torch", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--level", default="all", choices=list(LEVELS), help=argparse.SUPPRESS)
    parser.add_argument("--arena", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-optimized", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        args.runtime = args.child
        print(json.dumps(child(args)))
        return 0
    data = run(args)
    print(markdown(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
