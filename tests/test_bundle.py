import json
import shutil

import pytest
from tone_model import build_tone_graph, edit_metadata, write_tone_bundle

from edge_asr import BundleError, EdgeTranscriber
from edge_asr.bundle import FORMAT_VERSION, BundleMetadata, load_bundle


@pytest.fixture
def bundle(tmp_path, tone_bundle):
    copy = tmp_path / "bundle"
    shutil.copytree(tone_bundle, copy)
    return copy


def test_round_trip_and_checksums(bundle):
    loaded = load_bundle(bundle)
    meta = loaded.metadata
    assert meta.format_version == FORMAT_VERSION
    assert set(meta.files) == {"model.onnx", "model.int8.onnx"}
    assert loaded.model_file(quantized=True).name == "model.int8.onnx"
    assert loaded.model_file(quantized=False).name == "model.onnx"
    again = BundleMetadata.from_dict(json.loads((bundle / "bundle.json").read_text()))
    assert again == meta
    loaded.verify()


def test_missing_file(bundle):
    (bundle / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: missing from the bundle"):
        load_bundle(bundle)


def test_checksum_mismatch_names_the_file(bundle):
    with open(bundle / "model.int8.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: checksum mismatch"):
        EdgeTranscriber(bundle)
    # the fp32 file is intact and loads; a full verify still finds the broken twin
    EdgeTranscriber(bundle, quantized=False)
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(bundle, verify=False).verify()


def test_unknown_format_version(bundle):
    edit_metadata(bundle, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="unknown bundle format version"):
        load_bundle(bundle)


def test_vocabulary_size_differs_from_graph(tmp_path):
    folder = write_tone_bundle(tmp_path / "b", graph=build_tone_graph(extra_outputs=2))
    with pytest.raises(BundleError, match="outputs 10 classes .* vocabulary of 8"):
        EdgeTranscriber(folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"blank_id": 99}, "blank_id 99 is outside"),
        ({"word_delimiter": "#"}, "word_delimiter '#' is not in the vocabulary"),
        ({"sample_rate": "16000"}, "sample_rate' should be int"),
        ({"vocabulary": ["a", "a"]}, "duplicate"),
        ({"surprise": 1}, "unknown field"),
        ({"files": {"model.onnx": "0" * 64}}, "has no sha256"),
    ],
)
def test_invalid_metadata(bundle, changes, message):
    edit_metadata(bundle, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_paths_outside_the_bundle_are_refused(bundle):
    edit_metadata(bundle, files={"model.onnx": "0" * 64, "../secret": "0" * 64})
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(bundle)
