"""CER and WER, computed one way for training, evaluation and quantization reports.

Both sides of the comparison go through the run's `TextNormalization` before jiwer sees them: a model
trained on lower-cased text scored against capitalised references would otherwise be charged for
every capital. Scores are corpus-level (total edits / total reference length), not a mean of
per-utterance rates, and `ErrorCounts` adds up so shards or batches can be scored separately.

Import-light on purpose (numpy + jiwer): quantize/ scores ONNX output with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Dict, Iterable, Optional, Sequence

import numpy as np

from edge_asr.ctc import Vocabulary, token_runs
from edge_asr.text import TextNormalization


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts against the references; `cer`/`wer` are corpus-level rates."""

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0
    utterances: int = 0

    @property
    def cer(self) -> float:
        return self.char_edits / self.chars if self.chars else float(self.char_edits > 0)

    @property
    def wer(self) -> float:
        return self.word_edits / self.words if self.words else float(self.word_edits > 0)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.char_edits + other.char_edits,
            self.chars + other.chars,
            self.word_edits + other.word_edits,
            self.words + other.words,
            self.utterances + other.utterances,
        )

    def as_dict(self) -> Dict[str, float]:
        return {"cer": self.cer, "wer": self.wer}


def count_errors(
    references: Sequence[str],
    hypotheses: Sequence[str],
    normalization: Optional[TextNormalization] = None,
) -> ErrorCounts:
    """Character and word edits of `hypotheses` against `references`, after normalizing both."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return ErrorCounts()
    norm = normalization or TextNormalization()
    refs = [norm(r) for r in references]
    hyps = [norm(h) for h in hypotheses]
    chars = jiwer.process_characters(refs, hyps)
    words = jiwer.process_words(refs, hyps)
    return ErrorCounts(
        char_edits=chars.substitutions + chars.deletions + chars.insertions,
        chars=chars.substitutions + chars.deletions + chars.hits,
        word_edits=words.substitutions + words.deletions + words.insertions,
        words=words.substitutions + words.deletions + words.hits,
        utterances=len(refs),
    )


def cer(
    references: Sequence[str], hypotheses: Sequence[str], normalization: Optional[TextNormalization] = None
) -> float:
    return count_errors(references, hypotheses, normalization).cer


def wer(
    references: Sequence[str], hypotheses: Sequence[str], normalization: Optional[TextNormalization] = None
) -> float:
    return count_errors(references, hypotheses, normalization).wer


def ids_to_text(
    ids: Iterable[int],
    tokens: Sequence[str],
    blank_id: int,
    delimiter: Optional[str] = "|",
    silent_ids: Collection[int] = (),
    collapse: bool = True,
) -> str:
    """Greedy CTC output ids (collapse=True) or label ids (collapse=False) -> text, as the device
    spells them (`edge_asr.ctc`: one collapse, one spelling for training, quantize and the device).

    Negative ids (-100: padding) are ignored; ids past the vocabulary (a padded output layer), the
    blank and `silent_ids` emit nothing; the delimiter becomes a space.
    """
    array = np.asarray(list(ids), dtype=np.int64)
    array = array[array >= 0]
    array[array >= len(tokens)] = blank_id
    vocab = Vocabulary(tokens, blank_id, delimiter, silent_ids)
    if collapse:
        kept = token_runs(array, vocab.silent_ids())[0]
    else:
        kept = array[~np.isin(array, vocab.silent_ids())]
    return vocab.spell(kept.tolist())
