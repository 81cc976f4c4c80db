from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tone_model import SPEECH_TEXT, tone_audio, write_tone_bundle  # noqa: E402

from edge_asr import EdgeTranscriber  # noqa: E402


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle around the hand-built tone model (fp32 plus an identical "int8" twin)."""
    return write_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone", int8=True)


@pytest.fixture(scope="module")
def transcriber(tone_bundle: Path) -> EdgeTranscriber:
    """The tone bundle's transcriber (tests that need other options build their own)."""
    return EdgeTranscriber(tone_bundle)


@pytest.fixture(scope="module")
def speech():
    """Tone 'speech' that the tone model reads as SPEECH_TEXT."""
    return tone_audio(SPEECH_TEXT)
