import numpy as np
import pytest
import soundfile as sf
from tone_model import FIELD, STRIDE, build_tone_graph, tone_audio, write_tone_bundle

from edge_asr import BundleError, EdgeTranscriber, TranscribeOptions, cli
from edge_asr.bundle import load_bundle
from edge_asr.model import CtcModel
from edge_asr.windows import WindowedRunner, WindowPlan


def plan(chunk=50, left=10, right=10):
    return WindowPlan(chunk, left, right, STRIDE, FIELD)


def run_windowed(model, samples, window_plan, block=7777):
    runner = WindowedRunner(model.log_probs, window_plan)
    parts, max_buffer = [], 0
    for i in range(0, samples.size, block):
        parts += [lp for _, lp in runner.push(samples[i : i + block])]
        max_buffer = max(max_buffer, runner.buffered_samples)
    parts += [lp for _, lp in runner.finish()]
    return np.concatenate(parts), max_buffer


@pytest.fixture(scope="module")
def local_model(tone_bundle):
    bundle = load_bundle(tone_bundle)
    return CtcModel(bundle.model_file(False), bundle.metadata, threads=1)


@pytest.fixture(scope="module")
def normalizing_model(tmp_path_factory):
    # Runtime normalization makes every frame depend on the whole window: a context-dependent model.
    folder = write_tone_bundle(tmp_path_factory.mktemp("norm") / "b", do_normalize=True)
    bundle = load_bundle(folder)
    return CtcModel(bundle.model_file(False), bundle.metadata, threads=1)


def test_stitched_logits_equal_single_pass_for_a_local_model(local_model):
    audio = tone_audio("abc def " * 12, tone_seconds=0.17, gap_seconds=0.07)  # ~30 s, many windows
    single = local_model.log_probs(audio)
    stitched, max_buffer = run_windowed(local_model, audio, plan())
    assert stitched.shape == single.shape
    np.testing.assert_allclose(stitched, single, atol=1e-3)
    assert (stitched.argmax(1) == single.argmax(1)).all()
    # memory holds one window (left + chunk + right frames) plus one pushed block, never the whole input
    assert max_buffer <= plan().samples_for(70) + STRIDE + 7777
    assert max_buffer < audio.size / 10


@pytest.mark.parametrize("frames", [1, 37, 59, 60])  # chunk + right = 60 frames
def test_audio_that_fits_one_window_runs_as_one_pass(normalizing_model, frames):
    rng = np.random.default_rng(frames)
    audio = (0.1 * rng.standard_normal(plan().samples_for(frames) + 123)).astype(np.float32)
    single = normalizing_model.log_probs(audio)
    stitched, _ = run_windowed(normalizing_model, audio, plan(), block=1000)
    np.testing.assert_array_equal(stitched, single)


@pytest.mark.parametrize("length", [1, 399, 400, 719, 720, 16000, 50_000, 123_457])
def test_frame_count_matches_single_pass(local_model, length):
    audio = (0.05 * np.random.default_rng(length).standard_normal(length)).astype(np.float32)
    stitched, _ = run_windowed(local_model, audio, plan(chunk=20, left=3, right=5), block=3000)
    assert stitched.shape[0] == local_model.log_probs(audio).shape[0]


def test_long_audio_transcript_is_independent_of_window_size(tone_bundle):
    audio = tone_audio("fab cafe bead " * 6)
    small = EdgeTranscriber(tone_bundle, options=TranscribeOptions(chunk_seconds=1.0, context_seconds=0.3))
    whole = EdgeTranscriber(tone_bundle, options=TranscribeOptions(chunk_seconds=600.0))
    a, b = small.transcribe(audio, sample_rate=16000), whole.transcribe(audio, sample_rate=16000)
    assert a.text == b.text == ("fab cafe bead " * 6).strip()
    assert a.words == b.words


def test_graph_plan_mismatch_is_reported(tmp_path):
    # A bundle that claims a 160-sample stride for a 320-stride graph cannot be stitched.
    folder = write_tone_bundle(tmp_path / "b", graph=build_tone_graph(), frame_stride=160)
    transcriber = EdgeTranscriber(folder, options=TranscribeOptions(chunk_seconds=0.5, context_seconds=0.1))
    with pytest.raises(BundleError, match="frame_stride"):
        transcriber.transcribe(tone_audio("abc abc abc"), sample_rate=16000)


def test_frame_geometry_that_does_not_match_the_graph_is_a_bundle_error(tmp_path, capsys):
    # bundle.json says 10 ms frames; the graph makes 20 ms ones, so every window comes up short.
    folder = write_tone_bundle(tmp_path / "bundle", frame_stride=STRIDE // 2)
    asr = EdgeTranscriber(folder, options=TranscribeOptions(chunk_seconds=2.0))
    audio = np.tile(tone_audio("abc"), 8)
    with pytest.raises(
        BundleError, match="frame_stride 160 and receptive_field 400 promise .* do not match the graph"
    ):
        asr.transcribe(audio, sample_rate=16000)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], audio, 16000)
    results = list(asr.transcribe_many([str(p) for p in paths]))
    assert [isinstance(r.error, BundleError) for r in results] == [True, True]
    assert cli.main(["file", *map(str, paths), "-m", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-asr: error:") and "frame_stride" in err and "Traceback" not in err
