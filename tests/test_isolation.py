"""The device side must run with numpy + onnxruntime + soundfile + soxr alone."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESKTOP_ONLY = ("torch", "transformers", "torchaudio", "librosa", "audiomentations", "sounddevice")

SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from tone_model import tone_audio
import edge_asr
from edge_asr import EdgeTranscriber
from edge_asr.cli import main
text = EdgeTranscriber({bundle!r}).transcribe(tone_audio("cab"), sample_rate=16000).text
main(["info", "-m", {bundle!r}])
print(json.dumps({{"text": text, "modules": sorted(m.split(".")[0] for m in sys.modules)}}))
"""


def test_import_and_transcribe_load_no_desktop_library(tone_bundle):
    script = SCRIPT.format(tests=str(ROOT / "tests"), bundle=str(tone_bundle))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["text"] == "cab"
    loaded = set(report["modules"])
    assert not loaded.intersection(DESKTOP_ONLY), loaded.intersection(DESKTOP_ONLY)


def test_no_module_of_the_package_imports_a_desktop_library():
    # sounddevice is allowed only inside functions (the `mic` extra), never at module level.
    for path in (ROOT / "edge_asr").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in DESKTOP_ONLY, f"{path.name} imports {name} at module level"


def test_the_names_the_readme_uses_come_from_the_package():
    import edge_asr

    for name in ("EdgeTranscriber", "TranscribeOptions", "StreamOptions", "StreamEvent", "FileResult"):
        assert name in edge_asr.__all__ and getattr(edge_asr, name).__module__.startswith("edge_asr.")
    for name in ("EdgeASRError", "AudioError", "BundleError", "InputError"):
        assert issubclass(getattr(edge_asr, name), edge_asr.EdgeASRError)


def package_imports(module: str) -> set:
    """The edge_asr modules `module` imports anywhere in its source (function-level imports too)."""
    tree = ast.parse((ROOT / "edge_asr" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
    return {name.split(".")[0] for name in found}


def test_sysinfo_and_model_import_each_other_one_way():
    # Issue 29: model imported sysinfo (memory) and sysinfo imported model (cores), each inside a
    # function to dodge the circle; machine facts now live in sysinfo alone.
    assert "sysinfo" in package_imports("model")
    assert "model" not in package_imports("sysinfo")


def test_no_tracked_file_names_a_folder_of_the_machine_it_was_written_on():
    # Issue 29: recipes, the HF model card, usage lines and check_aarch64.sh's default named the
    # build machine's own data and run folders; a checkout elsewhere has none of them.
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    host = "/" + "work/"  # split, so that this file does not name it either
    named = [
        name
        for name in listed.stdout.splitlines()
        if name != ".gitignore"  # ignores such a folder, which is right
        and (ROOT / name).is_file()
        and host in (ROOT / name).read_bytes().decode("utf-8", "replace")
    ]
    assert named == []
