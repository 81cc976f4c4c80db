"""Dynamic int8 quantization with onnxruntime.quantization (onnxruntime-tools' successor).

Default recipe, from measurements on wav2vec2-base: int8 weights (QInt8), per output channel, on
MatMul only. The convolutional feature encoder stays float: quantized Conv (ConvInteger) ran 0.57-1.0x
as fast and cost accuracy (static int8 Conv, calibrated on audio, does pay: int8_conv.py).
Weights-times-activations MatMuls only (MatMulConstBOnly): the attention score MatMuls multiply two
activations, and quantizing both on the fly costs accuracy for little gain.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import onnx

from .errors import QuantizationError

log = logging.getLogger(__name__)

WEIGHT_TYPES = ("QInt8", "QUInt8")


@contextmanager
def root_logger_quieted() -> Iterator[None]:
    """onnxruntime.quantization advises pre-processing through the root logger at every call; our
    recipes decide that themselves, so the hint is kept out of the user's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


@dataclass
class Int8Options:
    """Knobs of the int8 recipe (defaults are the measured recipe).

    Attributes:
        op_types: ONNX op types to quantize ("MatMul", "Gemm", "Conv", ...).
        per_channel: one scale per output channel instead of per tensor.
        weight_type: "QInt8" or "QUInt8".
        reduce_range: 7-bit weights (for CPUs without VNNI where u8s8 products can saturate).
        const_b_only: quantize only MatMuls whose second input is a weight.
        preprocess: run onnxruntime's quant_pre_process (shape inference + graph optimization) first.
        exclude_nodes: node names to keep in float.
    """

    op_types: Sequence[str] = ("MatMul",)
    per_channel: bool = True
    weight_type: str = "QInt8"
    reduce_range: bool = False
    const_b_only: bool = True
    preprocess: bool = False
    exclude_nodes: Sequence[str] = ()

    def to_dict(self) -> Dict[str, object]:
        data = asdict(self)
        data["op_types"] = list(self.op_types)
        data["exclude_nodes"] = list(self.exclude_nodes)
        return data


@dataclass
class Int8Result:
    path: Path
    seconds: float
    size_bytes: int
    quantized_nodes: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def _preprocess(source: Path, target: Path, scratch: Path) -> None:
    """quant_pre_process in a child process whose temp files live in `scratch`.

    It writes large temporary models and has been seen to leave them behind when it fails (~750 MB
    for wav2vec2-base); confined to a scratch folder, they go when the folder goes.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys\n"
        "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
        "quant_pre_process(sys.argv[1], sys.argv[2])\n"
    )
    env = dict(os.environ, TMPDIR=str(scratch), TEMP=str(scratch), TMP=str(scratch))
    done = subprocess.run(
        [sys.executable, "-c", code, str(source), str(target)],
        cwd=str(scratch),
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not target.is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise QuantizationError(
            f"quant_pre_process failed ({last}); rerun without --preprocess "
            "(the default recipe does not need it)"
        )


def count_quantized(path: Path) -> Dict[str, int]:
    """Op types of the quantized graph that carry int8 work, and how many of each."""
    model = onnx.load(str(path), load_external_data=False)
    counts: Dict[str, int] = {}
    dequantized = {o for node in model.graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    for node in model.graph.node:
        # Static QDQ: onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv on load.
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dequantized:
            counts["Conv (QDQ)"] = counts.get("Conv (QDQ)", 0) + 1
        if node.op_type in (
            "MatMulInteger",
            "ConvInteger",
            "DynamicQuantizeLinear",
            "QLinearMatMul",
            "QLinearConv",
        ):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_int8(fp32_path: Path, out_path: Path, options: Optional[Int8Options] = None) -> Int8Result:
    """Write the dynamically quantized twin of `fp32_path` to `out_path`; raises QuantizationError."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = options or Int8Options()
    if options.weight_type not in WEIGHT_TYPES:
        raise QuantizationError(
            f"weight type {options.weight_type!r} is not one of {', '.join(WEIGHT_TYPES)}"
        )
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=".int8-", dir=out_path.parent))
    try:
        source = fp32_path
        if options.preprocess:
            source = scratch / "preprocessed.onnx"
            _preprocess(fp32_path, source, scratch / "tmp")
        extra = {
            "MatMulConstBOnly": options.const_b_only,
            # After graph optimization some tensors lose their type information; without a default
            # the quantizer stops on them (seen after onnxruntime's transformer optimizer).
            "DefaultTensorType": onnx.TensorProto.FLOAT,
        }
        # Pre-processing is optional here (see --preprocess).
        with root_logger_quieted():
            quantize_dynamic(
                str(source),
                str(out_path),
                op_types_to_quantize=list(options.op_types),
                per_channel=options.per_channel,
                reduce_range=options.reduce_range,
                weight_type=getattr(QuantType, options.weight_type),
                nodes_to_exclude=list(options.exclude_nodes),
                extra_options=extra,
            )
    except QuantizationError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises assorted types
        out_path.unlink(missing_ok=True)
        raise QuantizationError(f"dynamic quantization failed: {type(exc).__name__}: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not out_path.is_file():
        raise QuantizationError(f"dynamic quantization wrote no file at {out_path}")
    counts = count_quantized(out_path)
    result = Int8Result(out_path, time.perf_counter() - started, out_path.stat().st_size, counts)
    if not counts:
        result.warnings.append(
            f"no node of type {', '.join(options.op_types)} was quantized: the int8 model is the float model"
        )
    return result
