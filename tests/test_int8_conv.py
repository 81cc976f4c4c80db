"""--int8-conv: static int8 Conv layers (quantize/int8_conv.py) on a tiny random wav2vec2.

The tiny model's first conv has GEMM depth 10 (one audio channel, kernel 10), below min_depth, so it
always stays float; its other convs have depth 32-128 and are measured by the accuracy rule.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Set

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import soundfile as sf  # noqa: E402
from test_quantize import NORMALIZATION, RATE, TEXTS, _speechlike  # noqa: E402

from edge_asr.bundle import load_bundle  # noqa: E402
from edge_asr.transcriber import EdgeTranscriber  # noqa: E402
from quantize.cli import main  # noqa: E402
from quantize.convert import ConvertOptions, convert  # noqa: E402
from quantize.int8_conv import ConvInt8Options, quantize_int8_conv  # noqa: E402
from quantize.synthetic import make_random_model  # noqa: E402

pytestmark = pytest.mark.desktop

FIRST_CONV = "/model/wav2vec2/feature_extractor/conv_layers.0/conv/Conv"
CALIBRATION_CLIPS = 6


def qdq_convs(path: Path) -> Set[str]:
    """Conv nodes whose weight comes through a DequantizeLinear: those quantized statically."""
    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dequantized}


def all_convs(path: Path) -> Set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8conv")
    model = make_random_model(
        root / "model", head_scale=30.0, suppress_special=True, normalization=NORMALIZATION
    )
    audio = root / "audio"
    audio.mkdir()
    dev, calibration = ["path,text"], ["path,text"]
    for i, text in enumerate(TEXTS):
        sf.write(audio / f"u{i}.wav", _speechlike(1.0 + 0.55 * i, seed=i), RATE)
        dev.append(f'audio/u{i}.wav,"{text}"')
    for i in range(CALIBRATION_CLIPS):  # other clips than the evaluation's
        sf.write(audio / f"c{i}.wav", _speechlike(1.2 + 0.3 * i, seed=100 + i), RATE)
        calibration.append(f"audio/c{i}.wav,{TEXTS[i % len(TEXTS)]}")
    (root / "dev.csv").write_text("\n".join(dev) + "\n")
    (root / "calibration.csv").write_text("\n".join(calibration) + "\n")
    return root, model, root / "dev.csv", root / "calibration.csv"


@pytest.fixture(scope="module")
def converted(workspace):
    root, model, dev, calibration = workspace
    out = root / "bundle"
    options = ConvertOptions(
        model=str(model),
        out=out,
        eval_manifest=dev,
        max_cer_increase=0.5,
        conv=ConvInt8Options(calibration=calibration),
    )
    return root, out, convert(options)


def test_the_bundle_ships_int8_conv_and_the_report_measures_it_beside_int8(converted):
    _, out, result = converted
    bundle = load_bundle(out)
    bundle.verify()
    meta = bundle.metadata
    assert meta.models == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    # the split graphs too: the int8 variant's front-end is int8-conv's (test_split_front_end_...)
    assert meta.split is not None
    assert meta.split.front_end == {"fp32": "front_end.onnx", "int8": "front_end.int8.onnx"}
    assert meta.split.encoder == {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}
    assert sorted(p.name for p in out.glob("*.onnx")) == sorted(
        ["model.int8.onnx", "model.onnx", "front_end.onnx", "front_end.int8.onnx", "encoder.onnx",
         "encoder.int8.onnx"]
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    variants = report["variants"]
    assert {"pytorch", "fp32", "int8", "int8-conv"} <= set(variants)
    assert report["guarded_variant"] == "int8-conv"
    assert report["cer_increase"] == pytest.approx(
        variants["int8-conv"]["cer"] - variants["fp32"]["cer"], abs=2e-4
    )
    assert variants["int8-conv"]["size_bytes"] == (out / "model.int8.onnx").stat().st_size
    assert variants["int8-conv"]["cer_increase"] == report["cer_increase"]
    assert variants["int8"]["cer_increase"] == pytest.approx(
        variants["int8"]["cer"] - variants["fp32"]["cer"], abs=2e-4
    )
    assert meta.extra["evaluation"]["int8_graph"] == "int8-conv"
    assert meta.extra["evaluation"]["cer_int8"] == variants["int8-conv"]["cer"]
    markdown = (out / "report.md").read_text()
    assert "| int8-conv |" in markdown and "| reference | pytorch | fp32 | int8 | int8-conv |" in markdown
    assert f"`{FIRST_CONV}` | 10 | **float**" in markdown


def test_conv_nodes_are_int8_except_those_the_rules_kept_float(converted):
    _, out, result = converted
    conv = load_bundle(out).metadata.extra["int8"]["conv"]
    layers = {layer["name"]: layer for layer in conv["layers"]}
    graph = out / "model.int8.onnx"
    assert set(layers) == all_convs(out / "model.onnx")
    quantized = {name for name, layer in layers.items() if layer["quantized"]}
    assert qdq_convs(graph) == quantized
    assert FIRST_CONV not in quantized and "GEMM depth 10" in layers[FIRST_CONV]["reason"]
    assert set(conv["kept_float"]) == set(layers) - quantized
    limit, min_depth = conv["options"]["max_layer_cer_increase"], conv["options"]["min_depth"]
    for layer in layers.values():  # every layer is measured, the shallow first conv too
        assert layer["cer_increase"] is not None, layer
        assert layer["quantized"] == (layer["depth"] >= min_depth and layer["cer_increase"] <= limit), layer
    # onnxruntime fuses each quantized Conv into QLinearConv when it loads the graph.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out.parent / "optimized.onnx")
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == len(quantized) and ops["Conv"] == len(layers) - len(quantized)
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] > 0  # the dynamic MatMul recipe too


def front_end_twins(layers) -> Set[str]:
    """The split front-end's names of the single graph's feature-encoder layers among `layers`."""
    return {name.replace("/model/wav2vec2", "") for name in layers if "/feature_extractor/" in name}


def test_split_front_end_has_the_single_graphs_int8_convs(converted):
    _, out, _ = converted
    meta = load_bundle(out).metadata
    conv = meta.extra["int8"]["conv"]
    quantized = {layer["name"] for layer in conv["layers"] if layer["quantized"]}
    front = out / "front_end.int8.onnx"
    assert qdq_convs(front) == front_end_twins(quantized)
    assert "/feature_extractor/conv_layers.0/conv/Conv" in all_convs(front) - qdq_convs(front)  # depth rule
    assert not qdq_convs(out / "encoder.int8.onnx")  # the positional conv stays float in the encoder
    split = meta.extra["split"]
    assert split["int8_conv"]["quantized"] and set(split["int8_conv"]["quantized"]) == qdq_convs(front)
    positional = "/model/wav2vec2/encoder/pos_conv_embed/conv/Conv"
    assert split["int8_conv"]["float_in_encoder"] == sorted({positional} & quantized)
    parity = split["parity_int8"]  # int8-conv's split graphs against the single int8-conv graph
    assert parity["agreement"] >= parity["agreement_with_fp32"] - 0.01
    assert "parity_int8_dynamic_only" in split and "parity_int8-conv" not in split


def test_the_int8_conv_bundle_transcribes_through_edge_asr(converted):
    root, out, result = converted
    transcriber = EdgeTranscriber(out, quantized=True)
    assert transcriber.model_path.name == "model.int8.onnx"
    texts = [transcriber.transcribe(root / "audio" / f"u{i}.wav").text for i in range(len(TEXTS))]
    assert texts == result.evaluation.runs["int8-conv"].transcripts
    assert any(texts)


def test_the_accuracy_rule_keeps_a_layer_that_costs_accuracy_in_float(converted, tmp_path):
    _, out, _ = converted
    costly = "/model/wav2vec2/feature_extractor/conv_layers.2/conv/Conv"

    def judge(path: Path) -> float:  # pretend quantizing conv 2 costs 3 CER points, the others nothing
        return 0.13 if costly in qdq_convs(path) else 0.10

    audio = [_speechlike(1.5, seed=s) for s in range(3)]
    options = ConvInt8Options(max_layer_cer_increase=0.01)
    result = quantize_int8_conv(out / "model.onnx", tmp_path / "conv.onnx", audio, options, None, judge)
    kept = result.kept_float
    assert set(kept) == {FIRST_CONV, costly}
    assert "+3.00 points, over the 1.00 allowed" in kept[costly]
    assert qdq_convs(tmp_path / "conv.onnx") == all_convs(out / "model.onnx") - {FIRST_CONV, costly}
    assert result.probe_cer == pytest.approx(0.10)
    # Without the dynamic recipe only the Convs change: the graph-agnostic static step alone.
    assert result.quantized_nodes == {"Conv (QDQ)": 6}
    # Restricted by name: the positional conv is not even looked at.
    options = ConvInt8Options(nodes=("feature_extractor",), keep_float=("conv_layers.1/",))
    result = quantize_int8_conv(out / "model.onnx", tmp_path / "fe.onnx", audio, options, None, None)
    positional = "/model/wav2vec2/encoder/pos_conv_embed/conv/Conv"
    assert {layer.name for layer in result.layers} == all_convs(out / "model.onnx") - {positional}
    assert set(result.kept_float) == {FIRST_CONV, "/model/wav2vec2/feature_extractor/conv_layers.1/conv/Conv"}
    assert qdq_convs(tmp_path / "fe.onnx") == {layer.name for layer in result.layers if layer.quantized}


def test_the_guard_fails_when_int8_conv_costs_more_than_allowed(workspace, converted, capsys):
    root, model, dev, calibration = workspace
    _, _, result = converted
    threshold = result.evaluation.cer_increase - 0.001
    out = root / "guarded"
    code = main(
        ["-q", "convert", "--model", str(model), "--out", str(out), "--eval", str(dev),
         "--int8-conv", "--calibration", str(calibration), "--max-cer-increase", str(threshold)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "int8-conv raised CER" in err and "int8_recommended=false" in err and "without --int8-conv" in err
    assert load_bundle(out).metadata.int8_recommended is False
    report = json.loads((out / "report.json").read_text())
    assert report["guard_passed"] is False and report["guarded_variant"] == "int8-conv"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--int8-conv"], "--int8-conv needs --calibration"),
        (["--calibration", "CAL"], "only used with --int8-conv"),
        (["--int8-conv", "--calibration", "CAL", "--int8-ops", "MatMul,Conv"], "drop Conv from --int8-ops"),
        (["--int8-conv", "--calibration", "missing.csv"], "calibration manifest not found"),
        (["--int8-conv", "--calibration", "CAL", "--no-int8"], "drop --no-int8 or --int8-conv"),
    ],
)
def test_int8_conv_arguments_are_checked_before_any_work(workspace, tmp_path, capsys, extra, message):
    _, model, _, calibration = workspace
    argv = [str(calibration) if a == "CAL" else str(tmp_path / a) if a.endswith(".csv") else a for a in extra]
    out = tmp_path / "out"
    assert main(["-q", "convert", "--model", str(model), "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_quantize_adds_int8_conv_to_an_existing_bundle(workspace, converted, tmp_path):
    _, _, _, calibration = workspace
    _, out, _ = converted
    fp32_only = tmp_path / "fp32"
    assert main(["-q", "export", "--model", str(workspace[1]), "--out", str(fp32_only)]) == 0
    assert load_bundle(fp32_only).metadata.split is not None
    new = tmp_path / "conv"
    argv = ["-q", "quantize", "--bundle", str(fp32_only), "--out", str(new), "--int8-conv"]
    assert main([*argv, "--calibration", str(calibration)]) == 0
    bundle = load_bundle(new)
    bundle.verify()
    split = bundle.metadata.split
    assert split is not None and split.front_end["int8"] == "front_end.int8.onnx"
    assert sorted(p.name for p in new.glob("front_end*.onnx")) == ["front_end.int8.onnx", "front_end.onnx"]
    conv = bundle.metadata.extra["int8"]["conv"]
    quantized = {layer["name"] for layer in conv["layers"] if layer["quantized"]}
    assert quantized and qdq_convs(new / "model.int8.onnx") == quantized
    assert qdq_convs(new / "front_end.int8.onnx") == front_end_twins(quantized)
    assert conv["split"]["quantized"] and set(conv["split"]["quantized"]) == front_end_twins(quantized)
    assert conv["calibration_utterances"] == CALIBRATION_CLIPS
    text = EdgeTranscriber(new, quantized=True).transcribe(np.zeros(RATE, dtype=np.float32), RATE).text
    assert isinstance(text, str)


def test_gelu_fusion_leaves_the_float_graph_exact(converted, tmp_path):
    from quantize.int8_conv import fuse_erf_gelu
    from quantize.parity import make_session, run_graph

    _, out, _ = converted
    fused = tmp_path / "fused.onnx"
    fused.write_bytes((out / "model.onnx").read_bytes())
    erfs = sum(n.op_type == "Erf" for n in onnx.load(str(fused)).graph.node)
    assert erfs > 0 and fuse_erf_gelu(fused) == erfs
    ops = collections.Counter(n.op_type for n in onnx.load(str(fused)).graph.node)
    assert ops["Gelu"] == erfs and ops["Erf"] == 0
    signal = _speechlike(1.7, seed=9)[None, :]
    lengths = np.array([signal.shape[1]])
    a = run_graph(make_session(out / "model.onnx"), signal, lengths)
    b = run_graph(make_session(fused), signal, lengths)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert fuse_erf_gelu(fused) == 0  # nothing left to fuse; the file is untouched


def test_gelus_under_one_scope_fuse_into_uniquely_named_nodes(tmp_path):
    """A Whisper encoder's two GELUs are exported under the same scope ("/model/Div", "/model/Div_1")."""
    from onnx import TensorProto, helper, numpy_helper

    from quantize.int8_conv import fuse_erf_gelu
    from quantize.parity import make_session

    nodes, inits, x = [], [], "x"
    for i, suffix in enumerate(("", "_1")):
        for name, value in (("sqrt2", 2**0.5), ("one", 1.0), ("half", 0.5)):
            inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), f"{name}{i}"))
        nodes += [
            helper.make_node("Div", [x, f"sqrt2{i}"], [f"d{i}"], name=f"/model/Div{suffix}"),
            helper.make_node("Erf", [f"d{i}"], [f"e{i}"], name=f"/model/Erf{suffix}"),
            helper.make_node("Add", [f"e{i}", f"one{i}"], [f"a{i}"], name=f"/model/Add{suffix}"),
            helper.make_node("Mul", [x, f"a{i}"], [f"m{i}"], name=f"/model/Mul{suffix}"),
            helper.make_node("Mul", [f"m{i}", f"half{i}"], [f"y{i}"], name=f"/model/Mul_half{suffix}"),
        ]
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "two_gelus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [4])],
        inits,
    )
    path = tmp_path / "gelus.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    values = np.array([-2.0, -0.5, 0.3, 1.7], dtype=np.float32)
    before = make_session(path).run(None, {"x": values})[0]
    assert fuse_erf_gelu(path) == 2
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gelu"]
    assert len(set(names)) == 2
    np.testing.assert_allclose(make_session(path).run(None, {"x": values})[0], before, atol=1e-6)


@pytest.fixture(scope="module")
def local_conv_bundle(workspace):
    """A layer-norm front-end without do_normalize (the cache is exact), converted with --int8-conv."""
    from quantize.synthetic import TINY_CONFIG

    root, _, _, calibration = workspace
    config = dict(TINY_CONFIG, feat_extract_norm="layer", conv_bias=True)
    model = make_random_model(
        root / "local-model", config=config, do_normalize=False, head_scale=30.0, suppress_special=True
    )
    options = ConvertOptions(
        model=str(model), out=root / "local", conv=ConvInt8Options(calibration=calibration)
    )
    return convert(options).bundle


def test_int8_conv_split_bundle_caches_features_and_gives_the_uncached_frames(local_conv_bundle):
    from edge_asr import TranscribeOptions
    from edge_asr.model import SplitCtcModel
    from edge_asr.windows import WindowedRunner, cache_is_exact

    bundle = load_bundle(local_conv_bundle)
    meta = bundle.metadata
    assert meta.split is not None and cache_is_exact(meta)
    assert qdq_convs(local_conv_bundle / "front_end.int8.onnx")  # int8 convs in the cached front-end
    options = TranscribeOptions(chunk_seconds=1.0, context_seconds=0.4, use_lm=False)
    cached = EdgeTranscriber(local_conv_bundle, quantized=True, options=options)
    assert cached.front_end_cache and isinstance(cached.model, SplitCtcModel)
    assert cached.model.front_end_path.name == "front_end.int8.onnx"
    audio = _speechlike(6.3, seed=21)
    a = np.concatenate(list(cached.log_probs(audio, RATE)))
    # the same split graphs without the cache: each window runs the front-end on all its samples
    plain = WindowedRunner(cached.model.log_probs, cached.plan, None)
    b = np.concatenate([core for _, core in [*plain.push(audio), *plain.finish()]])
    assert a.shape == b.shape
    assert (a.argmax(-1) == b.argmax(-1)).all()
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert isinstance(cached.transcribe(audio, RATE).text, str)
