"""Hotwords: written where the frames allow them (the spotting pass), with and without the LMs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
from tone_model import VOCAB, token_frequency, tone_audio

from edge_asr import EdgeTranscriber, InputError
from edge_asr.ctc import GreedyDecoder, Vocabulary, decode
from edge_asr.hotwords import MAX_HOTWORD_STATES, Hotwords, HotwordSpotter, graph_states
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


def test_a_hotword_wins_its_close_call_when_its_boost_covers_the_gap(tone_bundle: Path) -> None:
    assert transcribe(tone_bundle, close_call(), None) == "bad cafd"
    assert transcribe(tone_bundle, close_call(), Hotwords.from_list(["cafe"], boost=2.0)) == "bad cafd"
    assert transcribe(tone_bundle, close_call(), Hotwords.from_list(["cafe"], boost=3.0)) == "bad cafe"
    # A hotword with a letter the audio does not hold is not written at the default boost.
    assert transcribe(tone_bundle, close_call(), Hotwords.from_list(["cafeb"])) == "bad cafd"


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
    with pytest.raises(InputError, match="no word delimiter"):
        Hotwords.from_list(["bad"]).compile(Vocabulary(["_", "a", "b", "d"], 0, None), TextNormalization())


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


# The spotting pass on hand-built log-probabilities: exact gaps, known answers.
FLOOR = -30.0


def frames(spec: Sequence[Tuple[str, Optional[str], float]], repeat: int = 3) -> np.ndarray:
    """Each (heard, runner-up, how far behind) gives `repeat` frames then one blank frame."""
    rows: List[np.ndarray] = []
    for heard, second, behind in spec:
        row = np.full(len(VOCAB), FLOOR)
        row[VOCAB.index(heard)] = 0.0
        if second is not None:
            row[VOCAB.index(second)] = -behind
        rows += [row] * repeat + [np.where(np.arange(len(VOCAB)) == 0, 0.0, FLOOR)]
    return np.array(rows, dtype=np.float32)


def spell(text: str, changes: Optional[dict] = None, behind: float = 1.0) -> np.ndarray:
    """Frames that greedy decoding hears as `text`; `changes` maps a position to the letter a second
    choice `behind` nats lower would have given."""
    changes = changes or {}
    return frames([(c.replace(" ", "|"), changes.get(i), behind) for i, c in enumerate(text)])


def run(log_probs: np.ndarray, hotwords: List[str], boost: float) -> str:
    graph = Hotwords.from_list(hotwords, boost).compile(TONES, TextNormalization())
    spotter = HotwordSpotter(GreedyDecoder(0), graph, TONES)
    for chunk in np.array_split(log_probs, 3):  # chunked as the windowed runner delivers them
        spotter.push(chunk)
    ids, scores = spotter.finish()
    return decode(ids, TONES, 0.02, scores)[0]


def test_a_hotword_heard_as_other_words_is_put_back_when_its_boost_covers_the_gap() -> None:
    # Heard "ab ca fd", said "ab cafe": the "|" inside and the "d" each lose 1 nat a frame (3 frames).
    heard = spell("ab ca fd", {5: "<blank>", 7: "e"})
    assert run(heard, ["cafe"], boost=0.5) == "ab ca fd"  # 6 nats behind, 2 nats of boost
    assert run(heard, ["cafe"], boost=1.4) == "ab ca fd"  # 5.6 nats: still short
    assert run(heard, ["cafe"], boost=1.6) == "ab cafe"  # 6.4 nats: both beam words go whole


def test_the_spot_margin_is_the_exact_gap_per_letter() -> None:
    heard = spell("ab cafd", {6: "e"}, behind=2.0)  # "e" is 2 nats behind "d" in each of 3 frames
    graph = Hotwords.from_list(["cafe"], 2.0).compile(TONES, TextNormalization())
    spotter = HotwordSpotter(GreedyDecoder(0), graph, TONES)
    spotter.push(heard)
    (spot,) = spotter.spots()
    assert abs(spot.margin - (2.0 - 3 * 2.0 / 4)) < 1e-5  # boost minus the gap per letter
    assert spot.start <= 3 * 4 and spot.end >= 7 * 4  # from the "|" after "ab" to the end of "cafd"


def test_a_hotword_starts_only_at_a_word_start_and_words_around_it_stay() -> None:
    # "bcafe" holds "cafe" but not after a word boundary: the "b" frames would have to be a "|".
    assert run(spell("a bcafe fed"), ["cafe"], boost=3.0) == "a bcafe fed"
    # Two occurrences, each put back; the words between and around them are untouched.
    heard = spell("cafd a cafd", {3: "e", 10: "e"})
    assert run(heard, ["cafe"], boost=1.0) == "cafe a cafe"


def test_a_phrase_hotword_spans_its_words() -> None:
    heard = spell("bad cafd ab", {7: "e"})
    assert run(heard, ["bad cafe"], boost=1.0) == "bad cafe ab"
    assert run(heard, ["bad cafe"], boost=0.2) == "bad cafd ab"


def test_hotword_files_are_read_with_a_size_cap() -> None:
    with pytest.raises(
        InputError, match=r"^/dev/zero: not a text file \(it holds NUL bytes\); give a hotwords file$"
    ):
        Hotwords.from_file("/dev/zero")
    with pytest.raises(InputError, match="cannot read the hotwords"):
        Hotwords.from_file("/no/such/hotwords.txt")


def many_hotwords(count: int, letters: int = 8) -> List[str]:
    """`count` distinct words of the tone vocabulary's letters."""
    rng = np.random.default_rng(0)
    words: set = set()
    while len(words) < count:
        words.add("".join(rng.choice(list("abcdef"), letters)))
    return sorted(words)


def test_a_list_past_what_runs_in_real_time_is_refused() -> None:
    # Issue 29: 10,000 hotwords at boost 20 were inside the limits and ran at RTF 3.4 (60 s).
    fits = MAX_HOTWORD_STATES // graph_states([0] * 8)
    graph = Hotwords.from_list(many_hotwords(fits), boost=20.0).compile(TONES, TextNormalization())
    assert graph.tokens.size <= MAX_HOTWORD_STATES
    with pytest.raises(InputError, match=rf"{fits + 1} hotwords spell [\d,]+ .* more than the 30,000"):
        Hotwords.from_list(many_hotwords(fits + 1), boost=20.0).compile(TONES, TextNormalization())


def test_the_pass_keeps_bounded_state_at_the_largest_list_and_boost() -> None:
    # The largest list at boost 20 (every hotword is "heard" almost everywhere) over a 12 s chunk: the
    # pass used to hold [frames, states] float64 for the chunk and every (hotword, start) it accepted,
    # 600 MB for 10 s and 10,000 hotwords; now one frame's states and spots that never overlap.
    import tracemalloc

    words = many_hotwords(MAX_HOTWORD_STATES // graph_states([0] * 8))
    graph = Hotwords.from_list(words, boost=20.0).compile(TONES, TextNormalization())
    heard = np.tile(spell("ab cafd fed"), (15, 1))[:600]  # 12 s of 20 ms frames
    spotter = HotwordSpotter(GreedyDecoder(0), graph, TONES)
    tracemalloc.start()
    try:
        spotter.push(heard)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * graph.tokens.size * 8, peak  # a few arrays of the states, not 600 rows of them
    spots = spotter.spots()
    assert spots and all(a.end <= b.start for a, b in zip(spots, spots[1:]))
