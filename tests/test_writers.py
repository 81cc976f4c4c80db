import json

from edge_asr.results import Transcript, Word
from edge_asr.writers import format_timestamp, get_writer, get_writers, subtitle_cues

WORDS = [
    Word("hello", 0.5, 0.9),
    Word("there", 1.0, 1.4),
    Word("after", 3.0, 3.3),
    Word("a", 3.4, 3.5),
    Word("pause", 3.6, 4.0),
]
TRANSCRIPT = Transcript(text="hello there after a pause", words=WORDS, duration=4.5, processing_time=0.2)


def test_timestamps():
    assert format_timestamp(3725.0456, ",") == "01:02:05,046"
    assert format_timestamp(0.0) == "00:00:00.000"


def test_cues_break_at_pauses_and_length():
    assert [(c.start, c.end, c.text) for c in subtitle_cues(WORDS)] == [
        (0.5, 1.4, "hello there"),
        (3.0, 4.0, "after a pause"),
    ]
    assert len(subtitle_cues(WORDS, max_chars=8)) == 4


def test_srt_and_vtt():
    assert get_writer("srt").render(TRANSCRIPT) == (
        "1\n00:00:00,500 --> 00:00:01,400\nhello there\n\n2\n00:00:03,000 --> 00:00:04,000\nafter a pause\n"
    )
    vtt = get_writer("vtt").render(TRANSCRIPT)
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nhello there\n")


def test_json_and_atomic_write(tmp_path):
    path = get_writer("json").write(TRANSCRIPT, tmp_path / "out", "clip")
    data = json.loads(path.read_text())
    assert data["text"] == TRANSCRIPT.text
    assert data["words"][0] == {"text": "hello", "start": 0.5, "end": 0.9, "confidence": 1.0}
    assert abs(data["real_time_factor"] - 0.2 / 4.5) < 1e-9
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.json"]  # no temp files left
    assert [w.extension for w in get_writers("all")] == ["txt", "json", "srt", "vtt"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    path = get_writer("txt").write(TRANSCRIPT, tmp_path, "clip")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
