"""The whole pipeline: checkpoint -> ONNX -> parity -> int8 -> evaluation -> report -> bundle.

Everything is written into a hidden temporary folder next to the destination, which is renamed into
place only at the end, so a failure at any step leaves no partial bundle. The one deliberate
exception to "failure writes nothing" is the accuracy guard: when int8 costs more CER than allowed,
the bundle is still written (its fp32 model is fine) with int8_recommended=false, and the command
then fails so that scripts notice.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.audio import read_audio
from edge_asr.bundle import BundleMetadata, DecoderSettings, SplitGraphs, write_bundle
from edge_asr.model import normalize_utterance

from .decoder import (
    CROSS_FILE,
    CROSS_INT8_FILE,
    STEP_FILE,
    STEP_INT8_FILE,
    TOKENS_FILE,
    check_decoder_parity,
    decoder_spec,
    export_decoder,
    expose_encoder_states,
    load_whisper,
    quantize_decoder,
    token_folder,
    token_strings,
    write_token_table,
)
from .errors import GuardError, QuantizeError
from .evaluate import Evaluation, evaluate
from .export import STATES_NAME, ExportOptions, can_split, export_onnx, export_split, has_ctc_branch
from .int8 import Int8Options, quantize_int8
from .int8_conv import (
    ConvInt8Options,
    ConvInt8Result,
    ConvLayer,
    calibration_items,
    corresponding_convs,
    quantize_calibrated,
    quantize_int8_conv,
)
from .manifest import EvalItem, read_manifest
from .parity import (
    LOCALITY_RTOL,
    ParityOptions,
    check_parity,
    check_split_parity,
    front_end_locality,
    make_session,
    probe_signal,
    run_graph,
)
from .report import report_data, write_report
from .source import SourceModel, load_source
from .staging import place_bundle, staged_bundle

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FRONT_END_FILE = "front_end.onnx"
FRONT_END_INT8_FILE = "front_end.int8.onnx"
ENCODER_FILE = "encoder.onnx"
ENCODER_INT8_FILE = "encoder.int8.onnx"
# With --int8-conv and --eval: today's dynamic-only int8 graph, measured beside int8-conv for the report
# and removed from the bundle before it is placed.
INT8_DYNAMIC_FILE = "model.int8-dynamic.onnx"
# Its split front-end, when the dynamic recipe quantizes anything there (a conv front-end: nothing).
FRONT_END_INT8_DYNAMIC_FILE = "front_end.int8-dynamic.onnx"
INT8_CONV = "int8-conv"
PARITY_UTTERANCES = 2
DECODER_PARITY_ATOL = 1e-3  # fp32 export against transformers: measured 2.2e-5 on tiny.en
PARITY_MAX_SECONDS = 15.0
ProgressFn = Callable[[str], None]


@dataclass
class ConvertOptions:
    """What `convert` does.

    Attributes:
        model: Hugging Face model folder or hub name.
        out: bundle folder to create.
        eval_manifest: evaluation manifest (see manifest.py); without it there is no report.
        eval_limit: use only the first N utterances of the manifest.
        int8: also write the dynamically quantized twin.
        conv: also quantize the Conv nodes statically (int8-conv, see int8_conv.py): the bundle's int8
            graph is then int8-conv, and with an evaluation the report measures the dynamic-only int8
            graph beside it. None: the dynamic recipe alone.
        max_cer_increase: largest allowed CER(int8) - CER(fp32) of the bundle's int8 graph, absolute
            (0.01 = one point); None disables the guard.
        threads: onnxruntime threads for the evaluation runs (None: edge_asr's default).
        force: replace an existing bundle folder at `out`.
        name: the bundle's human name (default: the model folder's name).
        split: also write the front-end and encoder graphs (bundle format 2, `SplitGraphs`) for
            wav2vec2-family models, so the device can cache front-end features; False writes the
            single graph only (a smaller bundle).
        decoder: a Whisper checkpoint (folder or hub name) whose text decoder joins a whisper-ctc
            model for joint CTC/attention decoding (bundle format 4, `decoder.py`): the CTC graph
            gains an `encoder_states` output and the bundle the decoder graphs (int8 with `int8`).
            It must be the checkpoint whose encoder the model was trained on.
    """

    model: str
    out: Path
    eval_manifest: Optional[Path] = None
    eval_limit: Optional[int] = None
    int8: bool = True
    max_cer_increase: Optional[float] = 0.01
    threads: Optional[int] = None
    force: bool = False
    name: str = ""
    split: bool = True
    export: ExportOptions = field(default_factory=ExportOptions)
    parity: ParityOptions = field(default_factory=ParityOptions)
    quantization: Int8Options = field(default_factory=Int8Options)
    conv: Optional[ConvInt8Options] = None
    decoder: Optional[str] = None


@dataclass
class ConvertResult:
    bundle: Path
    metadata: BundleMetadata
    timings: Dict[str, float]
    report: Optional[Dict[str, Any]] = None
    evaluation: Optional[Evaluation] = None


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, progress: ProgressFn):
        self.total, self.index, self.progress = total, 0, progress
        self.timings: Dict[str, float] = {}

    @contextmanager
    def step(self, label: str, key: str) -> Iterator[None]:
        self.index += 1
        self.progress(f"[{self.index}/{self.total}] {label} ...")
        started = time.perf_counter()
        yield
        self.timings[key] = round(time.perf_counter() - started, 3)
        self.progress(f"[{self.index}/{self.total}] {label}: done in {self.timings[key]:.1f} s")


def tool_versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import edge_asr

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "edge_asr": edge_asr.__version__,
    }


def _source_info(source: SourceModel, options: ConvertOptions) -> Dict[str, Any]:
    config = source.model.config
    return {
        "base_model": options.model,
        "model_folder": str(source.local_path) if source.local_path else None,
        "architecture": type(source.model).__name__,
        "name_or_path": getattr(config, "_name_or_path", "") or None,
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False, opset {options.export.opset})",
        "tools": tool_versions(),
    }


def _metadata(source: SourceModel, options: ConvertOptions, models: Dict[str, str]) -> BundleMetadata:
    return BundleMetadata(
        vocabulary=list(source.vocabulary),
        blank_id=source.blank_id,
        word_delimiter=source.word_delimiter,
        sample_rate=source.features.sample_rate,
        frame_stride=source.frame_stride,
        receptive_field=source.receptive_field,
        do_normalize=source.features.do_normalize,
        normalization_in_graph=source.features.do_normalize,
        log_softmax_in_graph=True,
        models=models,
        text_normalization=source.text_normalization,
        special_ids=list(source.special_ids),
        name=options.name or source.name,
        source=_source_info(source, options),
    )


def int8_smoke(fp32: Path, int8: Path, rate: int) -> float:
    """Greedy-token agreement of int8 with fp32 on a synthetic probe: proves the int8 graph runs."""
    signal = probe_signal(int(2.3 * rate), rate, seed=7)[None, :]
    lengths = np.array([signal.shape[1]])
    a = run_graph(make_session(fp32), signal, lengths)
    b = run_graph(make_session(int8), signal, lengths)
    if a.shape != b.shape:
        raise QuantizeError(f"the int8 graph outputs shape {b.shape}, the fp32 graph {a.shape}")
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def convert(options: ConvertOptions, progress: Optional[ProgressFn] = None) -> ConvertResult:
    """Run the pipeline; raises a QuantizeError subclass (no bundle written) or GuardError (written)."""
    say = progress or log.info
    out = Path(options.out)
    if out.exists() and not options.force:
        raise QuantizeError(f"{out}: already exists; pass --force to replace it, or choose another --out")
    conv = options.conv if options.int8 else None
    evaluating = options.eval_manifest is not None
    dynamic = options.int8 and (conv is None or evaluating)  # see _build
    steps = _Steps(4 + int(dynamic) + int(conv is not None) + 2 * int(evaluating), say)
    items: List[EvalItem] = []
    if options.eval_manifest is not None:
        items = read_manifest(Path(options.eval_manifest), options.eval_limit)  # fail before any work
        say(f"evaluation set: {len(items)} utterance(s) from {options.eval_manifest}")
    if conv is not None:
        conv.validate()
        calibration = calibration_items(conv)  # fail before any work, as the evaluation manifest does
        say(f"calibration set: {len(calibration)} utterance(s) from {conv.calibration}")
    with steps.step(f"loading {options.model}", "load"):
        source = load_source(options.model)
    if options.decoder is not None and source.model_type != "whisper-ctc":
        raise QuantizeError(
            f"--decoder joins a Whisper text decoder to a whisper-ctc model; {options.model} is "
            f"{source.model_type!r}"
        )
    steps.total += int(_splits(source, options)) + int(options.decoder is not None)
    with staged_bundle(out) as tmp:
        result = _build(source, options, items, tmp, steps, say)
        place_bundle(tmp, out, options.force)
    result.bundle = out
    evaluation = result.evaluation
    if evaluation is not None and not evaluation.guard_passed:
        hint = ""
        plain = evaluation.increase("int8") if conv is not None else None
        if plain is not None and options.max_cer_increase is not None:
            within = "within" if plain <= options.max_cer_increase else "also over"
            hint = f" (int8 without --int8-conv: {100 * plain:+.2f} points, {within} the limit)"
        raise GuardError(
            f"{evaluation.guarded} raised CER by {100 * (evaluation.cer_increase or 0):.2f} points, more "
            f"than --max-cer-increase {100 * (options.max_cer_increase or 0):.2f}{hint}; the bundle at {out} "
            "was written with int8_recommended=false; use its fp32 model (EdgeTranscriber(quantized=False))"
        )
    return result


def _expose_states(source: SourceModel, fp32_path: Path) -> float:
    """Give the fp32 CTC graph its `encoder_states` output (before int8, so both variants have it) and
    check it against the model's encoder on a probe; returns the largest difference. A graph with a
    CTC branch was exported with it (quantize.export.CtcGraph)."""
    import torch

    if not has_ctc_branch(source):
        expose_encoder_states(fp32_path, fp32_path)
    rate = source.features.sample_rate
    signal = probe_signal(int(3.1 * rate), rate, seed=5)
    session = make_session(fp32_path)
    outputs = session.run([STATES_NAME], {session.get_inputs()[0].name: signal[None, :].astype(np.float32)})
    with torch.no_grad():
        expected = source.model.encode(torch.from_numpy(signal[None, :].astype(np.float32))).numpy()
    if outputs[0].shape != expected.shape:
        raise QuantizeError(
            f"encoder_states has shape {outputs[0].shape}, the encoder gives {expected.shape}"
        )
    return float(np.abs(outputs[0] - expected).max())


def _add_decoder(
    checkpoint: str, tmp: Path, int8: bool, say: ProgressFn
) -> Tuple[DecoderSettings, Dict[str, Any]]:
    """Export, check and (with `int8`) quantize the checkpoint's text decoder into `tmp`; the decoder
    section and the facts for bundle.json's extra."""
    model = load_whisper(checkpoint)
    spec = decoder_spec(model)
    seconds = export_decoder(model, tmp / CROSS_FILE, tmp / STEP_FILE)
    parity = check_decoder_parity(model, tmp / CROSS_FILE, tmp / STEP_FILE, spec)
    say(f"  decoder parity (teacher-forced, {parity.tokens} tokens): max |diff| {parity.max_abs_diff:.2e}")
    if parity.max_abs_diff > DECODER_PARITY_ATOL:
        raise QuantizeError(
            f"the exported decoder differs from transformers by {parity.max_abs_diff:.3g} "
            f"(limit {DECODER_PARITY_ATOL}); the export is wrong for this checkpoint"
        )
    facts: Dict[str, Any] = {
        "checkpoint": checkpoint,
        "export_seconds": round(seconds, 2),
        "parity": {"max_abs_diff": parity.max_abs_diff, "tokens": parity.tokens},
    }
    cross, step = CROSS_FILE, STEP_FILE
    if int8:
        facts["int8"] = quantize_decoder(
            tmp / CROSS_FILE, tmp / STEP_FILE, tmp / CROSS_INT8_FILE, tmp / STEP_INT8_FILE
        )
        int8_parity = check_decoder_parity(model, tmp / CROSS_INT8_FILE, tmp / STEP_INT8_FILE, spec)
        facts["int8"]["argmax_agreement"] = int8_parity.argmax_agreement
        # The bundle ships the int8 decoder only: it cost nothing in joint decoding (decoder-lab
        # notes) and the fp32 step graph is ~190 MB for tiny.en.
        (tmp / CROSS_FILE).unlink()
        (tmp / STEP_FILE).unlink()
        cross, step = CROSS_INT8_FILE, STEP_INT8_FILE
        say(f"  decoder int8: {facts['int8']['step_bytes'] / 1e6:.1f} MB step graph")
    vocab_size = int(model.config.vocab_size)
    write_token_table(token_strings(token_folder(checkpoint), vocab_size), tmp / TOKENS_FILE)
    settings = replace(spec, cross=cross, step=step, tokens=TOKENS_FILE)
    return settings, facts


def _splits(source: SourceModel, options: ConvertOptions) -> bool:
    """Whether the bundle also gets the front-end and encoder graphs (format 2). With --int8-conv
    their int8 front-end gets the static int8 Convs the single graph's rule chose
    (`int8_conv_front_end`)."""
    return options.split and can_split(source)


def _int8_conv(
    source: SourceModel, options: ConvertOptions, fp32_path: Path, int8_path: Path, say: ProgressFn
) -> Tuple[ConvInt8Result, List[np.ndarray]]:
    """int8-conv of the fp32 graph at `int8_path`; the accuracy rule judges greedy CER on the probe.
    Returns the result and the calibration audio (the split front-end is calibrated on it too)."""
    assert options.conv is not None
    conv = options.conv
    sample_rate = source.features.sample_rate
    result, audio = quantize_calibrated(
        fp32_path, int8_path, conv, source, sample_rate, options.quantization, options.threads or 1
    )
    for name, reason in result.kept_float.items():
        say(f"  kept in float: {name} ({reason})")
    quantized = sum(layer.quantized for layer in result.layers)
    size = result.size_bytes / 1e6
    say(f"  int8-conv: {quantized} of {len(result.layers)} Conv node(s) in int8, {size:.1f} MB")
    return result, audio


def _build(
    source: SourceModel,
    options: ConvertOptions,
    items: List[EvalItem],
    tmp: Path,
    steps: _Steps,
    say: ProgressFn,
) -> ConvertResult:
    fp32_path, int8_path = tmp / FP32_FILE, tmp / INT8_FILE
    with steps.step("exporting to ONNX", "export"):
        exported = export_onnx(source, fp32_path, options.export)
    with steps.step("checking parity with PyTorch", "parity"):
        rate = source.features.sample_rate
        utterances = [
            read_audio(i.path, rate)[: int(PARITY_MAX_SECONDS * rate)] for i in items[:PARITY_UTTERANCES]
        ]
        parity = check_parity(source, fp32_path, options.parity, utterances)
    agreement = 100 * parity.agreement
    say(f"  parity: max |diff| {parity.max_abs_diff:.2e}, greedy-token agreement {agreement:.2f}%")
    states_diff = _expose_states(source, fp32_path) if options.decoder is not None else None
    models = {"fp32": FP32_FILE}
    extra: Dict[str, Any] = {
        "export": {"seconds": round(exported.seconds, 2), "opset": options.export.opset},
        "parity": {
            "max_abs_diff": parity.max_abs_diff,
            "agreement": parity.agreement,
            "frames": parity.frames,
        },
        "text_normalization_inferred": source.text_normalization_inferred,
    }
    conv = options.conv if options.int8 else None
    # With --int8-conv the bundle's int8 graph is int8-conv; the dynamic-only graph is made only to be
    # measured beside it, and only when there is an evaluation to measure it with.
    dynamic_path = tmp / INT8_DYNAMIC_FILE if conv is not None else int8_path
    conv_result: Optional[ConvInt8Result] = None
    calibration: List[np.ndarray] = []
    if options.int8 and (conv is None or items):
        with steps.step("quantizing to int8", "int8"):
            quantized = quantize_int8(fp32_path, dynamic_path, options.quantization)
            smoke = int8_smoke(fp32_path, dynamic_path, source.features.sample_rate)
        for warning in quantized.warnings:
            log.warning(warning)
        say(
            f"  int8: {quantized.size_bytes / 1e6:.1f} MB (fp32 {exported.size_bytes / 1e6:.1f} MB), "
            f"nodes {quantized.quantized_nodes}, agreement with fp32 on a probe {100 * smoke:.1f}%"
        )
        models["int8"] = dynamic_path.name
        extra["int8"] = {"options": options.quantization.to_dict(), "probe_agreement": smoke}
    if conv is not None:
        with steps.step("quantizing Conv nodes statically (int8-conv)", "int8_conv"):
            conv_result, calibration = _int8_conv(source, options, fp32_path, int8_path, say)
            smoke = int8_smoke(fp32_path, int8_path, source.features.sample_rate)
        say(f"  int8-conv: agreement with fp32 on a probe {100 * smoke:.1f}%")
        models[INT8_CONV if items else "int8"] = INT8_FILE
        extra["int8"] = {
            "options": options.quantization.to_dict(),
            "probe_agreement": smoke,
            "conv": {"file": INT8_FILE, "options": conv.to_dict(), **conv_result.to_dict()},
        }
    metadata = _metadata(source, options, models)
    metadata.extra = extra
    if options.decoder is not None:
        with steps.step(f"exporting the text decoder of {options.decoder}", "decoder"):
            metadata.decoder, extra["decoder"] = _add_decoder(options.decoder, tmp, options.int8, say)
            extra["decoder"]["encoder_states_max_abs_diff"] = states_diff
    if _splits(source, options):
        with steps.step("exporting the front-end and encoder graphs", "split"):
            conv_split = (conv_result, calibration) if conv_result is not None else None
            metadata.split, extra["split"] = _split(
                source, options, tmp, models, utterances, metadata, say, conv_split
            )
    report: Optional[Dict[str, Any]] = None
    evaluation: Optional[Evaluation] = None
    with steps.step("writing the bundle", "bundle"):
        write_bundle(tmp, metadata)  # evaluation loads the bundle through edge_asr, so it must be whole
    if items:
        with steps.step(
            f"evaluating {len(items)} utterance(s): PyTorch, then each variant via edge_asr", "evaluate"
        ):
            evaluation = evaluate(
                source,
                tmp,
                items,
                tmp / ".measure",
                options.max_cer_increase if options.int8 else None,
                options.threads,
                tuple(models),
                INT8_CONV if INT8_CONV in models else "int8",
            )
            shutil.rmtree(tmp / ".measure", ignore_errors=True)
        if INT8_CONV in models:  # the bundle ships int8-conv as its int8 graph
            (tmp / INT8_DYNAMIC_FILE).unlink()
            metadata.models = {"fp32": FP32_FILE, "int8": INT8_FILE}
            if metadata.split is not None:
                _ship_int8_conv_split(tmp, metadata)
        with steps.step("writing the report", "report"):
            context = {
                "format_version": metadata.format_version,  # set by write_bundle
                "model": {"name": metadata.name, **metadata.source},
                "manifest": str(options.eval_manifest),
                "int8": extra.get("int8", {}),
                "parity": extra["parity"],
            }
            report = report_data(evaluation, context)
            write_report(tmp, report)
            headline = {
                "cer": report["variants"]["fp32"]["cer"],
                "wer": report["variants"]["fp32"]["wer"],
                "utterances": len(items),
            }
            shipped = evaluation.guarded
            if shipped in report["variants"]:
                headline.update(
                    cer_int8=report["variants"][shipped]["cer"],
                    wer_int8=report["variants"][shipped]["wer"],
                    cer_increase=report["cer_increase"],
                    max_cer_increase=options.max_cer_increase,
                    token_agreement_int8_vs_fp32=report["token_agreement"].get(f"{shipped}_vs_fp32"),
                )
            if shipped != "int8" and "int8" in report["variants"]:
                headline.update(int8_graph=shipped, cer_int8_dynamic_only=report["variants"]["int8"]["cer"])
            metadata.extra["evaluation"] = headline
            metadata.int8_recommended = evaluation.guard_passed
            _summarize(evaluation, say)
            write_bundle(tmp, metadata)
    return ConvertResult(tmp, metadata, steps.timings, report, evaluation)


def quantize_split(
    folder: Path, front_end: str, encoder: str, options: Int8Options, front_end_out: str = FRONT_END_INT8_FILE
) -> Tuple[str, str, Dict[str, Any]]:
    """The int8 twins of the split graphs in `folder`: (front-end, encoder, facts). A front-end in
    which the recipe quantizes nothing (the default recipe quantizes MatMuls; a conv front-end has
    none) is not copied: the int8 variant names the fp32 front-end."""
    front = quantize_int8(folder / front_end, folder / front_end_out, options)
    if not front.quantized_nodes:
        (folder / front_end_out).unlink()
    front_name = front_end_out if front.quantized_nodes else front_end
    encoded = quantize_int8(folder / encoder, folder / ENCODER_INT8_FILE, options)
    for warning in encoded.warnings:
        log.warning("encoder: %s", warning)
    facts = {"front_end_nodes": front.quantized_nodes, "encoder_nodes": encoded.quantized_nodes}
    return front_name, ENCODER_INT8_FILE, facts


def int8_conv_front_end(
    folder: Path,
    single: str,
    front_end: str,
    layers: Sequence[ConvLayer],
    audio: Sequence[np.ndarray],
    conv: ConvInt8Options,
    dynamic: Int8Options,
    normalize: bool,
    say: ProgressFn,
) -> Tuple[str, Dict[str, Any]]:
    """The int8-conv twin of the split front-end `front_end` (in `folder`): the same Convs static int8
    as in the single fp32 graph `single`'s int8-conv (`layers`, the rule's decisions there), then the
    dynamic recipe. Returns (file name, facts); the fp32 front-end's name when no Conv of it was chosen.

    The rule is not run again (no judge): it measured each layer's cost on the whole model, and the
    split int8 graphs must be the single int8 graph cut in two, so that the cached path transcribes what
    the single graph does. Calibrated on the same audio, normalized first when the bundle normalizes:
    the single graph normalizes inside, the front-end is fed normalized samples (edge_asr.model).
    The positional conv is in the encoder graph, which keeps the dynamic recipe (features, not audio,
    are its input, and calibration feeds audio), so it stays float there.
    """
    twins = corresponding_convs(folder / single, folder / front_end)  # front-end name -> single name
    chosen = {layer.name for layer in layers if layer.quantized}
    nodes = [name for name, twin in twins.items() if twin in chosen]
    outside = sorted(chosen - set(twins.values()))
    facts: Dict[str, Any] = {
        "quantized": nodes,
        "kept_float": [name for name in twins if name not in nodes],
        "layers_from": f"{single} (the rule is not run on the front-end)",
        "float_in_encoder": outside,
    }
    if outside:
        # Measured on wav2vec2-base (benchmarks/int8_conv.py): the positional conv left float costs
        # ~7% of the single graph's time (0.353 against 0.331 s for 10 s at 1 thread).
        say(f"  split int8-conv: int8 in the single graph, float in the encoder graph: {', '.join(outside)}")
    if not nodes:
        return front_end, facts
    calibration = [normalize_utterance(clip) for clip in audio] if normalize else list(audio)
    options = replace(conv, nodes=tuple(nodes), keep_float=(), min_depth=0, probe_utterances=0)
    result = quantize_int8_conv(
        folder / front_end, folder / FRONT_END_INT8_FILE, calibration, options, dynamic, judge=None
    )
    made = {layer.name for layer in result.layers if layer.quantized}
    if made != set(nodes):
        (folder / FRONT_END_INT8_FILE).unlink(missing_ok=True)
        raise QuantizeError(
            f"the int8-conv front-end quantized {sorted(made)}, expected {sorted(nodes)} (the single graph's)"
        )
    say(f"  split int8-conv: {len(nodes)} of {len(twins)} front-end Conv(s) in int8, as in the single graph")
    return FRONT_END_INT8_FILE, facts


def _ship_int8_conv_split(tmp: Path, metadata: BundleMetadata) -> None:
    """After the evaluation: the split "int8" variant becomes int8-conv's, as the single graph's does;
    the dynamic-only front-end (if the recipe made one) goes with the dynamic-only graph."""
    split = metadata.split
    assert split is not None
    if split.front_end["int8"] == FRONT_END_INT8_DYNAMIC_FILE:
        (tmp / FRONT_END_INT8_DYNAMIC_FILE).unlink()
    metadata.split = replace(
        split,
        front_end={"fp32": split.front_end["fp32"], "int8": split.front_end[INT8_CONV]},
        encoder={"fp32": split.encoder["fp32"], "int8": split.encoder[INT8_CONV]},
    )
    facts = metadata.extra.get("split", {})
    if f"parity_{INT8_CONV}" in facts:
        facts["parity_int8_dynamic_only"] = facts.pop("parity_int8", None)
        facts["parity_int8"] = facts.pop(f"parity_{INT8_CONV}")


def _split(
    source: SourceModel,
    options: ConvertOptions,
    tmp: Path,
    models: Dict[str, str],
    utterances: List[np.ndarray],
    metadata: BundleMetadata,
    say: ProgressFn,
    conv: Optional[Tuple[ConvInt8Result, List[np.ndarray]]] = None,
) -> Tuple[SplitGraphs, Dict[str, Any]]:
    """Export the split graphs (and int8 twins when `models` has int8), check each variant against
    its single graph as the device runs it, and measure whether the front-end is local. With `conv`
    (the single graph's int8-conv result and calibration audio) the int8-conv variant's front-end gets
    the same static int8 Convs (`int8_conv_front_end`); its encoder is the dynamic recipe's."""
    exported = export_split(source, tmp / FRONT_END_FILE, tmp / ENCODER_FILE, options.export)
    front_end, encoder = {"fp32": FRONT_END_FILE}, {"fp32": ENCODER_FILE}
    facts: Dict[str, Any] = {"export_seconds": round(exported.seconds, 2)}
    # With int8-conv, the dynamic recipe's front-end (if it quantizes anything) gets a name of its own:
    # it is the dynamic-only variant's, measured beside int8-conv and not shipped.
    dynamic_front = FRONT_END_INT8_DYNAMIC_FILE if conv is not None else FRONT_END_INT8_FILE
    if "int8" in models:
        front_end["int8"], encoder["int8"], facts["int8"] = quantize_split(
            tmp, FRONT_END_FILE, ENCODER_FILE, options.quantization, dynamic_front
        )
    if conv is not None:
        assert options.conv is not None
        variant = INT8_CONV if INT8_CONV in models else "int8"  # "int8" when no evaluation measures both
        front_end[variant], facts["int8_conv"] = int8_conv_front_end(
            tmp,
            FP32_FILE,
            FRONT_END_FILE,
            conv[0].layers,
            conv[1],
            options.conv,
            options.quantization,
            source.features.do_normalize,
            say,
        )
        encoder[variant] = encoder["int8"]
        if variant == "int8":  # nothing measures the dynamic-only variant
            (tmp / FRONT_END_INT8_DYNAMIC_FILE).unlink(missing_ok=True)
    # Measured, not read off the config: any whole-input statistic in the front-end shows up here.
    locality = front_end_locality(tmp / FRONT_END_FILE, source.features.sample_rate, source.frame_stride)
    split = SplitGraphs(front_end, encoder, exported.feature_dim, frames_local=locality <= LOCALITY_RTOL)
    metadata.split = split
    facts["locality_rel_diff"] = locality
    for variant in models:
        parity = check_split_parity(tmp, metadata, variant, utterances)
        facts[f"parity_{variant}"] = {
            "max_abs_diff": parity.max_abs_diff,
            "agreement": parity.agreement,
            "agreement_with_fp32": parity.agreement_with_fp32,
        }
        versus = parity.agreement_with_fp32
        say(
            f"  split {variant}: max |diff| {parity.max_abs_diff:.2e} against the single graph, "
            f"greedy-token agreement {100 * parity.agreement:.2f}%"
            + (f" (int8 vs fp32: {100 * versus:.2f}%)" if versus is not None else "")
        )
    say(
        f"  front-end: {exported.feature_dim} features a frame, "
        + ("local" if split.frames_local else "not local")
        + f" (slice vs whole: {locality:.1e} of the largest feature)"
    )
    return split, facts


def _summarize(evaluation: Evaluation, say: ProgressFn) -> None:
    n = len(evaluation.items)
    differ = n - evaluation.identical_to_pytorch.get("fp32", n)
    if differ:
        log.warning(
            "fp32 bundle transcripts differ from PyTorch's greedy decode on %d of %d utterance(s)", differ, n
        )
    for name, run in evaluation.runs.items():
        cer, wer = 100 * evaluation.cer[name], 100 * evaluation.wer[name]
        say(f"  {name}: CER {cer:.2f}%, WER {wer:.2f}%, RTF {run.rtf:.4f}, peak RSS {run.peak_rss_mb:.0f} MB")
