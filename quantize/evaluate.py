"""fp32 against int8 (and both against PyTorch) on an evaluation set.

The bundle variants are run through edge_asr's EdgeTranscriber in child processes (see measure.py),
so the figures are those of the device code path. PyTorch's greedy decode is computed here, from the
plain Hugging Face model with the feature extractor's normalization (not the export wrapper), as the
reference that the fp32 bundle must reproduce.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge_asr.audio import read_audio
from train.metrics import ids_to_text

from .manifest import EvalItem
from .measure import VariantRun, run_variant
from .scoring import score
from .source import SourceModel

log = logging.getLogger(__name__)


@dataclass
class TorchRun:
    transcripts: List[str]
    frame_ids: List[np.ndarray]
    audio_seconds: float
    processing_seconds: float

    @property
    def rtf(self) -> float:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0


@dataclass
class Evaluation:
    """Everything the report says about one evaluation set."""

    items: List[EvalItem]
    torch: TorchRun
    runs: Dict[str, VariantRun]
    sizes: Dict[str, int]
    cer: Dict[str, float] = field(default_factory=dict)
    wer: Dict[str, float] = field(default_factory=dict)
    agreement: Dict[str, float] = field(default_factory=dict)
    identical_to_pytorch: Dict[str, int] = field(default_factory=dict)
    max_cer_increase: Optional[float] = None
    guarded: str = "int8"  # the variant the bundle ships as its int8 graph, which the guard judges

    def increase(self, variant: str) -> Optional[float]:
        """CER(variant) - CER(fp32), absolute; None when either was not measured."""
        if variant not in self.cer or "fp32" not in self.cer:
            return None
        return self.cer[variant] - self.cer["fp32"]

    @property
    def cer_increase(self) -> Optional[float]:
        return self.increase(self.guarded)

    @property
    def guard_passed(self) -> bool:
        increase = self.cer_increase
        return self.max_cer_increase is None or increase is None or increase <= self.max_cer_increase


def torch_greedy(source: SourceModel, items: Sequence[EvalItem]) -> TorchRun:
    """PyTorch eager greedy decode of each item, one utterance at a time (as the device runs)."""
    import torch

    rate = source.features.sample_rate
    texts, ids, audio, busy = [], [], 0.0, 0.0
    for item in items:
        samples = read_audio(item.path, rate)
        audio += samples.size / rate
        started = time.perf_counter()
        if samples.size < source.receptive_field:
            samples = np.pad(samples, (0, source.receptive_field - samples.size))
        if source.features.do_normalize:
            # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm on an unpadded utterance.
            samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        with torch.no_grad():
            logits = source.model(torch.from_numpy(samples.astype(np.float32))[None, :]).logits[0]
        frame_ids = logits.argmax(-1).numpy().astype(np.int32)
        busy += time.perf_counter() - started
        ids.append(frame_ids)
        tokens, blank, delimiter = source.vocabulary, source.blank_id, source.word_delimiter
        texts.append(ids_to_text(frame_ids, tokens, blank, delimiter, source.special_ids))
    return TorchRun(texts, ids, audio, busy)


def frame_agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Fraction of frames with the same greedy token (length mismatches count as disagreement)."""
    same = total = 0
    for x, y in zip(a, b):
        n = min(x.size, y.size)
        same += int((x[:n] == y[:n]).sum())
        total += max(x.size, y.size)
    return same / total if total else 1.0


def evaluate(
    source: SourceModel,
    bundle: Path,
    items: Sequence[EvalItem],
    scratch: Path,
    max_cer_increase: Optional[float] = None,
    threads: Optional[int] = None,
    variants: Sequence[str] = ("fp32", "int8"),
    guarded: str = "int8",
) -> Evaluation:
    """Run PyTorch and each bundle variant over `items` and compute the report's figures.

    `guarded` names the variant whose CER increase over fp32 the guard judges.
    """
    torch_run = torch_greedy(source, items)
    paths = [i.path for i in items]
    runs = {v: run_variant(bundle, v, paths, scratch, threads) for v in variants}
    sizes = {v: (bundle / r.model_file).stat().st_size for v, r in runs.items()}
    result = Evaluation(list(items), torch_run, runs, sizes)
    result.max_cer_increase, result.guarded = max_cer_increase, guarded
    refs = [i.text for i in items]
    norm = source.text_normalization
    result.cer["pytorch"], result.wer["pytorch"] = score(refs, torch_run.transcripts, norm)
    for variant, run in runs.items():
        result.cer[variant], result.wer[variant] = score(refs, run.transcripts, norm)
        result.agreement[f"{variant}_vs_pytorch"] = frame_agreement(run.frame_ids, torch_run.frame_ids)
        result.identical_to_pytorch[variant] = sum(
            a == b for a, b in zip(run.transcripts, torch_run.transcripts)
        )
    for variant in runs:
        if variant != "fp32" and "fp32" in runs:
            result.agreement[f"{variant}_vs_fp32"] = frame_agreement(
                runs[variant].frame_ids, runs["fp32"].frame_ids
            )
    return result
