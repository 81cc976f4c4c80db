"""Training data: read LJSpeech and CSV manifests, check every row, split, and save the splits.

Bad rows are skipped with a reason rather than crashing hours into training: missing, unreadable or
empty audio, empty transcripts, characters outside the vocabulary, audio shorter than the model's
receptive field and labels too long for CTC at the audio's frame count. `FilterReport.summary()` is
what the CLI prints; `dropped.csv` in the run folder lists every dropped row.
"""

from __future__ import annotations

import csv
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import soundfile as sf

from edge_asr.atomic import write_text_atomic
from edge_asr.audio import prepare_array, truncated_wav
from edge_asr.text import TextNormalization

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
LJSPEECH_METADATA = "metadata.csv"

# Reason codes -> what the summary says. The order is the order checks run in.
REASONS: Dict[str, str] = {
    "malformed_row": "malformed manifest row",
    "empty_transcript": "empty transcript",
    "missing_audio": "audio file missing",
    "unreadable_audio": "unreadable audio",
    "truncated_audio": "truncated WAV (the header promises more audio than the file holds)",
    "empty_audio": "empty audio",
    "non_finite_audio": "audio with NaN or infinite samples",
    "too_short": "audio shorter than the model's receptive field / --min-seconds",
    "too_long": "audio longer than --max-seconds",
    "out_of_vocabulary": "characters outside the vocabulary",
    "label_too_long": "transcript too long for CTC at this audio length",
}


class DataError(ValueError):
    """The data sources themselves are unusable (not a bad row: a bad file or no usable rows at all)."""


@dataclass
class Utterance:
    """One labelled recording.

    Attributes:
        path: absolute path of the audio file.
        text: the transcript as written in the manifest.
        origin: "manifest:line" for messages.
        samples: length at 16 kHz (filled in by `check_audio`).
        label: the normalized transcript the model learns.
    """

    path: str
    text: str
    origin: str
    samples: int = 0
    label: str = ""

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


@dataclass
class Dropped:
    utterance: Utterance
    reason: str
    detail: str = ""


@dataclass
class FilterReport:
    """What was kept and what was dropped, and why."""

    kept: int = 0
    dropped: List[Dropped] = field(default_factory=list)

    def drop(self, utterance: Utterance, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.dropped.append(Dropped(utterance, reason, detail))

    def counts(self) -> Dict[str, int]:
        counts = Counter(d.reason for d in self.dropped)
        return {reason: counts[reason] for reason in REASONS if counts[reason]}

    def summary(self, examples: int = 2) -> str:
        total = self.kept + len(self.dropped)
        if not self.dropped:
            return f"kept all {total} rows"
        lines = [f"dropped {len(self.dropped)} of {total} rows (kept {self.kept}):"]
        for reason, count in self.counts().items():
            shown = [d for d in self.dropped if d.reason == reason][:examples]
            samples = "; ".join(f"{d.utterance.origin} {d.detail}".strip() for d in shown)
            lines.append(f"  {count:6d}  {REASONS[reason]}  (e.g. {samples})")
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        rows = [
            [d.utterance.origin, d.utterance.path, d.utterance.text, d.reason, d.detail] for d in self.dropped
        ]
        write_text_atomic(path, _csv_text(["origin", "path", "text", "reason", "detail"], rows))


# ----------------------------------------------------------------------------------------------
# reading sources


def read_source(source: str, report: FilterReport) -> List[Utterance]:
    """Rows of an LJSpeech dataset (folder or metadata.csv) or a CSV manifest with `path,text` columns."""
    path = Path(source)
    text = path / LJSPEECH_METADATA if path.is_dir() else path
    try:
        return _read_source(path, report)
    except UnicodeDecodeError as exc:
        # A traceback here used to be all a Windows-1252 or Latin-1 manifest got.
        raise DataError(
            f"{text}: not UTF-8 text (it holds byte 0x{exc.object[exc.start]:02x}, which UTF-8 does not "
            "allow there); save the manifest as UTF-8, e.g. `iconv -f cp1252 -t utf-8 OLD > NEW`"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{text}: not a readable CSV manifest ({exc})") from None


def _check_text(path: Path) -> None:
    """Refuse binary files (an audio file given as the manifest): csv reads NUL bytes as text."""
    if path.is_file():
        with open(path, "rb") as handle:
            if b"\0" in handle.read(1 << 16):
                raise DataError(
                    f"{path}: binary data (NUL bytes), not a text manifest; is it an audio file? Pass the "
                    "CSV manifest (path,text) or the LJSpeech folder"
                )


def _read_source(path: Path, report: FilterReport) -> List[Utterance]:
    if path.is_dir():
        if (path / LJSPEECH_METADATA).is_file():
            return _read_ljspeech(path / LJSPEECH_METADATA, report)
        raise DataError(
            f"{path}: folder has no {LJSPEECH_METADATA}; pass an LJSpeech folder (metadata.csv + wavs/) "
            "or a CSV manifest with a `path,text` header"
        )
    if not path.is_file():
        raise DataError(f"{path}: data source not found (expected an LJSpeech folder or a CSV manifest)")
    _check_text(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
    header = [c.strip().lower() for c in next(csv.reader([first]), [])]
    if "path" in header and "text" in header:
        return _read_manifest(path, report)
    if "|" in first or path.name == LJSPEECH_METADATA:
        return _read_ljspeech(path, report)
    raise DataError(
        f"{path}: not a manifest this tool reads. A CSV manifest needs a header with `path` and `text` "
        f"columns (found {header}); an LJSpeech metadata.csv has `id|text|normalized_text` rows."
    )


def _read_manifest(path: Path, report: FilterReport) -> List[Utterance]:
    rows: List[Utterance] = []
    base = path.parent.resolve()
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        for line, row in enumerate(reader, start=2):
            audio = (row.get(fields["path"]) or "").strip()
            text = row.get(fields["text"]) or ""
            origin = f"{path.name}:{line}"
            if not audio:
                report.drop(Utterance("", text, origin), "malformed_row", "(no path)")
                continue
            rows.append(Utterance(str((base / audio).resolve()), text, origin))
    return rows


def _read_ljspeech(path: Path, report: FilterReport) -> List[Utterance]:
    """LJSpeech: `id|text|normalized_text`, audio in wavs/ID.wav beside metadata.csv.

    The normalized column (numbers spelled out) is preferred when present: a CTC model cannot learn
    to read "1885" from the sound "eighteen eighty-five".
    """
    _check_text(path)
    rows: List[Utterance] = []
    wavs = path.parent.resolve() / "wavs"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        # LJSpeech text holds bare quotes: no quoting, or a quote would swallow the following lines.
        for line, fields in enumerate(csv.reader(handle, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
            origin = f"{path.name}:{line}"
            if not fields or not any(f.strip() for f in fields):
                continue
            if len(fields) < 2 or not fields[0].strip():
                report.drop(Utterance("", "|".join(fields), origin), "malformed_row", "(expected id|text)")
                continue
            ident = fields[0].strip()
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            name = ident if Path(ident).suffix else ident + ".wav"
            rows.append(Utterance(str(wavs / name), text, origin))
    return rows


def read_sources(sources: Sequence[str], report: FilterReport) -> List[Utterance]:
    rows: List[Utterance] = []
    for source in sources:
        rows.extend(read_source(source, report))
    return rows


# ----------------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class AudioLimits:
    """Length limits in 16 kHz samples; `frames` maps samples to the model's output frames."""

    min_samples: int
    max_samples: int
    min_frames: int
    frames: Callable[[int], int]


def normalize_labels(
    rows: Iterable[Utterance], normalization: TextNormalization, report: FilterReport
) -> List[Utterance]:
    kept = []
    for row in rows:
        row.label = normalization(row.text)
        if not row.label:
            report.drop(row, "empty_transcript", f"({row.text!r})" if row.text.strip() else "")
            continue
        kept.append(row)
    return kept


def check_audio(
    rows: Iterable[Utterance], limits: AudioLimits, report: FilterReport, progress: bool = False
) -> List[Utterance]:
    """Read each file's header (cheap) for existence, readability and length."""
    items = list(rows)
    iterator: Iterable[Utterance] = items
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(items, desc="checking audio", unit="file", leave=False)
    kept = []
    for row in iterator:
        path = Path(row.path)
        if not path.is_file():
            report.drop(row, "missing_audio", f"({row.path})")
            continue
        try:
            info = sf.info(str(path))
        except Exception as exc:  # libsndfile raises several types for the same "cannot read this"
            report.drop(row, "unreadable_audio", f"({path.name}: {str(exc).splitlines()[0][:80]})")
            continue
        # The device refuses a cut-off WAV (libsndfile would read what is there); so must training.
        shortfall = truncated_wav(path)
        if shortfall:
            report.drop(row, "truncated_audio", f"({path.name}: {shortfall[1]} of {shortfall[0]} bytes)")
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            report.drop(row, "empty_audio", f"({path.name})")
            continue
        if info.subtype in FLOAT_SUBTYPES and not all_finite(path):
            # One NaN sample made every gradient NaN and every saved tensor NaN, with exit 0.
            report.drop(row, "non_finite_audio", f"({path.name})")
            continue
        row.samples = int(info.frames * SAMPLE_RATE // info.samplerate)
        frames = limits.frames(row.samples)
        if row.samples < limits.min_samples or frames < limits.min_frames:
            report.drop(row, "too_short", f"({row.seconds:.3f} s)")
            continue
        if row.samples > limits.max_samples:
            report.drop(row, "too_long", f"({row.seconds:.1f} s)")
            continue
        kept.append(row)
    return kept


FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # integer PCM cannot hold NaN or Inf


def all_finite(path: Path, block_frames: int = 1 << 16) -> bool:
    """Whether every sample of a (float) audio file is a finite number; read in blocks."""
    try:
        for block in sf.blocks(str(path), blocksize=block_frames, dtype="float64", always_2d=True):
            if not np.isfinite(block).all():
                return False
    except Exception:  # noqa: BLE001 - a read error is not a NaN; loading reports it later
        return True
    return True


def ctc_min_frames(label_ids: Sequence[int]) -> int:
    """Frames CTC needs for a label: one per token plus a blank between each repeated pair."""
    repeats = sum(1 for a, b in zip(label_ids, label_ids[1:]) if a == b)
    return len(label_ids) + repeats


def check_labels(
    rows: Iterable[Utterance],
    vocabulary: Dict[str, int],
    encode: Callable[[str], List[int]],
    frames: Callable[[int], int],
    report: FilterReport,
) -> List[Utterance]:
    kept = []
    for row in rows:
        unknown = sorted({ch for ch in row.label.replace(" ", "") if ch not in vocabulary})
        if unknown:
            report.drop(row, "out_of_vocabulary", f"({''.join(unknown)!r})")
            continue
        needed = ctc_min_frames(encode(row.label))
        available = frames(row.samples)
        if needed > available:
            report.drop(row, "label_too_long", f"({needed} label frames > {available} audio frames)")
            continue
        kept.append(row)
    return kept


# ----------------------------------------------------------------------------------------------
# split and save


def split_rows(
    rows: Sequence[Utterance], fraction: float, seed: int
) -> Tuple[List[Utterance], List[Utterance]]:
    """Seeded train/validation split; at least one row each side when there are two or more rows."""
    if len(rows) < 2:
        raise DataError(f"need at least 2 usable utterances to split train/validation, have {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = min(len(rows) - 1, max(1, round(fraction * len(rows))))
    val_ids = set(order[:n_val])
    train = [r for i, r in enumerate(rows) if i not in val_ids]
    val = [r for i, r in enumerate(rows) if i in val_ids]
    return train, val


def write_split(rows: Sequence[Utterance], path: Path) -> None:
    """A split as a CSV manifest (absolute paths) that --data/--validation-data read back."""
    body = [[r.path, r.text, f"{r.seconds:.3f}", r.origin] for r in rows]
    write_text_atomic(path, _csv_text(["path", "text", "seconds", "origin"], body))


def _csv_text(header: List[str], rows: List[List[str]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# audio


def load_audio(path: str) -> np.ndarray:
    """Decode a file to mono float32 at 16 kHz (soundfile + soxr via edge_asr's resampler)."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return prepare_array(samples, rate, SAMPLE_RATE, name=path)


def summarize(rows: Sequence[Utterance]) -> str:
    hours = sum(r.samples for r in rows) / SAMPLE_RATE / 3600
    return f"{len(rows)} utterances, {hours:.2f} h"
