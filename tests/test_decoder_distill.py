"""train.decoder_distill: targets from both kinds of manifest, and a tiny random Whisper whose decoder
learns, from a bundle's unpadded encoder states, to write its targets and stop."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.desktop
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from whisper_support import VOCAB, save_tiny_whisper, token_strings  # noqa: E402

from edge_asr.attention import _bytes_to_unicode  # noqa: E402
from train import decoder_distill as DD  # noqa: E402

HF_FOLDER = Path(__file__).resolve().parents[1] / "models" / "default-model-hf"


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE over token_strings(): one merge per letter joins the space marker to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    strings = token_strings()
    space = _bytes_to_unicode()[32]
    merges = [(space, chr(c)) for c in range(ord("a"), ord("z") + 1)]
    bpe = models.BPE(vocab={s: i for i, s in enumerate(strings)}, merges=merges)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("whisper")
    save_tiny_whisper(folder, pad_token_id=VOCAB - 1, embed_scale=8.0)
    write_tokenizer(folder)
    provenance = {"source": {"model": "random"}, "include_decoder": True}
    (folder / "provenance.json").write_text(json.dumps(provenance))
    return folder


@pytest.fixture(scope="module")
def bundle(whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whisper-ctc bundle on the same random encoder, its graph giving encoder states."""
    from quantize.convert import ConvertOptions, convert
    from train import whisper_ctc as W

    work = tmp_path_factory.mktemp("bundle")
    ctc = W.from_whisper(str(whisper_dir), vocab_size=30, head_type="linear", seed=3)
    ctc.save_pretrained(str(work / "model"))
    for name in W.FOLDER_FILES:
        if name != "config.json" and (HF_FOLDER / name).is_file():
            shutil.copy2(HF_FOLDER / name, work / "model" / name)
    convert(ConvertOptions(model=str(work / "model"), out=work / "bundle", decoder=str(whisper_dir)))
    return work / "bundle"


def write_clips(folder: Path, texts: List[str]) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, _ in enumerate(texts):
        t = np.arange(16000 + 4000 * i) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) * (1 + np.sin(2 * np.pi * (3 + i) * t))
        sf.write(folder / f"c{i}.wav", audio.astype(np.float32) / 2, 16000)
        paths.append(f"wavs/c{i}.wav")
    return paths


def test_targets_come_from_teacher_text_or_the_corpus_metadata(tmp_path: Path) -> None:
    paths = write_clips(tmp_path / "pseudo" / "wavs", ["x", "y"])
    with open(tmp_path / "pseudo" / "pseudo.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text", "teacher_text"])
        writer.writerow([paths[0], "hello there", "Hello there."])
        writer.writerow([paths[1], "", " "])  # no target: left out
    targets = DD.read_targets(tmp_path / "pseudo" / "pseudo.csv")
    assert targets == [DD.Target((tmp_path / "pseudo" / paths[0]).resolve(), "Hello there.")]

    corpus = tmp_path / "corpus"
    paths = write_clips(corpus / "wavs", ["x"])
    (corpus / "train.csv").write_text(f"path,text\n{paths[0]},mister smith\n")
    (corpus / "metadata.csv").write_text("c0|Mister Smith, at home.|mister smith at home\n")
    assert [t.text for t in DD.read_targets(corpus / "train.csv")] == ["Mister Smith, at home."]

    (corpus / "metadata.csv").unlink()
    with pytest.raises(DD.DistillError, match="no teacher_text column and no metadata.csv"):
        DD.read_targets(corpus / "train.csv")
    with pytest.raises(DD.DistillError, match="no such manifest"):
        DD.read_targets(corpus / "missing.csv")


def test_the_tokenizer_writes_whisper_s_leading_space(whisper_dir: Path) -> None:
    tokenize = DD.Tokenizer(whisper_dir)
    strings = token_strings()
    assert [strings[i] for i in tokenize("ab ba")] == ["\u0120a", "b", "\u0120b", "a"]


def test_the_student_learns_to_write_its_targets_and_stop(
    whisper_dir: Path, bundle: Path, tmp_path: Path
) -> None:
    from quantize.decoder import load_whisper

    texts = ["ab ba", "cab"]
    paths = write_clips(tmp_path / "data" / "wavs", texts)
    manifest = tmp_path / "data" / "pseudo.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text", "teacher_text"])
        writer.writerows([p, t, t] for p, t in zip(paths, texts))
    out = tmp_path / "run"
    options = DD.DistillOptions(
        train="decoder", steps=60, batch=2, lr=3e-3, warmup=5, eval_every=30, eval_limit=2
    )
    report = DD.distil(whisper_dir, bundle, [manifest], [manifest], out, options, threads=1)

    first, best = report["history"][0], report["best"]
    assert first["wer"] >= 1.0  # the random decoder writes none of it
    assert best["hit_bound"] == 0 and best["wer"] == 0.0 and best["loss"] < first["loss"] / 20
    assert (out / "cache" / "data-pseudo.json").is_file() and json.loads((out / "metrics.json").read_text())[
        "best"
    ]

    student, teacher = load_whisper(str(out / "model")), load_whisper(str(whisper_dir))
    same = torch.equal(student.model.decoder.embed_tokens.weight, teacher.model.decoder.embed_tokens.weight)
    assert same  # the token table is shared with the device's lookup: never trained
    assert not torch.equal(
        student.model.decoder.layers[0].fc1.weight, teacher.model.decoder.layers[0].fc1.weight
    )
    assert torch.equal(student.model.encoder.layers[0].fc1.weight, teacher.model.encoder.layers[0].fc1.weight)
    assert json.loads((out / "model" / "provenance.json").read_text())["distilled"]["options"]["steps"] == 60


def test_cross_training_frees_only_what_reads_the_encoder(whisper_dir: Path) -> None:
    from quantize.decoder import load_whisper

    model = load_whisper(str(whisper_dir))
    DD.trainable_parameters(model, "cross")
    free = {n for n, p in model.model.decoder.named_parameters() if p.requires_grad}
    assert free and all("encoder_attn" in n or "layer_norm" in n for n in free)
    assert not any(p.requires_grad for p in model.model.encoder.parameters())
    with pytest.raises(DD.DistillError, match="--train must be one of"):
        DD.trainable_parameters(model, "everything")


def test_low_rank_adapters_start_as_the_model_and_merge_into_plain_layers() -> None:
    from train.low_rank import LowRankLinear, add_adapters, merge_adapters

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4, bias=False))
    x = torch.randn(3, 6)
    before = net(x)
    params = add_adapters(net, lambda name: name == "2", rank=2, alpha=4.0)
    assert isinstance(net[2], LowRankLinear) and isinstance(net[0], torch.nn.Linear)
    assert [tuple(p.shape) for p in params] == [(2, 5), (4, 2)]
    assert torch.equal(net(x), before)  # B starts at zero: the model as it was
    assert not net[2].base.weight.requires_grad
    with torch.no_grad():
        params[1].normal_()
    adapted = net(x)
    assert not torch.allclose(adapted, before)
    assert merge_adapters(net) == 1 and isinstance(net[2], torch.nn.Linear)
    assert torch.allclose(net(x), adapted, atol=1e-6)  # folded in: the same function, a plain layer
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(torch.nn.Linear(2, 2), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="nothing to adapt"):
        add_adapters(net, lambda name: False, rank=2, alpha=4.0)


def test_lora_student_trains_only_adapters_and_saves_a_plain_whisper(
    whisper_dir: Path, bundle: Path, tmp_path: Path
) -> None:
    from quantize.decoder import load_whisper

    model = load_whisper(str(whisper_dir))
    trained = DD.trainable_parameters(model, "lora", rank=4, alpha=8.0)
    free = {n for n, p in model.named_parameters() if p.requires_grad}
    assert free and all(n.endswith((".down", ".up")) and ".decoder.layers." in n for n in free)
    assert len(trained) == len(free)

    texts = ["ab ba", "cab"]
    paths = write_clips(tmp_path / "data" / "wavs", texts)
    manifest = tmp_path / "data" / "pseudo.csv"
    manifest.write_text("path,text,teacher_text\n" + "".join(f"{p},{t},{t}\n" for p, t in zip(paths, texts)))
    out = tmp_path / "run"
    options = DD.DistillOptions(
        train="lora", rank=8, alpha=16.0, steps=40, batch=2, lr=1e-2, warmup=5, eval_every=20, eval_limit=2
    )
    report = DD.distil(whisper_dir, bundle, [manifest], [manifest], out, options, threads=1)
    assert report["best"]["loss"] < report["history"][0]["loss"] / 2

    student, teacher = load_whisper(str(out / "model")), load_whisper(str(whisper_dir))
    layer, source = student.model.decoder.layers[0], teacher.model.decoder.layers[0]
    assert type(layer.fc1) is torch.nn.Linear and layer.fc1.weight.shape == source.fc1.weight.shape
    assert not torch.equal(layer.encoder_attn.q_proj.weight, source.encoder_attn.q_proj.weight)
    assert torch.equal(layer.final_layer_norm.weight, source.final_layer_norm.weight)  # not adapted
    assert torch.equal(student.model.decoder.embed_tokens.weight, teacher.model.decoder.embed_tokens.weight)


def test_cache_only_fills_a_shared_cache_and_trains_nothing(
    whisper_dir: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_clips(tmp_path / "data" / "wavs", ["x"])
    manifest = tmp_path / "data" / "pseudo.csv"
    manifest.write_text(f"path,text,teacher_text\n{paths[0]},ab,Ab.\n")
    shared = tmp_path / "shared"
    argv = ["--whisper", str(whisper_dir), "--bundle", str(bundle), "--data", str(manifest)]
    argv += ["--validation-data", str(manifest), "--out", str(tmp_path / "run"), "--threads", "1"]
    assert DD.main([*argv, "--cache-dir", str(shared), "--cache-only"]) == 0
    assert json.loads(capsys.readouterr().out) == {"train_clips": 1, "valid_clips": 1}
    assert (shared / "data-pseudo.json").is_file() and not (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(SystemExit):
        DD.main([*argv, "--steps", "0"])
    assert "--steps must be positive" in capsys.readouterr().err
