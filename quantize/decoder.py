"""Whisper's text decoder as two ONNX graphs with explicit key/value caches, for joint CTC/attention
decoding on the device (`edge_asr.attention`).

Why two graphs and explicit caches: the device runs the decoder one token at a time, in a Python loop
steered by the CTC head. transformers' cache objects do not export, and re-running the whole prefix
each step costs O(n^2). So:

- `CrossGraph`: encoder states [1, frames, d] -> cross-attention keys and values of every layer,
  [layers, 1, heads, frames, head_dim] each. Run once per utterance (or segment).
- `StepGraph`: new tokens [beams, n] + the self-attention cache [layers, beams, heads, past, head_dim]
  (past may be 0) + the cross K/V -> log-probabilities of the next token [beams, vocab] and the cache
  grown by n. The token position is the cache's length, so the caller keeps no counter. One tied
  [vocab, d] table serves the token lookup and the output projection, as in Whisper.

int8 (`quantize_decoder`): onnxruntime's dynamic MatMul recipe, then the token lookup is rewired to
read the int8 output table (per-token scales) so that the fp32 table (80 MB for 51,864 x 384) leaves
the file: the lookup dequantizes the rows it gathers. Measured in the feasibility run
(shared notes, decoder-lab): int8 cost nothing against fp32 in joint decoding.

The token table (`tokens.json`: the byte-level BPE strings, GPT-2's bytes-to-unicode form) and the
special ids come from the CTranslate2 folder or the HF checkpoint's tokenizer files, so the device
detokenizes with numpy-free Python (no tokenizers package).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_asr.attention import cross_feeds
from edge_asr.bundle import DecoderSettings

from .errors import ExportError
from .export import STATES_NAME, ExportOptions, torch_export

log = logging.getLogger(__name__)

CROSS_FILE = "decoder_cross.onnx"
STEP_FILE = "decoder_step.onnx"
CROSS_INT8_FILE = "decoder_cross.int8.onnx"
STEP_INT8_FILE = "decoder_step.int8.onnx"
TOKENS_FILE = "decoder_tokens.json"
EXPORT = ExportOptions()  # the exporter settings of the CTC graphs (TorchScript, opset 17)


class CrossGraph(nn.Module):
    """Encoder states [1, frames, d] -> (cross_k, cross_v), each [layers, 1, heads, frames, head_dim]."""

    def __init__(self, decoder: Any):
        super().__init__()
        self.layers = decoder.layers
        first = decoder.layers[0].encoder_attn
        self.heads = first.num_heads
        self.head_dim = first.head_dim

    def forward(self, encoder_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        keys, values = [], []
        for layer in self.layers:
            attn = layer.encoder_attn
            keys.append(_heads(attn.k_proj(encoder_states), self.heads, self.head_dim))
            values.append(_heads(attn.v_proj(encoder_states), self.heads, self.head_dim))
        return torch.stack(keys), torch.stack(values)


def _heads(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """[batch, time, d] -> [batch, heads, time, head_dim]."""
    return x.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[batch, heads, time, head_dim] -> [batch, time, d]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3])


class StepGraph(nn.Module):
    """(tokens [beams, n], self_k, self_v [layers, beams, heads, past, head_dim], cross_k, cross_v)
    -> (log_probs [beams, vocab] of the token after the last one, self_k, self_v grown by n)."""

    def __init__(self, decoder: Any):
        super().__init__()
        self.decoder = decoder
        first = decoder.layers[0].self_attn
        self.heads = first.num_heads
        self.head_dim = first.head_dim
        self.scaling = self.head_dim**-0.5

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    def forward(
        self,
        tokens: torch.Tensor,
        self_k: torch.Tensor,
        self_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dec = self.decoder
        past = self_k.shape[3]
        count = tokens.shape[1]
        positions = torch.arange(count, device=tokens.device) + past
        x = dec.embed_tokens(tokens) + dec.embed_positions.weight.index_select(0, positions)
        # Causal within the new tokens: query i (at position past + i) sees keys 0 .. past + i.
        key_positions = torch.arange(count + past, device=tokens.device)
        mask = key_positions.unsqueeze(0) > positions.unsqueeze(1)
        new_k, new_v = [], []
        for index, layer in enumerate(dec.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat((self_k[index], _heads(attn.k_proj(h), self.heads, self.head_dim)), dim=2)
            v = torch.cat((self_v[index], _heads(attn.v_proj(h), self.heads, self.head_dim)), dim=2)
            new_k.append(k)
            new_v.append(v)
            q = _heads(attn.q_proj(h), self.heads, self.head_dim)
            x = x + attn.out_proj(_merge(self._attend(q, k, v, mask)))
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(cross.q_proj(h), self.heads, self.head_dim)
            x = x + cross.out_proj(_merge(self._attend(q, cross_k[index], cross_v[index], None)))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(F.gelu(layer.fc1(h)))
        last = dec.layer_norm(x[:, -1])
        logits = F.linear(last, dec.embed_tokens.weight)
        return torch.log_softmax(logits, dim=-1), torch.stack(new_k), torch.stack(new_v)


def load_whisper(name_or_path: str) -> Any:
    """WhisperForConditionalGeneration (float32, eval) with its decoder; a clear error when the
    checkpoint has none (`python -m train.whisper_import --include-decoder` writes one)."""
    from transformers import WhisperForConditionalGeneration

    try:
        loaded: Any = WhisperForConditionalGeneration.from_pretrained(
            name_or_path, dtype=torch.float32, output_loading_info=True
        )
    except OSError as exc:
        raise ExportError(
            f"cannot load the Whisper checkpoint {name_or_path!r} for its decoder: {str(exc).splitlines()[0]}"
        ) from None
    model, info = loaded
    missing = [k for k in info["missing_keys"] if ".decoder." in k or k.startswith("decoder.")]
    if missing:
        raise ExportError(
            f"{name_or_path}: the checkpoint has no decoder weights ({len(missing)} missing, e.g. "
            f"{missing[0]}); import it with `python -m train.whisper_import --include-decoder`"
        )
    return model.eval()


def decoder_spec(model: Any) -> DecoderSettings:
    """The bundle's decoder section for `model` (fp32 file names; `convert` names the int8 ones):
    special ids and suppress lists from its generation config, as Whisper decodes, and its geometry.
    The joint settings keep their defaults until they are picked on validation voices."""
    config = model.config
    generation = getattr(model, "generation_config", None)
    suppress = list(getattr(generation, "suppress_tokens", None) or [])
    begin = list(getattr(generation, "begin_suppress_tokens", None) or [])
    no_timestamps = getattr(generation, "no_timestamps_token_id", None)
    start = int(config.decoder_start_token_id)
    eot = int(config.eos_token_id)
    layer = model.model.decoder.layers[0].self_attn
    return DecoderSettings(
        cross=CROSS_FILE,
        step=STEP_FILE,
        tokens=TOKENS_FILE,
        prompt=[start] + ([int(no_timestamps)] if no_timestamps is not None else []),
        eot=eot,
        suppress=sorted(int(i) for i in suppress),
        suppress_at_begin=sorted(int(i) for i in begin),
        special_from=eot + 1,  # Whisper's specials follow end-of-text (start, languages, tasks, times)
        layers=int(config.decoder_layers),
        heads=int(layer.num_heads),
        head_dim=int(layer.head_dim),
        max_positions=int(config.max_target_positions),
        per_layer_cross=True,  # export_decoder splits the cross inputs
    )


TOKEN_TABLE_FILES = ("vocabulary.txt", "tokenizer.json", "vocab.json")


def token_folder(checkpoint: str) -> Path:
    """Where a checkpoint's token strings are: its own folder, or the CTranslate2 folder it was
    imported from (`train.whisper_import` records it in provenance.json)."""
    folder = Path(checkpoint)
    if any((folder / name).is_file() for name in TOKEN_TABLE_FILES):
        return folder
    provenance = folder / "provenance.json"
    if provenance.is_file():
        source = json.loads(provenance.read_text(encoding="utf-8")).get("source", {}).get("folder")
        if source:
            return Path(source)
    raise ExportError(f"{checkpoint}: no token table ({', '.join(TOKEN_TABLE_FILES)}) for the decoder")


def token_strings(folder: Path, vocab_size: int) -> List[str]:
    """The byte-level BPE strings by id: a CTranslate2 folder's vocabulary.txt, or a HF folder's
    tokenizer.json / vocab.json + added tokens. Ids past the list (unused rows) get ""."""
    strings: Dict[int, str] = {}
    if (folder / "vocabulary.txt").is_file():
        lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        strings = {i: line for i, line in enumerate(lines) if line or i < vocab_size - 1}
    elif (folder / "tokenizer.json").is_file():
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        strings = {int(i): t for t, i in data["model"]["vocab"].items()}
        strings.update({int(t["id"]): t["content"] for t in data.get("added_tokens", [])})
    elif (folder / "vocab.json").is_file():
        strings = {int(i): t for t, i in json.loads((folder / "vocab.json").read_text("utf-8")).items()}
    else:
        raise ExportError(f"{folder}: no {', '.join(TOKEN_TABLE_FILES)} for the decoder's token table")
    return [strings.get(i, "") for i in range(vocab_size)]


def export_decoder(model: Any, cross_path: Path, step_path: Path, per_layer_cross: bool = True) -> float:
    """Export the two decoder graphs (fp32); returns the seconds it took. `per_layer_cross`: the step
    graph reads one cross input per layer (`split_cross_inputs`); False keeps torch's stacked inputs
    (what bundles of format 3 hold)."""
    decoder = model.model.decoder.eval()
    cross, step = CrossGraph(decoder).eval(), StepGraph(decoder).eval()
    d = decoder.config.d_model
    states = 0.1 * torch.randn(1, 37, d, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    name = "the Whisper decoder"
    torch_export(
        name, cross, (states,), cross_path, [STATES_NAME],
        {STATES_NAME: {1: "frames"}, "cross_k": {3: "frames"}, "cross_v": {3: "frames"}}, EXPORT,
        output_names=["cross_k", "cross_v"],
    )  # fmt: skip
    with torch.no_grad():
        cross_k, cross_v = cross(states)
    layers, heads, head_dim = cross_k.shape[0], cross_k.shape[2], cross_k.shape[4]
    past = torch.zeros(layers, 2, heads, 3, head_dim)
    tokens = torch.tensor([[50, 51], [52, 53]], dtype=torch.int64)
    cache_axes = {1: "beams", 3: "past"}
    torch_export(
        name, step, (tokens, past, past.clone(), cross_k, cross_v), step_path,
        ["tokens", "self_k", "self_v", "cross_k", "cross_v"],
        {
            "tokens": {0: "beams", 1: "count"}, "self_k": cache_axes, "self_v": cache_axes,
            "cross_k": {3: "frames"}, "cross_v": {3: "frames"}, "log_probs": {0: "beams"},
            "self_k_out": {1: "beams", 3: "length"}, "self_v_out": {1: "beams", 3: "length"},
        },
        EXPORT, output_names=["log_probs", "self_k_out", "self_v_out"],
    )  # fmt: skip
    if per_layer_cross and not split_cross_inputs(step_path):
        raise ExportError(f"{step_path}: the exported step graph does not read cross_k, cross_v per layer")
    return time.perf_counter() - started


def split_cross_inputs(path: Path) -> bool:
    """Give the step graph one cross key and value input per layer (`DecoderSettings.per_layer_cross`).

    torch exports the stacked cross_k, cross_v [layers, 1, heads, frames, head_dim] read through one
    Gather per layer, which onnxruntime runs as a copy of every layer's keys and values at every step.
    The Gathers go; their consumers read new inputs cross_k_<i>, cross_v_<i> [1, heads, frames,
    head_dim] instead. Weights and results are unchanged. False (file unchanged) when the graph has
    no stacked cross inputs read that way (already per layer, or another exporter's graph)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"
    }
    constants.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
    stacked = {i.name: i for i in graph.input if i.name in ("cross_k", "cross_v")}
    if len(stacked) != 2:
        return False
    plan = []  # (Gather node, the input that replaces its output)
    layers_read: Dict[str, int] = {}
    for name in stacked:
        readers = [n for n in graph.node if name in n.input]
        gathers = [n for n in readers if n.op_type == "Gather" and n.input[0] == name]
        if len(gathers) != len(readers) or any(_attribute(n, "axis", 0) != 0 for n in gathers):
            return False
        layers = sorted(int(constants[n.input[1]]) for n in gathers if n.input[1] in constants)
        if layers != list(range(len(gathers))):
            return False
        plan += [(n, f"{name}_{int(constants[n.input[1]])}") for n in gathers]
        layers_read[name] = len(gathers)
    for gather, new in plan:
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name == gather.output[0]:
                    node.input[index] = new
        graph.node.remove(gather)
    for name, value in stacked.items():
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        graph.input.remove(value)
        for layer in range(layers_read[name]):
            graph.input.append(helper.make_tensor_value_info(f"{name}_{layer}", onnx.TensorProto.FLOAT, dims))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def split_bundle_cross_inputs(folder: Path) -> bool:
    """`split_cross_inputs` for a bundle written before it (format 3), in place: its step graph is
    rewritten and bundle.json says `per_layer_cross` (format 4). False when it already does. The
    graph is replaced whole (a hidden temp file, then a rename) before bundle.json is rewritten; a run
    stopped between the two leaves a per-layer graph bundle.json does not know yet, and running it
    again finishes the job."""
    import os
    import shutil
    from dataclasses import replace

    from edge_asr.bundle import load_bundle, write_bundle
    from edge_asr.errors import BundleError
    from edge_asr.verify import check_decoder

    try:
        bundle = load_bundle(folder, verify=False)
        meta = bundle.metadata
        if meta.decoder is None:
            raise ExportError(f"{bundle.path}: this bundle has no text decoder ('decoder' in bundle.json)")
        if meta.decoder.per_layer_cross:
            return False
        step = bundle.path / meta.decoder.step
        bundle.verify([name for name in meta.files if name != meta.decoder.step])
        finishing = _reads_per_layer(step, replace(meta.decoder, per_layer_cross=True).cross_inputs())
        if not finishing:
            bundle.verify([meta.decoder.step])
    except BundleError as exc:
        raise ExportError(str(exc)) from None
    if not finishing:
        staged = step.with_name(f".{step.name}.staged")
        shutil.copyfile(step, staged)
        try:
            if not split_cross_inputs(staged):
                raise ExportError(
                    f"{step}: its cross-attention inputs are not the stacked cross_k, cross_v this reads; "
                    "re-export the bundle with `python -m quantize convert --decoder`"
                )
            os.replace(staged, step)
        finally:
            staged.unlink(missing_ok=True)
    meta.decoder = replace(meta.decoder, per_layer_cross=True)
    write_bundle(bundle.path, meta)
    try:
        check_decoder(load_bundle(bundle.path))  # loads it and feeds it as the device will
    except BundleError as exc:
        raise ExportError(str(exc)) from None
    return True


def _reads_per_layer(path: Path, per_layer_inputs: Sequence[str]) -> bool:
    import onnx

    names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    return all(name in names for name in per_layer_inputs)


def _attribute(node: Any, name: str, default: int) -> int:
    from onnx import helper

    found = [a for a in node.attribute if a.name == name]
    return int(helper.get_attribute_value(found[0])) if found else default


@dataclass
class DecoderParity:
    """Teacher-forced log-probs of the ONNX graphs (cache grown token by token, from an empty one)
    against transformers' WhisperForConditionalGeneration on the same encoder states and tokens."""

    max_abs_diff: float
    tokens: int
    argmax_agreement: float


def check_decoder_parity(
    model: Any, cross_path: Path, step_path: Path, spec: DecoderSettings, frames: int = 120, steps: int = 12
) -> DecoderParity:
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(1)
    d = model.config.d_model
    states = torch.randn(1, frames, d, generator=generator)
    ordinary = min(spec.eot, int(model.config.vocab_size))
    tokens = spec.prompt + torch.randint(0, ordinary, (steps,), generator=generator).tolist()
    ids = torch.tensor([tokens], dtype=torch.int64)
    with torch.no_grad():
        logits = model(encoder_outputs=(states,), decoder_input_ids=ids).logits[0]
    reference = torch.log_softmax(logits, dim=-1).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    cross = ort.InferenceSession(str(cross_path), options, providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(step_path), options, providers=["CPUExecutionProvider"])
    cross_k, cross_v = cross.run(None, {STATES_NAME: states.numpy()})
    cache = np.zeros((spec.layers, 1, spec.heads, 0, spec.head_dim), dtype=np.float32)
    self_k, self_v = cache, cache.copy()
    # The prompt in one call (as the device feeds it), then one token a call.
    ours: List[np.ndarray] = []
    feeds = [tokens[: len(spec.prompt)]] + [[t] for t in tokens[len(spec.prompt) :]]
    for new in feeds:
        out, self_k, self_v = step.run(
            None,
            {"tokens": np.array([new], dtype=np.int64), "self_k": self_k, "self_v": self_v,
             **cross_feeds(spec, (cross_k, cross_v))},
        )  # fmt: skip
        ours.append(out[0])
    expected = reference[len(spec.prompt) - 1 :]
    got = np.stack(ours)
    return DecoderParity(
        max_abs_diff=float(np.abs(got - expected).max()),
        tokens=int(got.shape[0]),
        argmax_agreement=float((got.argmax(-1) == expected.argmax(-1)).mean()),
    )


# -- int8 ---------------------------------------------------------------------------------------------


def quantize_decoder(cross_fp32: Path, step_fp32: Path, cross_out: Path, step_out: Path) -> Dict[str, Any]:
    """int8 (dynamic MatMul, per channel) of both graphs; the step graph's token lookup then reads
    the int8 output table, so the fp32 table leaves the file. Returns sizes for the report."""
    from .int8 import Int8Options, quantize_int8

    options = Int8Options()
    quantize_int8(cross_fp32, cross_out, options)
    quantize_int8(step_fp32, step_out, options)
    shared = share_token_table(step_out)
    return {
        "cross_bytes": cross_out.stat().st_size,
        "step_bytes": step_out.stat().st_size,
        "lookup_reads_int8_table": shared,
    }


def share_token_table(path: Path) -> bool:
    """Rewire the step graph's token Gather to dequantize rows of the int8 output projection.

    After the dynamic recipe the output projection is MatMulInteger(x_q, W_q [d, vocab]) with a
    per-column scale [vocab] (zero points 0, symmetric int8), while the lookup still gathers the fp32
    [vocab, d] table. The lookup becomes Transpose(Gather(W_q, ids, axis=1)) cast to float times
    Gather(scale, ids): row i of the table, dequantized. False (graph unchanged) when the pattern is
    not found.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gathers = [
        n
        for n in graph.node
        if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
    ]
    big = [n for n in gathers if n.input[1] == "tokens"]  # the token table (positions read an arange)
    mm = [n for n in graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    if len(big) != 1 or not mm:
        return False
    lookup = big[0]
    table = numpy_helper.to_array(inits[lookup.input[0]])  # [vocab, d]
    projection = None
    for node in mm:
        weights = inits[node.input[1]]
        if list(weights.dims) == [table.shape[1], table.shape[0]]:
            projection = node
    if projection is None:
        return False
    w_name = projection.input[1]
    w_zero = projection.input[3] if len(projection.input) > 3 else ""
    if w_zero and np.any(numpy_helper.to_array(inits[w_zero]) != 0):
        return False
    scale_name = _weight_scale(graph, w_name)
    if scale_name is None or scale_name not in inits:
        return False
    scale = numpy_helper.to_array(inits[scale_name])
    if scale.size != table.shape[0]:
        return False
    ids = lookup.input[1]
    out = lookup.output[0]
    prefix = "edge_asr_token_lookup"
    nodes = [
        helper.make_node("Gather", [w_name, ids], [f"{prefix}_cols"], axis=1, name=f"{prefix}_gather"),
        helper.make_node("Cast", [f"{prefix}_cols"], [f"{prefix}_colsf"], to=onnx.TensorProto.FLOAT,
                         name=f"{prefix}_cast"),
        # [d, beams, n] -> [beams, n, d]
        helper.make_node("Transpose", [f"{prefix}_colsf"], [f"{prefix}_rows"], perm=[1, 2, 0],
                         name=f"{prefix}_transpose"),
        helper.make_node("Gather", [scale_name, ids], [f"{prefix}_scale"], axis=0, name=f"{prefix}_scale"),
        helper.make_node("Unsqueeze", [f"{prefix}_scale", f"{prefix}_axis"], [f"{prefix}_scale3"],
                         name=f"{prefix}_unsqueeze"),
        helper.make_node("Mul", [f"{prefix}_rows", f"{prefix}_scale3"], [out], name=f"{prefix}_mul"),
    ]  # fmt: skip
    position = list(graph.node).index(lookup)
    graph.node.remove(lookup)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{prefix}_axis"))
    if not any(lookup.input[0] in n.input for n in graph.node):
        graph.initializer.remove(inits[lookup.input[0]])
    onnx.save(model, str(path))
    return True


def _weight_scale(graph: Any, weight: str) -> Optional[str]:
    """The name of the scale that multiplies MatMulInteger(·, weight)'s output: the dynamic recipe
    writes Mul(x_scale, w_scale) then Mul(int32 result cast, that) — find the w scale initializer."""
    base = weight[: -len("_quantized")] if weight.endswith("_quantized") else weight
    for candidate in (f"{base}_scale", f"{weight}_scale"):
        if any(i.name == candidate for i in graph.initializer):
            return candidate
    return None


def write_token_table(strings: Sequence[str], path: Path) -> None:
    path.write_text(json.dumps(list(strings), ensure_ascii=False) + "\n", encoding="utf-8")


def expose_encoder_states(source: Path, target: Path) -> Optional[int]:
    """Write `source` (a whisper-ctc CTC graph, fp32 or int8) to `target` with a second output,
    `encoder_states`: the encoder's final LayerNorm, which the CTC head reads. No weight changes, so
    the log-probs stay exactly what they were. Returns the states' width (None when the graph does not
    say it as a constant)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    graph = model.graph
    if any(o.name == STATES_NAME for o in graph.output):
        raise ExportError(f"{source}: already has an {STATES_NAME} output")
    norms = [n for n in graph.node if n.op_type == "LayerNormalization" and "/head/" not in n.name]
    if not norms:
        raise ExportError(
            f"{source}: no encoder LayerNormalization outside the head; only whisper-ctc graphs exported "
            "by `python -m quantize` can feed a text decoder"
        )
    final = norms[-1]  # topological order: the encoder's last norm feeds the head
    width = _constant_length(graph, final.input[1])
    graph.node.append(helper.make_node("Identity", [final.output[0]], [STATES_NAME], name="edge_asr_states"))
    shape = ["batch", "frames", width or "width"]
    graph.output.append(helper.make_tensor_value_info(STATES_NAME, onnx.TensorProto.FLOAT, shape))
    onnx.save(model, str(target))
    return width


def _constant_length(graph: Any, name: str) -> Optional[int]:
    """The length of a 1-D constant (an initializer, or a Constant node's value); None if not found."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return int(init.dims[0])
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return int(numpy_helper.to_array(node.attribute[0].t).shape[0])
    return None
