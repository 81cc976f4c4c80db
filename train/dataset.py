"""Torch side of the data: a map-style dataset of decoded utterances and a per-batch padding collator.

Items are decoded (and augmented) in DataLoader workers. Padding happens per batch, to the longest
item in it; batches are grouped by length by the trainer's sampler, which reads `lengths` from here
instead of decoding every file to measure it.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, cast

import numpy as np
import torch

from . import augment as aug
from .data import Utterance, ctc_min_frames, load_audio

log = logging.getLogger(__name__)


def normalize_samples(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance, as Wav2Vec2FeatureExtractor(do_normalize=True) does."""
    return ((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)).astype(np.float32)


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances -> {"input_values": float32 [samples], "labels": [ids]}.

    A file that fails to decode at training time (it passed the header check) is replaced by the next
    item rather than killing a long run; each such failure is logged.
    """

    def __init__(
        self,
        rows: Sequence[Utterance],
        encode: Callable[[str], List[int]],
        frames: Callable[[int], int],
        do_normalize: bool = True,
        augment_options: Optional[aug.AugmentOptions] = None,
    ):
        self.rows = list(rows)
        self.encode = encode
        self.frames = frames
        self.do_normalize = do_normalize
        self.augment_options = augment_options
        # Built lazily, once per worker process: an audiomentations Compose, or False for none.
        self._augmenter: Any = None
        self.labels = [encode(r.label) for r in self.rows]

    @property
    def lengths(self) -> List[int]:
        return [r.samples for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def _augment(self, samples: np.ndarray, label: List[int]) -> np.ndarray:
        if self.augment_options is None:
            return samples
        if self._augmenter is None:
            self._augmenter = aug.build_augmenter(self.augment_options) or False
        if not self._augmenter:
            return samples
        out = aug.apply(self._augmenter, samples)
        # A fast time stretch can leave too few frames for the label: keep the original then.
        if self.frames(len(out)) < ctc_min_frames(label):
            return samples
        return out

    def __getitem__(self, index: int) -> Dict[str, Any]:
        for attempt in range(len(self.rows)):
            i = (index + attempt) % len(self.rows)
            try:
                samples = load_audio(self.rows[i].path)
                break
            except Exception as exc:  # any decoder failure: skip the file, keep the run alive
                log.warning(
                    "skipping %s (%s): failed to decode: %s", self.rows[i].path, self.rows[i].origin, exc
                )
        else:
            raise RuntimeError("no utterance of the dataset could be decoded")
        label = self.labels[i]
        samples = self._augment(samples, label)
        if self.do_normalize:
            samples = normalize_samples(samples)
        return {"input_values": samples, "labels": label}


@dataclass
class CTCCollator:
    """Pad audio with zeros and labels with -100 to the longest item of the batch.

    `input_lengths` (true sample counts) always travels with the batch so the loss uses each item's
    real frame count; `attention_mask` only for models that take one.
    """

    use_attention_mask: bool

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        lengths = [len(item["input_values"]) for item in items]
        audio = torch.zeros(len(items), max(lengths), dtype=torch.float32)
        for row, item in enumerate(items):
            audio[row, : lengths[row]] = torch.from_numpy(np.asarray(item["input_values"], dtype=np.float32))
        label_len = max(1, max(len(item["labels"]) for item in items))
        labels = torch.full((len(items), label_len), -100, dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["labels"]
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch = {
            "input_values": audio,
            "input_lengths": torch.tensor(lengths, dtype=torch.long),
            "labels": labels,
        }
        if self.use_attention_mask:
            batch["attention_mask"] = (
                torch.arange(max(lengths))[None, :] < batch["input_lengths"][:, None]
            ).long()
        return batch


def _probe(_: List[int]) -> int:
    return 1


def usable_workers(requested: int) -> int:
    """`requested` if DataLoader worker processes can start here, else 0 (load in-process).

    Some sandboxes and notebook hosts forbid fork or lack /dev/shm; finding out with a two-item
    DataLoader costs a fraction of a second and saves a crash at the first batch.
    """
    if requested <= 0:
        return 0
    try:
        # A list is a map-style dataset at runtime (__getitem__ and __len__); the stubs want a Dataset.
        items = cast("torch.utils.data.Dataset[int]", list(range(2)))
        loader = torch.utils.data.DataLoader(items, batch_size=1, num_workers=1, collate_fn=_probe)
        list(loader)
        multiprocessing.active_children()
        return requested
    except Exception as exc:  # OSError, PermissionError, RuntimeError: all mean "no workers here"
        log.warning("DataLoader worker processes cannot start here (%s); loading data in-process", exc)
        return 0
