"""Training-split audio augmentation, built on audiomentations.

Each transform has its own probability: speed perturbation, noise (coloured noise at a random SNR, or
recordings from a noise folder), pitch shift, time stretch (length changes, labels do not), a random
seven-band EQ and a low-pass filter (engines, microphones and rooms differ most in their spectra: a
model can otherwise learn a voice by its bandwidth), gain, and room reverb.
audiomentations' RoomSimulator needs pyroomacoustics, which we do not want as a dependency, so the
reverb is `ApplyImpulseResponse` fed with synthetic impulse responses (exponentially decaying noise,
random RT60) written once per run: one FFT convolution per utterance, i.e. cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class AugmentOptions:
    """Which transforms run and how strongly. A training config's `augment:` section; each option is
    also a flag of `python -m train` (`noise_p` -> `--noise-p`, `enabled` -> `--augment/--no-augment`)."""

    enabled: bool = _option(True, "augment training audio")
    speed_p: float = _option(
        0.0, "probability of speed perturbation (tempo, pitch and formants together: a new 'speaker')"
    )
    speed_rate: Tuple[float, float] = _option((0.9, 1.1), "speed perturbation range (>1 is faster)")
    noise_p: float = _option(0.3, "probability of added noise")
    noise_snr_db: Tuple[float, float] = _option((10.0, 40.0), "noise SNR range in dB")
    noise_dir: Optional[str] = field(
        default=None,
        metadata={"help": "folder of background-noise recordings (default: coloured noise)", "path": True},
    )
    pitch_p: float = _option(0.2, "probability of a pitch shift")
    pitch_semitones: Tuple[float, float] = _option((-2.0, 2.0), "pitch shift range in semitones")
    stretch_p: float = _option(0.2, "probability of a time stretch")
    stretch_rate: Tuple[float, float] = _option((0.9, 1.1), "time stretch rate range (>1 is faster)")
    eq_p: float = _option(0.0, "probability of a random seven-band EQ (a new microphone or engine)")
    eq_gain_db: float = _option(8.0, "EQ band gains are drawn from +-this many dB")
    lowpass_p: float = _option(0.0, "probability of a low-pass filter (band-limited engines and phones)")
    lowpass_hz: Tuple[float, float] = _option((3000.0, 7500.0), "low-pass cutoff range in Hz")
    gain_p: float = _option(0.3, "probability of a gain change")
    gain_db: Tuple[float, float] = _option((-6.0, 6.0), "gain range in dB")
    reverb_p: float = _option(0.1, "probability of synthetic room reverb")
    reverb_rt60: Tuple[float, float] = _option((0.15, 0.6), "reverb decay time range in seconds")
    # Not an option: where this run's synthetic impulse responses are (make_impulse_responses writes
    # them; the training pipeline fills it in). Config files and flags cannot set it.
    impulse_dir: Optional[str] = field(default=None, metadata={"option": False})


def make_impulse_responses(
    folder: Path, rt60: Tuple[float, float], count: int = 8, seed: int = 0
) -> List[Path]:
    """Write `count` synthetic room impulse responses (decaying noise after a direct path) as WAVs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, t60 in enumerate(np.linspace(rt60[0], rt60[1], count)):
        n = int(SAMPLE_RATE * t60)
        t = np.arange(n) / SAMPLE_RATE
        # -60 dB after t60 seconds: amplitude envelope 10^(-3 t / t60).
        tail = rng.standard_normal(n) * 10 ** (-3.0 * t / t60) * 0.3
        tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # a short gap before the first reflections
        tail[0] = 1.0
        path = folder / f"ir_{i:02d}.wav"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.wav")
            sf.write(str(tmp), (tail / np.abs(tail).max()).astype(np.float32), SAMPLE_RATE)
            tmp.replace(path)
        paths.append(path)
    return paths


def speed_perturb(samples: np.ndarray, rate: float) -> np.ndarray:
    """Play `samples` `rate` times faster: tempo, pitch and formants all move, as a shorter or longer
    vocal tract would (Ko et al. 2015, Kaldi's 0.9/1.0/1.1). Pitch shift and time stretch each keep
    the formants where they were, so they cannot stand in for a new speaker the way this does.
    Reading the samples as if recorded at 16 kHz x rate and resampling to 16 kHz is one soxr call."""
    out = soxr.resample(samples, SAMPLE_RATE * rate, SAMPLE_RATE, quality="MQ")
    return np.asarray(out, dtype=np.float32)


def _speed_transform(min_rate: float, max_rate: float, p: float):
    # Built inside a function so that importing this module does not import audiomentations.
    import random

    from audiomentations.core.transforms_interface import BaseWaveformTransform

    class SpeedPerturb(BaseWaveformTransform):
        supports_multichannel = False

        def randomize_parameters(self, samples, sample_rate):
            super().randomize_parameters(samples, sample_rate)
            if self.parameters["should_apply"]:
                self.parameters["rate"] = random.uniform(min_rate, max_rate)

        def apply(self, samples, sample_rate):
            return speed_perturb(samples, self.parameters["rate"])

    return SpeedPerturb(p=p)


def build_augmenter(options: AugmentOptions):
    """An audiomentations Compose applying each enabled transform with its own probability; None when
    augmentation is off or no transform has a probability above 0."""
    if not options.enabled:
        return None
    import audiomentations as am

    transforms = []
    if options.speed_p > 0:
        transforms.append(_speed_transform(*options.speed_rate, p=options.speed_p))
    if options.noise_p > 0:
        low, high = options.noise_snr_db
        if options.noise_dir:
            transforms.append(
                am.AddBackgroundNoise(
                    sounds_path=options.noise_dir, min_snr_db=low, max_snr_db=high, p=options.noise_p
                )
            )
        else:
            transforms.append(am.AddColorNoise(min_snr_db=low, max_snr_db=high, p=options.noise_p))
    if options.pitch_p > 0:
        low, high = options.pitch_semitones
        transforms.append(am.PitchShift(min_semitones=low, max_semitones=high, p=options.pitch_p))
    if options.stretch_p > 0:
        low, high = options.stretch_rate
        transforms.append(
            am.TimeStretch(min_rate=low, max_rate=high, leave_length_unchanged=False, p=options.stretch_p)
        )
    if options.eq_p > 0:
        gain = options.eq_gain_db
        transforms.append(am.SevenBandParametricEQ(min_gain_db=-gain, max_gain_db=gain, p=options.eq_p))
    if options.lowpass_p > 0:
        low, high = options.lowpass_hz
        transforms.append(am.LowPassFilter(min_cutoff_freq=low, max_cutoff_freq=high, p=options.lowpass_p))
    if options.reverb_p > 0 and options.impulse_dir:
        transforms.append(am.ApplyImpulseResponse(ir_path=options.impulse_dir, p=options.reverb_p))
    if options.gain_p > 0:
        low, high = options.gain_db
        transforms.append(am.Gain(min_gain_db=low, max_gain_db=high, p=options.gain_p))
    if not transforms:
        return None
    return am.Compose(transforms)


def apply(augmenter, samples: np.ndarray) -> np.ndarray:
    """Augment one utterance; clip to [-1, 1] since gain and noise can push it past full scale."""
    out = augmenter(samples=samples, sample_rate=SAMPLE_RATE)
    return np.clip(np.asarray(out, dtype=np.float32), -1.0, 1.0)


# Channel degradations: what a phone line, a cheap codec or an 8 kHz capture does to speech. Synthetic
# voices are studio-clean; real recordings (the Asterisk prompts are 8 kHz telephone audio) are not.
# Codecs go through libsndfile (soundfile), which encodes GSM 6.10, mu-law, MP3 and Opus in memory.
CHANNELS = ("telephone", "mulaw", "gsm", "mp3", "opus")


def _codec_round_trip(samples: np.ndarray, rate: int, format_: str, subtype: str, **kwargs) -> np.ndarray:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=format_, subtype=subtype, **kwargs)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return decoded


def degrade_channel(samples: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """`samples` (16 kHz) through one channel of `CHANNELS`; the length is kept (codec delay trimmed or
    padded at the end) so labels and frame counts stay valid."""
    x = np.clip(samples, -1.0, 1.0).astype(np.float32)
    if kind in ("telephone", "mulaw", "gsm"):
        narrow = np.asarray(soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ"), dtype=np.float32)
        if kind == "mulaw":
            narrow = _codec_round_trip(narrow, 8000, "WAV", "ULAW")
        elif kind == "gsm":
            narrow = _codec_round_trip(narrow, 8000, "WAV", "GSM610")
        out = np.asarray(soxr.resample(narrow, 8000, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
    elif kind == "mp3":
        level = float(rng.uniform(0.3, 0.9))  # libsndfile's compression level: higher = lower bitrate
        out = _codec_round_trip(x, SAMPLE_RATE, "MP3", "MPEG_LAYER_III", compression_level=level)
    elif kind == "opus":
        level = float(rng.uniform(0.3, 0.9))
        out = _codec_round_trip(x, SAMPLE_RATE, "OGG", "OPUS", compression_level=level)
    else:
        raise ValueError(f"unknown channel {kind!r}; expected one of {', '.join(CHANNELS)}")
    if out.ndim > 1:
        out = out.mean(axis=1)
    if len(out) >= len(x):
        return np.ascontiguousarray(out[: len(x)], dtype=np.float32)
    return np.concatenate([out, np.zeros(len(x) - len(out), dtype=np.float32)])
