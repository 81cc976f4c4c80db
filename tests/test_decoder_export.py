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
    assert result.metadata.format_version == 3
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
