"""benchmarks/joint_decoder.py's reading of real non-speech clips (`--nonspeech`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def joint_bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling default_model
    try:
        spec = importlib.util.spec_from_file_location("joint_decoder_bench", BENCHMARKS / "joint_decoder.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_nonspeech_manifests_give_their_clips_relative_to_each_manifest(joint_bench, tmp_path):
    games = tmp_path / "games"
    (games / "nonspeech" / "queen").mkdir(parents=True)
    for name in ("a", "b"):
        sf.write(games / "nonspeech" / "queen" / f"{name}.wav", np.zeros(1600, np.float32), 16000)
    manifest = games / "nonspeech.csv"
    manifest.write_text(
        "path,script,source,speaker,entry,duration\n"
        "nonspeech/queen/a.wav,Ha ha!,q,joe,a,0.1\n"
        "nonspeech/queen/b.wav,(sigh),q,joe,b,0.1\n"
    )
    assert joint_bench.nonspeech_clips([manifest]) == [
        games / "nonspeech" / "queen" / "a.wav",
        games / "nonspeech" / "queen" / "b.wav",
    ]
    assert joint_bench.nonspeech_clips([]) == []


def test_nonspeech_manifest_without_paths_or_with_missing_clips_stops(joint_bench, tmp_path):
    manifest = tmp_path / "nonspeech.csv"
    manifest.write_text("file,script\nx.wav,Hmm\n")
    with pytest.raises(SystemExit, match="no 'path' column"):
        joint_bench.nonspeech_clips([manifest])
    manifest.write_text("path,script\nx.wav,Hmm\n")
    with pytest.raises(SystemExit, match="1 non-speech clip"):
        joint_bench.nonspeech_clips([manifest])
