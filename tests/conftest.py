from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tone_model import write_tone_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle around the hand-built tone model (fp32 plus an identical "int8" twin)."""
    return write_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone", int8=True)
