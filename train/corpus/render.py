"""Turn one planned utterance into a 16 kHz mono int16 WAV (the part that runs in worker processes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import soxr

from .engines import Prosody, SynthesisError, synthesize
from .plan import PlannedUtterance

SAMPLE_RATE = 16000
PEAK = 0.89  # -1 dBFS: engines write very different levels; training augments gain anyway
KEEP_SILENCE_S = 0.2  # engines pad 0-0.6 s of silence; keep the same margin for every engine
MIN_DURATION_S = 0.5


@dataclass
class RenderResult:
    id: str
    duration: float = 0.0
    prosody: Optional[Prosody] = None
    error: Optional[str] = None


def trim_silence(audio: np.ndarray, rate: int, keep_s: float = KEEP_SILENCE_S, floor_db: float = -45.0):
    """Cut leading/trailing stretches quieter than `floor_db` below the loudest 10 ms frame."""
    frame = max(1, rate // 100)
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(rms >= rms.max() * 10 ** (floor_db / 20))[0]
    keep = int(keep_s * rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(audio), (loud[-1] + 1) * frame + keep)
    return audio[start:end]


def to_pcm16(audio: np.ndarray, rate: float) -> np.ndarray:
    """Resample to 16 kHz (from a possibly fractional rate: the pitch trick), trim, normalize peak."""
    audio = np.asarray(audio, dtype=np.float32)
    if abs(rate - SAMPLE_RATE) > 1e-6:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    audio = trim_silence(audio, SAMPLE_RATE)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak <= 1e-4:
        raise SynthesisError("engine output is silent")
    return np.round(audio * (PEAK / peak) * 32767.0).astype(np.int16)


def write_wav_atomic(path: Path, pcm: np.ndarray) -> None:
    """Write through a hidden temp file and rename, so a stopped run leaves no half WAV behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def render(item: PlannedUtterance, wav_dir: Path) -> RenderResult:
    """Synthesize `item` into wav_dir/<id>.wav; errors are returned, not raised (one bad line must not
    stop a 12-hour run)."""
    try:
        out = synthesize(item.voice, item.sentence.spoken, item.variant, item.prosody)
        pcm = to_pcm16(out.audio, out.sample_rate)
        duration = len(pcm) / SAMPLE_RATE
        if duration < MIN_DURATION_S:
            raise SynthesisError(f"only {duration:.2f} s of audio")
        write_wav_atomic(wav_dir / f"{item.id}.wav", pcm)
        return RenderResult(item.id, duration, out.prosody)
    except (SynthesisError, OSError, ValueError, RuntimeError) as exc:
        return RenderResult(item.id, error=f"{item.voice.key}: {exc}")
