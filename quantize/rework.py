"""Work on an existing bundle: add (or redo) its int8 twin, or report fp32 vs int8 without rebuilding."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from edge_asr.bundle import load_bundle, write_bundle
from edge_asr.errors import BundleError

from .convert import (
    FP32_FILE,
    FRONT_END_INT8_DYNAMIC_FILE,
    FRONT_END_INT8_FILE,
    INT8_FILE,
    int8_conv_front_end,
    int8_smoke,
    quantize_split,
)
from .errors import QuantizeError
from .evaluate import evaluate
from .int8 import Int8Options, quantize_int8
from .int8_conv import ConvInt8Options, ConvInt8Result, quantize_calibrated
from .manifest import read_manifest
from .parity import check_split_parity
from .report import REPORT_JSON, REPORT_MD, REPORT_PNG, report_data, write_report
from .staging import place_bundle, staged_bundle

ProgressFn = Callable[[str], None]


def _load(folder: Path):
    try:
        return load_bundle(folder, verify=False)
    except BundleError as exc:
        raise QuantizeError(str(exc)) from None


def add_int8(
    bundle_dir: Path,
    out: Path,
    options: Int8Options,
    force: bool,
    say: ProgressFn,
    conv: Optional[ConvInt8Options] = None,
) -> Path:
    """Copy a bundle to `out` with a freshly quantized int8 twin of its fp32 model (int8-conv with `conv`).

    Evaluation figures and report files of the source bundle describe its old int8 model, so they are
    dropped; run `report` (or `convert --eval`) to measure the new one.
    """
    bundle = _load(bundle_dir)
    meta = bundle.metadata
    fp32_name = meta.models.get("fp32", FP32_FILE)
    if conv is not None and meta.do_normalize and not meta.normalization_in_graph:
        raise QuantizeError(
            f"{bundle_dir}: its graph expects normalized samples, which --int8-conv cannot calibrate on; "
            "re-export it with `python -m quantize convert --int8-conv`"
        )
    if out.exists() and not force:
        raise QuantizeError(f"{out}: already exists; pass --force to replace it")
    if out.resolve() == bundle.path.resolve():
        raise QuantizeError("--out must differ from --bundle (the new bundle replaces nothing in place)")
    with staged_bundle(out) as tmp:
        shutil.copytree(bundle.path, tmp, dirs_exist_ok=True)
        bundle.verify([fp32_name])
        for stale in (REPORT_JSON, REPORT_MD, REPORT_PNG, INT8_FILE):
            (tmp / stale).unlink(missing_ok=True)
        say(f"quantizing {bundle.path / fp32_name} ...")
        info: Dict[str, Any] = {"options": options.to_dict()}
        conv_result: Optional[ConvInt8Result] = None
        audio: List[np.ndarray] = []
        if conv is None:
            result = quantize_int8(tmp / fp32_name, tmp / INT8_FILE, options)
            size_mb, seconds = result.size_bytes / 1e6, result.seconds
        else:
            conv_result, audio = quantize_calibrated(
                tmp / fp32_name, tmp / INT8_FILE, conv, meta, meta.sample_rate, options
            )
            for name, reason in conv_result.kept_float.items():
                say(f"  kept in float: {name} ({reason})")
            size_mb, seconds = conv_result.size_bytes / 1e6, conv_result.seconds
            info["conv"] = {"file": INT8_FILE, "options": conv.to_dict(), **conv_result.to_dict()}
        smoke = int8_smoke(tmp / fp32_name, tmp / INT8_FILE, meta.sample_rate)
        say(f"  int8: {size_mb:.1f} MB in {seconds:.1f} s, probe agreement {100 * smoke:.1f}%")
        meta.models = {**meta.models, "int8": INT8_FILE}
        if meta.split is not None:  # the split graphs' int8 twins are redone with the same recipe
            split = meta.split
            for stale in {split.front_end.get("int8"), split.encoder.get("int8")} - {None, fp32_name}:
                if stale not in (split.front_end["fp32"], split.encoder["fp32"]):
                    (tmp / str(stale)).unlink(missing_ok=True)
            # With --int8-conv the dynamic recipe's front-end is not used: the int8-conv one replaces it.
            front_out = FRONT_END_INT8_DYNAMIC_FILE if conv_result is not None else FRONT_END_INT8_FILE
            front, encoder, _ = quantize_split(
                tmp, split.front_end["fp32"], split.encoder["fp32"], options, front_out
            )
            if conv is not None and conv_result is not None:  # as convert does (int8_conv_front_end)
                (tmp / FRONT_END_INT8_DYNAMIC_FILE).unlink(missing_ok=True)
                front, info["conv"]["split"] = int8_conv_front_end(
                    tmp,
                    fp32_name,
                    split.front_end["fp32"],
                    conv_result.layers,
                    audio,
                    conv,
                    options,
                    meta.do_normalize,
                    say,
                )
            meta.split = replace(
                split,
                front_end={**split.front_end, "int8": front},
                encoder={**split.encoder, "int8": encoder},
            )
            parity = check_split_parity(tmp, meta, "int8")
            say(f"  split int8: greedy-token agreement with the single graph {100 * parity.agreement:.2f}%")
        meta.int8_recommended = True
        meta.extra.pop("evaluation", None)
        meta.extra["int8"] = {**info, "probe_agreement": smoke}
        write_bundle(tmp, meta)
        place_bundle(tmp, out, force)
    return out


def report_bundle(args: argparse.Namespace, say: ProgressFn) -> bool:
    """Evaluate an existing bundle against its PyTorch model; writes the report to args.out.

    Returns whether the int8 guard passed. The bundle itself is not modified.
    """
    from .source import load_source

    bundle = _load(args.bundle)
    if "int8" not in bundle.metadata.models:
        raise QuantizeError(f"{args.bundle}: the bundle has no int8 model; run `quantize` first")
    items = read_manifest(args.eval_manifest, args.eval_limit)
    source = load_source(args.model)
    if list(source.vocabulary) != list(bundle.metadata.vocabulary):
        raise QuantizeError(
            f"{args.model}: its vocabulary differs from the bundle's; it is not the bundle's model"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".measure-", dir=args.out))
    try:
        say(f"evaluating {len(items)} utterance(s) ...")
        evaluation = evaluate(source, bundle.path, items, scratch, args.max_cer_increase, args.threads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    context = {
        "format_version": bundle.metadata.format_version,
        "model": {"name": bundle.metadata.name, **bundle.metadata.source},
        "manifest": str(args.eval_manifest),
        "int8": bundle.metadata.extra.get("int8", {}),
    }
    write_report(args.out, report_data(evaluation, context))
    for name in evaluation.runs:
        say(f"  {name}: CER {100 * evaluation.cer[name]:.2f}%, WER {100 * evaluation.wer[name]:.2f}%")
    return evaluation.guard_passed
