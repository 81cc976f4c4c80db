"""The character vocabulary and the tokenizer/feature-extractor pair saved with the model.

Layout: ``[PAD]`` (id 0, the CTC blank), ``[UNK]``, the word delimiter ``|``, then the characters of
the normalized training text in sorted order. Labels are encoded here directly (a dict lookup per
character) rather than through the tokenizer, which is slower and would map unseen characters to
``[UNK]`` silently; `check_labels` drops such rows with a reason instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List

from edge_asr.atomic import write_text_atomic

PAD = "[PAD]"
UNK = "[UNK]"
DELIMITER = "|"
SPECIALS = (PAD, UNK, DELIMITER)


class VocabularyError(ValueError):
    """A vocabulary file is unusable."""


def build_vocabulary(labels: Iterable[str], min_count: int = 1) -> Dict[str, int]:
    """Token -> id from normalized training labels; characters rarer than `min_count` are left out."""
    counts = Counter(ch for label in labels for ch in label if ch != " ")
    chars = sorted(ch for ch, n in counts.items() if n >= min_count and ch not in SPECIALS)
    return {token: i for i, token in enumerate([*SPECIALS, *chars])}


def load_vocabulary(path: Path) -> Dict[str, int]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VocabularyError(f"{path}: cannot read vocabulary ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise VocabularyError(f"{path}: expected a JSON object of token -> id")
    missing = [t for t in (PAD, DELIMITER) if t not in data]
    if missing:
        raise VocabularyError(
            f"{path}: vocabulary lacks {missing}; it needs {PAD} (the CTC blank) and {DELIMITER}"
        )
    if sorted(data.values()) != list(range(len(data))):
        raise VocabularyError(f"{path}: token ids must be 0..{len(data) - 1} without gaps")
    return data


def save_vocabulary(vocabulary: Dict[str, int], path: Path) -> None:
    write_text_atomic(path, json.dumps(vocabulary, ensure_ascii=False, indent=1) + "\n")


def encoder(vocabulary: Dict[str, int]):
    """label text -> ids; spaces become the word delimiter. Unknown characters raise KeyError."""
    delimiter = vocabulary[DELIMITER]

    def encode(label: str) -> List[int]:
        return [delimiter if ch == " " else vocabulary[ch] for ch in label]

    return encode


def make_processor(vocab_file: Path, use_attention_mask: bool, do_normalize: bool = True):
    """A Wav2Vec2Processor (CTC tokenizer + feature extractor) matching the vocabulary file."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    # bos/eos default to <s>/</s>, which the tokenizer would append as extra tokens beyond the model's
    # vocabulary: the output layer and len(tokenizer) would then disagree.
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        unk_token=UNK,
        pad_token=PAD,
        word_delimiter_token=DELIMITER,
        bos_token=None,
        eos_token=None,
        do_lower_case=False,
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=use_attention_mask,
    )
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
