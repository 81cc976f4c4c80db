"""Scoring a bundle with language models on a manifest, and tuning the beam search's LM settings there.

`LmScorer` runs the bundle's ONNX model over the manifest once and decodes its log-probabilities under
any LMs and beam options (in forked processes: the beam search is pure Python, one core each). `tune`
picks the character LM's weight and insertion bonus by a small grid search, then `tune_words` the word
LM's weight and unknown-word penalty.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge_asr.beam import BeamOptions, frame_decoder
from edge_asr.ctc import decode
from edge_asr.lm import CharNgramLM, WordNgramLM
from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions
from train.metrics import ErrorCounts, count_errors

from .errors import QuantizeError
from .manifest import EvalItem

log = logging.getLogger(__name__)
WEIGHTS = (0.2, 0.35, 0.5, 0.7, 1.0)
BONUSES = (0.0, 0.5, 1.0, 1.5, 2.5)
# The word weight as a multiple of the tuned character LM weight: both scale log-probabilities of the
# same words, and on the default model the best ratio was ~1.4 whatever the character weight.
WORD_WEIGHT_RATIOS = (1.0, 1.4, 2.0)
UNKNOWN_WORD_PENALTIES = (-2.0, -4.0, -7.0)
WORD_BONUS_SHIFTS = (0.0, 1.0)


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
            bundle_dir, threads=threads, verify=False, options=TranscribeOptions(use_lm=False, decoder="ctc")
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
        decoder = frame_decoder(
            self.vocabulary, lm, options, words, frame_seconds=self.metadata.frame_seconds
        )
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
