import json
import re
import shutil

import pytest
from tone_model import build_tone_graph, edit_metadata, write_tone_bundle

from edge_asr import BundleError, EdgeTranscriber
from edge_asr.bundle import DEFAULT_BUNDLE_DIR, FORMAT_VERSION, BundleMetadata, load_bundle


@pytest.fixture
def bundle(tmp_path, tone_bundle):
    copy = tmp_path / "bundle"
    shutil.copytree(tone_bundle, copy)
    return copy


def test_round_trip_and_checksums(bundle):
    loaded = load_bundle(bundle)
    meta = loaded.metadata
    assert meta.format_version == 1  # no split graphs: written as version 1, which older readers read
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


def test_symlinks_out_of_the_bundle_are_refused(bundle, tmp_path, capsys):
    from edge_asr.bundle import sha256_file, write_bundle
    from edge_asr.cli import main

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("not part of any bundle")
    (bundle / "notes.txt").symlink_to(secret)
    meta = load_bundle(bundle, verify=False).metadata
    write_bundle(bundle, meta)  # the checksum of the linked file is right: only the link is wrong
    assert meta.files["notes.txt"] == sha256_file(secret)
    with pytest.raises(BundleError, match=r"notes\.txt: .*outside the bundle"):
        load_bundle(bundle, verify=False)
    assert main(["info", "-m", str(bundle), "--verify"]) == 2
    assert "outside the bundle" in capsys.readouterr().err

    # a linked model, and bundle.json itself
    (bundle / "notes.txt").unlink()
    moved = outside / "model.int8.onnx"
    (bundle / "model.int8.onnx").rename(moved)
    (bundle / "model.int8.onnx").symlink_to(moved)
    write_bundle(bundle, meta)
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: .*outside the bundle"):
        EdgeTranscriber(bundle)
    (bundle / "model.int8.onnx").unlink()
    (bundle / "model.int8.onnx").symlink_to("model.onnx")  # a link within the bundle is fine
    write_bundle(bundle, meta)
    assert load_bundle(bundle).metadata.files["model.int8.onnx"] == meta.files["model.onnx"]
    (bundle / "bundle.json").rename(outside / "bundle.json")
    (bundle / "bundle.json").symlink_to(outside / "bundle.json")
    with pytest.raises(BundleError, match=r"bundle\.json: .*outside the bundle"):
        load_bundle(bundle)


def test_a_bundle_folder_reached_through_a_link_loads(bundle, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(bundle)
    assert load_bundle(link).path == link


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"receptive_field": 10**30}, "receptive_field must be between 1 and 160000"),
        ({"frame_stride": 10**12}, "frame_stride must be between 1 and 16000"),
        ({"frame_stride": 0}, "frame_stride must be between 1 and 16000"),
        ({"special_ids": ["a"]}, "special_ids must be a list of whole numbers"),
        ({"files": {"model.onnx": 5, "model.int8.onnx": "0" * 64}}, "sha256 of 'model.onnx' must be"),
        ({"models": {"fp32": 5}}, "'models' must map variant names to file names"),
        ({"word_delimiter": 5}, "word_delimiter should be a string or null"),
        ({"name": {"x": 1}}, "field 'name' should be str"),
        ({"source": []}, "field 'source' should be dict"),
        ({"format_version": True}, "unknown bundle format version True"),
        ({"text_normalization": {"keep_punctuation": 5}}, "keep_punctuation should be str"),
        ({"text_normalization": []}, "text_normalization should be an object"),
        ({"extra": {"deep": json.loads("[" * 100 + "]" * 100)}}, "nested deeper than 32 levels"),
    ],
)
def test_hostile_values_are_bundle_errors(bundle, changes, message):
    edit_metadata(bundle, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_json_nested_past_the_parser_and_oversized_bundle_json(bundle, capsys):
    from edge_asr.cli import main

    meta = bundle / "bundle.json"
    good = meta.read_text()
    meta.write_text(good[:-2] + ', "extra": {"x": ' + "[" * 100000 + "]" * 100000 + "}}")
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(bundle)
    assert main(["info", "-m", str(bundle)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    meta.write_text(good[:-2] + ', "extra": {"pad": "' + "x" * (5 << 20) + '"}}')
    with pytest.raises(BundleError, match="larger than 4 MiB"):
        load_bundle(bundle)


# -- info --verify runs what it verifies (issue 16, item 9) --------------------------------------


def _rebundle(folder):
    """Refresh bundle.json's checksums after a file was changed on purpose (as a tool would)."""
    from edge_asr.bundle import write_bundle

    write_bundle(folder, load_bundle(folder, verify=False).metadata)


def test_verify_says_what_it_checked(bundle, capsys):
    from edge_asr.cli import main

    assert main(["info", "-m", str(bundle), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "checksums:       all 2 files OK" in out
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        assert f"graph {variant}:" in out and f"{name} loads and runs: 8 classes" in out
    assert "frame_stride 320 / receptive_field 400 predict for 3 input lengths" in out


def _symbolic_width_graph():
    graph = build_tone_graph(extra_outputs=2)
    graph.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "classes"  # not declared: run it
    return graph


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated onnx", "onnxruntime cannot load this model"),
        ("wider output", "the graph (produced|outputs) 10 classes"),
        ("frame geometry", "gave 3 frames where .* frame_stride 160 and receptive_field 400 predict 6"),
        ("truncated lm", "cannot read the language model"),
    ],
)
def test_verify_fails_bundles_that_cannot_run(tmp_path, capsys, damage, message):
    from edge_asr.cli import main
    from quantize.lm_files import char_lm_from_dicts, save_char_lm

    folder = tmp_path / "b"
    if damage == "wider output":
        write_tone_bundle(folder, graph=_symbolic_width_graph())
    elif damage == "frame geometry":
        write_tone_bundle(folder, frame_stride=160)
    else:
        folder.mkdir()
        lm = {"file": "lm.npz", "kind": "char-ngram", "beam_size": 4, "lm_weight": 0.5, "insertion_bonus": 1}
        save_char_lm(char_lm_from_dicts({c: -1.8 for c in "abcdef"}, {}, 1), folder / "lm.npz")
        write_tone_bundle(folder, language_model=lm)
        assert main(["info", "-m", str(folder), "--verify"]) == 0
        capsys.readouterr()
        victim = folder / ("model.onnx" if damage == "truncated onnx" else "lm.npz")
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        _rebundle(folder)  # the checksums match the damaged files: only running finds the damage
    load_bundle(folder, verify=False).verify()
    assert main(["info", "-m", str(folder), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-asr: error:") and "Traceback" not in err
    assert re.search(message, err), err


# -- bundle.json's own numbers, edited (issue 29, defect 11) --------------------------------------


def test_a_duplicate_key_in_bundle_json_is_refused(tmp_path, capsys):
    from edge_asr.cli import main

    folder = write_tone_bundle(tmp_path / "b")
    path = folder / "bundle.json"
    text = path.read_text()
    path.write_text(text.replace('"blank_id": 0,', '"blank_id": 0,\n  "blank_id": 3,', 1))
    assert text != path.read_text()
    with pytest.raises(BundleError, match="key 'blank_id' appears twice in one object; keep one"):
        load_bundle(folder)
    assert main(["info", "-m", str(folder)]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_verify_finds_a_blank_id_that_is_not_the_graphs(tmp_path, capsys):
    from edge_asr.cli import main

    folder = write_tone_bundle(tmp_path / "b")
    edit_metadata(folder, blank_id=3)  # a letter: every file decoded to garbage at rc 0
    assert main(["info", "-m", str(folder), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "most likely token is 0 ('<blank>'), where bundle.json's blank_id says 3 ('b')" in err, err


@pytest.mark.skipif(not (DEFAULT_BUNDLE_DIR / "bundle.json").is_file(), reason="no default model")
def test_verify_reads_speech_at_the_manifests_sample_rate(tmp_path, capsys):
    from edge_asr.cli import main

    folder = tmp_path / "default"
    shutil.copytree(DEFAULT_BUNDLE_DIR, folder)
    assert main(["info", "-m", str(folder), "--verify"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"reads the 3 bundled samples at 16000 Hz \(greedy CER (\d\.\d+)\)", out)
    assert found is not None, out
    assert float(found.group(1)) < 0.45  # the shipped model's greedy CER (v3.5: 0.28; garbage is ~1)
    edit_metadata(folder, sample_rate=48000)  # the 16 kHz graph hears 3x slowed-down speech
    assert main(["info", "-m", str(folder), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "with bundle.json's sample_rate 48000: garbage" in err, err
