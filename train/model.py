"""The wav2vec2 CTC model: load a pretrained checkpoint or build one from a config, and its geometry.

Pretrained: `Wav2Vec2ForCTC.from_pretrained(name_or_path, vocab_size=..., pad_token_id=blank,
ctc_loss_reduction="mean", ignore_mismatched_sizes=True)` - the CTC head is re-initialised for our
vocabulary. From scratch (`--init-from-config`): a config.json or a preset below, with any attribute
overridable (`--model-override conv_stride=[5,4,4]`).

Base-style configs (`feat_extract_norm == "group"`) were pretrained without an attention mask and
must not get one (zero padding is what they saw); large/lv60-style configs (`"layer"`) need one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, cast

log = logging.getLogger(__name__)

# Small configs for training from scratch on a CPU. "tiny" is for tests (seconds per step on a
# laptop core); "small" is a starting point for a real model. Both use a smaller conv downsampling
# than wav2vec2's 320 samples: more frames per character helps CTC leave its all-blank plateau.
# Both are layer-norm (lv60-style, with attention mask): from scratch, the group-norm variant's
# statistics shift with each batch's zero padding, and in a probe here the tiny group-norm model
# stalled at CER 0.05-0.1 on four utterances where the layer-norm one reached 0 within 300 steps.
PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": [32, 32, 32],
        "conv_kernel": [10, 4, 4],
        "conv_stride": [5, 4, 4],
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.0,
    },
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "conv_dim": [256, 256, 256, 256, 256],
        "conv_kernel": [10, 3, 3, 3, 2],
        "conv_stride": [5, 2, 2, 2, 2],
        "num_conv_pos_embeddings": 64,
        "num_conv_pos_embedding_groups": 16,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
    },
    "base": {},  # transformers' Wav2Vec2Config defaults = wav2vec2-base
}


class ModelError(ValueError):
    """The model cannot be loaded or built as asked."""


def init_config_dict(source: str) -> Dict[str, Any]:
    """The config mapping a from-scratch model starts from: a preset name or a config.json path."""
    if source in PRESETS:
        return dict(PRESETS[source])
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(
            f"--init-from-config {source!r}: neither a preset ({', '.join(PRESETS)}) nor a config.json file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def load_model_config(
    model: str,
    init_from_config: Optional[str],
    overrides: Dict[str, Any],
    vocab_size: int = 32,
    blank_id: int = 0,
):
    """The Wav2Vec2Config the run will use (before any weights are loaded)."""
    from transformers import Wav2Vec2Config

    fixed = {"vocab_size": vocab_size, "pad_token_id": blank_id, "ctc_loss_reduction": "mean"}
    if init_from_config:
        values = {"ctc_zero_infinity": True, **init_config_dict(init_from_config), **overrides, **fixed}
        values.pop("architectures", None)
        try:
            config = Wav2Vec2Config(**values)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"bad wav2vec2 config from {init_from_config!r}: {exc}") from None
    else:
        try:
            config = Wav2Vec2Config.from_pretrained(model)
        except OSError as exc:
            reason = str(exc).splitlines()[0].rstrip(".")
            raise ModelError(
                f"cannot load the config of {model!r}: {reason}. Pass a local model folder "
                "(with config.json), check the hub name and network, or train from scratch with "
                "--init-from-config tiny|small|base|CONFIG.json"
            ) from None
        for key, value in {"ctc_zero_infinity": True, **overrides, **fixed}.items():
            setattr(config, key, value)
    _check_geometry(config)
    return config


def _check_geometry(config) -> None:
    lengths = {len(config.conv_dim), len(config.conv_kernel), len(config.conv_stride)}
    if len(lengths) != 1:
        raise ModelError(
            f"conv_dim, conv_kernel and conv_stride need the same length, got {len(config.conv_dim)}, "
            f"{len(config.conv_kernel)} and {len(config.conv_stride)}"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ModelError(f"hidden_size {config.hidden_size} is not divisible by num_attention_heads")
    if config.hidden_size % config.num_conv_pos_embedding_groups:
        raise ModelError(
            f"hidden_size {config.hidden_size} is not divisible by num_conv_pos_embedding_groups"
        )


def uses_attention_mask(config) -> bool:
    """Only layer-norm (large/lv60-style) configs take an attention mask; group-norm ones must not."""
    return config.feat_extract_norm == "layer"


def output_frames(config, samples: int) -> int:
    """Output frames for `samples` input samples (mirrors `_get_feat_extract_output_lengths`)."""
    length = samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        if length <= 0:
            return 0
    if getattr(config, "add_adapter", False):
        for _ in range(config.num_adapter_layers):
            length = (length - 1) // config.adapter_stride + 1
    return max(0, length)


def frame_geometry(config) -> Tuple[int, int]:
    """(receptive field, frame stride) in samples: 400 and 320 for wav2vec2-base."""
    field, jump = 0, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field + 1, jump


def min_frames(config) -> int:
    """Fewest frames an utterance may have: SpecAugment's time mask cannot be longer than the input."""
    if getattr(config, "mask_time_prob", 0.0) > 0:
        return max(1, int(config.mask_time_length))
    return 1


def build_model(config, model: str, from_scratch: bool, freeze_feature_encoder: Optional[bool], seed: int):
    """Instantiate Wav2Vec2ForCTC: random init from `config`, or pretrained weights with a new head."""
    import torch
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(seed)
    if from_scratch:
        net = Wav2Vec2ForCTC(config)
    else:
        try:
            # output_loading_info=True returns (model, loading info); the annotation names the model only.
            net, loading = cast(
                Tuple[Wav2Vec2ForCTC, Dict[str, Any]],
                Wav2Vec2ForCTC.from_pretrained(
                    model,
                    config=config,
                    ignore_mismatched_sizes=True,
                    output_loading_info=True,
                ),
            )
        except OSError as exc:
            raise ModelError(
                f"cannot load weights of {model!r}: {str(exc).splitlines()[0].rstrip('.')}"
            ) from None
        grown = init_new_layers_as_identity(net, loading["missing_keys"])
        if grown:
            log.info(
                "transformer layers %s are not in %s: added as identity blocks (%s)",
                ", ".join(map(str, grown)),
                model,
                "the model computes what the checkpoint did until they learn"
                if config.do_stable_layer_norm
                else "post-norm layers: close to, not exactly, the checkpoint's function",
            )
    freeze = (not from_scratch) if freeze_feature_encoder is None else freeze_feature_encoder
    if freeze:
        net.freeze_feature_encoder()
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters())
    log.info(
        "model: %s, %.2fM parameters (%.2fM trainable), feature encoder %s, attention mask %s",
        "random init" if from_scratch else model,
        total / 1e6,
        trainable / 1e6,
        "frozen" if freeze else "trained",
        "used" if uses_attention_mask(config) else "not used (group-norm config)",
    )
    return net


def init_new_layers_as_identity(net, missing_keys) -> list:
    """Zero the residual-branch outputs of transformer layers the checkpoint did not have.

    Growing a trained model (`--model-override num_hidden_layers=8` on a 4-layer checkpoint) otherwise
    appends randomly initialised layers that scramble what it learnt. With the attention output and
    feed-forward output projections at zero, a pre-norm layer (do_stable_layer_norm) adds nothing to
    its residual stream: the grown model starts as the checkpoint's function, and gradients still
    reach the zeroed projections, whose inputs are not zero. Returns the indices of the new layers.
    """
    import torch

    prefix = "wav2vec2.encoder.layers."
    missing = {k[len(prefix) :].split(".", 1)[0] for k in missing_keys if k.startswith(prefix)}
    grown = sorted(int(i) for i in missing)
    with torch.no_grad():
        for index in grown:
            layer = net.wav2vec2.encoder.layers[index]
            for projection in (layer.attention.out_proj, layer.feed_forward.output_dense):
                projection.weight.zero_()
                projection.bias.zero_()
    return grown


def pretrained_do_normalize(model: str, from_scratch: bool) -> bool:
    """Whether the checkpoint expects zero-mean unit-variance input (True for all wav2vec2 2.0 releases)."""
    if from_scratch:
        return True
    try:
        from transformers import Wav2Vec2FeatureExtractor

        return bool(Wav2Vec2FeatureExtractor.from_pretrained(model).do_normalize)
    except (OSError, ValueError):
        return True


def describe_geometry(config) -> str:
    field, stride = frame_geometry(config)
    return (
        f"receptive field {field} samples ({field / 16:.1f} ms), frame stride {stride} ({stride / 16:.1f} ms)"
    )
