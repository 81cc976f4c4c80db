"""The energy VAD: speech above an adaptive noise floor, never digital silence or faint hiss."""

from __future__ import annotations

import numpy as np
import pytest

from edge_asr.vad import EnergyVad, EnergyVadOptions, frame_energy_db

RATE, FRAME = 16000, 320


def frames_of(samples: np.ndarray) -> np.ndarray:
    count = samples.size // FRAME
    return samples[: count * FRAME].reshape(count, FRAME).astype(np.float32)


def tone(seconds: float, amplitude: float, freq: float = 700.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amplitude: float, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_energy_of_a_full_scale_sine_is_zero_dbfs_and_silence_is_floored():
    energies = frame_energy_db(frames_of(np.concatenate([tone(0.1, 1.0), np.zeros(FRAME * 2, np.float32)])))
    assert energies[0] == pytest.approx(0.0, abs=0.1)
    assert energies[-1] == pytest.approx(-120.0 + 3.0103, abs=0.01)


def test_speech_in_digital_silence_is_found_and_silence_is_not():
    vad = EnergyVad(FRAME / RATE)
    audio = np.concatenate([np.zeros(RATE, np.float32), tone(0.5, 0.1), np.zeros(RATE, np.float32)])
    decisions = vad(frames_of(audio))
    assert not decisions[:50].any()
    assert decisions[51:74].all()
    assert not decisions[77:].any()


def test_faint_hiss_after_digital_silence_is_not_speech():
    vad = EnergyVad(FRAME / RATE)
    audio = np.concatenate([np.zeros(RATE, np.float32), noise(1.0, 10 ** (-70 / 20))])
    assert not vad(frames_of(audio)).any()


def test_floor_adapts_to_a_noisy_room_and_speech_above_it_still_counts():
    vad = EnergyVad(FRAME / RATE)
    room = noise(3.0, 0.02)  # about -34 dBFS: far above min_energy_db, so only the floor keeps it out
    speech = tone(0.5, 0.3) + noise(0.5, 0.02, seed=1)
    decisions = vad(frames_of(np.concatenate([room, speech, noise(1.0, 0.02, seed=2)])))
    assert decisions[:150].mean() < 0.02
    assert decisions[152:174].all()
    assert decisions[180:].mean() < 0.02
    assert -40 < vad.floor_db < -30


def test_hysteresis_keeps_the_quiet_end_of_a_word():
    opts = EnergyVadOptions(threshold_db=12.0, hysteresis_db=4.0)
    audio = np.concatenate([noise(1.0, 0.01), tone(0.3, 0.1), tone(0.3, 0.045), noise(0.5, 0.01, seed=3)])
    with_h = EnergyVad(FRAME / RATE, opts)(frames_of(audio))
    without = EnergyVad(FRAME / RATE, EnergyVadOptions(threshold_db=12.0, hysteresis_db=0.0))(
        frames_of(audio)
    )
    quiet_tail = slice(66, 79)  # the 0.045-amplitude part: ~10.5 dB over the floor
    assert with_h[quiet_tail].all()
    assert not without[quiet_tail].any()


def test_steady_loud_noise_becomes_the_floor_eventually():
    vad = EnergyVad(FRAME / RATE, EnergyVadOptions(floor_rise_db_per_s=10.0))
    audio = np.concatenate([noise(1.0, 0.001), noise(6.0, 0.05, seed=4)])
    decisions = vad(frames_of(audio))
    assert decisions[55:70].all()  # the fan switching on reads as speech at first...
    assert not decisions[-50:].any()  # ...and as background a few seconds later


def test_reset_forgets_the_floor_and_frames_must_be_2d():
    vad = EnergyVad(FRAME / RATE)
    vad(frames_of(noise(0.5, 0.05)))
    assert vad.floor_db is not None
    vad.reset()
    assert vad.floor_db is None
    with pytest.raises(ValueError):
        vad(np.zeros(FRAME, np.float32))
    with pytest.raises(ValueError):
        EnergyVad(0.0)
