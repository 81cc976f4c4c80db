"""train/: data reading and checks, config, vocabulary, metrics, batching and the CTC loss (no training).

Also home of the tiny-dataset helpers the other train tests import.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("jiwer")
pytest.importorskip("yaml")

import torch  # noqa: E402

from edge_asr.text import TextNormalization  # noqa: E402
from train import data as D  # noqa: E402
from train import model as M  # noqa: E402
from train import vocab as V  # noqa: E402
from train.cli import config_from_args  # noqa: E402
from train.config import ConfigError, TrainConfig, load_config_file, save_config  # noqa: E402
from train.dataset import CTCCollator, SpeechDataset, usable_workers  # noqa: E402
from train.metrics import count_errors, ids_to_text  # noqa: E402
from train.pipeline import prepare_data  # noqa: E402
from train.trainer import ctc_loss  # noqa: E402

pytestmark = pytest.mark.desktop

PHRASES = ["yes", "no", "go left", "stop now", "a red cat", "the dog ran", "up and down", "big sky"]
NATIVE_RATE = 22050  # espeak-ng's rate: loading must resample to 16 kHz


def say(text: str, path: Path, rate: int = NATIVE_RATE) -> None:
    """Speech from espeak-ng when installed, else a tone sequence (one tone per character)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-s", "190", "-w", str(path), text], check=True, capture_output=True)
        return
    t = np.arange(int(0.08 * rate)) / rate
    parts = [0.3 * np.sin(2 * np.pi * (300 + 40 * (ord(ch) % 32)) * t) for ch in text]
    sf.write(str(path), np.concatenate(parts + [np.zeros(int(0.05 * rate))]).astype(np.float32), rate)


def make_ljspeech(folder: Path, phrases: Sequence[str] = PHRASES) -> Path:
    """An LJSpeech-style dataset (metadata.csv + wavs/); capitalised text exercises normalization."""
    lines = []
    for i, text in enumerate(phrases):
        ident = f"utt{i:03d}"
        say(text, folder / "wavs" / f"{ident}.wav")
        lines.append(f"{ident}|{text.capitalize()}.|{text.capitalize()}.")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_manifest(path: Path, rows: List[List[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text"])
        writer.writerows(rows)
    return path


def make_bad_manifest(folder: Path) -> Tuple[Path, Path]:
    """A training manifest with good rows plus one row of every kind the checks must drop, and a
    clean validation manifest (words made of training characters)."""
    rows = []
    for i, text in enumerate(PHRASES):
        say(text, folder / "audio" / f"good{i}.wav")
        rows.append([f"audio/good{i}.wav", text])
    (folder / "audio" / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    sf.write(str(folder / "audio" / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    sf.write(str(folder / "audio" / "click.wav"), np.zeros(50, dtype=np.float32), 16000)
    say("hi", folder / "audio" / "short.wav")
    rows += [
        ["audio/missing.wav", "no such file"],
        ["audio/garbage.wav", "unreadable"],
        ["audio/empty.wav", "empty audio"],
        ["audio/good0.wav", "  ...  "],
        ["audio/click.wav", "too short"],
        ["audio/short.wav", "this transcript is far too long for such a short bit of audio " * 6],
    ]
    for word in ("no", "go"):
        say(word, folder / "audio" / f"val_{word}.wav")
    val = write_manifest(
        folder / "validation.csv", [["audio/val_no.wav", "No!"], ["audio/val_go.wav", "Go."]]
    )
    return write_manifest(folder / "manifest.csv", rows), val


def tiny_config(tmp_path: Path, data: Sequence[Path], **overrides) -> TrainConfig:
    values = dict(
        data=[str(p) for p in data],
        output_dir=str(tmp_path / "run"),
        init_from_config="tiny",
        max_steps=4,
        eval_steps=2,
        logging_steps=1,
        batch_size=4,
        learning_rate=2e-3,
        warmup=0.0,
        num_workers=0,
        cpu_threads=1,
        augment={"enabled": False},
        validation_fraction=0.25,
        log_level="warning",
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


# ------------------------------------------------------------------------------------------------


def test_ljspeech_and_manifest_sources_resolve_paths_and_resample(tmp_path):
    lj = make_ljspeech(tmp_path / "lj", PHRASES[:2])
    manifest = write_manifest(tmp_path / "m" / "list.csv", [["../lj/wavs/utt000.wav", "Hello there"]])
    report = D.FilterReport()
    rows = D.read_sources([str(lj), str(manifest)], report)
    assert [r.text for r in rows] == ["Yes.", "No.", "Hello there"]
    assert rows[0].path == rows[2].path == str((lj / "wavs" / "utt000.wav").resolve())
    audio = D.load_audio(rows[0].path)
    native = sf.info(rows[0].path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - native.frames * 16000 / native.samplerate) <= 2


def test_ljspeech_prefers_the_normalized_column(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        'a1|He said "1885"|He said "eighteen eighty-five"\n', encoding="utf-8"
    )
    rows = D.read_source(str(tmp_path), D.FilterReport())
    assert rows[0].text == 'He said "eighteen eighty-five"'
    assert rows[0].path.endswith("wavs/a1.wav")


def test_unusable_source_is_a_clear_error(tmp_path):
    (tmp_path / "list.csv").write_text("file,sentence\nx.wav,hello\n", encoding="utf-8")
    with pytest.raises(D.DataError, match="path.*text"):
        D.read_source(str(tmp_path / "list.csv"), D.FilterReport())
    with pytest.raises(D.DataError, match="not found"):
        D.read_source(str(tmp_path / "nope.csv"), D.FilterReport())


def test_every_kind_of_bad_row_is_dropped_with_its_reason(tmp_path):
    manifest, val_manifest = make_bad_manifest(tmp_path / "data")
    config = tiny_config(tmp_path, [manifest], validation_data=[str(val_manifest)])
    model_config = M.load_model_config("", "tiny", {})
    train, val, vocabulary, report = prepare_data(
        config, tmp_path / "run", model_config, config.text_normalization(), resuming=False
    )
    counts = report.counts()
    assert counts == {
        "empty_transcript": 1,
        "missing_audio": 1,
        "unreadable_audio": 1,
        "empty_audio": 1,
        "too_short": 1,
        "label_too_long": 1,
    }
    assert {Path(r.path).name for r in train} == {f"good{i}.wav" for i in range(len(PHRASES))}
    assert [r.label for r in val] == ["go", "no"]  # sorted by length for evaluation batches
    summary = report.summary()
    assert "dropped 6 of 16 rows" in summary
    assert "manifest.csv:10" in summary  # the missing file's row is named
    assert vocabulary["[PAD]"] == 0 and vocabulary["|"] == 2


def test_out_of_vocabulary_and_too_long_rows(tmp_path):
    data = tmp_path / "data"
    for i, text in enumerate(PHRASES[:4]):
        say(text, data / f"t{i}.wav")
    say("zebra", data / "v0.wav")
    say("on", data / "v1.wav")
    train = write_manifest(data / "train.csv", [[f"t{i}.wav", t] for i, t in enumerate(PHRASES[:4])])
    val = write_manifest(data / "val.csv", [["v0.wav", "zebra"], ["v1.wav", "on"]])
    durations = sorted(sf.info(str(data / f"t{i}.wav")).duration for i in range(4))
    limit = (durations[0] + durations[-1]) / 2
    config = tiny_config(tmp_path, [train], validation_data=[str(val)], max_seconds=limit)
    model_config = M.load_model_config("", "tiny", {})
    tr, va, vocabulary, report = prepare_data(
        config, tmp_path / "r", model_config, config.text_normalization(), False
    )
    assert "z" not in vocabulary
    assert [r.label for r in va] == ["on"]
    reasons = report.counts()
    assert reasons.get("out_of_vocabulary") == 1
    assert reasons["too_long"] == sum(d > limit for d in durations)
    assert all(r.seconds <= limit for r in tr + va) and tr


def test_split_is_seeded_and_disjoint():
    rows = [D.Utterance(f"/x/{i}.wav", "a", f"m:{i}") for i in range(20)]
    a_train, a_val = D.split_rows(rows, 0.2, seed=1)
    b_train, b_val = D.split_rows(rows, 0.2, seed=1)
    c_train, c_val = D.split_rows(rows, 0.2, seed=2)
    assert [r.path for r in a_val] == [r.path for r in b_val]
    assert [r.path for r in a_val] != [r.path for r in c_val]
    assert len(a_val) == 4 and not {r.path for r in a_val} & {r.path for r in a_train}


def test_config_file_flags_and_paths(tmp_path):
    cfg = tmp_path / "cfg" / "run.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        "data: [../data/metadata.csv]\noutput_dir: out\nbatch_size: 3\n"
        "model_overrides: {mask_time_prob: 0.0}\n"
        "augment: {noise_snr_db: [5, 20], noise_p: 0.1, noise_dir: noise}\n",
        encoding="utf-8",
    )
    config = config_from_args(
        [
            "--config",
            str(cfg),
            "--batch-size",
            "5",
            "--model-override",
            "conv_stride=[5,4,4]",
            "--noise-p",
            "0.5",
        ]
    )
    assert config.batch_size == 5  # the flag wins over the file
    assert config.data == [str((tmp_path / "data" / "metadata.csv").resolve())]
    assert config.output_dir == str((cfg.parent / "out").resolve())
    assert config.model_overrides == {"mask_time_prob": 0.0, "conv_stride": [5, 4, 4]}
    # The augment section merges key by key: the flag's noise_p over the file's, the file's others kept.
    assert config.augment.noise_snr_db == (5.0, 20.0)
    assert config.augment.noise_p == 0.5 and config.augment.enabled
    assert config.augment.noise_dir == str((cfg.parent / "noise").resolve())
    assert config_from_args(["--config", str(cfg), "--no-augment"]).augment.enabled is False
    cfg.write_text("data: [x]\nbatch_sise: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="batch_size"):
        config_from_args(["--config", str(cfg)])
    cfg.write_text("data: [x]\nbatch_size: many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="batch_size.*integer"):
        config_from_args(["--config", str(cfg)])
    cfg.write_text("data: [x]\naugment: {noise_pp: 0.2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'augment.noise_pp'.*did you mean 'augment.noise_p'"):
        config_from_args(["--config", str(cfg)])
    cfg.write_text("data: [x]\naugment: {gain_db: [3, -3]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="augment.gain_db.*reversed"):
        config_from_args(["--config", str(cfg)])
    with pytest.raises(ConfigError, match="augment.noise_p is a probability"):
        config_from_args(["--data", "x", "--noise-p", "1.5"])


def test_flat_augmentation_keys_name_the_augment_section(tmp_path):
    """Config files from before issue 17 had the augmentation options at the top level."""
    cfg = tmp_path / "old.yaml"
    cfg.write_text("data: [x]\naugment: false\nnoise_p: 0.3\nnoise-snr-db: [12.0, 40.0]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        config_from_args(["--config", str(cfg)])
    message = str(error.value)
    assert "moved under `augment:`" in message
    assert "augment: false, noise_p, noise_snr_db" in message
    # The snippet it shows is valid and means what the old file did.
    snippet = textwrap.dedent(message.split("write instead\n", 1)[1].split("\n(", 1)[0])
    cfg.write_text("data: [x]\n" + snippet + "\n", encoding="utf-8")
    augment = config_from_args(["--config", str(cfg)]).augment
    assert (augment.enabled, augment.noise_p, augment.noise_snr_db) == (False, 0.3, (12.0, 40.0))


def test_saved_config_feeds_back_and_keeps_no_run_state(tmp_path):
    config = TrainConfig.from_dict(
        {"data": ["a.csv"], "augment": {"speed_p": 0.5, "lowpass_hz": [2000, 7000]}}, base_dir=tmp_path
    )
    assert config.data == [str((tmp_path / "a.csv").resolve())]
    save_config(config, tmp_path / "train_config.yaml")
    saved = load_config_file(tmp_path / "train_config.yaml")
    assert saved["augment"]["speed_p"] == 0.5 and saved["augment"]["lowpass_hz"] == [2000.0, 7000.0]
    assert "impulse_dir" not in saved["augment"]  # where a run wrote its impulse responses: not an option
    assert TrainConfig.from_dict(saved) == config
    with pytest.raises(ConfigError, match="unknown option 'augment.impulse_dir'"):
        TrainConfig.from_dict({"augment": {"impulse_dir": "x"}})
    with pytest.raises(ConfigError, match="'augment' should be a mapping"):
        TrainConfig.from_dict({"augment": [1]})


def test_the_recipes_load():
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        config = TrainConfig.from_dict(load_config_file(path), base_dir=path.parent, where=str(path))
        assert config.augment.enabled, path


def test_help_lists_every_option(capsys):
    import dataclasses

    from train.augment import AugmentOptions
    from train.cli import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "augment"]
    names += [f.name for f in dataclasses.fields(AugmentOptions) if f.name not in ("enabled", "impulse_dir")]
    for name in names:
        flag = "--model-override" if name == "model_overrides" else "--" + name.replace("_", "-")
        assert flag in text, flag
    assert "--augment, --no-augment" in text and "--impulse-dir" not in text


def test_vocabulary_tokenizer_and_encoder_agree(tmp_path):
    vocabulary = V.build_vocabulary(["go left", "a red cat", "don't"])
    assert list(vocabulary)[:3] == ["[PAD]", "[UNK]", "|"]
    V.save_vocabulary(vocabulary, tmp_path / "vocab.json")
    processor = V.make_processor(tmp_path / "vocab.json", use_attention_mask=False)
    assert len(processor.tokenizer) == len(vocabulary)
    assert processor.tokenizer.pad_token_id == 0
    encode = V.encoder(vocabulary)
    assert processor.tokenizer("don't go").input_ids == encode("don't go")


def test_metrics_normalize_both_sides_and_add_up():
    norm = TextNormalization()
    assert count_errors(["Hello, World!"], ["hello world"], norm).cer == 0.0
    one = count_errors(["abcd"], ["abxd"], norm)
    two = count_errors(["ab cd ef"], ["ab cd ef"], norm)
    both = count_errors(["abcd", "ab cd ef"], ["abxd", "ab cd ef"], norm)
    assert (one + two).cer == pytest.approx(both.cer) == pytest.approx(1 / 12)
    assert both.wer == pytest.approx(1 / 4)
    tokens = ["[PAD]", "[UNK]", "|", "a", "b"]
    assert ids_to_text([3, 3, 0, 3, 2, 2, 4, 0, -100, -100], tokens, 0) == "aa b"
    assert ids_to_text([3, 3, 2, 4, -100], tokens, 0, collapse=False) == "aa b"


def test_geometry_matches_transformers():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    assert M.frame_geometry(Wav2Vec2Config()) == (400, 320)
    config = M.load_model_config("", "tiny", {}, vocab_size=8)
    net = Wav2Vec2ForCTC(config)
    for n in [84, 85, 86, 400, 1234, 16000]:
        assert M.output_frames(config, n) == max(
            0, int(net._get_feat_extract_output_lengths(torch.tensor(n)))
        )
    field, stride = M.frame_geometry(config)
    assert M.output_frames(config, field) == 1 and M.output_frames(config, field - 1) == 0
    assert M.output_frames(config, field + stride) == 2


def test_collator_pads_per_batch_and_masks_only_layer_norm_models():
    items = [{"input_values": np.ones(n, np.float32), "labels": [3] * k} for n, k in [(500, 2), (800, 3)]]
    group = CTCCollator(use_attention_mask=False)(items)
    assert group["input_values"].shape == (2, 800)  # the longest item, not a global maximum
    assert group["input_lengths"].tolist() == [500, 800]
    assert group["labels"].tolist() == [[3, 3, -100], [3, 3, 3]]
    assert "attention_mask" not in group
    layer = CTCCollator(use_attention_mask=True)(items)
    assert layer["attention_mask"].sum(1).tolist() == [500, 800]


def test_ctc_loss_uses_true_lengths():
    torch.manual_seed(0)
    logits = torch.randn(1, 30, 6)
    labels = torch.tensor([[3, 4, 5]])
    alone = ctc_loss(logits[:, :20], labels, torch.tensor([20]), blank_id=0)
    padded = torch.cat([logits[:, :20], torch.randn(1, 10, 6)], dim=1)
    assert ctc_loss(padded, labels, torch.tensor([20]), blank_id=0) == pytest.approx(alone.item(), rel=1e-5)
    assert ctc_loss(padded, labels, torch.tensor([30]), blank_id=0) != pytest.approx(alone.item(), rel=1e-3)


def test_augmentation_only_on_the_training_split(tmp_path):
    from train.augment import AugmentOptions, make_impulse_responses

    say("go left now", tmp_path / "a.wav")
    row = D.Utterance(str(tmp_path / "a.wav"), "go left now", "m:1", label="go left now")
    row.samples = len(D.load_audio(row.path))
    vocabulary = V.build_vocabulary([row.label])
    irs = make_impulse_responses(tmp_path / "irs", (0.1, 0.3), count=2)
    options = AugmentOptions(
        noise_p=1.0,
        pitch_p=0.0,
        stretch_p=1.0,
        stretch_rate=(0.8, 0.85),
        gain_p=1.0,
        reverb_p=1.0,
        impulse_dir=str(irs[0].parent),
    )
    config = M.load_model_config("", "tiny", {})
    frames = lambda n: M.output_frames(config, n)  # noqa: E731
    train = SpeechDataset([row], V.encoder(vocabulary), frames, True, options)
    plain = SpeechDataset([row], V.encoder(vocabulary), frames, True, None)
    a, b = plain[0]["input_values"], plain[0]["input_values"]
    assert np.array_equal(a, b) and len(a) == row.samples
    stretched = train[0]["input_values"]
    assert len(stretched) > row.samples * 1.1  # slowed down: longer, same label
    assert abs(float(stretched.mean())) < 1e-3 and float(stretched.std()) == pytest.approx(1.0, abs=1e-2)


def test_the_run_augments_as_configured_with_its_own_impulse_responses(tmp_path):
    from train.pipeline import RunSetup, augmentation

    run = RunSetup(tmp_path, True, TextNormalization(), None, False, use_cpu=True, precision="fp32")
    assert augmentation(TrainConfig.from_dict({"augment": {"enabled": False}}), run) is None
    dry = TrainConfig.from_dict({"augment": {"reverb_p": 0.0}})
    assert augmentation(dry, run) == dry.augment and not (tmp_path / "impulse_responses").exists()
    wet = TrainConfig.from_dict({"augment": {"reverb_p": 0.5, "noise_p": 0.7}})
    options = augmentation(wet, run)
    assert options is not None and options.noise_p == 0.7
    assert options.impulse_dir == str(tmp_path / "impulse_responses")
    assert len(list((tmp_path / "impulse_responses").glob("ir_*.wav"))) == 8
    assert wet.augment.impulse_dir is None  # the config, saved with the run, is left as given


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_speed_perturbation_moves_tempo_and_pitch_together(rate):
    from train.augment import speed_perturb

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = speed_perturb(tone, rate)
    assert out.dtype == np.float32 and len(out) == pytest.approx(16000 / rate, abs=2)
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[1000:-1000])
    assert peak_hz == pytest.approx(440 * rate, abs=3)


def test_speed_perturbation_in_the_training_split(tmp_path):
    from train.augment import AugmentOptions

    say("go right now", tmp_path / "a.wav")
    row = D.Utterance(str(tmp_path / "a.wav"), "go right now", "m:1", label="go right now")
    row.samples = len(D.load_audio(row.path))
    options = AugmentOptions(speed_p=1.0, speed_rate=(1.2, 1.25), noise_p=0, pitch_p=0, stretch_p=0, gain_p=0)
    config = M.load_model_config("", "tiny", {})
    train = SpeechDataset(
        [row],
        V.encoder(V.build_vocabulary([row.label])),
        lambda n: M.output_frames(config, n),
        False,
        options,
    )
    faster = train[0]["input_values"]
    assert row.samples / 1.26 < len(faster) < row.samples / 1.19


def test_workers_fall_back_to_in_process(monkeypatch):
    assert usable_workers(2) == 2

    class NoWorkers(torch.utils.data.DataLoader):
        def __iter__(self):
            if self.num_workers:
                raise PermissionError("fork is not allowed here")
            return super().__iter__()

    monkeypatch.setattr(torch.utils.data, "DataLoader", NoWorkers)
    assert usable_workers(2) == 0


def test_lowpass_and_eq_reshape_the_spectrum_not_the_length():
    from train.augment import AugmentOptions, apply, build_augmenter

    noise = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)

    def high_band_share(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[len(power) // 2 :].sum() / power.sum()  # share above 4 kHz

    off = dict(noise_p=0.0, pitch_p=0.0, stretch_p=0.0, gain_p=0.0, reverb_p=0.0)
    lowpass = build_augmenter(AugmentOptions(lowpass_p=1.0, lowpass_hz=(2000.0, 2000.0), **off))
    filtered = apply(lowpass, noise)
    assert len(filtered) == len(noise)
    assert high_band_share(noise) > 0.4 and high_band_share(filtered) < 0.05
    eq = build_augmenter(AugmentOptions(eq_p=1.0, eq_gain_db=12.0, **off))
    assert build_augmenter(AugmentOptions(enabled=False, eq_p=1.0)) is None  # --no-augment
    shaped = apply(eq, noise)
    assert len(shaped) == len(noise) and not np.allclose(shaped, noise, atol=1e-3)
    assert build_augmenter(AugmentOptions(**off)) is None  # both default off


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("latin1.csv", "path,text\nx.wav,caf\u00e9 au lait\n".encode("latin-1"), "not UTF-8 text"),
        ("metadata.csv", "a1|Caf\u00e9|Caf\u00e9\n".encode("cp1252"), "not UTF-8 text"),
        ("binary.csv", b"path,text\nx.wav,a\x00b\n", "binary data"),
        ("audio.csv", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\xbb", "binary data"),
    ],
)
def test_a_manifest_that_is_not_utf8_text_is_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(D.DataError, match=message) as info:
        D.read_source(str(path), D.FilterReport())
    assert str(path) in str(info.value) and ("UTF-8" in str(info.value) or "audio" in str(info.value))


def test_non_finite_and_truncated_audio_rows_are_dropped(tmp_path):
    data = tmp_path / "data"
    rows = []
    for i, text in enumerate(PHRASES[:4]):
        say(text, data / f"good{i}.wav")
        rows.append([f"good{i}.wav", text])
    samples, rate = sf.read(str(data / "good0.wav"), dtype="float32")
    spoiled = samples.copy()
    spoiled[len(spoiled) // 2] = np.nan
    sf.write(str(data / "nan.wav"), spoiled, rate, subtype="FLOAT")
    spoiled[len(spoiled) // 2] = np.inf
    sf.write(str(data / "inf.wav"), spoiled.astype(np.float64), rate, subtype="DOUBLE")
    whole = (data / "good1.wav").read_bytes()
    (data / "cut.wav").write_bytes(whole[: len(whole) * 2 // 3])
    sf.write(str(data / "float.wav"), samples, rate, subtype="FLOAT")  # float but finite: kept
    rows += [["nan.wav", "yes"], ["inf.wav", "yes"], ["cut.wav", "no"], ["float.wav", "yes"]]
    manifest = write_manifest(data / "train.csv", rows)
    model_config = M.load_model_config("", "tiny", {})
    limits = D.AudioLimits(400, 16000 * 30, 1, lambda n: M.output_frames(model_config, n))
    report = D.FilterReport()
    kept_rows = D.check_audio(D.read_source(str(manifest), report), limits, report)
    assert report.counts() == {"truncated_audio": 1, "non_finite_audio": 2}
    kept = {Path(r.path).name for r in kept_rows}
    assert kept == {"good0.wav", "good1.wav", "good2.wav", "good3.wav", "float.wav"}
    summary = report.summary()
    assert "NaN or infinite samples" in summary and "nan.wav" in summary and "truncated WAV" in summary
