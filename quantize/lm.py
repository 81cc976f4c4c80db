"""Build character and word n-gram LMs from text and add them to a bundle (`python -m quantize lm`).

The estimate is interpolated Witten-Bell, which needs no tuning and behaves on the small texts a user
has (their own transcripts, a list of voice commands). Character n-grams of order 3 and up, and word
n-grams of order 2 and up, seen fewer than their `min_count` times are pruned, then every context
gets the backoff weight that keeps its distribution summing to one. An ARPA file made elsewhere
(KenLM) can be imported instead with --arpa (character LM only). The bundle gets the models as
lm.npz and words.npz, the formats `edge_asr.lm` loads fast.

With a tuning manifest, the character LM's weight and insertion bonus are picked on it by a small
grid search over the bundle's own ONNX output (computed once), then the word LM's weight and
unknown-word penalty. With an evaluation manifest (other voices, other text), CER and WER greedy,
with the character LM alone and with both are measured there. Both go into bundle.json.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.beam import BeamOptions, frame_decoder
from edge_asr.bundle import (
    LM_FILE,
    WORDS_FILE,
    LanguageModelSettings,
    WordModelSettings,
    load_bundle,
    write_bundle,
)
from edge_asr.ctc import decode
from edge_asr.errors import BundleError
from edge_asr.lm import (
    BOS,
    EOS,
    LN10,
    WORD_BOUNDARY,
    CharNgramLM,
    WordNgramLM,
    open_text,
    tokens_of,
    write_arpa,
)
from edge_asr.text import TextNormalization
from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions
from train.metrics import ErrorCounts, count_errors

from .convert import place_bundle, staged_bundle
from .errors import QuantizeError
from .manifest import EvalItem, read_manifest

log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]
WEIGHTS = (0.2, 0.35, 0.5, 0.7, 1.0)
BONUSES = (0.0, 0.5, 1.0, 1.5, 2.5)
# The word weight as a multiple of the tuned character LM weight: both scale log-probabilities of the
# same words, and on the default model the best ratio was ~1.4 whatever the character weight.
WORD_WEIGHT_RATIOS = (1.0, 1.4, 2.0)
UNKNOWN_WORD_PENALTIES = (-2.0, -4.0, -7.0)
WORD_BONUS_SHIFTS = (0.0, 1.0)

History = Tuple[str, ...]
ArpaEntries = List[List[Tuple[History, float, float]]]


def read_sentences(paths: Sequence[Path]) -> List[str]:
    """Sentences from text files (one per line, .gz allowed) or manifests (.csv, metadata.csv, .jsonl)."""
    sentences: List[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise QuantizeError(f"{path}: text file not found")
        if path.name.endswith((".txt", ".txt.gz")):
            with open_text(path) as handle:
                sentences.extend(line.strip() for line in handle if line.strip())
        else:
            sentences.extend(item.text for item in read_manifest(path))
    return sentences


def lm_token_sentences(
    sentences: Iterable[str], normalization: TextNormalization, vocabulary: Sequence[str]
) -> Tuple[List[List[str]], int]:
    """Normalize each sentence as the model's labels were; drop those with characters it cannot spell."""
    spellable = set(vocabulary) | {WORD_BOUNDARY}
    kept: List[List[str]] = []
    skipped = 0
    for sentence in sentences:
        tokens = tokens_of(normalization(sentence))
        if tokens and all(t in spellable for t in tokens):
            kept.append(tokens)
        else:
            skipped += 1
    return kept, skipped


def estimate(
    sentences: Sequence[Sequence[str]], order: int = 6, min_count: int = 2, prune_from: int = 3
) -> ArpaEntries:
    """Interpolated Witten-Bell n-grams, pruned and renormalized into ARPA entries (log10).

    N-grams of `prune_from` tokens or more seen fewer than `min_count` times are pruned.
    """
    if order < 1:
        raise QuantizeError(f"--order must be 1 or more, got {order}")
    counts: Dict[History, Counter] = defaultdict(Counter)
    for tokens in sentences:
        seq = [BOS, *tokens, EOS]
        for i in range(1, len(seq)):
            for k in range(min(order - 1, i) + 1):
                counts[tuple(seq[i - k : i])][seq[i]] += 1
    if not counts:
        raise QuantizeError("no usable sentence to build a language model from")
    totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}
    vocabulary_size = len(counts[()])
    memo: Dict[Tuple[History, str], float] = {}

    def interpolated(history: History, token: str) -> float:
        key = (history, token)
        if key not in memo:
            lower = interpolated(history[1:], token) if history else 1.0 / vocabulary_size
            seen = counts.get(history)
            if seen is None:
                memo[key] = lower
            else:
                total, types = totals[history]
                memo[key] = (seen[token] + types * lower) / (total + types)
        return memo[key]

    kept: Dict[History, Dict[str, float]] = {}
    for history, following in counts.items():
        n = len(history) + 1
        chosen = {
            t: interpolated(history, t) for t, c in following.items() if n < prune_from or c >= min_count
        }
        if chosen:
            kept[history] = chosen

    backoff: Dict[History, float] = {}

    def model_prob(history: History, token: str) -> float:
        weight = 1.0
        while True:
            found = kept.get(history, {}).get(token)
            if found is not None:
                return weight * found
            if not history:
                return weight * 1e-12
            weight *= backoff.get(history, 1.0)
            history = history[1:]

    for history in sorted(kept, key=len):
        if not history:
            continue
        mass = sum(kept[history].values())
        lower_mass = sum(model_prob(history[1:], t) for t in kept[history])
        if mass < 1.0 and lower_mass < 1.0:
            backoff[history] = (1.0 - mass) / (1.0 - lower_mass)

    entries: ArpaEntries = [[] for _ in range(order)]
    grams: Dict[History, float] = {h + (t,): p for h, following in kept.items() for t, p in following.items()}
    grams.setdefault((BOS,), 0.0)
    for gram in sorted(grams, key=lambda g: (len(g), g)):
        p = grams[gram]
        logprob = -99.0 if gram == (BOS,) else math.log10(p)
        bow = backoff.get(gram, 1.0)
        entries[len(gram) - 1].append((gram, logprob, math.log10(bow) if bow > 0 else -99.0))
    return [level for level in entries if level]


def to_model(entries: ArpaEntries) -> CharNgramLM:
    """ARPA entries as the model the device reads (through ARPA text, so both paths parse the same)."""
    text = io.StringIO()
    write_arpa(text, entries)
    text.seek(0)
    return CharNgramLM.from_arpa_lines(text, "<estimated model>")


def word_model(sentences: Sequence[Sequence[str]], order: int = 3, min_count: int = 2) -> WordNgramLM:
    """A word n-gram LM from LM-token sentences (`lm_token_sentences`); n-grams of two words and more
    seen fewer than `min_count` times are pruned (every word of the text stays known)."""
    words = ["".join(tokens).split(WORD_BOUNDARY) for tokens in sentences]
    ngrams: Dict[Tuple[str, ...], float] = {}
    backoffs: Dict[Tuple[str, ...], float] = {}
    for level in estimate(words, order, min_count, prune_from=2):
        for gram, logprob, backoff in level:
            ngrams[tuple(gram)] = logprob * LN10
            if backoff:
                backoffs[tuple(gram)] = backoff * LN10
    return WordNgramLM.from_dicts(ngrams, backoffs, order)


def _model_from(
    texts: Sequence[Path],
    arpa: Optional[Path],
    normalization: TextNormalization,
    vocabulary: Sequence[str],
    orders: Tuple[int, int],
    min_counts: Tuple[int, int],
    say: ProgressFn,
) -> Tuple[CharNgramLM, Optional[WordNgramLM], Dict[str, Any]]:
    """The character LM from an ARPA file or estimated from text, the word LM of that text (with a
    word order above 0), and facts about how they were made. `orders` and `min_counts` are the
    character model's, then the word model's."""
    (order, word_order), (min_count, word_min_count) = orders, min_counts
    if arpa is not None:
        say(f"reading {arpa} ...")
        return CharNgramLM.from_arpa(arpa, vocabulary), None, {"from_arpa": arpa.name}
    sentences, skipped = lm_token_sentences(read_sentences(texts), normalization, vocabulary)
    if not sentences:
        raise QuantizeError(
            f"none of the {skipped} sentence(s) can be spelled with the model's vocabulary; check --text"
        )
    if skipped:
        say(f"  skipped {skipped} sentence(s) with characters outside the model's vocabulary")
    say(f"  estimating an order-{order} character model from {len(sentences)} sentences ...")
    built: Dict[str, Any] = {"sentences": len(sentences), "skipped": skipped, "min_count": min_count}
    chars = to_model(estimate(sentences, order, min_count))
    if not word_order:
        return chars, None, built
    say(f"  estimating an order-{word_order} word model ...")
    return chars, word_model(sentences, word_order, word_min_count), built


Decoding = Tuple[Optional[CharNgramLM], Optional[BeamOptions], Optional[WordNgramLM]]
# What forked decoding workers read (set just before the fork): pickling the LMs for every task would
# cost more than decoding an utterance.
_FORKED: Optional[Tuple[LmScorer, Decoding]] = None


def _transcript_in_fork(index: int) -> str:
    assert _FORKED is not None
    scorer, decoding = _FORKED
    return scorer.transcript(index, *decoding)


class LmScorer:
    """The bundle's ONNX log-probabilities of a manifest, computed once, scored under any decoding.

    With `jobs` above 1 (and where processes can fork), utterances are decoded by that many processes:
    the beam search is pure Python, one core each, and tuning decodes the same manifest dozens of times.
    """

    def __init__(self, bundle_dir: Path, items: Sequence[EvalItem], threads: Optional[int], jobs: int = 1):
        asr = EdgeTranscriber(
            bundle_dir, threads=threads, verify=False, options=TranscribeOptions(use_lm=False)
        )
        self.metadata = asr.metadata
        self.vocabulary = asr.vocabulary
        self.references = [item.text for item in items]
        self.jobs = jobs
        # Through the transcriber's windowed path: the LM is tuned on the log-probabilities the device
        # decodes, and a long file costs one window of model memory.
        self.log_probs = [np.concatenate(list(asr.log_probs(item.path))) for item in items]

    def transcript(
        self,
        index: int,
        lm: Optional[CharNgramLM],
        options: Optional[BeamOptions],
        words: Optional[WordNgramLM] = None,
    ) -> str:
        """Utterance `index` decoded greedily (no `lm`) or by beam search with the LM(s)."""
        decoder = frame_decoder(self.vocabulary, lm, options, words)
        decoder.push(self.log_probs[index])
        ids, scores = decoder.finish()
        return decode(ids, self.vocabulary, self.metadata.frame_seconds, scores)[0]

    def transcripts(
        self, lm: Optional[CharNgramLM], options: Optional[BeamOptions], words: Optional[WordNgramLM] = None
    ) -> List[str]:
        indices = range(len(self.log_probs))
        forks = "fork" in multiprocessing.get_all_start_methods()
        if self.jobs < 2 or lm is None or not forks or len(indices) < 2 * self.jobs:
            return [self.transcript(i, lm, options, words) for i in indices]
        global _FORKED
        _FORKED = (self, (lm, options, words))
        try:
            with multiprocessing.get_context("fork").Pool(self.jobs) as pool:
                return pool.map(_transcript_in_fork, indices, chunksize=4)
        finally:
            _FORKED = None

    def errors(
        self,
        lm: Optional[CharNgramLM] = None,
        options: Optional[BeamOptions] = None,
        words: Optional[WordNgramLM] = None,
    ) -> ErrorCounts:
        hypotheses = self.transcripts(lm, options, words)
        return count_errors(self.references, hypotheses, self.metadata.text_normalization)

    def compare(
        self, lm: CharNgramLM, options: BeamOptions, words: Optional[WordNgramLM] = None
    ) -> Dict[str, float]:
        """Greedy against beam search with the LM(s): CER and WER of both ("lm"); with a word LM, the
        character LM alone too ("chars")."""
        greedy, with_lm = self.errors(), self.errors(lm, options, words)
        figures = {
            "utterances": len(self.references),
            "cer_greedy": round(greedy.cer, 4),
            "wer_greedy": round(greedy.wer, 4),
            "cer_lm": round(with_lm.cer, 4),
            "wer_lm": round(with_lm.wer, 4),
        }
        if words is not None:
            chars = self.errors(lm, options)
            figures.update(cer_chars=round(chars.cer, 4), wer_chars=round(chars.wer, 4))
        return figures


def _best_of(
    scorer: LmScorer, lm: CharNgramLM, grid: Iterable[BeamOptions], words: Optional[WordNgramLM] = None
) -> BeamOptions:
    """The options of `grid` with the lowest CER (then WER) on `scorer`."""
    best: Optional[Tuple[Tuple[float, float], BeamOptions]] = None
    for options in grid:
        scored = scorer.errors(lm, options, words)
        log.info("%s: CER %.4f WER %.4f", options, scored.cer, scored.wer)
        if best is None or (scored.cer, scored.wer) < best[0]:
            best = ((scored.cer, scored.wer), options)
    if best is None:
        raise QuantizeError("the tuning grid is empty")
    return best[1]


def tune(scorer: LmScorer, lm: CharNgramLM, beam_size: int) -> BeamOptions:
    """The lm_weight x insertion_bonus pair of the grid with the lowest CER (then WER) on `scorer`."""
    grid = (
        BeamOptions(beam_size=beam_size, lm_weight=w, insertion_bonus=b) for w in WEIGHTS for b in BONUSES
    )
    return _best_of(scorer, lm, grid)


def tune_words(scorer: LmScorer, lm: CharNgramLM, words: WordNgramLM, chars: BeamOptions) -> BeamOptions:
    """The word_weight x unknown_word_penalty x insertion bonus of the grid that does best with the
    character settings `chars` (tuned first, alone: a word LM rescores their spellings)."""
    grid = (
        replace(
            chars,
            word_weight=round(r * chars.lm_weight, 3),
            unknown_word_penalty=p,
            insertion_bonus=chars.insertion_bonus + b,
        )
        for r in WORD_WEIGHT_RATIOS
        for p in UNKNOWN_WORD_PENALTIES
        for b in WORD_BONUS_SHIFTS
    )
    return _best_of(scorer, lm, grid, words)


def _say_comparison(say: ProgressFn, name: str, figures: Dict[str, Any]) -> None:
    chars = (
        f" (character LM alone: CER {figures['cer_chars']:.4f} WER {figures['wer_chars']:.4f})"
        if "cer_chars" in figures
        else ""
    )
    say(
        f"  {name} ({figures['utterances']} utterances): greedy CER {figures['cer_greedy']:.4f} "
        f"WER {figures['wer_greedy']:.4f} -> with LM CER {figures['cer_lm']:.4f} WER {figures['wer_lm']:.4f}"
        + chars
    )


def add_lm(
    bundle_dir: Path,
    out: Path,
    texts: Sequence[Path],
    force: bool,
    say: ProgressFn,
    arpa: Optional[Path] = None,
    order: int = 6,
    min_count: int = 2,
    beam_size: int = 8,
    tune_manifest: Optional[Path] = None,
    tune_limit: Optional[int] = None,
    eval_manifest: Optional[Path] = None,
    eval_limit: Optional[int] = None,
    threads: Optional[int] = None,
    word_order: int = 3,
    word_min_count: int = 2,
    jobs: int = 1,
) -> Path:
    """Copy a bundle to `out` with a language model; when `out` is the bundle itself, replace it.

    From text, a word LM of `word_order` (0: none) is built beside the character LM. The bundle is
    rebuilt in a temporary folder beside `out` and renamed into place, so a failure leaves the
    original untouched.
    """
    if jobs < 1:
        raise QuantizeError(f"--jobs must be 1 or more, got {jobs}")
    if word_order < 0:
        raise QuantizeError(f"--word-order must be 0 (no word LM) or more, got {word_order}")
    try:
        bundle = load_bundle(bundle_dir, verify=False)
    except BundleError as exc:
        raise QuantizeError(str(exc)) from None
    meta = bundle.metadata
    in_place = out.resolve() == bundle.path.resolve()
    if out.exists() and not force and not in_place:
        raise QuantizeError(f"{out}: already exists; pass --force to replace it")
    started = time.perf_counter()
    try:
        lm, words, built = _model_from(
            texts,
            arpa,
            meta.text_normalization,
            meta.vocabulary,
            (order, word_order),
            (min_count, word_min_count),
            say,
        )
    except (BundleError, ValueError) as exc:
        raise QuantizeError(str(exc)) from None
    sizes = lm.ngram_counts()
    say(f"  {sum(sizes)} character n-grams (orders 1-{len(sizes)}: {sizes})")
    if words is not None:
        word_sizes = words.ngram_counts()
        say(
            f"  {words.vocabulary_size} words, {sum(word_sizes)} word n-grams "
            f"(orders 1-{len(word_sizes)}: {word_sizes})"
        )
    with staged_bundle(out) as tmp:
        shutil.copytree(bundle.path, tmp, dirs_exist_ok=True)
        for old in (bundle.language_model_file, bundle.word_model_file):
            if old is not None:
                (tmp / old.name).unlink(missing_ok=True)
        lm.save(tmp / LM_FILE)
        lm = CharNgramLM.load(tmp / LM_FILE, meta.vocabulary)
        if words is not None:
            words.save(tmp / WORDS_FILE)
            words = WordNgramLM.load(tmp / WORDS_FILE)
        options = BeamOptions(beam_size=beam_size)
        figures: Dict[str, Dict[str, Any]] = {}
        if tune_manifest is not None:
            say(f"tuning lm_weight and insertion_bonus on {tune_manifest} ...")
            scorer = LmScorer(tmp, read_manifest(tune_manifest, tune_limit), threads, jobs)
            options = tune(scorer, lm, beam_size)
            if words is not None:
                say("tuning word_weight and unknown_word_penalty ...")
                options = tune_words(scorer, lm, words, options)
            figures["tuning"] = {"manifest": tune_manifest.name, **scorer.compare(lm, options, words)}
            _say_comparison(say, "tuning set", figures["tuning"])
        if eval_manifest is not None:
            scorer = LmScorer(tmp, read_manifest(eval_manifest, eval_limit), threads, jobs)
            figures["evaluation"] = {"manifest": eval_manifest.name, **scorer.compare(lm, options, words)}
            _say_comparison(say, "evaluation set", figures["evaluation"])
        word_settings = None
        if words is not None:
            word_settings = WordModelSettings(
                WORDS_FILE, options.word_weight, options.unknown_word_penalty, words.order
            )
            built["words"] = {
                "min_count": word_min_count,
                "vocabulary": words.vocabulary_size,
                "ngrams": words.ngram_counts(),
                "size_bytes": (tmp / WORDS_FILE).stat().st_size,
            }
        meta.language_model = LanguageModelSettings(
            LM_FILE,
            beam_size,
            options.lm_weight,
            options.insertion_bonus,
            order=len(sizes),
            words=word_settings,
        )
        meta.extra["language_model"] = {
            **built,
            "ngrams": sizes,
            "size_bytes": (tmp / LM_FILE).stat().st_size,
            **figures,
        }
        write_bundle(tmp, meta)
        place_bundle(tmp, out, force or in_place)
    size_mb = (
        sum((out / name).stat().st_size for name in (LM_FILE, WORDS_FILE) if (out / name).exists()) / 1e6
    )
    say(f"  language model(s): {size_mb:.2f} MB in {time.perf_counter() - started:.1f} s")
    return out
