"""The whisper-ctc family: front-end and encoder parity with transformers' Whisper, frame geometry,
save/load, and the head trainer end to end through quantize convert and EdgeTranscriber."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.desktop
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from train import whisper_ctc as W  # noqa: E402

VOCAB = Path(__file__).resolve().parents[1] / "models" / "default-model-hf" / "vocab.json"


def tiny_whisper(folder: Path) -> Path:
    """A random 2-layer Whisper (d_model 64) saved as a Hugging Face folder."""
    config = transformers.WhisperConfig(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        decoder_layers=1,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    torch.manual_seed(0)
    transformers.WhisperModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_whisper(tmp_path_factory.mktemp("whisper"))


def test_log_mel_matches_whisper_feature_extractor_inside_the_edges() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    reference = extractor(audio, sampling_rate=16000, return_tensors="np", padding="longest").input_features[
        0
    ]
    ours = W.LogMel(80)(torch.from_numpy(audio)[None])[0].numpy()
    assert ours.shape == reference.shape == (80, 300)
    # Zero centre padding instead of reflection changes the first and last frame only.
    assert np.abs(ours[:, 2:-2] - reference[:, 2:-2]).max() < 1e-4


def test_encoder_states_match_transformers_whisper_encoder(whisper_dir: Path) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29).eval()
    reference = transformers.WhisperModel.from_pretrained(str(whisper_dir)).get_encoder().eval()
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        ours = model.encode_mel(mel)
        theirs = reference(mel).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)
    with torch.no_grad():  # any length, not only Whisper's 30 s
        assert model.encode_mel(torch.randn(1, 80, 700)).shape == (1, 350, 64)


@pytest.mark.parametrize("samples", [160, 319, 320, 321, 479, 480, 16000, 16159, 16160, 48321])
def test_frame_count_is_the_runtime_formula(whisper_dir: Path, samples: int) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29, head_type="linear").eval()
    with torch.no_grad():
        frames = model(torch.randn(1, samples)).logits.shape[1]
    assert frames == W.output_frames(samples)
    assert frames == (samples - W.RECEPTIVE_FIELD) // W.FRAME_STRIDE + 1  # edge_asr's windows use this
    assert int(W.output_frames_tensor(torch.tensor([samples]))[0]) == frames


def test_save_and_from_pretrained_round_trip(whisper_dir: Path, tmp_path: Path) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29, head_layers=1, head_dim=32, head_ffn=64).eval()
    model.save_pretrained(str(tmp_path))
    loaded = transformers.AutoModelForCTC.from_pretrained(str(tmp_path)).eval()
    assert type(loaded) is W.WhisperCtcForCTC
    x = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_padding_frames_do_not_change_the_head_output(whisper_dir: Path) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29, head_layers=2, head_dim=32, head_ffn=64).eval()
    states = torch.randn(1, 40, 64)
    padded = torch.cat([states, torch.randn(1, 25, 64)], dim=1)
    with torch.no_grad():
        alone = model(encoder_states=states).logits
        batched = model(encoder_states=padded, frames=torch.tensor([40])).logits[:, :40]
    assert torch.allclose(alone, batched, atol=1e-5)


def _noise_corpus(folder: Path, count: int = 6) -> Path:
    """Manifest of short noise bursts with labels: enough to run the trainer, not to learn speech."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    words = ["on", "off", "light", "door", "music", "stop"]
    rows = []
    for i in range(count):
        audio = (0.1 * rng.standard_normal(int(16000 * (0.8 + 0.1 * i)))).astype(np.float32)
        sf.write(folder / f"u{i}.wav", audio, 16000)
        rows.append({"path": str(folder / f"u{i}.wav"), "text": f"{words[i]} {words[(i + 1) % 6]}"})
    manifest = folder / "data.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_head_trainer_caches_trains_resumes_and_the_model_converts(whisper_dir: Path, tmp_path: Path) -> None:
    from edge_asr import EdgeTranscriber
    from quantize.convert import ConvertOptions, convert
    from train import whisper_head

    manifest = _noise_corpus(tmp_path / "data")
    run = tmp_path / "run"
    common = [
        "--encoder", str(whisper_dir), "--data", str(manifest), "--validation-data", str(manifest),
        "--vocab", str(VOCAB), "--out", str(run), "--copies", "1", "--eval-every", "5",
        "--head-layers", "1", "--head-dim", "32", "--head-ffn", "64", "--warmup", "2", "--threads", "1",
    ]  # fmt: skip
    whisper_head.train_head(whisper_head.parse_args([*common, "--steps", "5"]))
    first = (run / "cache" / "train-data-data-0.f16").stat().st_mtime_ns
    whisper_head.train_head(whisper_head.parse_args([*common, "--steps", "10"]))  # resumes at step 5
    import json

    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [5, 10]
    assert (run / "cache" / "train-data-data-0.f16").stat().st_mtime_ns == first  # the cache was reused
    with pytest.raises(SystemExit, match="other settings"):
        whisper_head.train_head(whisper_head.parse_args([*common, "--steps", "10", "--lr", "0.5"]))

    bundle = tmp_path / "bundle"
    result = convert(ConvertOptions(model=str(run / "model"), out=bundle, eval_manifest=manifest))
    assert result.metadata.frame_stride == 320 and result.metadata.receptive_field == 160
    assert result.report is not None
    asr = EdgeTranscriber(bundle)
    audio, _ = sf.read(tmp_path / "data" / "u3.wav", dtype="float32")
    transcript = asr.transcribe(audio, sample_rate=16000)
    assert isinstance(transcript.text, str)
    assert transcript.duration == pytest.approx(len(audio) / 16000)


def test_head_trainer_starts_from_a_trained_head_and_recaches_changed_validation_rows(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from train import whisper_head

    manifest = _noise_corpus(tmp_path / "data")
    common = [
        "--encoder", str(whisper_dir), "--data", str(manifest), "--vocab", str(VOCAB), "--copies", "1",
        "--head-layers", "1", "--head-dim", "32", "--head-ffn", "64", "--warmup", "1", "--threads", "1",
    ]  # fmt: skip
    first = tmp_path / "first"
    whisper_head.train_head(
        whisper_head.parse_args(
            [
                *common,
                "--validation-data",
                str(manifest),
                "--out",
                str(first),
                "--steps",
                "3",
                "--eval-every",
                "3",
            ]
        )
    )
    trained = load_file(str(first / "head-best.safetensors"))

    # A continuation starts from that head: with a vanishing learning rate its first checkpoint is it.
    second = tmp_path / "second"
    shorter = tmp_path / "data" / "valid.csv"
    shorter.write_text("".join(manifest.read_text().splitlines(keepends=True)[:4]))  # header + 3 rows
    args = [*common, "--out", str(second), "--steps", "1", "--eval-every", "1", "--lr", "1e-12"]
    whisper_head.train_head(
        whisper_head.parse_args(
            [*args, "--validation-data", str(manifest), "--init-head", str(first / "model")]
        )
    )
    continued = load_file(str(second / "head-last.safetensors"))
    assert continued.keys() == trained.keys()
    assert all(torch.allclose(continued[k], trained[k], atol=1e-6) for k in trained)

    # Other validation rows on resume: the validation cache is rebuilt, not read back stale.
    whisper_head.train_head(
        whisper_head.parse_args([*args, "--validation-data", str(shorter), "--steps", "2"])
    )
    valid = whisper_head.load_cache(second / "cache" / "valid.f16", 64)
    assert len(valid) == 3

    with pytest.raises(ValueError, match="do not fit"):
        whisper_head.train_head(
            whisper_head.parse_args(
                [*common, "--validation-data", str(manifest), "--out", str(tmp_path / "third"),
                 "--steps", "1", "--head-dim", "48", "--force", "--init-head", str(first / "model")]
            )
        )  # fmt: skip


def test_a_grown_head_starts_as_the_trained_one(whisper_dir: Path, tmp_path: Path) -> None:
    sizes = dict(vocab_size=29, head_dim=32, head_ffn=64, head_heads=4)
    trained = W.from_whisper(str(whisper_dir), head_layers=1, seed=1, **sizes).eval()
    with torch.no_grad():
        trained.head.blocks[0].out.weight.normal_()  # not a fresh init: a head that learnt something
    trained.save_pretrained(str(tmp_path / "trained"))
    grown = W.from_whisper(str(whisper_dir), head_layers=3, seed=2, **sizes).eval()
    with pytest.raises(ValueError, match="--grow-head"):
        W.load_head(grown, tmp_path / "trained")
    W.load_head(grown, tmp_path / "trained", grow=True)
    states = torch.randn(2, 40, trained.config.whisper_config().d_model)
    with torch.no_grad():
        assert torch.allclose(
            grown(encoder_states=states).logits, trained(encoder_states=states).logits, atol=1e-5
        )
    assert float(grown.head.blocks[2].ff1.weight.detach().abs().sum()) > 0  # the added blocks can still learn
    assert float(grown.head.blocks[1].out.weight.detach().abs().sum()) == 0.0
    smaller = W.from_whisper(str(whisper_dir), head_layers=1, **{**sizes, "head_dim": 48})
    with pytest.raises(ValueError, match="do not fit"):
        W.load_head(smaller, tmp_path / "trained", grow=True)  # other widths never fit
    shrunk = W.from_whisper(str(whisper_dir), head_layers=1, **sizes)
    grown.save_pretrained(str(tmp_path / "grown"))
    with pytest.raises(ValueError, match="do not fit"):
        W.load_head(shrunk, tmp_path / "grown", grow=True)  # more blocks than the model has


def test_a_ctc_branch_starts_as_the_encoder_and_leaves_the_decoders_states_alone(
    whisper_dir: Path, tmp_path: Path
) -> None:
    sizes = dict(vocab_size=29, head_layers=1, head_dim=32, head_ffn=64, head_heads=4)
    plain = W.from_whisper(str(whisper_dir), seed=1, **sizes).eval()
    plain.save_pretrained(str(tmp_path / "plain"))
    branched = W.from_whisper(str(whisper_dir), ctc_layers=1, seed=2, **sizes).eval()
    assert branched.fork_layer == 1
    with pytest.raises(ValueError, match="--grow-head"):
        W.load_head(branched, tmp_path / "plain")
    W.load_head(branched, tmp_path / "plain", grow=True)
    x = torch.randn(1, 16000)
    with torch.no_grad():
        out = branched(x)
        assert torch.allclose(out.logits, plain(x).logits, atol=1e-5)  # a copy of the top layer
        assert torch.allclose(out.hidden_states[-1], plain.encode(x), atol=1e-6)
        trunk = branched.trunk(x)  # what the head trainer caches: the fork's input
        assert torch.allclose(branched(encoder_states=trunk).logits, out.logits, atol=1e-5)
        padded = torch.cat([trunk, torch.randn(1, 17, trunk.shape[2])], dim=1)
        batched = branched(encoder_states=padded, frames=torch.tensor([trunk.shape[1]])).logits
        assert torch.allclose(batched[:, : trunk.shape[1]], out.logits, atol=1e-5)  # padding unseen
        fc2 = branched.ctc_branch.layers[0].fc2.weight
        fc2.add_(torch.randn_like(fc2))  # training the branch...
        moved = branched(x)
        assert not torch.allclose(moved.logits, out.logits, atol=1e-3)  # ...moves the CTC path
        assert torch.equal(moved.hidden_states[-1], out.hidden_states[-1])  # and not the decoder's input
    with pytest.raises(ValueError, match="ctc_layers 3"):
        W.from_whisper(str(whisper_dir), ctc_layers=3, **sizes)


def test_head_trainer_trains_a_ctc_branch_on_states_cached_below_it(
    whisper_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from train import whisper_head

    manifest = _noise_corpus(tmp_path / "data")
    run = tmp_path / "run"
    whisper_head.train_head(
        whisper_head.parse_args(
            [
                "--encoder", str(whisper_dir), "--data", str(manifest), "--validation-data", str(manifest),
                "--vocab", str(VOCAB), "--out", str(run), "--copies", "1", "--eval-every", "3",
                "--head-layers", "1", "--head-dim", "32", "--head-ffn", "64", "--warmup", "1",
                "--threads", "1", "--steps", "3", "--lr", "1e-2", "--ctc-layers", "1",
            ]
        )
    )  # fmt: skip
    assert (run / "cache" / "train-data-data-0-layer1.f16").is_file()  # not the final states' name
    assert not (run / "cache" / "train-data-data-0.f16").exists()
    trained = load_file(str(run / "head-last.safetensors"))
    start = W.from_whisper(str(whisper_dir), vocab_size=29, ctc_layers=1, head_layers=1, head_dim=32)
    encoder_top = start.state_dict()["encoder.layers.1.fc1.weight"]  # the branch's starting point
    moved = trained["ctc_branch.layers.0.fc1.weight"] - encoder_top
    assert float(moved.abs().max()) > 0  # the branch trained
    model = transformers.AutoModelForCTC.from_pretrained(str(run / "model"))
    for name, weight in start.encoder.state_dict().items():  # the encoder did not
        assert torch.equal(model.encoder.state_dict()[name], weight), name
    W.save_head_folder(str(run / "model"), str(tmp_path / "head"))
    assert "ctc_branch.layer_norm.weight" in load_file(str(tmp_path / "head" / W.HEAD_FILE))


def test_head_only_folder_reassembles_into_the_same_model(whisper_dir: Path, tmp_path: Path) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29, head_layers=1, head_dim=32, head_ffn=64).eval()
    model.save_pretrained(str(tmp_path / "full"))
    W.save_head_folder(str(tmp_path / "full"), str(tmp_path / "head"))
    assert not (tmp_path / "head" / "model.safetensors").exists()  # no encoder weights in the head folder
    W.main(
        [
            "assemble",
            "--head",
            str(tmp_path / "head"),
            "--encoder",
            str(whisper_dir),
            "--out",
            str(tmp_path / "re"),
        ]
    )
    rebuilt = transformers.AutoModelForCTC.from_pretrained(str(tmp_path / "re")).eval()
    x = torch.randn(1, 16000)
    with torch.no_grad():
        a, b = model(x).logits, rebuilt(x).logits
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert torch.allclose(a, b, atol=2e-2)  # the head is stored in float16


def test_head_folder_names_the_encoder_model_not_a_local_folder(
    whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = tmp_path / "work" / "whisper-local"
    shutil.copytree(whisper_dir, encoder)
    (encoder / "provenance.json").write_text(json.dumps({"source": {"model": "openai/whisper-tiny.en"}}))
    monkeypatch.chdir(tmp_path)  # trained with a relative --encoder, as recipes run from the repository
    for given, out in (("work/whisper-local", "relative"), (str(encoder), "absolute")):
        model = W.from_whisper(given, vocab_size=29, head_layers=1, head_dim=32, head_ffn=64)
        model.save_pretrained(str(tmp_path / f"full-{out}"))
        W.save_head_folder(str(tmp_path / f"full-{out}"), str(tmp_path / out))
        config = json.loads((tmp_path / out / "config.json").read_text())
        assert config["encoder_config"]["_name_or_path"] == "openai/whisper-tiny.en", out


def test_positions_are_computed_only_when_the_table_is_whispers_sinusoids(
    whisper_dir: Path, tmp_path: Path
) -> None:
    model = W.from_whisper(str(whisper_dir), vocab_size=29, head_type="linear").eval()
    assert model.config.sinusoidal_positions  # a Whisper checkpoint's table is the fixed sinusoids
    table = model.encoder.embed_positions.weight
    assert torch.allclose(table, W.sinusoids(*table.shape), atol=1e-5)

    learnt = transformers.WhisperModel.from_pretrained(str(whisper_dir))
    with torch.no_grad():
        learnt.encoder.embed_positions.weight.add_(torch.randn_like(learnt.encoder.embed_positions.weight))
    learnt.save_pretrained(str(tmp_path))
    other = W.from_whisper(str(tmp_path), vocab_size=29, head_type="linear").eval()
    assert not other.config.sinusoidal_positions
    mel = torch.randn(1, 80, 200)
    with torch.no_grad():
        assert not torch.allclose(other.encode_mel(mel), model.encode_mel(mel), atol=1e-3)


def test_nonspeech_clips_are_quiet_finite_and_train_with_empty_labels() -> None:
    from train import whisper_head as H
    from train.trainer import ctc_loss

    rng = np.random.default_rng(0)
    clips = [H.nonspeech_clip(rng) for _ in range(40)]
    assert all(c.dtype == np.float32 and np.isfinite(c).all() and np.abs(c).max() <= 1.0 for c in clips)
    assert all(0.3 * 16000 <= len(c) <= 8 * 16000 for c in clips)
    assert any(not c.any() for c in clips)  # digital silence is among them
    # A batch mixing an empty label with a real one: CTC scores the empty one as all-blank.
    split = H.CachedSplit(np.zeros((30, 4), np.float16), [0, 10], [10, 20], [[], [4, 5]], ["", "ab"])
    x, frames, labels = H.collate([split], [(0, 0), (0, 1)])
    assert labels.shape == (2, 2) and (labels[0] == -100).all()
    logits = torch.zeros(2, 20, 30)
    logits[0, :, 0] = 10.0  # confident blanks for the empty item
    loss = ctc_loss(logits, labels, frames, blank_id=0)
    assert torch.isfinite(loss)
