"""A tiny, hand-built CTC model that "hears" tones, for testing the device side without torch.

Each non-blank token has its own frequency; the graph is a bank of windowed sine/cosine filters with
wav2vec2's geometry (400-sample receptive field, 320-sample stride at 16 kHz), so each frame's output
depends only on its own 25 ms of audio and the expected transcript of a synthetic tone sequence is
known exactly. A constant "blank" score wins wherever no tone is loud enough.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_asr.bundle import BundleMetadata, LanguageModelSettings, write_bundle
from edge_asr.text import TextNormalization

VOCAB = ["<blank>", "|", "a", "b", "c", "d", "e", "f"]
SAMPLE_RATE = 16000
STRIDE = 320
SPEECH_TEXT = "abc fed"  # what the shared `speech` fixture (conftest.py) says
FIELD = 400


def token_frequency(token_id: int) -> float:
    return 300.0 + 200.0 * token_id


def build_tone_graph(
    vocab: List[str] = VOCAB,
    threshold: float = 0.05,
    log_softmax: bool = True,
    extra_outputs: int = 0,
    lengths_input: bool = False,
) -> onnx.ModelProto:
    """The filter-bank graph. `extra_outputs` adds unused classes (to test vocabulary mismatch)."""
    k = len(vocab) - 1
    t = np.arange(FIELD) / SAMPLE_RATE
    window = np.hanning(FIELD)
    gain = window.sum() / 2
    filters = []
    for token_id in range(1, len(vocab)):
        f = token_frequency(token_id)
        filters.append(window * np.sin(2 * np.pi * f * t) / gain)
        filters.append(window * np.cos(2 * np.pi * f * t) / gain)
    w1 = np.array(filters, dtype=np.float32)[:, None, :]  # [2K, 1, FIELD]
    classes = k + 1 + extra_outputs
    w2 = np.zeros((classes, 2 * k, 1), dtype=np.float32)
    for i in range(k):
        w2[i + 1, 2 * i, 0] = 1.0
        w2[i + 1, 2 * i + 1, 0] = 1.0
    b2 = np.zeros(classes, dtype=np.float32)
    b2[0] = threshold**2
    b2[k + 1 :] = 1e-6
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1e-4, dtype=np.float32), "eps"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "scale"),
    ]
    last = "log_probs" if log_softmax else "logits"
    nodes = [
        helper.make_node("Unsqueeze", ["input_values", "axis1"], ["x3"]),
        helper.make_node("Conv", ["x3", "w1"], ["bands"], strides=[STRIDE]),
        helper.make_node("Mul", ["bands", "bands"], ["power"]),
        helper.make_node("Conv", ["power", "w2", "b2"], ["energy"]),
        helper.make_node("Add", ["energy", "eps"], ["energy_eps"]),
        helper.make_node("Log", ["energy_eps"], ["log_energy"]),
        helper.make_node("Mul", ["log_energy", "scale"], ["scores_ct"]),
        helper.make_node("Transpose", ["scores_ct"], ["scores"], perm=[0, 2, 1]),
    ]
    if log_softmax:
        nodes.append(helper.make_node("LogSoftmax", ["scores"], [last], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", ["scores"], [last]))
    inputs = [helper.make_tensor_value_info("input_values", TensorProto.FLOAT, ["batch", "samples"])]
    if lengths_input:
        inputs.append(helper.make_tensor_value_info("input_lengths", TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "tone_ctc",
        inputs,
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["batch", "frames", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tone_audio(
    text: str,
    sample_rate: int = SAMPLE_RATE,
    tone_seconds: float = 0.2,
    gap_seconds: float = 0.1,
    amplitude: float = 0.3,
    lead_seconds: float = 0.1,
) -> np.ndarray:
    """Audio that the tone model transcribes as `text` (spaces become the "|" tone)."""
    pieces = [np.zeros(int(lead_seconds * sample_rate), dtype=np.float32)]
    n = int(tone_seconds * sample_rate)
    t = np.arange(n) / sample_rate
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.01 * sample_rate))
    for ch in text:
        token_id = VOCAB.index("|" if ch == " " else ch)
        pieces.append(
            (amplitude * ramp * np.sin(2 * np.pi * token_frequency(token_id) * t)).astype(np.float32)
        )
        pieces.append(np.zeros(int(gap_seconds * sample_rate), dtype=np.float32))
    return np.concatenate(pieces)


def write_tone_bundle(
    folder: Path,
    graph: Optional[onnx.ModelProto] = None,
    int8: bool = False,
    **overrides: object,
) -> Path:
    """A complete, valid bundle around the tone graph (optionally with a copy named as the int8 twin)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = graph if graph is not None else build_tone_graph()
    onnx.save(model, str(folder / "model.onnx"))
    models: Dict[str, str] = {"fp32": "model.onnx"}
    if int8:
        onnx.save(model, str(folder / "model.int8.onnx"))
        models["int8"] = "model.int8.onnx"
    fields = dict(
        vocabulary=list(VOCAB),
        blank_id=0,
        word_delimiter="|",
        sample_rate=SAMPLE_RATE,
        frame_stride=STRIDE,
        receptive_field=FIELD,
        do_normalize=False,
        normalization_in_graph=False,
        log_softmax_in_graph=True,
        models=models,
        text_normalization=TextNormalization(),
        name="tone-test",
        source={"built_by": "tests/tone_model.py"},
    )
    fields.update(overrides)
    if isinstance(fields.get("language_model"), dict):  # given as bundle.json spells it
        fields["language_model"] = LanguageModelSettings.from_dict(fields["language_model"])
    write_bundle(folder, BundleMetadata(**fields))  # type: ignore[arg-type]
    return folder


def edit_metadata(folder: Path, **changes: object) -> None:
    """Rewrite fields of bundle.json in place, bypassing validation (to build broken bundles)."""
    path = folder / "bundle.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
