"""CER and WER: the one place quantize/ gets its metrics from (train/metrics.py, shared with training).

Both sides are normalized with the model's TextNormalization before scoring, so case and punctuation
the model cannot spell do not count as errors; rates are corpus-level (total edits / total reference
length), exactly as training reports them.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from edge_asr.text import TextNormalization
from train.metrics import count_errors


def score(refs: Sequence[str], hyps: Sequence[str], normalization: TextNormalization) -> Tuple[float, float]:
    """(CER, WER) of hypotheses against references, both normalized the same way."""
    counts = count_errors(refs, hyps, normalization)
    return counts.cer, counts.wer
