"""Split bundles (format 2) and the front-end feature cache, on tiny random wav2vec2 models.

Each model is exported by `quantize.convert` (no evaluation): a layer-norm front-end without
per-utterance normalization (local: the cache is exact and on by default) and a group-norm one with
normalization (not local: the cache is off unless asked for).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from edge_asr import BundleError, EdgeTranscriber, InputError, TranscribeOptions  # noqa: E402
from edge_asr.bundle import load_bundle  # noqa: E402
from edge_asr.model import CtcModel, SplitCtcModel  # noqa: E402
from edge_asr.stream import StreamOptions  # noqa: E402
from edge_asr.windows import FeatureCache, WindowedRunner, cache_is_exact  # noqa: E402
from quantize.convert import ConvertOptions, convert  # noqa: E402
from quantize.synthetic import TINY_CONFIG, make_random_model  # noqa: E402

pytestmark = pytest.mark.desktop

RATE = 16000
# Short windows, so that a few seconds of audio make many overlapping ones.
SHORT = TranscribeOptions(chunk_seconds=1.0, context_seconds=0.4, use_lm=False)


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    gate = (np.sin(2 * np.pi * 1.7 * t) > -0.3).astype(np.float32)
    tone = np.sin(2 * np.pi * (180 + 120 * np.sin(2 * np.pi * 0.4 * t)) * t)
    return (gate * (0.3 * tone + 0.05 * rng.standard_normal(t.size))).astype(np.float32)


def _bundle(root, norm: str, do_normalize: bool):
    config = dict(TINY_CONFIG, feat_extract_norm=norm, conv_bias=norm == "layer")
    model = make_random_model(
        root / "model", config=config, do_normalize=do_normalize, head_scale=30.0, suppress_special=True
    )
    return convert(ConvertOptions(model=str(model), out=root / "bundle")).bundle


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("layer"), "layer", do_normalize=False)


@pytest.fixture(scope="module")
def group_bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("group"), "group", do_normalize=True)


def test_split_bundle_metadata(local_bundle, group_bundle):
    local = load_bundle(local_bundle).metadata
    assert local.format_version == 2
    assert local.split is not None and local.split.frames_local
    assert local.split.front_end == {"fp32": "front_end.onnx", "int8": "front_end.onnx"}  # no MatMul
    assert local.split.encoder == {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}
    assert local.split.feature_dim == TINY_CONFIG["conv_dim"][-1]
    assert local.models == {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # the single graph stays
    assert cache_is_exact(local)
    group = load_bundle(group_bundle).metadata
    assert group.split is not None and not group.split.frames_local  # measured at export
    assert not cache_is_exact(group)


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("which", ["local", "group"])
def test_split_graphs_give_the_single_graphs_log_probs(local_bundle, group_bundle, which, quantized):
    bundle = load_bundle(local_bundle if which == "local" else group_bundle)
    meta = bundle.metadata
    front, encoder = bundle.split_names(quantized)
    single = CtcModel(bundle.model_file(quantized), meta, threads=1)
    split = SplitCtcModel(bundle.path / front, bundle.path / encoder, meta, threads=1)
    for seconds in (0.03, 0.9, 2.37):  # shorter than one receptive field, too
        audio = _audio(seconds, seed=3)
        a, b = single.log_probs(audio), split.log_probs(audio)
        assert a.shape == b.shape
        if quantized:  # dynamic int8 quantizes activations by their range: the tokens must agree
            assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.99
        else:
            np.testing.assert_allclose(a, b, atol=1e-4)


def test_local_front_end_is_cached_by_default_and_files_give_the_same_frames(local_bundle):
    cached = EdgeTranscriber(local_bundle, options=SHORT)
    plain = EdgeTranscriber(local_bundle, options=SHORT, front_end_cache=False)
    assert cached.front_end_cache and isinstance(cached.model, SplitCtcModel)
    assert not plain.front_end_cache and isinstance(plain.model, CtcModel)
    audio = _audio(6.3, seed=1)
    a = np.concatenate(list(cached.log_probs(audio, RATE)))
    b = np.concatenate(list(plain.log_probs(audio, RATE)))
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (a.argmax(-1) == b.argmax(-1)).all()
    # and the front-end ran once per frame, however much the windows overlap
    runner = cached.new_runner()
    assert runner.cache is not None
    list(runner.push(audio))
    list(runner.finish())
    assert runner.cache.frames_computed == a.shape[0] == runner.frames_emitted


def _events(asr: EdgeTranscriber, audio: np.ndarray, final_pass: bool):
    stream = asr.stream(StreamOptions(final_pass=final_pass))
    events = []
    for i in range(0, audio.size, 800):  # 50 ms blocks, as `listen` gets them
        events += stream.accept(audio[i : i + 800], RATE)
    events += stream.flush()
    return [(e.kind, e.text, e.start, e.end, e.words) for e in events], stream.stats


@pytest.mark.parametrize("final_pass", [True, False])
def test_cached_stream_gives_the_same_events_for_a_local_front_end(local_bundle, final_pass):
    audio = _audio(7.0, seed=2)
    cached, cached_stats = _events(EdgeTranscriber(local_bundle), audio, final_pass)
    plain, plain_stats = _events(EdgeTranscriber(local_bundle, front_end_cache=False), audio, final_pass)
    assert any(kind == "final" and text for kind, text, *_ in plain), "the random model should say something"
    assert cached == plain
    assert cached_stats.model_calls == plain_stats.model_calls
    # each hop's front-end saw its new samples only (plus one receptive field): about 1/5 of the window
    assert cached_stats.model_samples < plain_stats.model_samples / 3


def test_group_norm_cache_is_opt_in_and_changes_frames(group_bundle):
    assert not EdgeTranscriber(group_bundle, options=SHORT).front_end_cache
    forced = EdgeTranscriber(group_bundle, options=SHORT, front_end_cache=True)
    plain = EdgeTranscriber(group_bundle, options=SHORT, front_end_cache=False)
    audio = _audio(5.0, seed=4)
    a = np.concatenate(list(forced.log_probs(audio, RATE)))
    b = np.concatenate(list(plain.log_probs(audio, RATE)))
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 1e-3  # not exact, as the rule says: why it is not the default


def test_cache_on_a_single_graph_bundle_is_an_input_error(tone_bundle):
    with pytest.raises(InputError, match="split graphs"):
        EdgeTranscriber(tone_bundle, front_end_cache=True)
    assert not EdgeTranscriber(tone_bundle).front_end_cache  # version 1: no split, no cache


def test_cache_drops_features_no_window_needs(local_bundle):
    asr = EdgeTranscriber(local_bundle, options=SHORT)
    stages = asr.split_stages()
    assert stages is not None
    runner = WindowedRunner(asr.model.log_probs, asr.plan, FeatureCache(stages, asr.plan))
    audio = _audio(8.0, seed=5)
    most = 0
    for i in range(0, audio.size, 4000):
        list(runner.push(audio[i : i + 4000]))
        assert runner.cache is not None
        most = max(most, runner.cache.cached_frames)
    plan = asr.plan
    assert most <= plan.left_frames + plan.chunk_frames + plan.right_frames  # one window, not the file


def test_missing_split_graph_is_a_bundle_error(local_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(local_bundle, copy)
    (copy / "front_end.onnx").unlink()
    with pytest.raises(BundleError, match=r"front_end\.onnx: missing from the bundle"):
        EdgeTranscriber(copy)
    meta = json.loads((copy / "bundle.json").read_text())
    del meta["files"]["front_end.onnx"]
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"split\.front_end 'fp32' \(front_end\.onnx\) has no sha256"):
        load_bundle(copy)
    meta["format_version"] = 1
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="'split' needs format_version 2"):
        load_bundle(copy)


def test_the_graphs_that_run_are_checked_at_load_and_only_those(local_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(local_bundle, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    encoder = meta["split"]["encoder"]["int8"]
    (copy / encoder).write_bytes((copy / encoder).read_bytes()[:-16])
    with pytest.raises(BundleError, match=rf"{encoder}: checksum mismatch"):
        EdgeTranscriber(copy)  # the cache is on by default here: the split graphs run
    EdgeTranscriber(copy, front_end_cache=False)  # the single graph runs, and it is intact
