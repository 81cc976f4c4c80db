"""Static int8 for the Conv nodes of a graph (the wav2vec2 feature encoder and positional conv).

Dynamic int8 (int8.py) leaves Conv in float: ConvInteger was slower than float Conv. With activation
ranges calibrated on audio beforehand, onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into
QLinearConv, which is fast. The recipe, measured on wav2vec2-base (random weights, 10 s, 1 thread, x86
with AVX-512 VNNI; benchmarks/int8_conv.py) where the dynamic recipe ran 0.550 s and this one 0.331 s:

- QDQ format, then the dynamic MatMul recipe on the result (dynamic first, then static, made a graph
  of the same speed). QOperator ran 0.322 s, the same within noise; QDQ is onnxruntime's recommended
  format.
- uint8 activations (as the dynamic recipe's), int8 per-channel weights; int8 activations ran 0.325 s.
  MinMax calibration: Percentile took 13x longer to calibrate for the same accuracy on layers 1-6.
- Each erf GELU behind a dequantized Conv output is fused into one Gelu node (`fuse_erf_gelu`):
  unfused, onnxruntime fused no QLinearConv at all with int8 activations and cost 20 ms with uint8.
- A Conv whose GEMM depth (input channels per group x kernel) is shallow stays float: with wav2vec2's
  first conv (depth 10, one channel of raw audio) in int8 too the graph ran 0.353 s.
- A Conv whose quantization alone raises CER on a slice of the calibration set by more than a
  threshold stays float (the accuracy rule, `select_layers`). On the v1 model the first conv cost
  4.5 points alone, the others -0.1 to +0.15.

The functions take an ONNX path and write an ONNX path and quantize the Conv nodes they find
(optionally restricted by name), so they work on any graph whose inputs are raw audio.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import onnx

from edge_asr.audio import read_audio
from edge_asr.text import TextNormalization

from .errors import QuantizationError
from .int8 import Int8Options, count_quantized, quantize_int8, root_logger_quieted
from .manifest import EvalItem, read_manifest

log = logging.getLogger(__name__)

ACTIVATION_TYPES = ("QUInt8", "QInt8")
FORMATS = ("QDQ", "QOperator")
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")
# A graph -> its error rate on the probe slice (lower is better), e.g. greedy CER.
Judge = Callable[[Path], float]


@dataclass
class ConvInt8Options:
    """Knobs of static Conv quantization (defaults are the measured recipe).

    Attributes:
        calibration: manifest (CSV path,text; see manifest.py) of audio to calibrate activation
            ranges on; a few hundred utterances like the ones the model will hear.
        calibration_limit: use only the first N utterances of the manifest.
        max_seconds: cut each calibration clip to this length (bounds calibration time; the probe
            then scores a cut clip against its whole transcript, so keep it above the clips' length).
        method: onnxruntime calibration method: "MinMax", "Percentile" or "Entropy".
        activation_type: "QUInt8" or "QInt8" (the same speed on x86; ARM not measured).
        per_channel: one weight scale per output channel.
        quant_format: "QDQ" (Q/DQ pairs that onnxruntime fuses into QLinearConv when it loads the graph)
            or "QOperator" (QLinearConv written into the file); they measured the same speed.
        nodes: quantize only Conv nodes whose name contains one of these strings (empty: every Conv).
        keep_float: Conv nodes (names or name substrings) always kept in float.
        min_depth: keep in float a Conv whose GEMM depth (input channels per group x kernel size) is
            below this: int8 cannot pay for quantizing its output there (wav2vec2's first conv, 10).
        probe_utterances: the first N calibration utterances on which each Conv is quantized alone
            and scored (the accuracy rule); 0 skips the rule.
        max_layer_cer_increase: keep in float a Conv whose quantization alone raises the probe's CER
            by more than this, absolute (0.002 = 0.2 points).
    """

    calibration: Optional[Path] = None
    calibration_limit: int = 300
    max_seconds: float = 15.0
    method: str = "MinMax"
    activation_type: str = "QUInt8"
    per_channel: bool = True
    quant_format: str = "QDQ"
    nodes: Sequence[str] = ()
    keep_float: Sequence[str] = ()
    min_depth: int = 32
    probe_utterances: int = 100
    max_layer_cer_increase: float = 0.002

    def to_dict(self) -> Dict[str, object]:
        data = asdict(self)
        data["calibration"] = str(self.calibration) if self.calibration else None
        data["nodes"], data["keep_float"] = list(self.nodes), list(self.keep_float)
        return data

    def validate(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise QuantizationError(
                f"activation type {self.activation_type!r} is not one of {', '.join(ACTIVATION_TYPES)}"
            )
        if self.quant_format not in FORMATS:
            raise QuantizationError(f"format {self.quant_format!r} is not one of {', '.join(FORMATS)}")
        if self.method not in CALIBRATION_METHODS:
            raise QuantizationError(
                f"calibration method {self.method!r} is not one of {', '.join(CALIBRATION_METHODS)}"
            )
        if self.calibration_limit < 1 or self.max_seconds <= 0:
            raise QuantizationError("the calibration needs at least one utterance of positive length")


@dataclass
class ConvLayer:
    """One Conv node and what was decided about it."""

    name: str
    depth: int
    quantized: bool = False
    reason: str = ""
    cer: Optional[float] = None
    cer_increase: Optional[float] = None


@dataclass
class ConvInt8Result:
    path: Path
    seconds: float
    size_bytes: int
    layers: List[ConvLayer]
    calibration_utterances: int
    calibration_seconds: float
    probe_cer: Optional[float] = None
    probe_utterances: int = 0
    quantized_nodes: Dict[str, int] = field(default_factory=dict)

    @property
    def kept_float(self) -> Dict[str, str]:
        return {layer.name: layer.reason for layer in self.layers if not layer.quantized}

    def to_dict(self) -> Dict[str, object]:
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "kept_float": self.kept_float,
            "calibration_utterances": self.calibration_utterances,
            "calibration_seconds": round(self.calibration_seconds, 1),
            "probe_cer": self.probe_cer,
            "probe_utterances": self.probe_utterances,
            "quantized_nodes": self.quantized_nodes,
            "seconds": round(self.seconds, 1),
        }


def conv_layers(path: Path, nodes: Sequence[str] = ()) -> List[ConvLayer]:
    """The graph's Conv nodes (those whose name contains one of `nodes`, when given), in graph order."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    for node in model.graph.node:  # weights folded into Constant nodes (the Whisper DFT basis)
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                weights[node.output[0]] = list(value.dims)
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or (nodes and not any(n in node.name for n in nodes)):
            continue
        if not node.name:
            raise QuantizationError(f"{path}: a Conv node has no name; name the graph's nodes to quantize it")
        dims = weights.get(node.input[1])
        # Weight [out, in / group, *kernel]: the GEMM depth is everything but the output channels.
        depth = int(np.prod(dims[1:])) if dims else 0
        found.append(ConvLayer(node.name, depth))
    return found


def corresponding_convs(reference: Path, other: Path) -> Dict[str, str]:
    """Each Conv node of `other` -> the Conv node of `reference` with the same weights.

    For a graph cut out of another (the split front-end of a single graph, quantize/export.py): node
    names differ between the two exports (`/model/wav2vec2/feature_extractor/...` against
    `/feature_extractor/...`, and HuBERT or data2vec name their own module paths), but a Conv's weight
    initializer is the checkpoint's tensor in both, so its shape and values identify the layer. Equal
    weights (a degenerate checkpoint) are paired in graph order. Raises QuantizationError when a Conv
    of `other` has no twin in `reference` (they are not the same model).
    """

    def convs(path: Path) -> List[Tuple[str, Tuple[Tuple[int, ...], bytes]]]:
        model = onnx.load(str(path))
        weights = {w.name: w for w in model.graph.initializer}
        found = []
        for node in model.graph.node:
            if node.op_type != "Conv":
                continue
            tensor = weights.get(node.input[1])
            array = onnx.numpy_helper.to_array(tensor) if tensor is not None else None
            if array is None:
                raise QuantizationError(f"{path}: Conv {node.name!r} has no weight initializer to match by")
            found.append((node.name, (tuple(array.shape), np.ascontiguousarray(array).tobytes())))
        return found

    candidates: Dict[Tuple[Tuple[int, ...], bytes], List[str]] = {}
    for name, key in convs(reference):
        candidates.setdefault(key, []).append(name)
    matched: Dict[str, str] = {}
    for name, key in convs(other):
        twins = candidates.get(key)
        if not twins:
            raise QuantizationError(
                f"{other}: Conv {name!r} has no Conv with the same weights in {reference}; "
                "the graphs are not of the same model"
            )
        matched[name] = twins.pop(0)
    return matched


def calibration_items(options: ConvInt8Options) -> List[EvalItem]:
    """The calibration manifest's utterances (checked to exist); raises naming what is missing."""
    if options.calibration is None:
        raise QuantizationError(
            "static Conv quantization needs calibration audio: pass --calibration MANIFEST "
            "(CSV path,text of a few hundred utterances like the ones the model will hear)"
        )
    return read_manifest(Path(options.calibration), options.calibration_limit, "calibration manifest")


def load_calibration(options: ConvInt8Options, sample_rate: int) -> Tuple[List[EvalItem], List[np.ndarray]]:
    """(items, audio) of the calibration manifest, each clip cut to options.max_seconds."""
    items = calibration_items(options)
    limit = int(options.max_seconds * sample_rate)
    audio = [read_audio(item.path, sample_rate)[:limit] for item in items]
    return items, audio


def _input_template(model_path: Path) -> Dict[str, type]:
    """Graph input name -> numpy dtype: float32 for the audio [1, samples], an integer for its length."""
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    kinds = {
        onnx.TensorProto.FLOAT: np.float32,
        onnx.TensorProto.INT64: np.int64,
        onnx.TensorProto.INT32: np.int32,
    }
    template: Dict[str, type] = {}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        elem = graph_input.type.tensor_type.elem_type
        if elem not in kinds:
            raise QuantizationError(
                f"{model_path}: input {graph_input.name!r} is neither audio (float) nor a length (int); "
                "calibration cannot feed it"
            )
        template[graph_input.name] = kinds[elem]
    return template


def _feed(template: Dict[str, type], clip: np.ndarray) -> Dict[str, np.ndarray]:
    return {
        name: clip[None, :].astype(np.float32) if dtype is np.float32 else np.array([clip.size], dtype=dtype)
        for name, dtype in template.items()
    }


def _reader(template: Dict[str, type], audio: Sequence[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class AudioReader(CalibrationDataReader):
        """One clip at a time, as the device runs them (no padding that would skew the ranges)."""

        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            if self.index >= len(audio):
                return None
            self.index += 1
            return _feed(template, audio[self.index - 1])

        def rewind(self) -> None:
            self.index = 0

    return AudioReader()


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, name)


def calibrate(model_path: Path, audio: Sequence[np.ndarray], cache: Path, options: ConvInt8Options) -> Path:
    """Activation ranges of every Conv's input and output over `audio`, saved to `cache` (JSON).

    Calibrated once; each quantization after it (one per layer for the rule, then the final one)
    reuses the cache instead of running the audio again.
    """
    try:
        from onnxruntime.quantization import create_calibrator, save_tensors_data
    except ImportError:
        raise QuantizationError(
            "static Conv quantization needs onnxruntime's calibration cache (onnxruntime >= 1.32); "
            "pip install -U onnxruntime"
        ) from None
    scratch = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=cache.parent))
    try:
        calibrator = create_calibrator(
            model_path,
            ["Conv"],
            augmented_model_path=str(scratch / "augmented.onnx"),
            calibrate_method=_method(options.method),
        )
        # One clip per collect_data call: the histogram methods keep every collected tensor until the
        # call returns (memory would grow with the set) and stack them (clips of different lengths fail).
        template = _input_template(model_path)
        for clip in audio:
            calibrator.collect_data(_reader(template, [clip]))
        ranges = calibrator.compute_data()
        save_tensors_data(ranges, cache)
    except QuantizationError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises assorted types
        raise QuantizationError(f"calibration failed: {type(exc).__name__}: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cache


def quantize_convs(
    model_path: Path, out_path: Path, nodes: Sequence[str], cache: Path, options: ConvInt8Options
) -> Path:
    """Write `model_path` with the Conv nodes named in `nodes` quantized statically to `out_path`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    try:
        with root_logger_quieted():  # the Conv nodes quantize without pre-processing
            quantize_static(
                str(model_path),
                str(out_path),
                calibration_data_reader=None,
                quant_format=getattr(QuantFormat, options.quant_format),
                op_types_to_quantize=["Conv"],
                per_channel=options.per_channel,
                activation_type=getattr(QuantType, options.activation_type),
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(nodes),
                calibrate_method=_method(options.method),
                calibration_cache_path=str(cache),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:  # onnxruntime.quantization raises assorted types
        out_path.unlink(missing_ok=True)
        raise QuantizationError(f"static Conv quantization failed: {type(exc).__name__}: {exc}") from None
    if not out_path.is_file():
        raise QuantizationError(f"static Conv quantization wrote no file at {out_path}")
    return out_path


def _constant(model: onnx.ModelProto, name: str, producers: Dict[str, onnx.NodeProto]) -> Optional[float]:
    """The value of a scalar constant input (initializer or Constant node), else None."""
    for tensor in model.graph.initializer:
        if tensor.name == name:
            array = onnx.numpy_helper.to_array(tensor)
            return float(array) if array.size == 1 else None
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims == []:
        return float(onnx.numpy_helper.to_array(node.attribute[0].t))
    return None


def fuse_erf_gelu(path: Path) -> int:
    """Replace each exported erf GELU (x/sqrt2 -> Erf -> +1 -> *x -> *0.5) by one com.microsoft Gelu.

    onnxruntime fuses this pattern itself when it loads a float graph. In a QDQ graph a Conv's output
    reaches the GELU through a DequantizeLinear that feeds both its Div and its Mul; onnxruntime gives
    each consumer its own copy of that DequantizeLinear and the fusion no longer matches, so five
    elementwise passes (and a second dequantization) run over the feature encoder's largest tensors
    (measured on wav2vec2-base: 20 ms of 350 at 1 thread; with int8 activations onnxruntime then fused
    no QLinearConv at all). Fused here, the graph runs what the float graph runs. Returns how many were
    fused; rewrites `path` when any was.
    """
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    producers = {o: n for n in nodes for o in n.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}

    def only(name: str, op_type: str) -> Optional[onnx.NodeProto]:
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def near(name: str, value: float) -> bool:
        found = _constant(model, name, producers)
        return found is not None and abs(found - value) < 1e-4

    fused: List[tuple] = []
    taken = {n.name for n in nodes}
    for erf in (n for n in nodes if n.op_type == "Erf"):
        div = producers.get(erf.input[0])
        if (
            div is None
            or div.op_type != "Div"
            or not near(div.input[1], 2**0.5)
            or only(div.output[0], "Erf") is None
        ):
            continue
        x = div.input[0]
        add = only(erf.output[0], "Add")
        if add is None or not near([i for i in add.input if i != erf.output[0]][0], 1.0):
            continue
        mul = only(add.output[0], "Mul")
        if mul is None or x not in mul.input:
            continue
        half = only(mul.output[0], "Mul")
        if half is None or not near([i for i in half.input if i != mul.output[0]][0], 0.5):
            continue
        # Node names must be unique: a Whisper encoder's two GELUs sit under the same scope.
        name, base, suffix = div.name.rsplit("/", 1)[0] + "/Gelu", div.name.rsplit("/", 1)[0] + "/Gelu", 0
        while name in taken:
            suffix += 1
            name = f"{base}_{suffix}"
        taken.add(name)
        gelu = onnx.helper.make_node("Gelu", [x], [half.output[0]], name=name, domain="com.microsoft")
        fused.append((div, gelu, [div, erf, add, mul, half]))
    if not fused:
        return 0
    gone = {id(n) for _, _, group in fused for n in group}
    first = {id(div): gelu for div, gelu, _ in fused}
    rebuilt = [first.get(id(n), n) for n in nodes if id(n) not in gone or id(n) in first]
    used = {name for n in rebuilt for name in n.input} | outputs
    rebuilt = [n for n in rebuilt if n.op_type != "Constant" or any(o in used for o in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(rebuilt)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return len(fused)


def select_layers(
    model_path: Path, layers: List[ConvLayer], cache: Path, options: ConvInt8Options, judge: Optional[Judge]
) -> Optional[float]:
    """Decide which layers to quantize (in place on `layers`); returns the float graph's probe CER.

    A layer stays float when it is named in keep_float, when its GEMM is shallower than min_depth, or
    when quantizing it alone (everything else float) raises the judge's error by more than
    max_layer_cer_increase. Each layer is measured alone so that its own cost is what decides; a
    shallow layer is measured too, so the report says what int8 would cost there as well.
    """
    measured = []
    for layer in layers:
        if any(k in layer.name for k in options.keep_float):
            layer.reason = "named in keep_float"
        else:
            measured.append(layer)
    baseline = judge(model_path) if judge is not None and options.probe_utterances else None
    scratch = Path(tempfile.mkdtemp(prefix=".layers-", dir=cache.parent))
    try:
        for layer in measured:
            reasons, layer.quantized = [], True
            if layer.depth < options.min_depth:
                layer.quantized = False
                shallow = f"GEMM depth {layer.depth} < min_depth {options.min_depth}: int8 would be slower"
                reasons.append(shallow)
            if judge is not None and baseline is not None:
                probe = quantize_convs(model_path, scratch / "one.onnx", [layer.name], cache, options)
                layer.cer = judge(probe)
                layer.cer_increase = layer.cer - baseline
                limit = options.max_layer_cer_increase
                within = layer.cer_increase <= limit
                layer.quantized = layer.quantized and within
                reasons.append(
                    f"alone it raised probe CER by {100 * layer.cer_increase:+.2f} points, "
                    f"{'within' if within else 'over'} the {100 * limit:.2f} allowed"
                )
            elif layer.quantized:
                reasons.append("quantized (no accuracy rule run)")
            layer.reason = "; ".join(reasons)
            log.info("%s: %s", layer.name, layer.reason)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return baseline


def quantize_int8_conv(
    fp32_path: Path,
    out_path: Path,
    audio: Sequence[np.ndarray],
    options: ConvInt8Options,
    dynamic: Optional[Int8Options] = None,
    judge: Optional[Judge] = None,
) -> ConvInt8Result:
    """Static int8 Convs (chosen by the rules) then, unless `dynamic` is None, the dynamic int8 recipe.

    `audio` calibrates the activation ranges; `judge` (a graph -> its error on the probe slice of
    `audio`) drives the accuracy rule. Writes only `out_path`; raises QuantizationError.
    """
    options.validate()
    if not audio:
        raise QuantizationError("static Conv quantization needs at least one calibration clip")
    started = time.perf_counter()
    layers = conv_layers(fp32_path, options.nodes)
    if not layers:
        raise QuantizationError(
            f"{fp32_path}: no Conv node to quantize"
            + (f" among names containing {', '.join(options.nodes)}" if options.nodes else "")
        )
    scratch = Path(tempfile.mkdtemp(prefix=".int8conv-", dir=out_path.parent))
    try:
        cache = calibrate(fp32_path, audio, scratch / "calibration.json", options)
        calibrated = time.perf_counter() - started
        baseline = select_layers(fp32_path, layers, cache, options, judge)
        chosen = [layer.name for layer in layers if layer.quantized]
        for layer in layers:
            if not layer.quantized:
                log.info("kept in float: %s (%s)", layer.name, layer.reason)
        static = scratch / "static.onnx"
        if chosen:
            quantize_convs(fp32_path, static, chosen, cache, options)
            log.debug("fused %d GELU(s) behind dequantized Conv outputs", fuse_erf_gelu(static))
        else:
            log.warning("every Conv stayed float; the graph gets the dynamic recipe only")
            shutil.copyfile(fp32_path, static)
        if dynamic is not None:
            quantize_int8(static, out_path, dynamic)
        else:
            shutil.move(str(static), str(out_path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ConvInt8Result(
        path=out_path,
        seconds=time.perf_counter() - started,
        size_bytes=out_path.stat().st_size,
        layers=layers,
        calibration_utterances=len(audio),
        calibration_seconds=calibrated,
        probe_cer=baseline,
        probe_utterances=min(options.probe_utterances, len(audio)) if baseline is not None else 0,
        quantized_nodes=count_quantized(out_path),
    )


class CtcLabels(Protocol):
    """What greedy decoding needs of a model's labels: a `SourceModel` or a `BundleMetadata`."""

    @property
    def vocabulary(self) -> Sequence[str]: ...

    @property
    def blank_id(self) -> int: ...

    @property
    def word_delimiter(self) -> Optional[str]: ...

    @property
    def special_ids(self) -> Sequence[int]: ...

    @property
    def text_normalization(self) -> TextNormalization: ...


def greedy_cer_judge(
    items: Sequence[EvalItem], audio: Sequence[np.ndarray], labels: CtcLabels, threads: int = 1
) -> Judge:
    """A judge for a whole CTC graph (audio in, log-probs out): greedy CER over `items`."""
    from train.metrics import ids_to_text

    from .parity import make_session
    from .scoring import score

    refs = [item.text for item in items]
    vocabulary, blank, delimiter, special = (
        labels.vocabulary,
        labels.blank_id,
        labels.word_delimiter,
        labels.special_ids,
    )

    def judge(path: Path) -> float:
        session, template = make_session(path, threads), _input_template(path)
        hyps = []
        for clip in audio[: len(items)]:
            log_probs = session.run(None, _feed(template, clip))[0][0]
            hyps.append(ids_to_text(log_probs.argmax(-1), vocabulary, blank, delimiter, special))
        return score(refs, hyps, labels.text_normalization)[0]

    return judge


def quantize_calibrated(
    fp32_path: Path,
    out_path: Path,
    options: ConvInt8Options,
    labels: CtcLabels,
    sample_rate: int,
    dynamic: Optional[Int8Options],
    threads: int = 1,
) -> Tuple[ConvInt8Result, List[np.ndarray]]:
    """`quantize_int8_conv` on the options' calibration manifest, the accuracy rule judging greedy CER
    on its first `probe_utterances`. Returns the result and the calibration audio."""
    items, audio = load_calibration(options, sample_rate)
    probe = options.probe_utterances
    judge = greedy_cer_judge(items[:probe], audio[:probe], labels, threads)
    return quantize_int8_conv(fp32_path, out_path, audio, options, dynamic, judge), list(audio)
