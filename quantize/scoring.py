"""CER and WER: the one place quantize/ gets its metrics from.

Both sides are normalized with the model's TextNormalization before scoring, so case and punctuation
the model cannot spell do not count as errors. The metric functions are jiwer's corpus-level rates
(total edits / total reference length). When train/metrics.py (the project's shared metrics) lands,
import `cer` and `wer` from there instead; nothing else in quantize/ needs to change.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import jiwer

from edge_asr.text import TextNormalization


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    return float(jiwer.cer(list(refs), list(hyps)))


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    return float(jiwer.wer(list(refs), list(hyps)))


def score(refs: Sequence[str], hyps: Sequence[str], normalization: TextNormalization) -> Tuple[float, float]:
    """(CER, WER) of hypotheses against references, both normalized the same way."""
    norm_refs = [normalization(r) for r in refs]
    norm_hyps = [normalization(h) for h in hyps]
    keep = [i for i, r in enumerate(norm_refs) if r]  # a reference that normalizes to nothing has no rate
    if not keep:
        return 0.0, 0.0
    r = [norm_refs[i] for i in keep]
    h = [norm_hyps[i] for i in keep]
    return cer(r, h), wer(r, h)
