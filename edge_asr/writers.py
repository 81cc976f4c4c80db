"""Output writers (txt, json, srt, vtt) behind one `get_writer`. Files are written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Type

from .atomic import write_text_atomic
from .errors import InputError
from .results import Transcript, Word


@dataclass(frozen=True)
class Cue:
    """One subtitle: a run of words shown together."""

    start: float
    end: float
    text: str


def subtitle_cues(
    words: Sequence[Word], max_chars: int = 42, max_seconds: float = 6.0, max_gap: float = 0.8
) -> List[Cue]:
    """Group words into cues: a new cue at a pause longer than `max_gap`, or when the current one would
    exceed `max_chars` characters or `max_seconds` (common subtitle reading limits)."""
    cues: List[Cue] = []
    current: List[Word] = []
    for word in words:
        if current:
            text_len = sum(len(w.text) + 1 for w in current) + len(word.text)
            if (
                word.start - current[-1].end > max_gap
                or text_len > max_chars
                or word.end - current[0].start > max_seconds
            ):
                cues.append(Cue(current[0].start, current[-1].end, " ".join(w.text for w in current)))
                current = []
        current.append(word)
    if current:
        cues.append(Cue(current[0].start, current[-1].end, " ".join(w.text for w in current)))
    return cues


def format_timestamp(seconds: float, decimal_marker: str = ".", always_hours: bool = True) -> str:
    millis = int(round(max(0.0, seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


class ResultWriter:
    """Renders a transcript in one format; `write` puts it in `output_dir` under the input's stem."""

    extension = ""

    def render(self, transcript: Transcript) -> str:
        raise NotImplementedError

    def write(self, transcript: Transcript, output_dir: Path, stem: str) -> Path:
        return write_text_atomic(Path(output_dir) / f"{stem}.{self.extension}", self.render(transcript))


class TxtWriter(ResultWriter):
    extension = "txt"

    def render(self, transcript: Transcript) -> str:
        return transcript.text + "\n"


class JsonWriter(ResultWriter):
    extension = "json"

    def render(self, transcript: Transcript) -> str:
        return json.dumps(transcript.to_dict(), indent=2, ensure_ascii=False) + "\n"


class SrtWriter(ResultWriter):
    extension = "srt"

    def render(self, transcript: Transcript) -> str:
        blocks = []
        for index, cue in enumerate(subtitle_cues(transcript.words), start=1):
            span = f"{format_timestamp(cue.start, ',')} --> {format_timestamp(cue.end, ',')}"
            blocks.append(f"{index}\n{span}\n{cue.text}\n")
        return "\n".join(blocks)


class VttWriter(ResultWriter):
    extension = "vtt"

    def render(self, transcript: Transcript) -> str:
        lines = ["WEBVTT", ""]
        for cue in subtitle_cues(transcript.words):
            lines += [f"{format_timestamp(cue.start)} --> {format_timestamp(cue.end)}", cue.text, ""]
        return "\n".join(lines)


WRITERS: Dict[str, Type[ResultWriter]] = {
    "txt": TxtWriter,
    "json": JsonWriter,
    "srt": SrtWriter,
    "vtt": VttWriter,
}
FORMATS = (*WRITERS, "all")


def get_writer(output_format: str) -> ResultWriter:
    """The writer for one format name ("txt", "json", "srt", "vtt")."""
    if output_format not in WRITERS:
        raise InputError(f"unknown output format {output_format!r}; choose one of {', '.join(FORMATS)}")
    return WRITERS[output_format]()


def get_writers(output_format: str) -> List[ResultWriter]:
    """Writers for one format name, or for every format with "all"."""
    if output_format == "all":
        return [cls() for cls in WRITERS.values()]
    return [get_writer(output_format)]
