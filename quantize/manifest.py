"""Evaluation manifests: which audio files to score and what they say.

Accepted formats (relative audio paths are relative to the manifest's folder):
- CSV `path,text` (a header row naming the columns is optional; extra columns are ignored);
- LJSpeech `metadata.csv`: `ID|transcription|normalized transcription`, audio in `wavs/ID.wav`
  (the normalized column is used when present);
- JSON lines with "path" (or "audio") and "text" keys.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .errors import ManifestError

PATH_COLUMNS = ("path", "audio", "audio_path", "file", "filename", "wav")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "label")


@dataclass(frozen=True)
class EvalItem:
    path: Path
    text: str


def _csv_items(manifest: Path, lines: List[str]) -> List[EvalItem]:
    rows = [r for r in csv.reader(lines) if r and any(cell.strip() for cell in r)]
    if not rows:
        return []
    path_col, text_col = 0, 1
    header = [c.strip().lower() for c in rows[0]]
    header_found = any(c in PATH_COLUMNS for c in header) and any(c in TEXT_COLUMNS for c in header)
    if header_found:
        path_col = next(i for i, c in enumerate(header) if c in PATH_COLUMNS)
        text_col = next(i for i, c in enumerate(header) if c in TEXT_COLUMNS)
        rows = rows[1:]
    width = len(header) if header_found else 2
    items = []
    for number, row in enumerate(rows, start=1):
        if len(row) <= max(path_col, text_col):
            raise ManifestError(f"{manifest}: row {number} has {len(row)} column(s); expected path,text")
        # An unquoted text with commas spans several columns: when text is the last column, take them all.
        text = ",".join(row[text_col:]) if text_col == width - 1 else row[text_col]
        items.append(EvalItem(manifest.parent / row[path_col].strip(), text.strip()))
    return items


def _ljspeech_items(manifest: Path, lines: List[str]) -> List[EvalItem]:
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2:
            raise ManifestError(f"{manifest}: line {number} is not ID|text[|normalized text]")
        key = fields[0].strip()
        text = fields[2].strip() if len(fields) > 2 and fields[2].strip() else fields[1].strip()
        audio = Path(key) if Path(key).suffix else Path("wavs") / f"{key}.wav"
        items.append(EvalItem(manifest.parent / audio, text))
    return items


def _jsonl_items(manifest: Path, lines: List[str]) -> List[EvalItem]:
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path = row.get("path", row.get("audio"))
            items.append(EvalItem(manifest.parent / str(path), str(row["text"])))
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise ManifestError(
                f"{manifest}: line {number} is not a JSON object with path and text"
            ) from None
    return items


def read_manifest(
    path: Path, limit: Optional[int] = None, what: str = "evaluation manifest"
) -> List[EvalItem]:
    """Read a manifest and check every audio file exists; raises ManifestError naming the problem.

    `what` names the manifest's role in the not-found message (e.g. "calibration manifest").
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: {what} not found")
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot read the manifest as UTF-8 text ({exc})") from None
    first = next((line for line in lines if line.strip()), "")
    if manifest.suffix.lower() in (".jsonl", ".json"):
        items = _jsonl_items(manifest, lines)
    elif "|" in first:
        items = _ljspeech_items(manifest, lines)
    else:
        items = _csv_items(manifest, lines)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ManifestError(f"{manifest}: the manifest lists no utterances")
    missing = [str(i.path) for i in items if not i.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ManifestError(
            f"{manifest}: {len(missing)} of {len(items)} audio file(s) are missing: {shown}. "
            "Paths are relative to the manifest's folder; fix the paths or remove those rows."
        )
    empty = [str(i.path) for i in items if not i.text]
    if empty:
        raise ManifestError(f"{manifest}: {len(empty)} row(s) have no reference text, e.g. {empty[0]}")
    return items
