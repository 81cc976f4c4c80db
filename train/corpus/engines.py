"""Run one TTS engine on one sentence with a given speaking rate and pitch.

Each engine returns float32 mono audio and the sample rate to read it at. Where an engine has no
pitch control of its own, pitch is changed by the "tape speed" trick: the samples are read at
`rate * f` instead of `rate`, which raises pitch (and formants) by f and shortens the audio by f; the
engine's own tempo control is then asked for rate/f so the final tempo is still what was planned.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import soundfile as sf

from .voices import Voice

FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))
ENGINE_TIMEOUT_S = 60


Audio = Tuple[np.ndarray, float]  # samples, and the rate the engine wrote them at


class SynthesisError(RuntimeError):
    """An engine failed on one sentence (the corpus skips the utterance and says why)."""


@dataclass(frozen=True)
class Prosody:
    """rate: tempo factor (1.0 = the engine's default pace, 1.2 = 20% faster); pitch: semitones."""

    rate: float = 1.0
    pitch: float = 0.0

    @property
    def pitch_factor(self) -> float:
        return float(2.0 ** (self.pitch / 12.0))


@dataclass
class Rendered:
    """Engine output: `audio` float32 mono, read at `sample_rate`; `prosody` as actually applied."""

    audio: np.ndarray
    sample_rate: float
    prosody: Prosody


def _run(cmd, text_input: Optional[str] = None) -> None:
    try:
        done = subprocess.run(
            cmd, input=text_input, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"{cmd[0]} timed out after {ENGINE_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise SynthesisError(f"{cmd[0]} exited {done.returncode}: {done.stderr.strip()[:300]}")


def _read(path: Path) -> Tuple[np.ndarray, float]:
    if not path.exists() or path.stat().st_size <= 44:
        raise SynthesisError(f"engine wrote no audio to {path.name}")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), float(rate)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def native_settings(voice: Voice, prosody: Prosody) -> Tuple[float, float, Prosody]:
    """(tempo to ask the engine for, pitch factor left to the tape-speed trick, prosody as applied).

    A pure function of the plan, so a resumed run knows what an already written file got.
    """
    if voice.engine == "espeak":
        return prosody.rate, 1.0, prosody
    if voice.engine == "pico":
        speed = round(_clamp(prosody.rate, 0.5, 2.0), 2)
        return speed, 1.0, Prosody(speed, prosody.pitch)
    f = prosody.pitch_factor
    if voice.engine == "festival" and voice.voice.endswith("_hts"):
        return 1.0, f, Prosody(round(f, 4), prosody.pitch)  # HTS voices ignore Duration_Stretch
    native = round(_clamp(prosody.rate / f, 0.6, 1.7), 4)
    return native, f, Prosody(round(native * f, 4), prosody.pitch)


def espeak(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    out = workdir / "espeak.wav"
    name = f"{voice.voice}+{variant}" if variant else voice.voice
    # espeak-ng's -p is 0..99 around 50; ~6 steps per semitone is close enough for variety.
    pitch = int(round(_clamp(50 + 6 * prosody.pitch, 5, 95)))
    speed = int(round(175 * prosody.rate))
    _run(["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch), "-w", str(out), "--stdin"], text)
    return _read(out)


def flite(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    out, txt = workdir / "flite.wav", workdir / "flite.txt"
    txt.write_text(text + "\n", encoding="ascii")
    native, _, _ = native_settings(voice, prosody)
    stretch = f"duration_stretch={1.0 / native:.4f}"
    _run(["flite", "-voice", voice.voice, "--setf", stretch, "-f", str(txt), "-o", str(out)])
    return _read(out)


def festival(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    out, txt = workdir / "festival.wav", workdir / "festival.txt"
    txt.write_text(text + "\n", encoding="ascii")
    native, _, _ = native_settings(voice, prosody)
    cmd = ["text2wave", "-o", str(out), "-eval", f"(voice_{voice.voice})"]
    if native != 1.0:
        cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / native:.4f})"]
    _run([*cmd, str(txt)])
    return _read(out)


def pico(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    out = workdir / "pico.wav"  # pico2wave insists on a .wav name
    speed, _, _ = native_settings(voice, prosody)
    pitch = int(round(100 * prosody.pitch_factor))
    markup = f"<speed level='{int(round(100 * speed))}'><pitch level='{pitch}'>{text}</pitch></speed>"
    _run(["pico2wave", "-l", voice.voice, "-w", str(out), markup])
    return _read(out)


_HIBARI: Dict[str, Any] = {}


def hibari(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    if voice.voice not in _HIBARI:
        from hibari import Hibari  # optional PyPI voice: imported only when used

        _HIBARI[voice.voice] = Hibari(voice=voice.voice, threads=1)
    tts = _HIBARI[voice.voice]
    speed, _, _ = native_settings(voice, prosody)
    audio = np.asarray(tts(text, speed=speed, seed=0), dtype=np.float32)
    if audio.size == 0:
        raise SynthesisError("hibari produced no audio")
    return audio, float(tts.sample_rate)


SYNTHESIZERS: Dict[str, Callable[[Voice, str, str, Prosody, Path], Audio]] = {
    "espeak": espeak,
    "flite": flite,
    "festival": festival,
    "pico": pico,
    "hibari": hibari,
}
ENGINES = tuple(SYNTHESIZERS)


def engine_missing(engine: str) -> Optional[str]:
    """Why `engine` cannot run here (None when it can)."""
    hint = "run scripts/install_tts.sh"
    binaries = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave", "pico": "pico2wave"}
    if engine in binaries:
        if shutil.which(binaries[engine]) is None:
            return f"{binaries[engine]} not found on PATH ({hint})"
        return None
    if engine == "hibari":
        if importlib.util.find_spec("hibari") is None:
            return f"Python package hibari-tts not installed ({hint}, or pip install hibari-tts)"
        return None
    return f"unknown engine {engine!r}"


def voice_missing(voice: Voice) -> Optional[str]:
    """Why `voice` cannot be synthesized here (None when it can)."""
    reason = engine_missing(voice.engine)
    if reason:
        return reason
    if voice.engine == "festival" and not any(
        (d / lang / voice.voice).is_dir()
        for d in FESTIVAL_VOICE_DIRS
        if d.is_dir()
        for lang in [p.name for p in d.iterdir()]
    ):
        return f"festival voice {voice.voice} not installed (run scripts/install_tts.sh)"
    if voice.engine == "flite":
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        if voice.voice not in listed:
            return f"flite has no voice {voice.voice}"
    if voice.engine == "pico" and not Path(f"/usr/share/pico/lang/{voice.voice}_ta.bin").exists():
        return f"SVOX pico language data for {voice.voice} not installed"
    return None


def synthesize(voice: Voice, text: str, variant: str = "", prosody: Prosody = Prosody()) -> Rendered:
    """Render `text` with `voice` (`variant`: espeak-ng timbre variant) in a private temp folder."""
    _, trick, applied = native_settings(voice, prosody)
    with tempfile.TemporaryDirectory(prefix="corpus-tts-") as tmp:
        audio, rate = SYNTHESIZERS[voice.engine](voice, text, variant, prosody, Path(tmp))
    # Reading the samples `trick` times faster raises pitch and formants by that factor.
    return Rendered(audio, rate * trick, applied)
