"""Voice activity detection: which short frames of a sample stream hold speech.

The default detector is energy-based with an adaptive noise floor, in numpy:

* it costs microseconds per frame, so it can gate the model (no inference while nobody speaks), which
  matters more on a Pi than the last bit of detection accuracy;
* it needs no model file and no extra native library: a neural VAD (Silero) would need ONNX weights we
  cannot ship or download here, and webrtcvad is a C extension without maintained aarch64 wheels;
* its misses are cheap for us: the stream keeps a pre-roll of audio before the detected onset, and the
  ASR model itself decides what the audio says; the VAD only has to find where utterances end.

Its known weakness is loud non-speech (music, a fan switching on): that reads as speech until the noise
floor has crept up to it (`floor_rise_db_per_s`), and the stream's maximum utterance length cuts it.
Anything with the `VoiceActivityDetector` shape (per-frame booleans) can replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from . import limits

SILENCE_DB = -120.0  # the energy reported for digital silence (avoids log10(0))


class VoiceActivityDetector(Protocol):
    """Stateful detector fed consecutive frames of `frame_length` samples."""

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """[n, frame_length] float32 frames -> [n] bool (True = speech)."""
        ...

    def reset(self) -> None:
        """Forget the stream so far (a new, unrelated stream follows)."""
        ...


@dataclass
class EnergyVadOptions:
    """Settings of `EnergyVad`; energies are in dB relative to full scale (0 dBFS = a full-scale square wave).

    Attributes:
        threshold_db: a frame is speech when its energy exceeds the noise floor by this much.
        hysteresis_db: once in speech, frames stay speech down to `threshold_db - hysteresis_db`, so the
            quiet ends of words do not flicker out.
        min_energy_db: frames quieter than this are never speech, however quiet the floor (digital
            silence would otherwise make the faintest hiss count as speech).
        floor_fall: fraction of the way the floor moves down to a quieter frame, per frame (fast, so
            the floor finds the room's level within a few frames of a pause).
        floor_time_constant: seconds over which the floor follows non-speech frames upwards.
        floor_rise_db_per_s: how fast the floor creeps up during "speech", so that a steady loud noise
            eventually stops counting as speech.
    """

    threshold_db: float = 12.0
    hysteresis_db: float = 3.0
    min_energy_db: float = -55.0
    floor_fall: float = 0.2
    floor_time_constant: float = 1.0
    floor_rise_db_per_s: float = 1.0

    def validate(self) -> None:
        """InputError naming the first setting outside its range (`edge_asr.limits`): a NaN threshold
        would make every frame silence, for the rest of the session."""
        ranges = {
            "threshold_db": limits.VAD_THRESHOLD_DB,
            "hysteresis_db": limits.VAD_HYSTERESIS_DB,
            "min_energy_db": limits.VAD_MIN_ENERGY_DB,
            "floor_fall": limits.VAD_FLOOR_FALL,
            "floor_time_constant": limits.VAD_FLOOR_TIME_CONSTANT,
            "floor_rise_db_per_s": limits.VAD_FLOOR_RISE_DB_PER_S,
        }
        limits.check_fields(self, ranges, "VAD option ")


def frame_energy_db(frames: np.ndarray) -> np.ndarray:
    """Mean-square energy of each row of [n, length] frames, in dBFS."""
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    decibels: np.ndarray = np.maximum(SILENCE_DB, 10.0 * np.log10(np.maximum(power, 1e-30))) + 3.0103
    return decibels  # a sine of peak 1 is 0 dB


class EnergyVad:
    """Energy above an adaptive noise floor; see the module docstring for why this is the default.

    Args:
        frame_seconds: duration of one frame (the stream uses the model's frame stride, 20 ms).
        options: thresholds and floor dynamics.
    """

    def __init__(self, frame_seconds: float, options: Optional[EnergyVadOptions] = None):
        if frame_seconds <= 0:
            raise ValueError(f"frame_seconds must be positive, got {frame_seconds}")
        self.frame_seconds = frame_seconds
        self.options = options or EnergyVadOptions()
        self.reset()

    def reset(self) -> None:
        self.floor_db: Optional[float] = None
        self._in_speech = False

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 2:
            raise ValueError(f"expected [frames, samples], got shape {frames.shape}")
        opts = self.options
        energies = frame_energy_db(frames)
        decisions = np.zeros(energies.size, dtype=bool)
        follow = min(1.0, self.frame_seconds / opts.floor_time_constant)
        creep = opts.floor_rise_db_per_s * self.frame_seconds
        for i, energy in enumerate(energies.tolist()):
            if self.floor_db is None:
                # Assume a stream starts without speech: the first frame sets the floor. If it does
                # start mid-word, the floor drops to the room's level in the first pause.
                self.floor_db = energy
            margin = opts.threshold_db - (opts.hysteresis_db if self._in_speech else 0.0)
            speech = energy > self.floor_db + margin and energy > opts.min_energy_db
            decisions[i] = speech
            self._in_speech = speech
            if energy < self.floor_db:
                self.floor_db += opts.floor_fall * (energy - self.floor_db)
            elif speech:
                self.floor_db += min(energy - self.floor_db, creep)
            else:
                self.floor_db += follow * (energy - self.floor_db)
        return decisions
