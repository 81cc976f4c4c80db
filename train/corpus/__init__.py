"""Synthetic multi-voice English corpus from offline TTS engines (`python -m train.corpus`).

Modules: spoken (spoken-form text), sources (Debian text packages), voices (registry + licences),
engines (one call per engine), plan (deterministic per-utterance choices), render (WAV writing),
build (orchestration, LJSpeech tables, splits, manifests).
"""

from .build import CorpusError, CorpusOptions, CorpusResult, build

__all__ = ["CorpusError", "CorpusOptions", "CorpusResult", "build"]
