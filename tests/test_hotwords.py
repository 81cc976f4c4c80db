"""Hotwords: boosted words inside the beam search, with and without a language model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tone_model import VOCAB, token_frequency, tone_audio

from edge_asr import EdgeTranscriber, InputError
from edge_asr.ctc import Vocabulary
from edge_asr.hotwords import Hotwords
from edge_asr.text import TextNormalization
from edge_asr.transcriber import TranscribeOptions

TONES = Vocabulary(VOCAB, 0, "|")


def close_call() -> np.ndarray:
    """ "bad caf" and a tone mixing 'd' (louder) with 'e': greedy decoding hears "bad cafd"."""
    n = int(0.2 * 16000)
    t = np.arange(n) / 16000
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / 160)
    d, e = (np.sin(2 * np.pi * token_frequency(VOCAB.index(c)) * t) for c in "de")
    return np.concatenate([tone_audio("bad caf"), (ramp * (0.17 * d + 0.13 * e)).astype(np.float32)])


def transcribe(bundle: Path, audio: np.ndarray, hotwords: Hotwords | None) -> str:
    return EdgeTranscriber(bundle, options=TranscribeOptions(hotwords=hotwords)).transcribe(audio, 16000).text


def test_a_boosted_word_wins_its_close_call_without_an_lm(tone_bundle: Path) -> None:
    assert transcribe(tone_bundle, close_call(), None) == "bad cafd"
    assert transcribe(tone_bundle, close_call(), Hotwords.from_list(["cafe"], boost=4.0)) == "bad cafe"
    # A hotword the audio only begins earns nothing at the end: "cafeb" does not make it "cafe".
    assert transcribe(tone_bundle, close_call(), Hotwords.from_list(["cafeb"], boost=4.0)) not in (
        "bad cafe",
        "bad cafeb",
    )


def test_bonus_is_kept_only_for_a_finished_word() -> None:
    trie = Hotwords.from_list(["cafe", "bad cab"], boost=1.0).compile(TONES, TextNormalization())
    ids = {t: i for i, t in enumerate(VOCAB)}

    def run(text: str) -> float:
        state, total, word_start = (0, 0.0), 0.0, True
        for char in text.replace(" ", "|"):
            boundary = char == "|"
            state, change = trie.advance(state, ids[char], word_start, boundary)
            total += change
            word_start = boundary
        return total - trie.unfinished(state)

    assert run("cafe") == 4.0 and run("cafe fed") == 4.0
    assert run("cafed") == 0.0 and run("caf") == 0.0 and run("fcafe") == 0.0
    assert run("bad cab") == 7.0 and run("bad cafe") == 4.0  # the phrase's "bad " is given back
    assert run("bad cafe fed") == 4.0 and run("bad cab cafe") == 11.0


def test_hotword_files_and_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "hot.txt"
    path.write_text("# names\nAnneliese\nLiving Room Lamp :3.5\n")
    assert Hotwords.from_file(path, boost=1.5).entries == (("Anneliese", 1.5), ("Living Room Lamp", 3.5))
    path.write_text("lamp :loud\n")
    with pytest.raises(InputError, match="boost 'loud' is not a number"):
        Hotwords.from_file(path)
    with pytest.raises(InputError, match="boost must be above 0"):
        Hotwords.from_list([("lamp", 0.0)])
    with pytest.raises(InputError, match="cannot spell: g"):
        Hotwords.from_list(["badge"]).compile(TONES, TextNormalization())


def test_cli_hotwords_flag(tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    from edge_asr.cli import main

    wav, hot = tmp_path / "x.wav", tmp_path / "hot.txt"
    sf.write(wav, close_call(), 16000)
    hot.write_text("cafe :4\n")
    assert main(["file", str(wav), "-m", str(tone_bundle)]) == 0
    assert capsys.readouterr().out == "bad cafd\n"
    assert main(["file", str(wav), "-m", str(tone_bundle), "--hotwords", str(hot)]) == 0
    assert capsys.readouterr().out == "bad cafe\n"
    assert main(["file", str(wav), "-m", str(tone_bundle), "--hotwords", str(tmp_path / "none.txt")]) == 2
    assert "cannot read the hotwords" in capsys.readouterr().err
