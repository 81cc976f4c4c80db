"""N-gram language models estimated from text: sentences read and spelled as LM tokens, interpolated
Witten-Bell n-grams, and the device's character and word models made of them.

Witten-Bell needs no tuning and behaves on the small texts a user has (their own transcripts, a list
of voice commands). Character n-grams of order 3 and up, and word n-grams of order 2 and up, seen
fewer than their `min_count` times are pruned, then every context gets the backoff weight that keeps
its distribution summing to one.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from edge_asr.lm import BOS, EOS, WORD_BOUNDARY, CharNgramLM, WordNgramLM
from edge_asr.text import TextNormalization

from .errors import QuantizeError
from .lm_files import LN10, ArpaEntries, char_lm_from_arpa_lines, open_text, word_lm_from_dicts, write_arpa
from .manifest import read_manifest

History = Tuple[str, ...]


def read_sentences(paths: Sequence[Path]) -> List[str]:
    """Sentences from text files (one per line, .gz allowed) or manifests (.csv, metadata.csv, .jsonl)."""
    sentences: List[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise QuantizeError(f"{path}: text file not found")
        if path.name.endswith((".txt", ".txt.gz")):
            sentences.extend(text_lines(path))
        else:
            sentences.extend(item.text for item in read_manifest(path))
    return sentences


def text_lines(path: Path) -> List[str]:
    """The non-blank lines of a UTF-8 text file (.gz allowed), stripped."""
    try:
        with open_text(path) as handle:
            return [line.strip() for line in handle if line.strip()]
    except UnicodeDecodeError as exc:  # raised mid-iteration, where nothing names the file
        raise QuantizeError(
            f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {Path(path).name} > utf8.txt`"
        ) from None


def tokens_of(text: str) -> List[str]:
    """A normalized sentence as LM tokens: its characters, with WORD_BOUNDARY between words."""
    return list(WORD_BOUNDARY.join(text.split()))


def lm_token_sentences(
    sentences: Iterable[str], normalization: TextNormalization, vocabulary: Sequence[str]
) -> Tuple[List[List[str]], int]:
    """Normalize each sentence as the model's labels were; drop those with characters it cannot spell."""
    spellable = set(vocabulary) | {WORD_BOUNDARY}
    kept: List[List[str]] = []
    skipped = 0
    for sentence in sentences:
        tokens = tokens_of(normalization(sentence))
        if tokens and all(t in spellable for t in tokens):
            kept.append(tokens)
        else:
            skipped += 1
    return kept, skipped


def read_word_lists(
    paths: Sequence[Path], normalization: TextNormalization, vocabulary: Sequence[str]
) -> Tuple[List[str], int]:
    """The distinct words of word lists (one a line, e.g. /usr/share/dict/american-english), normalized
    as the model's labels; lines that are not one word the model can spell are skipped and counted."""
    spellable = set(vocabulary)
    words: Dict[str, None] = {}  # insertion-ordered set: the same list gives the same model
    skipped = 0
    for path in paths:
        if not Path(path).is_file():
            raise QuantizeError(f"{path}: word list not found")
        for line in text_lines(path):
            normalized = normalization(line).split()
            if len(normalized) == 1 and all(ch in spellable for ch in normalized[0]):
                words.setdefault(normalized[0])
            else:
                skipped += 1
    return list(words), skipped


def estimate(
    sentences: Sequence[Sequence[str]],
    order: int = 6,
    min_count: int = 2,
    prune_from: int = 3,
    extra_unigrams: Iterable[str] = (),
) -> ArpaEntries:
    """Interpolated Witten-Bell n-grams, pruned and renormalized into ARPA entries (log10).

    N-grams of `prune_from` tokens or more seen fewer than `min_count` times are pruned. Each token of
    `extra_unigrams` that the sentences never use counts as seen once, with no context.
    """
    if order < 1:
        raise QuantizeError(f"--order must be 1 or more, got {order}")
    counts: Dict[History, Counter] = defaultdict(Counter)
    for tokens in sentences:
        seq = [BOS, *tokens, EOS]
        for i in range(1, len(seq)):
            for k in range(min(order - 1, i) + 1):
                counts[tuple(seq[i - k : i])][seq[i]] += 1
    for token in extra_unigrams:
        if token not in counts[()]:
            counts[()][token] = 1
    if not counts:
        raise QuantizeError("no usable sentence to build a language model from")
    totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}
    vocabulary_size = len(counts[()])
    memo: Dict[Tuple[History, str], float] = {}

    def interpolated(history: History, token: str) -> float:
        key = (history, token)
        if key not in memo:
            lower = interpolated(history[1:], token) if history else 1.0 / vocabulary_size
            seen = counts.get(history)
            if seen is None:
                memo[key] = lower
            else:
                total, types = totals[history]
                memo[key] = (seen[token] + types * lower) / (total + types)
        return memo[key]

    kept: Dict[History, Dict[str, float]] = {}
    for history, following in counts.items():
        n = len(history) + 1
        chosen = {
            t: interpolated(history, t) for t, c in following.items() if n < prune_from or c >= min_count
        }
        if chosen:
            kept[history] = chosen

    backoff: Dict[History, float] = {}

    def model_prob(history: History, token: str) -> float:
        weight = 1.0
        while True:
            found = kept.get(history, {}).get(token)
            if found is not None:
                return weight * found
            if not history:
                return weight * 1e-12
            weight *= backoff.get(history, 1.0)
            history = history[1:]

    for history in sorted(kept, key=len):
        if not history:
            continue
        mass = sum(kept[history].values())
        lower_mass = sum(model_prob(history[1:], t) for t in kept[history])
        if mass < 1.0 and lower_mass < 1.0:
            backoff[history] = (1.0 - mass) / (1.0 - lower_mass)

    entries: ArpaEntries = [[] for _ in range(order)]
    grams: Dict[History, float] = {h + (t,): p for h, following in kept.items() for t, p in following.items()}
    grams.setdefault((BOS,), 0.0)
    for gram in sorted(grams, key=lambda g: (len(g), g)):
        p = grams[gram]
        logprob = -99.0 if gram == (BOS,) else math.log10(p)
        bow = backoff.get(gram, 1.0)
        entries[len(gram) - 1].append((gram, logprob, math.log10(bow) if bow > 0 else -99.0))
    return [level for level in entries if level]


def to_model(entries: ArpaEntries) -> CharNgramLM:
    """ARPA entries as the model the device reads (through ARPA text, so both paths parse the same)."""
    text = io.StringIO()
    write_arpa(text, entries)
    text.seek(0)
    return char_lm_from_arpa_lines(text, "<estimated model>")


def word_model(
    sentences: Sequence[Sequence[str]], order: int = 3, min_count: int = 2, known_words: Iterable[str] = ()
) -> WordNgramLM:
    """A word n-gram LM from LM-token sentences (`lm_token_sentences`); n-grams of two words and more
    seen fewer than `min_count` times are pruned (every word of the text stays known). `known_words`
    (`read_word_lists`) the text lacks are known too, each as a word seen once."""
    words = ["".join(tokens).split(WORD_BOUNDARY) for tokens in sentences]
    ngrams: Dict[Tuple[str, ...], float] = {}
    backoffs: Dict[Tuple[str, ...], float] = {}
    for level in estimate(words, order, min_count, prune_from=2, extra_unigrams=known_words):
        for gram, logprob, backoff in level:
            ngrams[tuple(gram)] = logprob * LN10
            if backoff:
                backoffs[tuple(gram)] = backoff * LN10
    return word_lm_from_dicts(ngrams, backoffs, order)
