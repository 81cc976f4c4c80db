"""quantize/: a tiny random-init wav2vec2 -> ONNX -> parity -> int8 -> bundle -> edge_asr.

The models are random, built from a config in tmp_path; their CTC head is scaled up so that greedy
tokens are decided by clear margins (a near-uniform random head flips on rounding noise, which would
test nothing about the exporter).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")

import jiwer  # noqa: E402
import soundfile as sf  # noqa: E402

from edge_asr.bundle import load_bundle  # noqa: E402
from edge_asr.text import TextNormalization  # noqa: E402
from edge_asr.transcriber import EdgeTranscriber  # noqa: E402
from quantize.cli import main  # noqa: E402
from quantize.convert import ConvertOptions, convert  # noqa: E402
from quantize.errors import GuardError  # noqa: E402
from quantize.synthetic import make_random_model  # noqa: E402

pytestmark = pytest.mark.desktop

RATE = 16000
TEXTS = ["hello world", "the quick brown fox", "it's a test, isn't it", "one two three four five"]
NORMALIZATION = TextNormalization(lowercase=True, keep_punctuation="'", strip_accents=True)


def _speechlike(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Noise bursts and gliding tones with pauses: varied frames without needing a TTS engine."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = (np.sin(2 * np.pi * rng.uniform(1.5, 4.0) * t) > -0.2).astype(np.float32)
    tone = np.sin(2 * np.pi * (rng.uniform(150, 400) + 200 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (envelope * (0.3 * tone + 0.1 * rng.standard_normal(n))).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    model = make_random_model(
        root / "model", head_scale=30.0, suppress_special=True, normalization=NORMALIZATION
    )
    audio = root / "audio"
    audio.mkdir()
    rows = ["path,text"]
    for i, text in enumerate(TEXTS):
        sf.write(audio / f"u{i}.wav", _speechlike(1.0 + 0.55 * i, seed=i), RATE)
        rows.append(f'audio/u{i}.wav,"{text}"')
    manifest = root / "dev.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return root, model, manifest


@pytest.fixture(scope="module")
def converted(workspace):
    root, model, manifest = workspace
    out = root / "bundle"
    result = convert(ConvertOptions(model=str(model), out=out, eval_manifest=manifest, max_cer_increase=0.5))
    return root, model, manifest, out, result


def _pytorch_greedy(model_dir: Path, wav: Path) -> str:
    """Reference decode with the plain Hugging Face stack: feature extractor, model, tokenizer."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCTC.from_pretrained(model_dir).eval()
    samples, rate = sf.read(wav, dtype="float32")
    inputs = extractor(samples, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        ids = model(**inputs).logits.argmax(-1)[0]
    text = tokenizer.decode(ids.tolist())
    assert isinstance(text, str)  # one sequence of ids decodes to one string
    return text


def test_bundle_metadata_follows_the_model_folder(converted):
    _, model, _, out, _ = converted
    bundle = load_bundle(out, verify=True)
    bundle.verify()  # every file, reports included, matches its checksum
    meta = bundle.metadata
    vocab = json.loads((model / "vocab.json").read_text())
    assert meta.vocabulary == [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert meta.blank_id == vocab["<pad>"]
    assert meta.word_delimiter == "|"
    assert set(meta.special_ids) == {vocab[t] for t in ("<pad>", "<s>", "</s>", "<unk>")}
    assert meta.text_normalization == TextNormalization.from_dict(
        json.loads((model / "text_normalization.json").read_text())
    )
    config = json.loads((model / "config.json").read_text())
    assert meta.frame_stride == int(np.prod(config["conv_stride"]))
    assert (meta.frame_stride, meta.receptive_field) == (320, 400)
    assert meta.do_normalize and meta.normalization_in_graph and meta.log_softmax_in_graph
    assert meta.models == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert meta.source["tools"]["torch"] == torch.__version__
    assert meta.extra["parity"]["max_abs_diff"] < 1e-3
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_fp32_bundle_transcribes_exactly_like_pytorch(converted):
    root, model, manifest, out, result = converted
    transcriber = EdgeTranscriber(out, quantized=False)
    for i in range(len(TEXTS)):
        wav = root / "audio" / f"u{i}.wav"
        expected = _pytorch_greedy(model, wav)
        assert expected.strip(), "the random model should say something"
        assert transcriber.transcribe(wav).text == " ".join(expected.split())
    assert result.evaluation.identical_to_pytorch["fp32"] == len(TEXTS)


def test_report_figures_are_consistent_with_its_transcripts(converted):
    _, _, _, out, _ = converted
    report = json.loads((out / "report.json").read_text())
    rows = report["utterances"]
    # Scored here with jiwer directly, independently of the metrics code the report used.
    refs = [NORMALIZATION(r["reference"]) for r in rows]
    for variant in ("fp32", "int8"):
        hyps = [NORMALIZATION(r[variant]) for r in rows]
        assert report["variants"][variant]["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-4)
        assert report["variants"][variant]["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-4)
        assert report["variants"][variant]["peak_rss_mb"] > 20
        assert (
            report["variants"][variant]["size_bytes"]
            == (out / f"model{'.int8' if variant == 'int8' else ''}.onnx").stat().st_size
        )
    increase = report["variants"]["int8"]["cer"] - report["variants"]["fp32"]["cer"]
    assert report["cer_increase"] == pytest.approx(increase, abs=2e-4)
    assert report["guard_passed"] and report["int8_recommended"]
    assert 0.5 <= report["token_agreement"]["int8_vs_fp32"] <= 1.0
    assert report["token_agreement"]["fp32_vs_pytorch"] == 1.0
    assert report["variants"]["int8"]["size_bytes"] < report["variants"]["fp32"]["size_bytes"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| int8 |" in (out / "report.md").read_text()
    meta = load_bundle(out).metadata
    assert meta.int8_recommended
    assert meta.extra["evaluation"]["cer_increase"] == report["cer_increase"]


def test_int8_bundle_runs_within_the_guard_on_the_device_path(converted):
    root, _, _, out, result = converted
    transcriber = EdgeTranscriber(out, quantized=True)
    assert transcriber.model_path.name == "model.int8.onnx"
    texts = [transcriber.transcribe(root / "audio" / f"u{i}.wav").text for i in range(len(TEXTS))]
    assert texts == result.evaluation.runs["int8"].transcripts
    assert result.evaluation.cer_increase <= 0.5


def test_guard_below_the_measured_cost_fails_but_keeps_the_bundle(converted, capsys):
    root, model, manifest, _, result = converted
    threshold = result.evaluation.cer_increase - 0.001
    out = root / "guarded"
    code = main(
        ["-q", "convert", "--model", str(model), "--out", str(out), "--eval", str(manifest),
         "--max-cer-increase", str(threshold)]
    )  # fmt: skip
    assert code == 1
    assert "int8_recommended=false" in capsys.readouterr().err
    meta = load_bundle(out).metadata
    assert meta.int8_recommended is False
    report = json.loads((out / "report.json").read_text())
    assert report["guard_passed"] is False
    with pytest.raises(GuardError):
        convert(
            ConvertOptions(
                model=str(model), out=out, eval_manifest=manifest, max_cer_increase=threshold, force=True
            )
        )


def test_existing_output_is_refused_without_force(converted, capsys):
    _, model, _, out, _ = converted
    before = (out / "bundle.json").read_text()
    assert main(["-q", "export", "--model", str(model), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "bundle.json").read_text() == before


def _expect_refusal(capsys, tmp_path: Path, argv, message: str) -> None:
    out = tmp_path / "out"
    assert main(["-q", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_not_a_model_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    _expect_refusal(capsys, tmp_path, ["convert", "--model", str(folder)], "config.json is missing")


def test_a_path_that_does_not_exist_is_named_as_a_missing_folder_not_a_hub_name(tmp_path, capsys):
    missing = str(tmp_path / "no" / "such" / "model")
    assert main(["-q", "convert", "--model", missing, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "hub" not in err and "network" not in err, err


def test_corrupt_weights_are_refused(tmp_path, capsys):
    model = make_random_model(tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _expect_refusal(capsys, tmp_path, ["convert", "--model", str(model)], "cannot load the weights")


def test_missing_vocabulary_is_refused(tmp_path, capsys):
    model = make_random_model(tmp_path / "model")
    (model / "vocab.json").unlink()
    _expect_refusal(capsys, tmp_path, ["convert", "--model", str(model)], "vocabulary")


def test_non_ctc_model_is_refused(tmp_path, capsys):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from quantize.synthetic import TINY_CONFIG

    folder = make_random_model(tmp_path / "model")
    Wav2Vec2Model(Wav2Vec2Config(**TINY_CONFIG)).save_pretrained(folder)  # an encoder without CTC head
    _expect_refusal(capsys, tmp_path, ["convert", "--model", str(folder)], "unsupported architecture")


def test_unknown_model_type_is_refused(tmp_path, capsys):
    folder = make_random_model(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="whisper", architectures=["WhisperForConditionalGeneration"])
    (folder / "config.json").write_text(json.dumps(config))
    _expect_refusal(capsys, tmp_path, ["convert", "--model", str(folder)], "unsupported architecture")


def test_manifest_with_missing_audio_is_refused_before_any_work(workspace, tmp_path, capsys):
    _, model, _ = workspace
    manifest = tmp_path / "dev.csv"
    manifest.write_text("path,text\nnowhere.wav,hello\n")
    _expect_refusal(
        capsys, tmp_path, ["convert", "--model", str(model), "--eval", str(manifest)], "nowhere.wav"
    )


def test_failed_parity_writes_no_bundle(workspace, tmp_path, capsys):
    _, model, _ = workspace
    _expect_refusal(
        capsys, tmp_path, ["export", "--model", str(model), "--parity-atol", "-1"], "parity failed"
    )


def test_failed_export_writes_no_bundle(workspace, tmp_path, capsys):
    _, model, _ = workspace
    argv = ["export", "--model", str(model), "--opset", "3"]
    _expect_refusal(capsys, tmp_path, argv, "torch.onnx.export of model.onnx failed")


def test_failed_quantization_leaves_nothing(tmp_path):
    from quantize.errors import QuantizationError
    from quantize.int8 import quantize_int8

    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(QuantizationError, match="dynamic quantization failed"):
        quantize_int8(broken, tmp_path / "model.int8.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize(
    "model_type, overrides",
    [
        ("hubert", {}),
        ("data2vec-audio", {}),
        # large-style wav2vec2: layer norm in the feature encoder, trained with an attention mask
        (
            "wav2vec2",
            {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "return_attention_mask": True},
        ),
        # a different conv stack: frame_stride/receptive_field must follow the config
        ("wav2vec2", {"conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2), "conv_dim": (16, 16, 16)}),
    ],
)
def test_other_ctc_architectures_export_with_parity(tmp_path, model_type, overrides):
    from quantize.synthetic import TINY_CONFIG

    config = dict(TINY_CONFIG)
    mask = overrides.pop("return_attention_mask", False)
    config.update(overrides)
    if model_type == "data2vec-audio":
        config.pop("feat_extract_norm")
        config.pop("do_stable_layer_norm")
    model = make_random_model(
        tmp_path / "model",
        config=config,
        model_type=model_type,
        head_scale=30.0,
        return_attention_mask=mask,
        suppress_special=True,
    )
    result = convert(ConvertOptions(model=str(model), out=tmp_path / "bundle"))
    meta = result.metadata
    strides, kernels = (
        config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2)),
        config.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2)),
    )
    assert meta.frame_stride == int(np.prod(strides))
    assert meta.receptive_field == 1 + sum((k - 1) * int(np.prod(strides[:i])) for i, k in enumerate(kernels))
    assert meta.extra["parity"]["agreement"] >= 0.999
    wav = tmp_path / "probe.wav"
    sf.write(wav, _speechlike(2.0, seed=5), RATE)
    expected = " ".join(_pytorch_greedy(model, wav).split())
    assert EdgeTranscriber(tmp_path / "bundle", quantized=False).transcribe(wav).text == expected


def test_graph_normalization_matches_the_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    from quantize.export import normalize_batch

    a, b = _speechlike(1.3, 1) * 3 + 0.2, _speechlike(0.7, 2)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    expected = extractor([a, b], sampling_rate=RATE, padding=True, return_tensors="np").input_values
    batch = np.zeros((2, a.size), dtype=np.float32)
    batch[0], batch[1, : b.size] = a, b
    got = normalize_batch(torch.from_numpy(batch), torch.tensor([a.size, b.size])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_manifest_formats(tmp_path):
    from quantize.errors import ManifestError
    from quantize.manifest import read_manifest

    (tmp_path / "wavs").mkdir()
    for name in ("a", "b"):
        sf.write(tmp_path / "wavs" / f"{name}.wav", np.zeros(1600, dtype=np.float32), RATE)
    csv_plain = tmp_path / "plain.csv"
    csv_plain.write_text("wavs/a.wav,Hello, world\nwavs/b.wav,second\n")
    assert [i.text for i in read_manifest(csv_plain)] == ["Hello, world", "second"]
    lj = tmp_path / "metadata.csv"
    lj.write_text("a|Dr. Smith|Doctor Smith\nb|plain text|\n")
    items = read_manifest(lj)
    assert [(i.path.name, i.text) for i in items] == [("a.wav", "Doctor Smith"), ("b.wav", "plain text")]
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text(json.dumps({"path": "wavs/a.wav", "text": "x"}) + "\n")
    assert read_manifest(jsonl)[0].path == tmp_path / "wavs" / "a.wav"
    assert len(read_manifest(lj, limit=1)) == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("path,text\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(empty)
    assert os.path.exists(tmp_path / "wavs" / "a.wav")


def test_requantize_and_report_an_existing_bundle(converted, tmp_path):
    root, model, manifest, out, _ = converted
    requantized = tmp_path / "per-tensor"
    assert main(["-q", "quantize", "--bundle", str(out), "--out", str(requantized), "--per-tensor"]) == 0
    bundle = load_bundle(requantized)
    bundle.verify()
    assert bundle.metadata.extra["int8"]["options"]["per_channel"] is False
    assert "evaluation" not in bundle.metadata.extra  # the old int8's figures do not describe the new one
    assert not (requantized / "report.json").exists()
    assert (requantized / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    reports = tmp_path / "reports"
    argv = ["-q", "report", "--bundle", str(requantized), "--model", str(model), "--eval", str(manifest)]
    assert main([*argv, "--out", str(reports), "--max-cer-increase", "0.5"]) == 0
    report = json.loads((reports / "report.json").read_text())
    assert report["int8"]["options"]["per_channel"] is False
    assert report["variants"]["fp32"]["identical_to_pytorch"] == len(TEXTS)
    assert sorted(p.name for p in reports.iterdir()) == ["report.json", "report.md", "report.png"]
