"""train/: the real training loop on a tiny random-init wav2vec2 and a tiny generated dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tensorboard")

import torch  # noqa: E402
from test_train_data import PHRASES, make_bad_manifest, make_ljspeech, tiny_config  # noqa: E402

from train.cli import main as cli_main  # noqa: E402
from train.config import ConfigError  # noqa: E402
from train.pipeline import run_training  # noqa: E402

pytestmark = pytest.mark.desktop
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_ljspeech(tmp_path_factory.mktemp("lj") / "data", PHRASES)


def train_losses(history):
    return [(h["step"], h["loss"]) for h in history if "loss" in h and "eval_loss" not in h]


def tensorboard_tags(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, texts = set(), set()
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        texts |= {t for t in acc.Tags()["tensors"] if "examples" in t}
    return scalars, texts


def test_loss_goes_down_and_the_run_folder_is_complete(tmp_path, dataset):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    # Batch = the whole training split, so every step sees the same data and the loss must fall.
    config = tiny_config(tmp_path, [dataset], max_steps=8, eval_steps=4, batch_size=6, learning_rate=3e-3)
    result = run_training(config)
    losses = [loss for _, loss in train_losses(result.log_history)]
    assert len(losses) == 8
    assert losses[-1] < 0.85 * losses[0], losses

    run = result.run_dir
    assert (run / "train_config.yaml").is_file()
    versions = json.loads((run / "versions.json").read_text())
    assert versions["packages"]["torch"] == metadata.version("torch")
    assert versions["packages"]["transformers"] == metadata.version("transformers")
    train_csv = (run / "splits" / "train.csv").read_text().splitlines()
    val_csv = (run / "splits" / "validation.csv").read_text().splitlines()
    assert train_csv[0].startswith("path,text") and len(train_csv) - 1 == result.train_rows >= 5
    assert len(val_csv) - 1 == result.validation_rows >= 1
    # a validation phrase may hold a letter no training phrase has: it is dropped, and says so
    assert result.train_rows + result.validation_rows + len(result.report.dropped) == len(PHRASES)
    scalars, texts = tensorboard_tags(run / "tensorboard")
    assert {"train/loss", "train/learning_rate", "eval/loss", "eval/cer", "eval/wer"} <= scalars, scalars
    assert texts, "decoded validation examples were not written to TensorBoard"

    model_dir = result.model_dir
    for name in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "text_normalization.json",
    ]:
        assert (model_dir / name).is_file(), name
    model = Wav2Vec2ForCTC.from_pretrained(model_dir)
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    assert (
        model.config.vocab_size
        == len(processor.tokenizer)
        == len(json.loads((run / "vocab.json").read_text()))
    )
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id == 0
    assert json.loads((model_dir / "text_normalization.json").read_text())["lowercase"] is True
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cer"] == pytest.approx(result.cer)


def test_resume_continues_from_the_saved_step(tmp_path, dataset):
    first = run_training(tiny_config(tmp_path, [dataset], max_steps=2, eval_steps=2))
    assert first.steps == 2 and (first.run_dir / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(ConfigError, match="--resume"):
        run_training(tiny_config(tmp_path, [dataset], max_steps=4, eval_steps=2))
    second = run_training(tiny_config(tmp_path, [dataset], max_steps=4, eval_steps=2, resume=True))
    assert second.steps == 4
    steps = [step for step, _ in train_losses(second.log_history)]
    assert steps[:2] == [1, 2]  # restored from checkpoint-2's state ...
    assert steps[2:] == [3, 4]  # ... and only steps 3 and 4 were trained now
    assert (second.run_dir / "checkpoints" / "checkpoint-4").is_dir()
    assert (second.run_dir / "train_config.yaml").read_text() != (
        second.run_dir / "train_config.resumed.yaml"
    ).read_text()
    assert (second.run_dir / "versions.resumed.json").is_file() and (second.run_dir / "dropped.csv").is_file()


def test_early_stopping_triggers_when_cer_stops_improving(tmp_path, dataset):
    # A learning rate of ~0 leaves the model as it is: CER cannot improve after the first evaluation.
    config = tiny_config(
        tmp_path, [dataset], max_steps=30, eval_steps=1, learning_rate=1e-12, early_stopping_patience=2
    )
    result = run_training(config)
    assert result.stopped_early
    assert result.steps == 3  # best at step 1, no better at 2 and 3


def test_bad_rows_are_reported_and_the_good_ones_train(tmp_path, capsys, caplog):
    manifest, validation = make_bad_manifest(tmp_path / "data")
    out = tmp_path / "run"
    status = cli_main(
        [
            "--data",
            str(manifest),
            "--validation-data",
            str(validation),
            "--output-dir",
            str(out),
            "--init-from-config",
            "tiny",
            "--max-steps",
            "2",
            "--eval-steps",
            "2",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--no-augment",
            # base-style geometry: group norm, no attention mask (the tiny preset is layer-norm)
            "--model-override",
            "feat_extract_norm=group",
            "--model-override",
            "do_stable_layer_norm=false",
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert "validation CER" in printed.out
    logged = caplog.text
    assert "dropped 6 of 16 rows" in logged
    for reason in [
        "audio file missing",
        "unreadable audio",
        "empty audio",
        "empty transcript",
        "receptive field",
        "too long for CTC",
    ]:
        assert reason in logged, reason
    dropped = (out / "dropped.csv").read_text()
    assert "missing.wav" in dropped and "garbage.wav" in dropped
    trained = (out / "splits" / "train.csv").read_text()
    assert "good0.wav" in trained and "garbage.wav" not in trained and "short.wav" not in trained
    assert json.loads((out / "model" / "config.json").read_text())["feat_extract_norm"] == "group"
    assert (
        json.loads((out / "model" / "preprocessor_config.json").read_text())["return_attention_mask"] is False
    )


def test_pretrained_folder_gets_a_new_head_and_a_frozen_feature_encoder(tmp_path, dataset):
    from transformers import Wav2Vec2ForCTC

    from train.model import load_model_config

    base = Wav2Vec2ForCTC(load_model_config("", "tiny", {}, vocab_size=40))
    base.save_pretrained(tmp_path / "pretrained")
    config = tiny_config(tmp_path, [dataset], init_from_config=None, model=str(tmp_path / "pretrained"))
    result = run_training(config)
    tuned = Wav2Vec2ForCTC.from_pretrained(result.model_dir)
    assert tuned.config.vocab_size != 40 and tuned.lm_head.out_features == tuned.config.vocab_size
    conv = "wav2vec2.feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(tuned.state_dict()[conv], base.state_dict()[conv])  # frozen by default
    proj = "wav2vec2.feature_projection.projection.weight"
    assert not torch.equal(tuned.state_dict()[proj], base.state_dict()[proj])  # the rest trained


def test_growing_a_checkpoint_adds_identity_layers(tmp_path):
    from transformers import Wav2Vec2ForCTC

    from train.model import build_model, load_model_config

    torch.manual_seed(0)
    small = Wav2Vec2ForCTC(load_model_config("", "tiny", {}, vocab_size=12)).eval()
    for p in small.parameters():  # trained-looking weights: random init leaves some biases at zero
        p.data.add_(0.05 * torch.randn_like(p))
    small.save_pretrained(tmp_path / "small")
    overrides = {"num_hidden_layers": small.config.num_hidden_layers + 2}
    config = load_model_config(str(tmp_path / "small"), None, overrides, vocab_size=12)
    grown = build_model(config, str(tmp_path / "small"), False, False, seed=1).eval()
    assert len(grown.wav2vec2.encoder.layers) == len(small.wav2vec2.encoder.layers) + 2
    audio = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.allclose(grown(audio).logits, small(audio).logits, atol=1e-5)
    # The new layers still learn: their zeroed projections get gradients.
    grown.train()
    grown(audio).logits.square().mean().backward()
    new = grown.wav2vec2.encoder.layers[-1]
    assert new.feed_forward.output_dense.weight.grad.abs().sum() > 0


def test_fp16_on_cpu_is_refused_with_advice(tmp_path, dataset, capsys):
    status = cli_main(
        [
            "--data",
            str(dataset),
            "--output-dir",
            str(tmp_path / "r"),
            "--init-from-config",
            "tiny",
            "--device",
            "cpu",
            "--precision",
            "fp16",
        ]
    )
    assert status == 1
    assert "bf16" in capsys.readouterr().err


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precision_auto_follows_native_bf16(monkeypatch, caplog, native):
    import train.pipeline as P
    from train.config import TrainConfig

    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: native)
    assert P._resolve_device(TrainConfig(device="cpu")) == (True, "bf16" if native else "fp32")
    caplog.clear()
    assert P._resolve_device(TrainConfig(device="cpu", precision="bf16")) == (True, "bf16")
    emulated = [r for r in caplog.records if "without native bf16" in r.getMessage()]
    assert bool(emulated) is not native


def test_ddp_with_two_cpu_processes(tmp_path, dataset):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # rendezvous on a free local port
        "-m",
        "train",
        "--data",
        str(dataset),
        "--output-dir",
        str(out),
        "--init-from-config",
        "tiny",
        "--max-steps",
        "2",
        "--eval-steps",
        "2",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--no-augment",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        # Seen once in ~10 runs on this 2-core box right after other heavy tests: a rank aborted
        # (SIGABRT) before training started. One retry, with the first failure shown, while the
        # cause is investigated; DDP that does not work at all still fails here.
        print("first DDP attempt failed:\n" + done.stderr[-3000:])
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation CER" in done.stdout
    assert "cpu x 2 process(es) (gloo backend)" in done.stderr
    assert (out / "model" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert not list(out.glob(".*rank*"))


def test_a_non_finite_loss_stops_training_and_no_checkpoint_holds_nan(tmp_path, dataset, monkeypatch, capsys):
    import numpy as np
    from safetensors.numpy import load_file

    import train.dataset as TD
    from train.cli import run as cli_run

    config = tiny_config(tmp_path, [dataset], max_steps=8, eval_steps=2, batch_size=4)
    run_dir = Path(config.output_dir)
    real_load = TD.load_audio

    def load_audio(path):
        # Audio that turns non-finite after the data checks looked at it (augmentation, a file
        # rewritten meanwhile): from the first checkpoint on, every utterance is NaN.
        samples = real_load(path)
        if any((run_dir / "checkpoints").glob("checkpoint-*")):
            samples = np.full_like(samples, np.nan)
        return samples

    monkeypatch.setattr(TD, "load_audio", load_audio)
    assert cli_run(config) == 1
    err = capsys.readouterr().err
    assert "error: the training loss became nan at step " in err and "--resume" in err
    assert not (run_dir / "model").exists() and not (run_dir / "metrics.json").exists()
    saved = sorted((run_dir / "checkpoints").glob("checkpoint-*/model.safetensors"))
    assert saved, "the checkpoint before the NaN is kept"
    for weights in saved:
        assert all(np.isfinite(t).all() for t in load_file(str(weights)).values()), weights


def test_weights_that_are_not_finite_are_found_by_name():
    from train.trainer import non_finite_parameters

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    assert non_finite_parameters(model) == []
    with torch.no_grad():
        model[1].bias[0] = float("inf")
    assert non_finite_parameters(model) == ["1.bias"]
