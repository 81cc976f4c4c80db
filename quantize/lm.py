"""`python -m quantize lm`: build character and word n-gram LMs and add them to a bundle.

The models are estimated from text (quantize/lm_estimate.py) or, the character LM only, imported from
an ARPA file made elsewhere (KenLM) with --arpa (quantize/lm_files.py). The bundle gets them as lm.npz
and words.npz, the formats `edge_asr.lm` loads fast.

With a tuning manifest, the character LM's weight and insertion bonus are picked on it by a small
grid search over the bundle's own ONNX output (computed once), then the word LM's weight and
unknown-word penalty (quantize/lm_tune.py). With an evaluation manifest (other voices, other text),
CER and WER greedy, with the character LM alone and with both are measured there. Both go into
bundle.json.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge_asr.beam import BeamOptions
from edge_asr.bundle import (
    LM_FILE,
    WORDS_FILE,
    LanguageModelSettings,
    WordModelSettings,
    load_bundle,
    write_bundle,
)
from edge_asr.errors import BundleError
from edge_asr.lm import CharNgramLM, WordNgramLM
from edge_asr.text import TextNormalization

from .errors import QuantizeError
from .lm_estimate import (
    estimate,
    lm_token_sentences,
    read_sentences,
    read_word_lists,
    to_model,
    word_model,
)
from .lm_files import char_lm_from_arpa, save_char_lm, save_word_lm
from .lm_tune import LmScorer, tune, tune_words
from .manifest import read_manifest
from .staging import place_bundle, staged_bundle

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class LmBuildOptions:
    """How `add_lm` builds, tunes and measures the language models.

    Attributes:
        order: the character LM's longest n-gram, in characters (from text; an ARPA file has its own).
        min_count: character n-grams of 3 characters and more seen fewer times are dropped.
        word_order: the word LM's longest n-gram, built from the text beside the character LM;
            0: no word LM (there is none with an ARPA file either).
        word_min_count: word n-grams of 2 words and more seen fewer times are dropped; every word of
            the text stays known.
        word_lists: files of words (one a line) the word LM knows beyond the text's, each counted as
            seen once: a name or inflection the text never uses is then scored as a word, not spelled
            letter by letter at the unknown-word penalty.
        beam_size: the beam the device uses, written to bundle.json and used when tuning.
        tune_manifest: manifest to pick the LM weights, insertion bonus and unknown-word penalty on
            (voices and text not in the LM's text); None: the defaults of `BeamOptions`.
        tune_limit: tune on the first N utterances of `tune_manifest` (None: all).
        eval_manifest: manifest to measure CER and WER on, greedy and with the LMs; None: no measure.
        eval_limit: measure on the first N utterances of `eval_manifest` (None: all).
        threads: onnxruntime threads when running the manifests (None: edge_asr's default).
        jobs: processes decoding the manifests (the beam search takes one core each).
    """

    order: int = 6
    min_count: int = 2
    word_order: int = 3
    word_min_count: int = 2
    word_lists: Tuple[Path, ...] = ()
    beam_size: int = 8
    tune_manifest: Optional[Path] = None
    tune_limit: Optional[int] = None
    eval_manifest: Optional[Path] = None
    eval_limit: Optional[int] = None
    threads: Optional[int] = None
    jobs: int = 1

    def check(self) -> None:
        """Refuse settings no build can use (the order is checked when estimating: --arpa has its own)."""
        if self.jobs < 1:
            raise QuantizeError(f"--jobs must be 1 or more, got {self.jobs}")
        if self.word_order < 0:
            raise QuantizeError(f"--word-order must be 0 (no word LM) or more, got {self.word_order}")
        if self.word_lists and not self.word_order:
            raise QuantizeError("--word-list needs a word LM: drop --word-order 0 or the word lists")


def _model_from(
    texts: Sequence[Path],
    arpa: Optional[Path],
    normalization: TextNormalization,
    vocabulary: Sequence[str],
    options: LmBuildOptions,
    say: ProgressFn,
) -> Tuple[CharNgramLM, Optional[WordNgramLM], Dict[str, Any]]:
    """The character LM from an ARPA file or estimated from text, the word LM of that text (with a
    word order above 0), and facts about how they were made."""
    if arpa is not None:
        if options.word_lists:
            raise QuantizeError("--word-list feeds the word LM built from --text; --arpa builds none")
        say(f"reading {arpa} ...")
        return char_lm_from_arpa(arpa, vocabulary), None, {"from_arpa": arpa.name}
    sentences, skipped = lm_token_sentences(read_sentences(texts), normalization, vocabulary)
    if not sentences:
        raise QuantizeError(
            f"none of the {skipped} sentence(s) can be spelled with the model's vocabulary; check --text"
        )
    if skipped:
        say(f"  skipped {skipped} sentence(s) with characters outside the model's vocabulary")
    say(f"  estimating an order-{options.order} character model from {len(sentences)} sentences ...")
    built: Dict[str, Any] = {"sentences": len(sentences), "skipped": skipped, "min_count": options.min_count}
    chars = to_model(estimate(sentences, options.order, options.min_count))
    if not options.word_order:
        return chars, None, built
    known_words: List[str] = []
    if options.word_lists:
        known_words, unusable = read_word_lists(options.word_lists, normalization, vocabulary)
        say(f"  {len(known_words)} words from word lists ({unusable} line(s) not one spellable word)")
        built["word_lists"] = [path.name for path in options.word_lists]
    say(f"  estimating an order-{options.word_order} word model ...")
    return chars, word_model(sentences, options.word_order, options.word_min_count, known_words), built


def _tune_and_evaluate(
    bundle_dir: Path,
    lm: CharNgramLM,
    words: Optional[WordNgramLM],
    options: LmBuildOptions,
    say: ProgressFn,
) -> Tuple[BeamOptions, Dict[str, Dict[str, Any]]]:
    """The beam options tuned on the tuning manifest (the defaults without one), and the figures
    measured on the tuning and evaluation manifests, for bundle.json."""
    beam = BeamOptions(beam_size=options.beam_size)
    figures: Dict[str, Dict[str, Any]] = {}
    if options.tune_manifest is not None:
        say(f"tuning lm_weight and insertion_bonus on {options.tune_manifest} ...")
        items = read_manifest(options.tune_manifest, options.tune_limit)
        scorer = LmScorer(bundle_dir, items, options.threads, options.jobs)
        beam = tune(scorer, lm, options.beam_size)
        if words is not None:
            say("tuning word_weight and unknown_word_penalty ...")
            beam = tune_words(scorer, lm, words, beam)
        figures["tuning"] = {"manifest": options.tune_manifest.name, **scorer.compare(lm, beam, words)}
        _say_comparison(say, "tuning set", figures["tuning"])
    if options.eval_manifest is not None:
        items = read_manifest(options.eval_manifest, options.eval_limit)
        scorer = LmScorer(bundle_dir, items, options.threads, options.jobs)
        figures["evaluation"] = {"manifest": options.eval_manifest.name, **scorer.compare(lm, beam, words)}
        _say_comparison(say, "evaluation set", figures["evaluation"])
    return beam, figures


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
    options: LmBuildOptions = LmBuildOptions(),
    arpa: Optional[Path] = None,
) -> Path:
    """Copy a bundle to `out` with language models; when `out` is the bundle itself, replace it.

    The character LM is estimated from `texts`, or imported from the ARPA file `arpa`; from text, a
    word LM is built beside it (`options.word_order`). The bundle is rebuilt in a temporary folder
    beside `out` and renamed into place, so a failure leaves the original untouched.
    """
    options.check()
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
        lm, words, built = _model_from(texts, arpa, meta.text_normalization, meta.vocabulary, options, say)
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
        # Tuned and measured as the device will load them: from the files.
        save_char_lm(lm, tmp / LM_FILE)
        lm = CharNgramLM.load(tmp / LM_FILE, meta.vocabulary)
        if words is not None:
            save_word_lm(words, tmp / WORDS_FILE)
            words = WordNgramLM.load(tmp / WORDS_FILE)
        beam, figures = _tune_and_evaluate(tmp, lm, words, options, say)
        word_settings = None
        if words is not None:
            word_settings = WordModelSettings(
                WORDS_FILE, beam.word_weight, beam.unknown_word_penalty, words.order
            )
            built["words"] = {
                "min_count": options.word_min_count,
                "vocabulary": words.vocabulary_size,
                "ngrams": words.ngram_counts(),
                "size_bytes": (tmp / WORDS_FILE).stat().st_size,
            }
        meta.language_model = LanguageModelSettings(
            LM_FILE,
            options.beam_size,
            beam.lm_weight,
            beam.insertion_bonus,
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
