"""Build (or resume, or extend) a synthetic LJSpeech-format corpus.

Output folder::

    metadata.csv     LJSpeech rows "id|text|normalized_text": text = exactly what the engine read,
                     normalized_text = the label, TextNormalization()(text)
    wavs/<id>.wav    16 kHz mono int16
    utterances.csv   one row per utterance: id, split, engine, voice, speaker, family, licence, rate,
                     pitch, duration, source, original (the sentence before spoken-form rewriting)
    splits.json      split -> speakers, utterances, hours (held-out speakers never occur in train)
    train.csv valid.csv test.csv   manifests "path,text" (path relative to the manifest, text = label)
    corpus.json      the options the plan depends on (checked on resume) and the last run's speed

Every file is written atomically; WAVs as they are made, the tables at the end of each run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing
import signal
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import soundfile as sf

from edge_asr.atomic import write_text_atomic

from .engines import ENGINES, native_settings, prepare, voice_missing
from .plan import PlannedUtterance, Planner, ProsodyRange, pool_digest, prefer_short
from .render import RenderResult, render
from .sources import SOURCES, Sentence, load_sentences
from .voices import DEFAULT_TEST_SPEAKERS, DEFAULT_VALID_SPEAKERS, VOICES, Voice

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EXPECTED_SECONDS_PER_UTTERANCE = 3.5  # only sizes the next batch in --hours mode


class CorpusError(ValueError):
    """Bad options or an output folder made with other options (the message says what to do)."""


@dataclass
class CorpusOptions:
    """What to build. Exactly one of `hours` / `count` sets the size."""

    out: Path
    hours: Optional[float] = None
    count: Optional[int] = None
    seed: int = 0
    engines: Tuple[str, ...] = ENGINES
    voices: Tuple[str, ...] = ()  # registry keys; empty = every voice of `engines`
    sources: Tuple[str, ...] = tuple(SOURCES)
    workers: int = 2
    valid_speakers: Tuple[str, ...] = DEFAULT_VALID_SPEAKERS
    test_speakers: Tuple[str, ...] = DEFAULT_TEST_SPEAKERS
    min_words: int = 4
    max_words: int = 25
    prosody: ProsodyRange = field(default_factory=ProsodyRange)
    progress: bool = True
    # Manifests (CSV with a `text` column) whose sentences this corpus must not say: another corpus's
    # valid/test splits, so that a second corpus can add training voices without leaking their text.
    exclude: Tuple[Path, ...] = ()


@dataclass
class CorpusResult:
    out: Path
    utterances: int
    seconds: float
    new_utterances: int
    new_seconds: float
    wall_seconds: float
    failures: List[str]
    skipped_voices: Dict[str, str]
    per_split: Dict[str, Dict[str, float]]
    per_speaker: Dict[str, Dict[str, float]]


@dataclass
class _Totals:
    """Running sums of one build: audio seconds in the corpus, and what this run rendered."""

    seconds: float = 0.0
    new_seconds: float = 0.0
    new: int = 0


def available_voices(options: CorpusOptions) -> Tuple[List[Voice], Dict[str, str]]:
    """The voices to use, and voice key -> why it is skipped."""
    unknown = [e for e in options.engines if e not in ENGINES]
    if unknown:
        raise CorpusError(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    wanted = [VOICES[k] for k in options.voices] if options.voices else list(VOICES.values())
    bad = [k for k in options.voices if k not in VOICES]
    if bad:
        raise CorpusError(f"unknown voice(s) {', '.join(bad)}; see --list-engines")
    usable, skipped = [], {}
    for voice in wanted:
        if voice.engine not in options.engines:
            continue
        reason = voice_missing(voice)
        if reason:
            skipped[voice.key] = reason
        else:
            usable.append(voice)
    return usable, skipped


def split_of_speakers(options: CorpusOptions) -> Dict[str, str]:
    overlap = set(options.valid_speakers) & set(options.test_speakers)
    if overlap:
        raise CorpusError(f"speaker(s) {', '.join(sorted(overlap))} are both valid and test speakers")
    known = {v.speaker for v in VOICES.values()}
    unknown = (set(options.valid_speakers) | set(options.test_speakers)) - known
    if unknown:
        raise CorpusError(f"unknown held-out speaker(s) {', '.join(sorted(unknown))}; known: {sorted(known)}")
    splits = {s: "valid" for s in options.valid_speakers}
    splits.update({s: "test" for s in options.test_speakers})
    return splits


def excluded_labels(manifests: Sequence[Path]) -> Set[str]:
    """The `text` column of each manifest (labels, as the corpus writes them)."""
    labels: Set[str] = set()
    for path in manifests:
        try:
            with Path(path).open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if "text" not in (reader.fieldnames or []):
                    raise CorpusError(f"--exclude {path}: no 'text' column (expected a path,text manifest)")
                labels.update(row["text"] for row in reader)
        except OSError as exc:
            raise CorpusError(f"--exclude {path}: cannot read it ({exc})") from exc
    return labels


def usable_sentences(options: CorpusOptions) -> Tuple[List[Sentence], Set[str]]:
    """The sentences of `options.sources` a corpus may say, and the excluded labels left out."""
    try:
        sentences = load_sentences(options.sources, options.min_words, options.max_words, options.seed)
    except (ValueError, OSError) as exc:
        raise CorpusError(f"cannot read the sentences: {exc}") from exc
    banned = excluded_labels(options.exclude)
    if banned:
        before = len(sentences)
        sentences = [s for s in sentences if s.label not in banned]
        log.info("--exclude: %d of %d sentences dropped", before - len(sentences), before)
    return sentences, banned


def write_sentences(options: CorpusOptions, path: Path) -> int:
    """Write the label of every usable sentence, one a line: language-model text that never holds an
    excluded (e.g. validation or test) sentence. Returns how many were written."""
    sentences, _ = usable_sentences(options)
    write_text_atomic(path, "".join(f"{s.label}\n" for s in sentences))
    return len(sentences)


def plan_identity(
    options: CorpusOptions, planner: Planner, excluded: Sequence[str] = ()
) -> Dict[str, object]:
    """What utterance i depends on: a resumed run must match it exactly."""
    identity: Dict[str, object] = {
        "seed": options.seed,
        "voices": [v.key for v in planner.voices],
        "splits": planner.splits,
        "sources": list(options.sources),
        "min_words": options.min_words,
        "max_words": options.max_words,
        "prosody": asdict(options.prosody),
        "sentence_pool": {"size": len(planner), "digest": pool_digest(planner.sentences)},
    }
    if excluded:  # only then, so that corpora made before the option keep their identity
        digest = hashlib.sha256("\n".join(excluded).encode("utf-8")).hexdigest()[:16]
        identity["exclude"] = {"sentences": len(excluded), "digest": digest}
    return identity


def _check_resume(out: Path, identity: Dict[str, object]) -> None:
    path = out / "corpus.json"
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text())["plan"]
    except (ValueError, KeyError) as exc:
        raise CorpusError(f"{path} is unreadable ({exc}); remove it or use another --out") from exc
    if previous != identity:
        diff = sorted(k for k in identity if previous.get(k) != identity[k])
        raise CorpusError(
            f"{out} was built with other options ({', '.join(diff)} differ). Resume with the same "
            "--seed/--engines/--voices/splits/word limits and installed engines, or use a new --out."
        )


def _worker(args: Tuple[PlannedUtterance, Path]) -> RenderResult:
    return render(*args)


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group: only the parent should react (stop, write the tables);
    # a worker dying mid-task would leave the pool waiting for it forever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _batches(options: CorpusOptions, planner: Planner, done_seconds) -> Iterator[List[PlannedUtterance]]:
    """Successive groups of planned utterances until the requested size is reached."""
    index = 0
    if options.count is not None:
        total = min(options.count, len(planner))
        while index < total:
            yield [planner.item(i) for i in range(index, min(total, index + 256))]
            index += 256
        return
    target = float(options.hours or 0) * 3600.0
    while done_seconds() < target:
        if index >= len(planner):
            log.warning("sentence pool exhausted (%d sentences) before %.2f h", len(planner), target / 3600)
            return
        remaining = target - done_seconds()
        size = int(min(1000, max(16, remaining / EXPECTED_SECONDS_PER_UTTERANCE)))
        size = min(size, len(planner) - index)
        yield [planner.item(i) for i in range(index, index + size)]
        index += size


def build(options: CorpusOptions) -> CorpusResult:
    """Generate the corpus described by `options` into options.out (resuming what is there)."""
    if (options.hours is None) == (options.count is None):
        raise CorpusError("give exactly one of --hours or --count")
    if (options.hours or options.count or 0) <= 0:
        raise CorpusError("--hours / --count must be positive")
    out = Path(options.out)
    splits = split_of_speakers(options)
    voices, skipped = available_voices(options)
    for key, reason in sorted(skipped.items()):
        log.warning("voice %s skipped: %s", key, reason)
    if not voices:
        raise CorpusError("no voice of the chosen engines is installed: run scripts/install_tts.sh")
    present = {v.speaker for v in voices}
    for name in SPLITS[1:]:
        if not any(splits.get(s) == name for s in present):
            log.warning("split %s has no installed speaker: it will be empty", name)

    sentences, banned = usable_sentences(options)
    planner = Planner(prefer_short(sentences, options.seed), voices, splits, options.seed, options.prosody)
    if options.count is not None and options.count > len(planner):
        log.warning(
            "only %d usable sentences for --count %d: the corpus will be smaller", len(planner), options.count
        )
    identity = plan_identity(options, planner, sorted(banned))
    _check_resume(out, identity)
    wav_dir = out / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "corpus.json", json.dumps({"plan": identity}, indent=2) + "\n")

    existing = {p.stem for p in wav_dir.glob("*.wav") if not p.name.startswith(".")}
    results: Dict[int, Tuple[PlannedUtterance, float]] = {}
    failures: List[str] = []
    totals = _Totals()
    started = time.monotonic()

    from tqdm import tqdm  # desktop dependency (train extra)

    unit_total = options.count if options.count is not None else float(options.hours or 0) * 3600
    bar = tqdm(
        total=unit_total,
        unit="utt" if options.count else "s audio",
        disable=not options.progress,
        smoothing=0.05,
        mininterval=2.0,
    )
    shown = {"n": 0}

    def account(item: PlannedUtterance, duration: float, new: bool) -> None:
        results[item.index] = (item, duration)
        totals.seconds += duration
        if new:
            totals.new_seconds += duration
            totals.new += 1
        # Whole units only: tqdm prints fractional counts with every digit.
        now = len(results) if options.count else int(totals.seconds)
        bar.update(now - shown["n"])
        shown["n"] = now

    prepare(voices)
    pool = multiprocessing.Pool(options.workers, initializer=_worker_init) if options.workers > 1 else None
    # SIGTERM (kill, a session ending) stops like Ctrl-C: the tables still get written.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        for batch in _batches(options, planner, lambda: totals.seconds):
            todo = []
            for item in batch:
                if item.id in existing:
                    account(item, sf.info(str(wav_dir / f"{item.id}.wav")).duration, new=False)
                else:
                    todo.append((item, wav_dir))
            by_id = {item.id: item for item, _ in todo}
            rendered = pool.imap_unordered(_worker, todo, chunksize=4) if pool else map(_worker, todo)
            for result in rendered:
                if result.error:
                    failures.append(f"{result.id} {result.error}")
                    log.warning("utterance %s failed: %s", result.id, result.error)
                else:
                    account(by_id[result.id], result.duration, new=True)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_term)
        if pool:
            pool.terminate()
            pool.join()
        # Write the tables for whatever exists, also after an interruption or an error: the folder
        # stays usable and a rerun resumes.
        wall = time.monotonic() - started
        done = [results[i] for i in sorted(results)]
        per_split, per_speaker = write_tables(out, done, identity, wall, totals)
        bar.close()
    return CorpusResult(
        out=out,
        utterances=len(results),
        seconds=totals.seconds,
        new_utterances=totals.new,
        new_seconds=totals.new_seconds,
        wall_seconds=wall,
        failures=failures,
        skipped_voices=skipped,
        per_split=per_split,
        per_speaker=per_speaker,
    )


def read_metadata(corpus: Path) -> Dict[str, Tuple[str, str]]:
    """A corpus folder's metadata.csv: utterance id -> (the text the engine read, its training label)."""
    rows = {}
    for line in (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines():
        uid, said, label = line.split("|", 2)
        rows[uid] = (said, label)
    return rows


def _csv_text(rows: Sequence[Sequence[object]], header: Optional[Sequence[str]] = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(
    out: Path, done: Sequence[Tuple[PlannedUtterance, float]], identity, wall: float, totals: _Totals
):
    """metadata.csv, utterances.csv, the split manifests, splits.json and corpus.json."""
    metadata = "".join(f"{u.id}|{u.sentence.spoken}|{u.sentence.label}\n" for u, _ in done)
    write_text_atomic(out / "metadata.csv", metadata)
    side_rows = []
    manifests: Dict[str, List[Tuple[str, str]]] = {name: [] for name in SPLITS}
    per_split: Dict[str, Dict[str, float]] = {name: {"utterances": 0, "hours": 0.0} for name in SPLITS}
    per_speaker: Dict[str, Dict[str, float]] = defaultdict(lambda: {"utterances": 0, "hours": 0.0})
    speakers_of: Dict[str, set] = {name: set() for name in SPLITS}
    for u, duration in done:
        _, _, applied = native_settings(u.voice, u.prosody)
        side_rows.append([
            u.id, u.split, u.voice.engine, u.voice_name, u.voice.speaker, u.voice.family, u.voice.licence,
            f"{applied.rate:.3f}", f"{applied.pitch:.2f}", f"{duration:.3f}", u.sentence.source,
            u.sentence.original,
        ])  # fmt: skip
        manifests[u.split].append((f"wavs/{u.id}.wav", u.sentence.label))
        for table, key in ((per_split, u.split), (per_speaker, u.voice.speaker)):
            table[key]["utterances"] += 1
            table[key]["hours"] += duration / 3600.0
        speakers_of[u.split].add(u.voice.speaker)
    header = ["id", "split", "engine", "voice", "speaker", "family", "licence", "rate", "pitch", "duration",
              "source", "original"]  # fmt: skip
    write_text_atomic(out / "utterances.csv", _csv_text(side_rows, header))
    for name, rows in manifests.items():
        write_text_atomic(out / f"{name}.csv", _csv_text(rows, ["path", "text"]))
    splits = {
        name: {"speakers": sorted(speakers_of[name]), "utterances": int(per_split[name]["utterances"]),
               "hours": round(per_split[name]["hours"], 4)}
        for name in SPLITS
    }  # fmt: skip
    write_text_atomic(out / "splits.json", json.dumps(splits, indent=2) + "\n")
    speed = totals.new_seconds / wall if wall > 0 else 0.0
    summary = {
        "plan": identity,
        "utterances": len(done),
        "hours": round(sum(d for _, d in done) / 3600.0, 4),
        "per_speaker": {
            k: {"utterances": int(v["utterances"]), "hours": round(v["hours"], 4)}
            for k, v in sorted(per_speaker.items())
        },  # fmt: skip
        "last_run": {
            "new_utterances": totals.new,
            "new_audio_s": round(totals.new_seconds, 1),
            "wall_s": round(wall, 1),
            "audio_s_per_wall_s": round(speed, 1),
        },  # fmt: skip
    }
    write_text_atomic(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    return per_split, dict(per_speaker)
