"""Random-init CTC model folders, for tests and benchmarks (no hub access needed).

The folder follows the train/ -> quantize/ contract: a Hugging Face Wav2Vec2ForCTC folder with a
Wav2Vec2CTCTokenizer, a feature extractor config and text_normalization.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from edge_asr.text import TextNormalization

from .source import TEXT_NORMALIZATION_FILE

LETTERS = list("abcdefghijklmnopqrstuvwxyz'")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

TINY_CONFIG: Dict[str, Any] = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    do_stable_layer_norm=False,
    feat_extract_norm="group",
)
# wav2vec2-base's architecture is transformers' Wav2Vec2Config default.
BASE_CONFIG: Dict[str, Any] = {}
DEFAULT_NORMALIZATION = TextNormalization()


def default_vocabulary() -> Dict[str, int]:
    tokens = SPECIALS + ["|"] + LETTERS
    return {t: i for i, t in enumerate(tokens)}


def make_random_model(
    folder: Path,
    config: Optional[Dict[str, Any]] = None,
    vocab: Optional[Dict[str, int]] = None,
    seed: int = 0,
    model_type: str = "wav2vec2",
    do_normalize: bool = True,
    return_attention_mask: bool = False,
    normalization: Optional[TextNormalization] = DEFAULT_NORMALIZATION,
    head_scale: float = 1.0,
    suppress_special: bool = False,
) -> Path:
    """Save a random-init *ForCTC model with its tokenizer and feature extractor into `folder`.

    `head_scale` multiplies the CTC head's weights: random models otherwise emit near-uniform
    distributions where argmax flips on rounding noise, which says nothing about an exporter.
    `suppress_special` biases the head against special tokens other than the blank, as training does
    in effect (decoders disagree on where to drop a mid-word <unk>; that is not what tests are after).
    """
    import torch
    from transformers import (
        Data2VecAudioConfig,
        Data2VecAudioForCTC,
        HubertConfig,
        HubertForCTC,
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
    )

    classes = {
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2ForCTC),
        "hubert": (HubertConfig, HubertForCTC),
        "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioForCTC),
    }
    config_cls, model_cls = classes[model_type]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocab or default_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    settings = dict(TINY_CONFIG if config is None else config)
    settings.update(vocab_size=len(vocab), pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean")
    torch.manual_seed(seed)
    model = model_cls(config_cls(**settings))
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
        if suppress_special:
            for token_id in tokenizer.all_special_ids:
                if token_id != tokenizer.pad_token_id:
                    model.lm_head.bias[token_id] = -30.0
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=return_attention_mask,
    ).save_pretrained(str(folder))
    if normalization is not None:
        (folder / TEXT_NORMALIZATION_FILE).write_text(json.dumps(normalization.to_dict()), encoding="utf-8")
    return folder


def tokens_of(vocab: Dict[str, int]) -> Sequence[str]:
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
