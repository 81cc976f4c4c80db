"""`python -m quantize`: turn a CTC checkpoint into an edge-asr bundle and measure what int8 costs.

Exit status: 0 success; 1 the int8 accuracy guard failed (the bundle is written, int8 marked not
recommended); 2 bad input or a failed step (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .errors import GuardError, QuantizeError

log = logging.getLogger("quantize")

EXAMPLES = """examples:
  python -m quantize convert --model runs/tiny/model --out bundles/tiny --eval data/dev.csv
  python -m quantize export --model runs/tiny/model --out bundles/tiny-fp32
  python -m quantize quantize --bundle bundles/tiny-fp32 --out bundles/tiny-gemm --int8-ops MatMul,Gemm
  python -m quantize convert --model runs/tiny/model --out bundles/tiny-conv --eval data/dev.csv \
      --int8-conv --calibration data/valid.csv
  python -m quantize report --bundle bundles/tiny --model runs/tiny/model --eval dev.csv --out rep/
  python -m quantize lm --bundle bundles/tiny --text data/train.csv --tune data/dev.csv --eval data/test.csv
  python -m quantize decoder-inputs --bundle bundles/whisper-joint   # a format-3 bundle -> format 4
"""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face CTC model folder (from train/) or hub name")
    p.add_argument("--name", default="", help="the bundle's human name (default: the model folder's name)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--parity-atol",
        type=float,
        default=1e-3,
        help="largest allowed |log-prob difference| between ONNX and PyTorch (default: 1e-3)",
    )
    p.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="wav2vec2 family: write the single graph only, not also the front-end and encoder graphs "
        "that let the device cache front-end features (a smaller bundle; see docs/streaming.md)",
    )


def _add_out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def _add_eval_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--eval",
        dest="eval_manifest",
        type=Path,
        required=required,
        help="evaluation manifest: CSV path,text; LJSpeech metadata.csv; or JSONL {path, text}",
    )
    p.add_argument("--eval-limit", type=int, default=None, help="use only the first N utterances")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads when evaluating")


def _add_int8_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("int8 recipe (defaults: the measured recipe)")
    g.add_argument(
        "--int8-ops", default="MatMul", help="comma-separated op types to quantize (default: MatMul)"
    )
    g.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per channel")
    g.add_argument("--weight-type", choices=["QInt8", "QUInt8"], default="QInt8")
    g.add_argument("--reduce-range", action="store_true", help="7-bit weights (older CPUs without VNNI)")
    g.add_argument(
        "--quantize-activation-matmuls",
        action="store_true",
        help="also quantize MatMuls of two activations (attention scores)",
    )
    g.add_argument("--preprocess", action="store_true", help="run onnxruntime's quant_pre_process first")
    g.add_argument(
        "--max-cer-increase",
        type=float,
        default=0.01,
        help="fail when CER(int8) - CER(fp32) exceeds this, absolute (default 0.01 = 1 point); "
        "needs --eval; a negative value never passes",
    )
    g.add_argument("--no-guard", action="store_true", help="report the int8 cost but never fail on it")
    g.add_argument(
        "--int8-conv",
        action="store_true",
        help="also quantize the Conv layers (feature encoder, positional conv) statically, calibrated on "
        "--calibration; a layer whose int8 costs accuracy, or would run slower, stays float",
    )
    g.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="--int8-conv: manifest (CSV path,text) of a few hundred utterances like the model's input, "
        "to calibrate on; not the --eval set",
    )
    g.add_argument(
        "--calibration-limit", type=int, default=300, help="--int8-conv: first N utterances (default: 300)"
    )
    g.add_argument(
        "--conv-max-layer-cer-increase",
        type=float,
        default=0.002,
        help="--int8-conv: keep in float a Conv layer whose int8 alone raises greedy CER on the first 100 "
        "calibration utterances by more than this, absolute (default 0.002 = 0.2 points)",
    )
    g.add_argument(
        "--conv-keep-float",
        default="",
        help="--int8-conv: comma-separated Conv node names (or parts of them) to keep in float",
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m quantize",
        description="Export a CTC checkpoint (wav2vec2 family or whisper-ctc) to an edge-asr model bundle "
        "(ONNX fp32 + int8), check it against PyTorch, and report what int8 costs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="export + parity + int8 (+ evaluation report) -> bundle")
    _add_model_args(p)
    _add_out_args(p)
    _add_eval_args(p)
    _add_int8_args(p)
    p.add_argument("--no-int8", action="store_true", help="write the fp32 model only")
    p.add_argument(
        "--decoder",
        metavar="WHISPER",
        help="whisper-ctc only: also ship this Whisper checkpoint's text decoder for joint CTC/attention "
        "decoding (python -m train.whisper_import --include-decoder writes one); the encoder's checkpoint",
    )

    p = sub.add_parser("export", help="export + parity -> fp32-only bundle (convert --no-int8)")
    _add_model_args(p)
    _add_out_args(p)
    _add_eval_args(p)

    p = sub.add_parser("quantize", help="add an int8 twin to an existing bundle, written as a new bundle")
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder holding model.onnx")
    _add_out_args(p)
    _add_int8_args(p)

    p = sub.add_parser("report", help="fp32 vs int8 report of an existing bundle (needs the PyTorch model)")
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder with fp32 and int8 models")
    p.add_argument("--model", required=True, help="the Hugging Face model the bundle was made from")
    p.add_argument("--out", required=True, type=Path, help="folder for report.json/.md/.png")
    _add_eval_args(p, required=True)
    p.add_argument("--max-cer-increase", type=float, default=0.01, help="guard, as for convert")

    p = sub.add_parser(
        "decoder-inputs",
        help="give a bundle's text decoder one cross input per layer (format 4), in place: the same "
        "results, faster joint decoding",
    )
    p.add_argument("--bundle", required=True, type=Path, help="a bundle with a text decoder (format 3)")

    p = sub.add_parser("lm", help="build character and word n-gram LMs from text and add them to a bundle")
    p.add_argument("--bundle", required=True, type=Path, help="the bundle to add the LM to")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text",
        nargs="+",
        type=Path,
        help="sentences: .txt (one per line, .txt.gz too) or manifests (CSV path,text; metadata.csv; JSONL)",
    )
    source.add_argument("--arpa", type=Path, help="import this character ARPA LM (.arpa or .arpa.gz) instead")
    p.add_argument(
        "--out", type=Path, default=None, help="write a new bundle here (default: update --bundle in place)"
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--order", type=int, default=6, help="longest n-gram, in characters (default: 6)")
    p.add_argument(
        "--min-count",
        type=int,
        default=2,
        help="drop character 3-grams and longer seen fewer times (default: 2)",
    )
    p.add_argument(
        "--word-order",
        type=int,
        default=3,
        help="longest n-gram of the word LM built from --text beside the character LM; 0: none (default: 3)",
    )
    p.add_argument(
        "--word-min-count",
        type=int,
        default=2,
        help="drop word 2-grams and longer seen fewer times; every word stays known (default: 2)",
    )
    p.add_argument(
        "--word-list",
        dest="word_lists",
        nargs="+",
        type=Path,
        default=[],
        help="files of words, one a line (e.g. /usr/share/dict/american-english), that the word LM knows "
        "beyond --text's, each as a word seen once",
    )
    p.add_argument("--beam-size", type=int, default=8, help="beam the device uses (default: 8)")
    p.add_argument(
        "--jobs",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes decoding --tune and --eval manifests (default: the CPUs, at most 8)",
    )
    p.add_argument(
        "--tune",
        dest="tune_manifest",
        type=Path,
        default=None,
        help="manifest to pick the LM weights, bonus and unknown-word penalty on (voices/text not in --text)",
    )
    p.add_argument(
        "--tune-limit", type=int, default=200, help="tune on the first N utterances (default: 200)"
    )
    _add_eval_args(p)
    return parser.parse_args(argv)


def _int8_options(args: argparse.Namespace):
    from .int8 import Int8Options

    ops = [o.strip() for o in args.int8_ops.split(",") if o.strip()]
    if not ops:
        raise QuantizeError("--int8-ops names no op type")
    return Int8Options(
        op_types=tuple(ops),
        per_channel=not args.per_tensor,
        weight_type=args.weight_type,
        reduce_range=args.reduce_range,
        const_b_only=not args.quantize_activation_matmuls,
        preprocess=args.preprocess,
    )


def _conv_options(args: argparse.Namespace):
    """The --int8-conv options, or None without --int8-conv."""
    from .int8_conv import ConvInt8Options

    if not args.int8_conv:
        if args.calibration is not None:
            raise QuantizeError("--calibration is only used with --int8-conv; add --int8-conv or drop it")
        return None
    if args.calibration is None:
        raise QuantizeError(
            "--int8-conv needs --calibration MANIFEST: a CSV path,text of a few hundred utterances like the "
            "model's input (e.g. the validation set), to measure activation ranges on"
        )
    if "Conv" in [o.strip() for o in args.int8_ops.split(",")]:
        raise QuantizeError("--int8-conv quantizes Conv statically; drop Conv from --int8-ops")
    return ConvInt8Options(
        calibration=args.calibration,
        calibration_limit=args.calibration_limit,
        max_layer_cer_increase=args.conv_max_layer_cer_increase,
        keep_float=tuple(n.strip() for n in args.conv_keep_float.split(",") if n.strip()),
    )


def _progress(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; returns the exit status (raises QuantizeError for bad input)."""
    say = _progress(args.quiet)
    started = time.perf_counter()
    if args.command == "decoder-inputs":
        from .decoder import split_bundle_cross_inputs

        done = "now reads" if split_bundle_cross_inputs(args.bundle) else "already reads"
        print(f"{args.bundle}: the text decoder {done} its cross inputs one per layer (format 4)")
        return 0
    if args.command in ("convert", "export"):
        from .convert import ConvertOptions, convert
        from .export import ExportOptions
        from .parity import ParityOptions

        int8 = args.command == "convert" and not args.no_int8
        if args.command == "convert" and args.no_int8 and args.int8_conv:
            raise QuantizeError("--int8-conv makes the int8 graph; drop --no-int8 or --int8-conv")
        options = ConvertOptions(
            model=args.model,
            out=args.out,
            eval_manifest=args.eval_manifest,
            eval_limit=args.eval_limit,
            int8=int8,
            max_cer_increase=None if not int8 or args.no_guard else args.max_cer_increase,
            threads=args.threads,
            force=args.force,
            name=args.name,
            split=args.split,
            export=ExportOptions(opset=args.opset),
            parity=ParityOptions(atol=args.parity_atol),
            decoder=getattr(args, "decoder", None),
        )
        if int8:
            options.quantization = _int8_options(args)
            options.conv = _conv_options(args)
        result = convert(options, say)
        say(f"bundle written to {result.bundle} in {time.perf_counter() - started:.1f} s")
        if result.report is not None:
            say(f"report: {result.bundle / 'report.md'}")
        return 0
    if args.command == "quantize":
        from .rework import add_int8

        bundle = add_int8(args.bundle, args.out, _int8_options(args), args.force, say, _conv_options(args))
        say(f"bundle written to {bundle} in {time.perf_counter() - started:.1f} s")
        return 0
    if args.command == "report":
        from .rework import report_bundle

        passed = report_bundle(args, say)
        say(f"report written to {args.out} in {time.perf_counter() - started:.1f} s")
        return 0 if passed else 1
    if args.command == "lm":
        from .lm import LmBuildOptions, add_lm

        lm_options = LmBuildOptions(
            order=args.order,
            min_count=args.min_count,
            word_order=args.word_order,
            word_min_count=args.word_min_count,
            word_lists=tuple(args.word_lists),
            beam_size=args.beam_size,
            tune_manifest=args.tune_manifest,
            tune_limit=args.tune_limit,
            eval_manifest=args.eval_manifest,
            eval_limit=args.eval_limit,
            threads=args.threads,
            jobs=args.jobs,
        )
        out = add_lm(
            args.bundle, args.out or args.bundle, args.text or [], args.force, say, lm_options, args.arpa
        )
        say(f"bundle with language model written to {out} in {time.perf_counter() - started:.1f} s")
        return 0
    raise QuantizeError(f"unknown command {args.command!r}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        return run(args)
    except GuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no bundle was written", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """transformers' per-file progress bars and advisory warnings drown the step lines."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    for name in ("onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)
