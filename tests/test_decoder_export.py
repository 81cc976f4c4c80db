"""The text decoder's way from a Whisper checkpoint to the device: ONNX graphs with explicit caches
(parity with transformers), int8 with the token lookup reading the int8 table, `convert --decoder`,
and joint decoding through EdgeTranscriber, on a tiny random Whisper built here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.desktop
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
onnxruntime = pytest.importorskip("onnxruntime")

from whisper_support import EOT, START, VOCAB, save_tiny_whisper, token_strings  # noqa: E402

from quantize import decoder as D  # noqa: E402

HF_FOLDER = Path(__file__).resolve().parents[1] / "models" / "default-model-hf"


def save_model_folder(model: Any, folder: Path) -> Path:
    """A whisper-ctc model saved as `convert` reads one: its weights and config, with the default
    model's vocabulary and feature files beside them."""
    from train import whisper_ctc as W

    model.save_pretrained(str(folder))
    for name in W.FOLDER_FILES:
        if name != "config.json" and (HF_FOLDER / name).is_file():
            shutil.copy2(HF_FOLDER / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Whisper with a decoder and a vocab.json, as `train.whisper_import --include-decoder`
    would write a real one."""
    folder = tmp_path_factory.mktemp("whisper")
    save_tiny_whisper(folder, suppress=[VOCAB - 5])
    vocab = {token: index for index, token in enumerate(token_strings())}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return folder


def test_decoder_graphs_match_transformers_and_int8_drops_the_float_table(
    whisper_dir: Path, tmp_path: Path
) -> None:
    model = D.load_whisper(str(whisper_dir))
    spec = D.decoder_spec(model)
    assert spec.prompt == [START] and spec.eot == EOT and spec.special_from == EOT + 1
    assert spec.suppress == [VOCAB - 5] and spec.suppress_at_begin == [EOT]
    cross, step = tmp_path / D.CROSS_FILE, tmp_path / D.STEP_FILE
    D.export_decoder(model, cross, step)
    # The prompt in one call from an empty cache, then a token a call, against a teacher-forced pass.
    parity = D.check_decoder_parity(model, cross, step, spec, frames=50, steps=10)
    assert parity.max_abs_diff < 1e-4 and parity.argmax_agreement == 1.0
    facts = D.quantize_decoder(cross, step, tmp_path / D.CROSS_INT8_FILE, tmp_path / D.STEP_INT8_FILE)
    assert facts["lookup_reads_int8_table"]
    import onnx

    graph = onnx.load(str(tmp_path / D.STEP_INT8_FILE)).graph
    tables = [i for i in graph.initializer if list(i.dims) == [VOCAB, 64]]
    assert not tables  # the fp32 [vocab, d] lookup table is gone
    quantized = D.check_decoder_parity(model, tmp_path / D.CROSS_INT8_FILE, tmp_path / D.STEP_INT8_FILE, spec)
    assert quantized.max_abs_diff < 0.5  # int8 of a random model; the real one is measured in docs


def test_encoder_states_output_leaves_the_log_probs_unchanged(tmp_path: Path) -> None:
    import onnx

    shipped = Path(__file__).resolve().parents[1] / "edge_asr" / "models" / "default" / "model.int8.onnx"
    # The shipped graph has the output already: take it away again for a graph as v2.2 shipped it.
    model = onnx.load(str(shipped))
    outputs = [o for o in model.graph.output if o.name == D.STATES_NAME]
    identity = [n for n in model.graph.node if D.STATES_NAME in n.output]
    if outputs:
        model.graph.output.remove(outputs[0])
        model.graph.node.remove(identity[0])
    plain, target = tmp_path / "plain.onnx", tmp_path / "model.onnx"
    onnx.save(model, str(plain))
    assert D.expose_encoder_states(plain, target) == 384
    options = onnxruntime.SessionOptions()
    before = onnxruntime.InferenceSession(str(plain), options)
    after = onnxruntime.InferenceSession(str(target), options)
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, 16000))).astype(np.float32)
    (expected,) = before.run(["log_probs"], {"input_values": audio})
    log_probs, states = after.run(["log_probs", D.STATES_NAME], {"input_values": audio})
    np.testing.assert_array_equal(log_probs, expected)
    assert states.shape == (1, expected.shape[1], 384)
    if outputs:  # the shipped graph's states are these
        (shipped_states,) = onnxruntime.InferenceSession(str(shipped), options).run(
            [D.STATES_NAME], {"input_values": audio}
        )
        np.testing.assert_array_equal(shipped_states, states)
    with pytest.raises(D.ExportError, match="already has"):
        D.expose_encoder_states(target, tmp_path / "again.onnx")


def test_convert_with_a_decoder_gives_a_bundle_that_decodes_jointly(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from edge_asr import EdgeTranscriber, TranscribeOptions
    from edge_asr.bundle import load_bundle
    from edge_asr.verify import check_decoder
    from quantize.convert import ConvertOptions, convert
    from train import whisper_ctc as W

    ctc = W.from_whisper(str(whisper_dir), vocab_size=30, head_type="linear", seed=3)
    model_dir = save_model_folder(ctc, tmp_path / "model")
    bundle = tmp_path / "bundle"
    result = convert(ConvertOptions(model=str(model_dir), out=bundle, decoder=str(whisper_dir)))
    decoder = result.metadata.decoder
    assert decoder is not None and decoder.step == D.STEP_INT8_FILE
    assert decoder.per_layer_cross and result.metadata.format_version == 4
    inputs = [i.name for i in onnxruntime.InferenceSession(str(bundle / decoder.step)).get_inputs()]
    assert inputs[3:] == decoder.cross_inputs() == [f"cross_{kv}_{i}" for kv in "kv" for i in range(2)]
    assert result.metadata.extra["decoder"]["encoder_states_max_abs_diff"] < 1e-3
    assert not (bundle / D.STEP_FILE).exists()  # the fp32 decoder is not shipped with int8
    # (info --verify's other checks want a trained model: a random head is not blank on silence)
    checked = check_decoder(load_bundle(bundle))
    assert "(64 wide)" in checked and f"all {VOCAB} tokens" in checked

    audio = (0.3 * np.sin(np.arange(48000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    audio += (0.05 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    joint = EdgeTranscriber(bundle)
    assert joint.joint
    transcript = joint.transcribe(audio, sample_rate=16000)
    stats = joint.joint_stats
    assert stats.segments == 1
    bound = decoder.min_tokens + int(np.ceil(3.0 * decoder.max_tokens_per_second))
    assert stats.tokens <= bound
    assert all(0 <= w.start <= w.end <= 3.0 for w in transcript.words)
    ctc_only = EdgeTranscriber(bundle, options=TranscribeOptions(decoder="ctc"))
    assert not ctc_only.joint
    assert isinstance(ctc_only.transcribe(audio, sample_rate=16000).text, str)
    # A stream's final goes through the same joint pass as the file (partials are CTC).
    stream = joint.stream()
    events = stream.accept(audio, 16000) + stream.flush()
    finals = [e for e in events if e.is_final]
    assert [e.text for e in finals] in ([transcript.text], [])  # [] when the VAD heard no speech


def test_a_ctc_branch_graph_gives_the_encoders_own_states_to_the_decoder(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from quantize.convert import ConvertOptions, convert
    from train import whisper_ctc as W

    ctc = W.from_whisper(str(whisper_dir), vocab_size=30, head_type="linear", ctc_layers=1, seed=3).eval()
    with torch.no_grad():  # a trained branch: no longer the encoder's copy
        ctc.ctc_branch.layers[0].fc1.weight.mul_(1.5)
    model_dir = save_model_folder(ctc, tmp_path / "model")
    bundle = tmp_path / "bundle"
    result = convert(ConvertOptions(model=str(model_dir), out=bundle, decoder=str(whisper_dir), int8=False))
    assert result.metadata.extra["decoder"]["encoder_states_max_abs_diff"] < 1e-3
    session = onnxruntime.InferenceSession(str(bundle / result.metadata.models["fp32"]))
    audio = (0.1 * np.random.default_rng(2).standard_normal((1, 24000))).astype(np.float32)
    log_probs, states = session.run(["log_probs", D.STATES_NAME], {"input_values": audio})
    with torch.no_grad():
        out = ctc(torch.from_numpy(audio))
        expected_states = ctc.encode(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(states, expected_states, atol=1e-3)
    np.testing.assert_allclose(log_probs, torch.log_softmax(out.logits, -1).numpy(), atol=1e-3)


def test_convert_refuses_a_decoder_for_a_model_that_is_not_whisper_ctc(tmp_path: Path) -> None:
    from quantize.convert import ConvertOptions, convert
    from quantize.errors import QuantizeError

    source = tmp_path / "w2v"
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=30,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
    )  # fmt: skip
    transformers.Wav2Vec2ForCTC(config).save_pretrained(str(source))
    for name in ("vocab.json", "tokenizer_config.json", "preprocessor_config.json"):
        if (HF_FOLDER / name).is_file():
            shutil.copy2(HF_FOLDER / name, source / name)
    with pytest.raises(QuantizeError, match="whisper-ctc"):
        convert(ConvertOptions(model=str(source), out=tmp_path / "b", decoder="anything"))


def _step_outputs(path: Path, spec: Any, seed: int) -> list:
    """The step graph's outputs on random cache, cross keys and values and tokens, fed as `spec` says."""
    from edge_asr.attention import cross_feeds

    rng = np.random.default_rng(seed)
    shape = (spec.layers, 1, spec.heads, 23, spec.head_dim)
    cross = (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
    cache = rng.standard_normal((spec.layers, 3, spec.heads, 5, spec.head_dim)).astype(np.float32)
    feeds = {"tokens": rng.integers(0, EOT, (3, 1)), "self_k": cache, "self_v": cache + 1}
    return onnxruntime.InferenceSession(str(path)).run(None, {**feeds, **cross_feeds(spec, cross)})


def test_one_cross_input_per_layer_gives_the_stacked_graphs_results_exactly(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    model = D.load_whisper(str(whisper_dir))
    spec = D.decoder_spec(model)
    stacked, split = tmp_path / "stacked.onnx", tmp_path / "split.onnx"
    D.export_decoder(model, tmp_path / D.CROSS_FILE, stacked, per_layer_cross=False)
    shutil.copyfile(stacked, split)
    assert D.split_cross_inputs(split)
    assert not D.split_cross_inputs(split)  # already one input per layer: left as it is
    old = _step_outputs(stacked, replace(spec, per_layer_cross=False), seed=4)
    new = _step_outputs(split, spec, seed=4)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)


def test_a_format_3_bundle_still_decodes_and_decoder_inputs_upgrades_it_to_the_same_text(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from edge_asr import EdgeTranscriber
    from edge_asr.bundle import load_bundle, write_bundle
    from edge_asr.errors import BundleError
    from quantize.cli import main as quantize_main
    from quantize.convert import ConvertOptions, convert
    from train import whisper_ctc as W

    ctc = W.from_whisper(str(whisper_dir), vocab_size=30, head_type="linear", seed=3)
    bundle = tmp_path / "bundle"
    convert(ConvertOptions(model=str(save_model_folder(ctc, tmp_path / "model")), out=bundle,
                           decoder=str(whisper_dir)))  # fmt: skip
    audio = (0.3 * np.sin(np.arange(32000) * 2 * np.pi * 180 / 16000)).astype(np.float32)
    joint = EdgeTranscriber(bundle)
    text = joint.transcribe(audio, sample_rate=16000).text
    assert joint.joint and joint.joint_stats.tokens > 0 and text  # the decoder wrote it
    converted_step = tmp_path / "converted-step.onnx"
    shutil.copyfile(bundle / D.STEP_INT8_FILE, converted_step)
    # The same decoder as a format-3 bundle held it: stacked cross inputs.
    work = tmp_path / "stacked"
    work.mkdir()
    D.export_decoder(D.load_whisper(str(whisper_dir)), work / D.CROSS_FILE, work / D.STEP_FILE, False)
    D.quantize_decoder(work / D.CROSS_FILE, work / D.STEP_FILE, work / "c.onnx", bundle / D.STEP_INT8_FILE)
    meta = load_bundle(bundle).metadata
    assert meta.decoder is not None
    with pytest.raises(BundleError, match="no input.*cross_k_0.*one per layer"):
        EdgeTranscriber(bundle, verify=False)  # bundle.json and the graph disagree: said by name
    meta.decoder = replace(meta.decoder, per_layer_cross=False)
    write_bundle(bundle, meta)
    assert json.loads((bundle / "bundle.json").read_text())["format_version"] == 3
    assert "per_layer_cross" not in json.loads((bundle / "bundle.json").read_text())["decoder"]
    assert EdgeTranscriber(bundle).transcribe(audio, sample_rate=16000).text == text

    assert quantize_main(["decoder-inputs", "--bundle", str(bundle)]) == 0
    upgraded = load_bundle(bundle)
    upgraded.verify()
    assert upgraded.metadata.format_version == 4
    assert upgraded.metadata.decoder is not None and upgraded.metadata.decoder.per_layer_cross
    spec = upgraded.metadata.decoder  # the same graph as convert writes (nodes in another order)
    ours, converts = _step_outputs(bundle / D.STEP_INT8_FILE, spec, 5), _step_outputs(converted_step, spec, 5)
    for a, b in zip(ours, converts):
        np.testing.assert_array_equal(a, b)
    assert EdgeTranscriber(bundle).transcribe(audio, sample_rate=16000).text == text
    assert not D.split_bundle_cross_inputs(bundle)
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]
    data = json.loads((bundle / "bundle.json").read_text())
    edits = [("", "format_version", 3, "'decoder.per_layer_cross' needs format_version 4"),
             ("decoder", "per_layer_cross", "yes", "per_layer_cross should be true or false")]  # fmt: skip
    for section, key, value, message in edits:
        broken = json.loads(json.dumps(data))
        (broken[section] if section else broken)[key] = value
        (bundle / "bundle.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError, match=message):
            load_bundle(bundle)
