"""Voice commands and hotwords against issue 18's targets, with the shipped default model.

    python benchmarks/commands.py [--corpus data/corpus-v1] [--phrases 2000] [--per-voice 60]

Command set: Home Assistant's own English sentence templates (`home-assistant-intents`, PyPI) for
lights, fans, timers, media and weather, expanded by `edge_asr.templates` with a small home (areas,
device names) into a grammar of `--phrases` phrases. Utterances of them are synthesized with the
corpus builder's held-out voices (the test speakers, never heard in training); out-of-grammar speech
is the same templates said for rooms the home does not have (near misses) and, with --corpus,
sentences of the corpus test split; plus generated noise. Free decoding (greedy, and with the LMs)
of the same utterances is scored for comparison, and grammar decoding time is measured per
utterance for grammars of 100 to 100k phrases on the same log-probabilities.

`--pick` chooses the rejection threshold and the hotword boost on the validation voices instead (the
values in edge_asr/grammar.py and edge_asr/hotwords.py were picked this way); real recordings are
never used for either.

Hotwords: ten uncommon first names said inside carrier sentences, decoded with and without them as
hotwords; and the sentences without names (the near misses, and with --corpus the corpus sentences)
with and without, for the CER cost on each set. The pick takes the highest boost whose CER cost
stays within 0.3 points on every set of the validation voices.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr import EdgeTranscriber  # noqa: E402
from edge_asr.ctc import decode  # noqa: E402
from edge_asr.errors import InputError  # noqa: E402
from edge_asr.grammar import DEFAULT_MIN_CONFIDENCE, Grammar, GrammarDecoder, Phrase, phrase_tokens  # noqa: E402
from edge_asr.hotwords import DEFAULT_BOOST, Hotwords  # noqa: E402
from edge_asr.spoken import number_to_words  # noqa: E402
from edge_asr.templates import sample_sentences  # noqa: E402
from edge_asr.transcriber import TranscribeOptions  # noqa: E402
from train.corpus.engines import synthesize  # noqa: E402
from train.corpus.voices import DEFAULT_TEST_SPEAKERS, DEFAULT_VALID_SPEAKERS, VOICES  # noqa: E402
from train.metrics import count_errors  # noqa: E402
from train.whisper_head import nonspeech_clip  # noqa: E402

INTENTS = (
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassStartTimer",
    "HassCancelTimer",
    "HassMediaPause",
    "HassMediaUnpause",
    "HassMediaNext",
    "HassSetVolume",
    "HassGetWeather",
)
HOME = {
    "area": ["kitchen", "living room", "bedroom", "office", "garage", "hallway"],
    "floor": ["upstairs", "downstairs"],
    "name": ["ceiling light", "desk lamp", "television", "porch light", "coffee maker", "weather station"],
}
OTHER_HOME = {  # rooms and devices the grammar does not have: out-of-grammar near misses
    "area": ["attic", "basement", "nursery", "laundry room"],
    "floor": ["attic floor"],
    "name": ["garden pump", "heater", "radio"],
}
# Ranges thinned so the grammar stays a few thousand phrases before sampling.
RANGES = {
    "brightness": [10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100],
    "volume": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
    "timer_minutes": [1, 2, 3, 5, 10, 15, 20, 25, 30, 45],
    "timer_hours": [1, 2, 3],
    "timer_seconds": [10, 20, 30, 45],
    "temperature": [18, 20, 22],
    "position": [0, 50, 100],
}
NAMES = ["Ottoline", "Thaddeus", "Cressida", "Leopold", "Evangeline", "Ignatius", "Rosalind", "Perpetua",
         "Bartholomew", "Marguerite"]  # fmt: skip
CARRIERS = ["please send a message to {} about dinner", "{} is coming over tonight",
            "remind me to call {} tomorrow morning", "have you seen {} at the station"]  # fmt: skip
PER_TEMPLATE = 300  # expansions drawn from each template (some have millions: optional words multiply)
TARGETS = {"accuracy": 0.95, "false_accepts": 0.05, "ms_1k": 20.0, "hotword_recall": 0.90, "cer_cost": 0.003}


@dataclass
class Utterance:
    audio: np.ndarray
    text: str  # what was said
    voice: str
    phrase: Optional[Phrase] = None  # the grammar phrase said (None: out of grammar)


def ha_phrases(home: Dict[str, List[str]], where: str) -> List[Phrase]:
    """The phrases of the chosen intents' English templates, for `home`."""
    from home_assistant_intents import get_intents

    data = get_intents("en")
    assert data is not None, "home-assistant-intents has no English data"
    lists: Dict[str, List[Tuple[str, str]]] = {
        name: [(v, v) for v in values] for name, values in home.items()
    }
    for name, spec in data["lists"].items():
        if name in RANGES:
            lists[name] = [(number_to_words(n), str(n)) for n in RANGES[name]]
        elif "values" in spec:
            values = []
            for value in spec["values"]:
                spoken = value["in"] if isinstance(value, dict) else str(value)
                out = value.get("out", spoken) if isinstance(value, dict) else spoken
                if not any(c in spoken for c in "()[]{}<>|"):
                    values.append((spoken, str(out)))
            lists[name] = values
    templates = []
    for intent in INTENTS:
        for item in data["intents"][intent]["data"]:
            templates.extend(item["sentences"])
    phrases: List[Phrase] = []
    for template in templates:
        try:
            phrases.extend(
                sample_sentences([template], lists, data["expansion_rules"], PER_TEMPLATE, 0, where)
            )
        except InputError:
            continue  # wildcard lists (search queries, timer names) or lists this home lacks
    return phrases


def spellable(phrases: Sequence[Phrase], asr: EdgeTranscriber) -> List[Phrase]:
    meta = asr.metadata
    kept, seen = [], set()
    for phrase in phrases:
        try:
            key = tuple(phrase_tokens(phrase.text, asr.vocabulary, meta.text_normalization))
        except InputError:
            continue
        if key not in seen:
            seen.add(key)
            kept.append(phrase)
    return kept


def say(text: str, speaker: str) -> np.ndarray:
    voice = next(v for v in VOICES.values() if v.speaker == speaker)
    rendered = synthesize(voice, text)
    audio = (
        soxr.resample(rendered.audio, rendered.sample_rate, 16000)
        if rendered.sample_rate != 16000
        else rendered.audio
    )
    return np.asarray(audio, dtype=np.float32)


def log_probs_of(asr: EdgeTranscriber, audio: np.ndarray) -> np.ndarray:
    return np.concatenate(list(asr.log_probs(audio, 16000)))


def recognize(asr: EdgeTranscriber, compiled, log_probs: np.ndarray, min_confidence: float):
    decoder = GrammarDecoder(compiled, asr.metadata.frame_seconds, min_confidence)
    decoder.push(log_probs)
    decoder.finish()
    return decoder.match


def best_matches(asr, compiled, log_probs: Sequence[np.ndarray]) -> List[Any]:
    """Each utterance's best phrase and confidence, decoded once (min_confidence 0 accepts all)."""
    return [recognize(asr, compiled, lp, 0.0) for lp in log_probs]


def command_figures(inside, outside, noise, threshold: float) -> Dict[str, float]:
    """Accuracy and false accepts at `threshold`, from `best_matches` of each set."""
    right = sum(
        1
        for u, m in inside
        if m.confidence >= threshold and m.phrase == u.phrase.text and m.slots == u.phrase.slot_dict
    )
    return {
        "accuracy": right / max(1, len(inside)),
        "false_accepts": sum(m.confidence >= threshold for m in outside) / max(1, len(outside)),
        "false_accepts_noise": sum(m.confidence >= threshold for m in noise) / max(1, len(noise)),
    }


def pick_threshold(inside, outside, noise) -> float:
    """The threshold with the fewest errors (missed or wrong commands plus false accepts); of equal
    ones, the middle of the best run."""
    scored = []
    for threshold in np.arange(0.05, 0.951, 0.05):
        f = command_figures(inside, outside, noise, float(threshold))
        errors = (
            (1 - f["accuracy"]) * len(inside)
            + f["false_accepts"] * len(outside)
            + f["false_accepts_noise"] * len(noise)
        )
        print(f"  min_confidence {threshold:.2f}: {f}", flush=True)
        scored.append((round(errors), round(float(threshold), 2)))
    fewest = min(e for e, _ in scored)
    best = [t for e, t in scored if e == fewest]
    return best[len(best) // 2]


def decode_times(
    asr, phrases: List[Phrase], log_probs: List[np.ndarray], sizes: Sequence[int]
) -> Dict[int, float]:
    """Median ms per utterance to recognize with grammars of `sizes` phrases (model time excluded)."""
    times = {}
    rng = random.Random(1)
    for size in sizes:
        pool = phrases if len(phrases) >= size else phrases + synthetic_fillers(size - len(phrases), rng)
        grammar = Grammar(rng.sample(pool, size))
        compiled = asr.compile_grammar(grammar)
        per = []
        for lp in log_probs:
            started = time.perf_counter()
            decoder = GrammarDecoder(compiled, asr.metadata.frame_seconds)
            decoder.push(lp)
            decoder.finish()
            per.append(1000 * (time.perf_counter() - started))
        times[size] = statistics.median(per)
        print(
            f"  {size:>6} phrases ({compiled.nodes} trie nodes): {times[size]:.1f} ms per utterance",
            flush=True,
        )
    return times


def synthetic_fillers(count: int, rng: random.Random) -> List[Phrase]:
    """Extra distinct phrases for the large grammar sizes: commands for numbered devices."""
    words = ["lamp", "plug", "switch", "sensor", "speaker", "heater", "blind", "valve"]
    actions = ["turn on", "turn off", "toggle", "check", "reset"]
    out = []
    for i in range(count):
        out.append(Phrase(f"{actions[i % 5]} {words[(i // 5) % 8]} {number_to_words(i // 40 + 1)}"))
    return out


def hotword_figures(asr_plain, asr_hot, name_utts, plain_sets: Dict[str, List[Utterance]]) -> Dict[str, Any]:
    """Names recognized with and without hotwords; CER with and without them on each set of sentences
    that hold no names; decoding time per name sentence."""
    figures: Dict[str, Any] = {}
    for key, asr in (("plain", asr_plain), ("hot", asr_hot)):
        hits, seconds = 0, 0.0
        for u in name_utts:
            target = next(n.lower() for n in NAMES if n.lower() in u.text.lower())
            log_probs = log_probs_of(asr, u.audio)
            started = time.perf_counter()
            decoder = asr.new_decoder()
            decoder.push(log_probs)
            ids, scores = decoder.finish()
            seconds += time.perf_counter() - started
            hits += target in decode(ids, asr.vocabulary, asr.metadata.frame_seconds, scores)[0].split()
        figures[f"recall_{key}"] = hits / len(name_utts)
        figures[f"decode_ms_{key}"] = 1000 * seconds / len(name_utts)
        for name, utts in plain_sets.items():
            hyps = [asr.transcribe(u.audio, 16000).text for u in utts]
            refs = [u.text for u in utts]
            figures[f"cer_{name}_{key}"] = count_errors(refs, hyps, asr.metadata.text_normalization).cer
    return figures


def corpus_sentences(
    corpus: Optional[Path], split: str, speakers: Sequence[str], count: int
) -> List[Utterance]:
    """Corpus utterances of `split` (valid or test: voices never trained on), `count` per speaker."""
    if corpus is None:
        return []
    with open(corpus / "utterances.csv", newline="") as handle:
        speaker_of = {row["id"]: row["speaker"] for row in csv.DictReader(handle)}
    out: Dict[str, List[Utterance]] = {s: [] for s in speakers}
    with open(corpus / f"{split}.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            speaker = speaker_of.get(Path(row["path"]).stem, "")
            if speaker in out and len(out[speaker]) < count:
                audio, rate = sf.read(corpus / row["path"], dtype="float32")
                out[speaker].append(
                    Utterance(
                        soxr.resample(audio, rate, 16000) if rate != 16000 else audio, row["text"], speaker
                    )
                )
    return [u for us in out.values() for u in us]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="a corpus folder (its test split: out-of-grammar speech)")
    parser.add_argument("--phrases", type=int, default=2000, help="grammar size (sampled from the expansion)")
    parser.add_argument("--per-voice", type=int, default=60, help="in-grammar utterances per voice")
    parser.add_argument(
        "--pick",
        action="store_true",
        help="pick min_confidence and the hotword boost on the validation voices",
    )
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.getLogger("edge_asr").setLevel(logging.ERROR)  # TTS peaks at full scale: no clipping notes
    speakers = DEFAULT_VALID_SPEAKERS if args.pick else DEFAULT_TEST_SPEAKERS
    rng = random.Random(0)
    # CTC decodings throughout: grammars and hotwords are CTC features, and the free-decoding and
    # hotword-cost figures compare like with like.
    asr = EdgeTranscriber(options=TranscribeOptions(use_lm=False, decoder="ctc"))
    started = time.perf_counter()
    phrases = spellable(ha_phrases(HOME, "home-assistant-intents"), asr)
    near = [
        p
        for p in spellable(ha_phrases(OTHER_HOME, "home-assistant-intents"), asr)
        if any(w in p.text for ws in OTHER_HOME.values() for w in ws)
    ]
    print(
        f"{len(phrases)} phrases from {len(INTENTS)} intents ({time.perf_counter() - started:.1f} s); "
        f"{len(near)} near misses",
        flush=True,
    )
    grammar = Grammar(rng.sample(phrases, min(args.phrases, len(phrases))))
    compiled = asr.compile_grammar(grammar)
    print(
        f"grammar: {len(grammar)} phrases, {compiled.nodes} trie nodes; voices {', '.join(speakers)}",
        flush=True,
    )
    inside, outside, noise = [], [], []
    offset = 1 if args.pick else 0  # validation and test draw different phrases
    for speaker in speakers:
        for phrase in rng.sample(grammar.phrases, args.per_voice + offset)[offset:]:
            u = Utterance(say(phrase.text, speaker), phrase.text, speaker, phrase)
            inside.append((u, log_probs_of(asr, u.audio)))
        for phrase in rng.sample(near, min(len(near), args.per_voice // 2)):
            u = Utterance(say(phrase.text, speaker), phrase.text, speaker)
            outside.append((u, log_probs_of(asr, u.audio)))
    near_misses = [u for u, _ in outside]
    sentences = corpus_sentences(args.corpus, "valid" if args.pick else "test", speakers, args.per_voice // 2)
    for u in sentences:
        outside.append((u, log_probs_of(asr, u.audio)))
    nrng = np.random.default_rng(0)
    noise = [log_probs_of(asr, nonspeech_clip(nrng)) for _ in range(40)]
    print(
        f"{len(inside)} in-grammar, {len(outside)} out-of-grammar utterances, {len(noise)} noise clips",
        flush=True,
    )
    results: Dict[str, Any] = {"phrases": len(grammar), "voices": list(speakers)}
    matched_inside = list(zip([u for u, _ in inside], best_matches(asr, compiled, [lp for _, lp in inside])))
    matched_outside = best_matches(asr, compiled, [lp for _, lp in outside])
    matched_noise = best_matches(asr, compiled, noise)
    if args.pick:
        threshold = pick_threshold(matched_inside, matched_outside, matched_noise)
        print(f"picked min_confidence {threshold}")
        results["min_confidence"] = threshold
    else:
        figures = command_figures(matched_inside, matched_outside, matched_noise, DEFAULT_MIN_CONFIDENCE)
        results["grammar"] = figures
        print(f"grammar: {json.dumps(figures)}")
        free: Dict[str, float] = {}
        lm_asr = EdgeTranscriber(options=TranscribeOptions(decoder="ctc"))
        for key, model in (("greedy", asr), ("lm", lm_asr)):
            norm = model.metadata.text_normalization
            right = sum(norm(model.transcribe(u.audio, 16000).text) == norm(u.text) for u, _ in inside)
            free[key] = right / len(inside)
        results["free_exact"] = free
        print(f"free decoding, exact phrase: greedy {free['greedy']:.3f}, with LMs {free['lm']:.3f}")
        times = decode_times(
            asr, phrases, [lp for _, lp in inside[:30]], [int(s) for s in args.sizes.split(",")]
        )
        results["ms_per_utterance"] = times
    # Hotwords: names in carrier sentences, and sentences without names for the CER cost.
    name_utts = [
        Utterance(say(carrier.format(name), speaker), carrier.format(name), speaker)
        for speaker in speakers
        for name, carrier in zip(NAMES, CARRIERS * 3)
    ]
    plain_sets = {"near_misses": near_misses, "corpus": sentences}
    plain_sets = {name: utts for name, utts in plain_sets.items() if utts}
    boosts = [1.5, 2.0, 2.5] if args.pick else [DEFAULT_BOOST]
    lm_plain = EdgeTranscriber(options=TranscribeOptions(decoder="ctc"))
    results["hotwords"] = {}
    for boost in boosts:
        lm_hot = EdgeTranscriber(options=TranscribeOptions(hotwords=Hotwords.from_list(NAMES, boost)))
        figures = hotword_figures(lm_plain, lm_hot, name_utts, plain_sets)
        results["hotwords"][boost] = figures
        print(f"hotwords, boost {boost}: {json.dumps(figures)}", flush=True)
    if args.pick:
        def cost_ok(f: Dict[str, Any]) -> bool:
            return all(f[f"cer_{n}_hot"] - f[f"cer_{n}_plain"] <= TARGETS["cer_cost"] for n in plain_sets)

        within = [boost for boost, f in results["hotwords"].items() if cost_ok(f)]
        results["hotword_boost"] = max(within, default=min(boosts))
        print(f"picked hotword boost {results['hotword_boost']} (highest within the CER cost on each set)")
    if not args.pick:
        g = results["grammar"]
        h = list(results["hotwords"].values())[0]
        ms = results["ms_per_utterance"]
        print("\ntargets (issue 18):")
        print(f"  in-grammar commands right  {g['accuracy']:.3f}  (>= {TARGETS['accuracy']})")
        print(f"  false accepts, out-of-gr.  {g['false_accepts']:.3f}  (<= {TARGETS['false_accepts']})")
        print(f"  1k-phrase decode, ms       {ms.get(1000, float('nan')):.1f}  (< {TARGETS['ms_1k']})")
        print(
            f"  hotword recall             {h['recall_hot']:.3f}  (>= {TARGETS['hotword_recall']}; "
            f"without hotwords {h['recall_plain']:.3f})"
        )
        for name in plain_sets:
            cost = h[f"cer_{name}_hot"] - h[f"cer_{name}_plain"]
            print(f"  CER cost, {name:12s}     {cost:+.4f}  (<= {TARGETS['cer_cost']})")
        ms = (h["decode_ms_hot"], h["decode_ms_plain"])
        print(f"  decode ms per sentence     {ms[0]:.1f} with hotwords, {ms[1]:.1f} without")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
