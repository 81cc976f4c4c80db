"""PyTorch CTC model -> ONNX graph that follows edge_asr's graph contract.

The graph takes raw samples and returns log-probabilities, so the device does no preprocessing:
per-utterance normalization (when the feature extractor does it) and log-softmax are baked in.

Exporter choice: the TorchScript exporter (`dynamo=False`, opset 17). Measured here with torch 2.13 on
wav2vec2-base it exports in ~6 s, matches PyTorch as closely as the dynamo exporter (~3e-6), its graph
runs ~20% faster in onnxruntime, and onnxruntime's quantization pre-processing (symbolic shape
inference) works on it, while it fails on the dynamo graph.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from .errors import ExportError
from .source import SourceModel

log = logging.getLogger(__name__)

INPUT_NAME = "input_values"
LENGTHS_NAME = "input_lengths"  # edge_asr.model.LENGTHS_INPUT; the name is part of the graph contract
OUTPUT_NAME = "log_probs"
STATES_NAME = "encoder_states"  # a text decoder's input; edge_asr.model reads it by name
FEATURES_NAME = "features"  # the split graphs' link: the front-end's output, the encoder's input
SPLIT_MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio")
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm's epsilon


@dataclass
class ExportOptions:
    """How the graph is exported.

    Attributes:
        opset: ONNX opset for the TorchScript exporter (17 is what was measured).
        example_seconds: length of the tracing example; parity later checks other lengths.
        example_batch: batch size of the tracing example (2, so batch is never traced as a constant).
    """

    opset: int = 17
    example_seconds: float = 2.0
    example_batch: int = 2


@dataclass
class ExportResult:
    path: Path
    seconds: float
    size_bytes: int
    has_lengths_input: bool


def normalize_batch(
    x: torch.Tensor, lengths: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Zero mean, unit variance per row over its first `lengths` samples; padding becomes 0.

    The same as Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm with an attention mask (and
    without one when `lengths` is None), written in tensor ops so that it exports.
    """
    if lengths is None:
        mean = x.mean(dim=1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(var + NORM_EPS)
    if mask is None:
        mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    weights = mask.to(x.dtype)
    count = lengths.to(x.dtype).clamp(min=1).unsqueeze(1)
    mean = (x * weights).sum(dim=1, keepdim=True) / count
    var = (((x - mean) * weights) ** 2).sum(dim=1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + NORM_EPS) * weights


class CtcGraph(nn.Module):
    """Raw samples [batch, samples] (+ lengths) -> CTC log-probabilities [batch, frames, vocab].

    With `normalize`, each row is scaled to zero mean and unit variance over its first `lengths`
    samples and the padding is zeroed, exactly as the feature extractor does for a padded batch.
    With `attention_mask`, the lengths also become the model's attention mask (layer-norm wav2vec2
    variants expect one; group-norm ones were trained without it, so it is not passed there).
    With `states` (a whisper-ctc model with a CTC branch), it returns (log-probs, the encoder's own
    states): the branch replaced them on the CTC path, so the export must name them as an output
    (`STATES_NAME`); there is no node left for `expose_encoder_states` to find.
    """

    def __init__(self, model: nn.Module, normalize: bool, attention_mask: bool, states: bool = False):
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.attention_mask = attention_mask
        self.states = states

    def forward(self, input_values: torch.Tensor, input_lengths: Optional[torch.Tensor] = None) -> Any:
        mask = None
        if input_lengths is not None:
            positions = torch.arange(input_values.shape[1], device=input_values.device)
            mask = positions.unsqueeze(0) < input_lengths.unsqueeze(1)
        x = normalize_batch(input_values, input_lengths, mask) if self.normalize else input_values
        kwargs = {}
        if self.attention_mask and mask is not None:
            kwargs["attention_mask"] = mask.long()
        output = self.model(x, **kwargs)
        log_probs = torch.log_softmax(output.logits, dim=-1)
        if self.states:
            return log_probs, output.hidden_states[-1]
        return log_probs


def graph_module(source: SourceModel, states: bool = False) -> CtcGraph:
    features = source.features
    return CtcGraph(source.model, features.do_normalize, features.return_attention_mask, states).eval()


def has_ctc_branch(source: SourceModel) -> bool:
    """A whisper-ctc model whose CTC path has its own top layers (its graph gives encoder_states)."""
    return bool(getattr(source.model.config, "ctc_layers", 0))


def wants_lengths(source: SourceModel) -> bool:
    """The lengths input only exists when something in the graph uses it."""
    return source.features.do_normalize or source.features.return_attention_mask


def example_input(source: SourceModel, options: ExportOptions) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    samples = int(options.example_seconds * source.features.sample_rate)
    return 0.1 * torch.randn(options.example_batch, samples, generator=generator)


def export_onnx(source: SourceModel, path: Path, options: Optional[ExportOptions] = None) -> ExportResult:
    """Export `source` to `path` with dynamic batch and time axes; raises ExportError on failure."""
    options = options or ExportOptions()
    module = graph_module(source, states=has_ctc_branch(source))
    x = example_input(source, options)
    lengths = wants_lengths(source)
    args: tuple = (x, torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)) if lengths else (x,)
    input_names = [INPUT_NAME, LENGTHS_NAME] if lengths else [INPUT_NAME]
    axes = {INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch", 1: "frames"}}
    if lengths:
        axes[LENGTHS_NAME] = {0: "batch"}
    outputs = [OUTPUT_NAME]
    if module.states:
        outputs.append(STATES_NAME)
        axes[STATES_NAME] = {0: "batch", 1: "frames"}
    started = time.perf_counter()
    torch_export(source.name, module, args, path, input_names, axes, options, output_names=outputs)
    seconds = time.perf_counter() - started
    return ExportResult(path=path, seconds=seconds, size_bytes=path.stat().st_size, has_lengths_input=lengths)


# -- the split graphs (bundle format 2): front-end and encoder ------------------------------------------


class FrontEndGraph(nn.Module):
    """Samples [batch, samples] -> conv features [batch, frames, conv_dim[-1]]: the model's feature
    encoder alone. No normalization: the device normalizes (edge_asr.model.SplitCtcModel), so that a
    cache of features can choose the statistics (edge_asr.windows.FeatureCache)."""

    feature_extractor: nn.Module

    def __init__(self, model: Any):
        super().__init__()
        self.feature_extractor = model.base_model.feature_extractor

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(input_values).transpose(1, 2)


class EncoderGraph(nn.Module):
    """Conv features [batch, frames, dim] -> CTC log-probabilities: the rest of the *ForCTC forward
    (feature projection, transformer, optional adapter, head), as Wav2Vec2Model.forward runs it
    without an attention mask (the device runs one unpadded utterance, for which the single graph's
    all-ones mask changes nothing)."""

    base: Any  # a Wav2Vec2Model / HubertModel / Data2VecAudioModel
    lm_head: nn.Module

    def __init__(self, model: Any):
        super().__init__()
        self.base = model.base_model
        self.lm_head = model.lm_head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.base.feature_projection(features)
        # wav2vec2 and data2vec-audio return (hidden, normed features); HuBERT returns hidden alone.
        hidden = projected[0] if isinstance(projected, tuple) else projected
        hidden = self.base.encoder(hidden)[0]
        adapter = getattr(self.base, "adapter", None)
        if adapter is not None:
            hidden = adapter(hidden)
        return torch.log_softmax(self.lm_head(hidden), dim=-1)


@dataclass
class SplitExport:
    front_end: Path
    encoder: Path
    feature_dim: int
    seconds: float


def can_split(source: SourceModel) -> bool:
    """The wav2vec2 family has a separable conv feature encoder; whisper-ctc's mel front-end is a
    small share of its time (docs/benchmarks.md), so it stays one graph."""
    return source.model_type in SPLIT_MODEL_TYPES


def export_split(
    source: SourceModel, front_end_path: Path, encoder_path: Path, options: Optional[ExportOptions] = None
) -> SplitExport:
    """Export the front-end and encoder graphs of a wav2vec2-family model; raises ExportError."""
    options = options or ExportOptions()
    model = source.model.eval()
    front_end, encoder = FrontEndGraph(model).eval(), EncoderGraph(model).eval()
    x = example_input(source, options)
    started = time.perf_counter()
    with torch.no_grad():
        features = front_end(x)
    feature_dim = int(features.shape[-1])
    torch_export(
        source.name, front_end, (x,), front_end_path, [INPUT_NAME],
        {INPUT_NAME: {0: "batch", 1: "samples"}, FEATURES_NAME: {0: "batch", 1: "frames"}}, options,
        output_names=[FEATURES_NAME],
    )  # fmt: skip
    torch_export(
        source.name, encoder, (features,), encoder_path, [FEATURES_NAME],
        {FEATURES_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch", 1: "frames"}}, options,
    )  # fmt: skip
    return SplitExport(front_end_path, encoder_path, feature_dim, time.perf_counter() - started)


def torch_export(
    name: str,
    module: nn.Module,
    args: tuple,
    path: Path,
    input_names: List[str],
    axes: dict,
    options: ExportOptions,
    output_names: Sequence[str] = (OUTPUT_NAME,),
) -> None:
    """torch.onnx.export with the settings measured in the module docstring; raises ExportError.
    `name`: what is exported, for the error message (the model's name)."""
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about every Python-level shape computation in transformers; parity on
            # other lengths and batch sizes is what shows whether one of them froze.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=options.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises anything from RuntimeError to torch-internal types
        raise ExportError(
            f"torch.onnx.export of {path.name} failed for {name}: {type(exc).__name__}: {exc}"
        ) from None
    if not path.is_file():
        raise ExportError(f"torch.onnx.export wrote no file at {path}")
