"""Voice commands: which of a fixed set of phrases was said, or that none of them was.

A `Grammar` is a list of phrases, each with the slot values it stands for ("set a timer for ten
minutes" -> minutes=10). Written by hand one a line, or expanded from Home Assistant style templates
(`edge_asr.templates`: "(turn|switch) on [the] {area} light"), or loaded from the JSON that
`Grammar.save` writes (a Pi then needs no template parser).

Recognition scores every phrase exactly against the model's frame log-probabilities instead of
decoding text and looking it up: a model that spells "kitchen" as "kiton" still picks the right
command, because the phrase is the most likely of those allowed. The phrases are compiled into a
character trie over the bundle's vocabulary, and one CTC forward pass over the trie scores all of them
at once (phrases that share a beginning share its work); past `EXACT_NODES` trie nodes the pass keeps
only the nodes within `PRUNE_NATS` of the best (a trie-constrained beam), so 100k phrases stay fast.

Rejection: the best phrase is compared with the unconstrained best path (each frame's best token,
what free decoding would say). `confidence` is exp(-gap / labels): the log-likelihood the grammar
costs, per character of the phrase, as a probability-like number in (0, 1]. Speech outside the grammar
and noise cost much per character and come back as no match when it is below `min_confidence`.

`GrammarDecoder` is a `ctc.FrameDecoder`, so files (`EdgeTranscriber.recognize`) and live audio
(`EdgeTranscriber.stream(grammar=...)`) recognize commands through the same windowed path as text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import limits
from .atomic import PathLike, write_text_atomic
from .ctc import Vocabulary, best_path, token_runs
from .errors import InputError
from .phrases import (
    MAX_GRAMMAR_FILE_BYTES,
    MAX_PHRASES,
    Check,
    Phrase,
    is_template,
    no_check,
    phrases_from_json,
    phrases_json,
    text_lines,
)
from .spoken import spell_numbers
from .text import TextNormalization

EXACT_NODES = 2_000
"""Tries up to this many nodes are scored exactly; larger ones with pruning (a 1k-phrase grammar of
Home Assistant commands, 25k nodes: 148 ms exact, 15 ms pruned per 2 s utterance, same best phrase)."""
PRUNE_NATS = 30.0
"""With pruning, nodes whose forward score falls this far below the frame's best are dropped."""
DEFAULT_MIN_CONFIDENCE = 0.25
"""Picked on synthetic validation voices (benchmarks/commands.py); never on real recordings."""
NEG_INF = -np.inf
PHRASE_BYTES = 600
"""A phrase's Python objects (its Phrase, text, slots and token list) without the tokens themselves."""


@dataclass(frozen=True)
class CommandAlternative:
    """A phrase and how well it matched (see the module docstring for `confidence`)."""

    phrase: str
    slots: Dict[str, str]
    confidence: float


@dataclass(frozen=True)
class CommandMatch:
    """The result of recognizing one utterance against a grammar.

    Attributes:
        phrase: the recognized phrase as written in the grammar, or None: no command was said.
        slots: the phrase's slot values ({} without a match).
        confidence: the best phrase's confidence, also when it was rejected.
        alternatives: the best phrases, best first (including the recognized one).
        start, end: seconds of the best phrase's first and last character in the audio.
        heard: what free greedy decoding heard, for logs and debugging.
    """

    phrase: Optional[str]
    slots: Dict[str, str]
    confidence: float
    alternatives: Tuple[CommandAlternative, ...] = ()
    start: float = 0.0
    end: float = 0.0
    heard: str = ""

    @property
    def matched(self) -> bool:
        return self.phrase is not None

    def line(self) -> str:
        """One line for people: "turn on the light [area=kitchen] (0.93)", or "none (...)"."""
        if self.phrase is None:
            return f"none (best {self.confidence:.2f}; heard: {self.heard or '-'})"
        slots = " ".join(f"{name}={value}" for name, value in sorted(self.slots.items()))
        return f"{self.phrase}{f' [{slots}]' if slots else ''} ({self.confidence:.2f})"

    def to_dict(self) -> Dict[str, object]:
        return {
            "phrase": self.phrase,
            "slots": self.slots,
            "confidence": self.confidence,
            "start": self.start,
            "end": self.end,
            "heard": self.heard,
            "alternatives": [
                {"phrase": a.phrase, "slots": a.slots, "confidence": a.confidence} for a in self.alternatives
            ],
        }


class Grammar:
    """The phrases a command recognizer may return.

    Args:
        phrases: the allowed phrases (duplicates of the same text keep the first one's slots).
        max_phrases: InputError past this many.
        check: called per phrase; raises to abandon the work (`phrases.Check`).
    """

    def __init__(self, phrases: Iterable[Phrase], max_phrases: int = MAX_PHRASES, check: Check = no_check):
        unique: Dict[str, Phrase] = {}
        for phrase in phrases:
            check()
            if not phrase.text.strip():
                continue
            unique.setdefault(" ".join(phrase.text.split()), phrase)
            if len(unique) > max_phrases:
                raise InputError(
                    f"grammar has more than {max_phrases} phrases; split it or use fewer options"
                )
        if not unique:
            raise InputError("grammar has no phrases")
        self.phrases: List[Phrase] = list(unique.values())

    def __len__(self) -> int:
        return len(self.phrases)

    def __repr__(self) -> str:
        return f"Grammar({len(self)} phrases)"

    @classmethod
    def from_phrases(cls, phrases: Iterable[Union[str, Phrase]]) -> Grammar:
        """A grammar of plain phrases (strings) or `Phrase` objects."""
        return cls(p if isinstance(p, Phrase) else Phrase(p) for p in phrases)

    @classmethod
    def from_file(cls, path: PathLike) -> Grammar:
        """Read a phrase list (one a line, "#" comments), a template file, or JSON from `save`.

        Template syntax (`edge_asr.templates`) needs the `grammar` extra (hassil); a plain phrase
        list and JSON need nothing. Read with a size cap (`phrases.MAX_GRAMMAR_FILE_BYTES`).
        """
        where = Path(path)
        text = limits.read_text(where, MAX_GRAMMAR_FILE_BYTES, "grammar")
        if where.suffix == ".json":
            return cls(phrases_from_json(text, where))
        return cls.from_text(text, str(where))

    @classmethod
    def from_text(
        cls, text: str, where: str = "grammar", max_phrases: int = MAX_PHRASES, check: Check = no_check
    ) -> Grammar:
        """A phrase list or template file's text ("#" comments); templates need the `grammar` extra.
        Templates are counted before they are expanded: more than `max_phrases` is refused at once.
        `check` is called as the phrases are expanded and collected (`phrases.Check`)."""
        lines = text_lines(text)
        if is_template(lines):
            from .templates import expand_templates

            return cls(expand_templates(lines, where, max_phrases, check), max_phrases, check)
        return cls(map(Phrase, lines), max_phrases, check)

    def save(self, path: PathLike) -> None:
        """Write the expanded phrases as JSON (atomically), for devices without the template parser."""
        write_text_atomic(Path(path), phrases_json(self.phrases))

    def compile(
        self, vocabulary: Vocabulary, normalization: TextNormalization, check: Check = no_check
    ) -> CompiledGrammar:
        """The trie of the phrases' token ids over `vocabulary` (see `CompiledGrammar`); `check` is
        called as it is built (`phrases.Check`)."""
        return CompiledGrammar(self, vocabulary, normalization, check)


def count_phrases(text: str, where: str = "grammar", max_phrases: int = MAX_PHRASES) -> int:
    """How many phrases `text` (as `Grammar.from_text` reads it) makes, templates counted without
    being expanded (milliseconds whatever the count; duplicates included); InputError for templates
    past `max_phrases` or that cannot be used."""
    lines = text_lines(text)
    if is_template(lines):
        from .templates import count_templates

        return count_templates(lines, where, max_phrases)
    return len(lines)


def phrase_tokens(text: str, vocabulary: Vocabulary, normalization: TextNormalization) -> List[int]:
    """A phrase's token ids as the model spells it: numbers in words, the bundle's normalization,
    words separated by the word delimiter. InputError names characters the vocabulary lacks."""
    normalized = normalization(spell_numbers(text))
    index = {token: i for i, token in enumerate(vocabulary.tokens)}
    separator = vocabulary.word_delimiter if vocabulary.word_delimiter in index else " "
    ids: List[int] = []
    missing = set()
    for word_number, word in enumerate(normalized.split()):
        if word_number and separator in index:
            ids.append(index[separator])
        for char in word:
            if char in index:
                ids.append(index[char])
            else:
                missing.add(char)
    if missing:
        raise InputError(
            f"grammar phrase {text!r} has character(s) the model cannot spell: "
            f"{' '.join(sorted(missing))}; write them as words"
        )
    if not ids:
        raise InputError(f"grammar phrase {text!r} is empty after normalization")
    return ids


class CompiledGrammar:
    """A grammar's phrases as a trie of token ids, in breadth-first order.

    Node 0 is the root. Every other node has one token, its parent (`parent[n] < n`), and `skip[n]`:
    the node before its parent when the parent is a word delimiter (so a model that runs two words
    together without emitting the delimiter still reaches the next word), else -1. The children of a
    node are contiguous (`first_child`, `child_count`). `phrase_node[i]` is where phrase i ends.
    """

    def __init__(
        self,
        grammar: Grammar,
        vocabulary: Vocabulary,
        normalization: TextNormalization,
        check: Check = no_check,
    ):
        self.grammar = grammar
        self.vocabulary = vocabulary
        self.labels = []
        for phrase in grammar.phrases:
            check()
            self.labels.append(phrase_tokens(phrase.text, vocabulary, normalization))
        delimiter = {i for i, t in enumerate(vocabulary.tokens) if vocabulary.is_delimiter(t)}
        # Build the trie with dicts, then number nodes breadth-first.
        children: List[Dict[int, int]] = [{}]
        tokens = [-1]
        ends = []
        for labels in self.labels:
            check()
            node = 0
            for token in labels:
                child = children[node].get(token)
                if child is None:
                    child = children[node][token] = len(tokens)
                    children.append({})
                    tokens.append(token)
                node = child
            ends.append(node)
        order = [0]
        for node in order:  # breadth-first: grows while iterating
            order.extend(children[node].values())
        number = np.empty(len(order), dtype=np.int64)
        number[order] = np.arange(len(order))
        self.tokens = np.array([tokens[n] for n in order], dtype=np.int64)
        parent = np.zeros(len(order), dtype=np.int64)
        first_child = np.zeros(len(order), dtype=np.int64)
        child_count = np.zeros(len(order), dtype=np.int64)
        for new, old in enumerate(order):
            if not new % 1024:
                check()
            kids = [number[c] for c in children[old].values()]
            child_count[new] = len(kids)
            first_child[new] = kids[0] if kids else 0
            for kid in kids:
                parent[kid] = new
        self.parent = parent
        self.first_child = first_child
        self.child_count = child_count
        is_delimiter = np.isin(self.tokens, list(delimiter)) if delimiter else np.zeros(len(order), bool)
        self.is_delimiter = is_delimiter
        self.skip = np.where(is_delimiter[parent] & (np.arange(len(order)) > 0), parent[parent], -1)
        self.skip[0] = -1
        # A token repeated right after itself needs a blank between (CTC): no direct transition.
        self.repeat = self.tokens[parent] == self.tokens
        self.repeat_skip = np.where(
            self.skip >= 0, self.tokens[np.maximum(self.skip, 0)] == self.tokens, True
        )
        self.phrase_node = number[ends]

    @property
    def nodes(self) -> int:
        return int(self.tokens.size)

    @property
    def nbytes(self) -> int:
        """About how much memory the compiled grammar holds: its arrays, plus its phrases and their
        token lists (`PHRASE_BYTES` each and 8 bytes a token; measured: about 1 KB a phrase of 35
        characters in all)."""
        arrays = (self.tokens, self.parent, self.first_child, self.child_count, self.skip, self.repeat)
        tokens = sum(len(labels) for labels in self.labels)
        return sum(a.nbytes for a in arrays) + len(self.labels) * PHRASE_BYTES + tokens * 8


class GrammarDecoder:
    """A `ctc.FrameDecoder` that recognizes one utterance against a compiled grammar.

    `push` advances the CTC forward pass over the trie as log-probabilities arrive (so the work is
    spread over the utterance); `finish` returns the best accepted phrase's frame alignment (or all
    blanks when nothing was accepted), in the form `ctc.decode` reads, and sets `match`.

    Args:
        grammar: the compiled grammar.
        frame_seconds: seconds per frame (for the match's start and end).
        min_confidence: below it, the best phrase is rejected (`match.phrase` is None).
        alternatives: how many of the best phrases `match.alternatives` lists.
        prune: None chooses by trie size (exact up to `EXACT_NODES`); True/False forces it.
    """

    def __init__(
        self,
        grammar: CompiledGrammar,
        frame_seconds: float,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        alternatives: int = 5,
        prune: Optional[bool] = None,
    ):
        limits.MIN_CONFIDENCE.check(min_confidence, "min_confidence")
        self.grammar = grammar
        self.frame_seconds = frame_seconds
        self.min_confidence = min_confidence
        self.alternatives = max(1, alternatives)
        self.prune = grammar.nodes > EXACT_NODES if prune is None else prune
        n = grammar.nodes
        self._blank_end = np.full(n, NEG_INF)  # log P(frames so far, path at node, last frame blank)
        self._token_end = np.full(n, NEG_INF)  # ... last frame the node's token
        self._blank_end[0] = 0.0
        self._alive = np.zeros(1, dtype=np.int64)  # with pruning: the nodes with a finite score
        self._log_probs: List[np.ndarray] = []
        self.match: Optional[CommandMatch] = None

    def push(self, log_probs: np.ndarray) -> None:
        vocab = self.grammar.vocabulary
        if log_probs.ndim != 2 or log_probs.shape[1] != len(vocab.tokens):
            raise ValueError(
                f"expected [frames, {len(vocab.tokens)}] log-probabilities, got {log_probs.shape}"
            )
        rows = log_probs.astype(np.float64)
        self._log_probs.append(log_probs)
        for row in rows:
            self._step(row)

    def _step(self, row: np.ndarray) -> None:
        """One frame of the forward pass: over every node, or with pruning over the nodes alive and
        those they can reach (the rest stay -inf, so they need no work)."""
        blank, token = self._blank_end, self._token_end
        if not self.prune:
            new_token = self._arrive(slice(1, None), row)
            blank[:] = np.logaddexp(blank, token) + row[self.grammar.vocabulary.blank_id]
            token[1:] = new_token
            return
        nodes = self._reachable()
        inner = nodes[nodes > 0]
        new_token = self._arrive(inner, row)
        blank[nodes] = np.logaddexp(blank[nodes], token[nodes]) + row[self.grammar.vocabulary.blank_id]
        token[inner] = new_token
        ends_blank, ends_token = blank[nodes], token[nodes]
        floor = max(ends_blank.max(), ends_token.max()) - PRUNE_NATS
        blank[nodes[ends_blank < floor]] = NEG_INF
        token[nodes[ends_token < floor]] = NEG_INF
        self._alive = nodes[(ends_blank >= floor) | (ends_token >= floor)]

    def _arrive(self, index: Union[slice, np.ndarray], row: np.ndarray) -> np.ndarray:
        """log P(path at node `index`, last frame its token) after this frame, from the last frame's
        scores: staying on the token, or entering it from the parent (or from before a skipped
        word delimiter)."""
        g = self.grammar
        blank, token = self._blank_end, self._token_end
        parent = g.parent[index]
        stay = np.logaddexp(token[index], blank[parent])
        enter = np.where(g.repeat[index], NEG_INF, token[parent])
        arrive = np.logaddexp(stay, enter)
        skip = g.skip[index]
        has_skip = skip >= 0
        if has_skip.any():
            source = np.maximum(skip, 0)
            jump = np.logaddexp(blank[source], np.where(g.repeat_skip[index], NEG_INF, token[source]))
            arrive = np.where(has_skip, np.logaddexp(arrive, jump), arrive)
        result: np.ndarray = arrive + row[g.tokens[index]]
        return result

    def _reachable(self) -> np.ndarray:
        """Nodes that can have a path this frame: those alive, their children and, past a delimiter
        child, its children (the delimiter skip); sorted, the root included while alive."""
        g = self.grammar
        kids = _children(g, self._alive)
        delimiters = kids[g.is_delimiter[kids]]
        reachable: np.ndarray = np.unique(np.concatenate((self._alive, kids, _children(g, delimiters))))
        return reachable

    def phrase_scores(self) -> np.ndarray:
        """log P(audio so far | phrase) for each phrase (-inf where it cannot fit or was pruned)."""
        ends = self.grammar.phrase_node
        scores: np.ndarray = np.logaddexp(self._blank_end[ends], self._token_end[ends])
        return scores

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        g = self.grammar
        vocab = g.vocabulary
        log_probs = (
            np.concatenate(self._log_probs)
            if self._log_probs
            else np.zeros((0, len(vocab.tokens)), np.float32)
        )
        frames = log_probs.shape[0]
        greedy, greedy_scores = best_path(log_probs, vocab.blank_id)
        heard = vocab.spell(_collapse(greedy, vocab))
        free_score = float(greedy_scores.sum(dtype=np.float64))  # the unconstrained best path
        scores = self.phrase_scores()
        ranked = [
            int(i) for i in np.argsort(-scores, kind="stable")[: self.alternatives] if np.isfinite(scores[i])
        ]

        def confidence(i: int) -> float:
            gap = max(0.0, free_score - float(scores[i]))
            return round(math.exp(-gap / len(g.labels[i])), 4)

        alternatives = tuple(
            CommandAlternative(g.grammar.phrases[i].text, g.grammar.phrases[i].slot_dict, confidence(i))
            for i in ranked
        )
        ids = np.full(frames, vocab.blank_id, dtype=np.int32)
        frame_scores = np.zeros(frames, dtype=np.float32)
        best = ranked[0] if ranked else None
        if best is None or alternatives[0].confidence < self.min_confidence:
            top = alternatives[0].confidence if alternatives else 0.0
            self.match = CommandMatch(None, {}, top, alternatives, heard=heard)
            return ids, frame_scores
        emitted, last = align(log_probs, g.labels[best], vocab.blank_id)
        for frame, token in zip(emitted, g.labels[best]):
            ids[frame] = token
            frame_scores[frame] = log_probs[frame, token]
        phrase = g.grammar.phrases[best]
        self.match = CommandMatch(
            phrase.text,
            phrase.slot_dict,
            alternatives[0].confidence,
            alternatives,
            start=round(float(emitted[0]) * self.frame_seconds, 3),
            end=round(float(last[-1] + 1) * self.frame_seconds, 3),
            heard=heard,
        )
        return ids, frame_scores


def _children(g: CompiledGrammar, nodes: np.ndarray) -> np.ndarray:
    counts = g.child_count[nodes]
    if not counts.sum():
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(g.first_child[nodes], counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    children: np.ndarray = starts + offsets
    return children


def _collapse(ids: np.ndarray, vocab: Vocabulary) -> List[int]:
    return [int(t) for t in token_runs(ids, vocab.silent_ids())[0]]


def align(log_probs: np.ndarray, labels: Sequence[int], blank_id: int) -> Tuple[np.ndarray, np.ndarray]:
    """CTC Viterbi alignment: the first and last frame of each label on the most likely path.

    Assumes the labels fit (at least len(labels) frames, plus one per repeated pair).
    """
    frames = log_probs.shape[0]
    states = np.full(2 * len(labels) + 1, blank_id, dtype=np.int64)
    states[1::2] = labels
    size = states.size
    can_skip = np.zeros(size, dtype=bool)  # from s-2: a label not equal to the one two states back
    can_skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(size, NEG_INF)
    score[0] = log_probs[0, blank_id]
    score[1] = log_probs[0, states[1]]
    back = np.zeros((frames, size), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    rows = log_probs.astype(np.float64)
    for t in range(1, frames):
        stay = score
        step = np.concatenate(([NEG_INF], score[:-1]))
        jump = np.where(can_skip, np.concatenate(([NEG_INF, NEG_INF], score[:-2])), NEG_INF)
        choice = np.argmax(np.stack((stay, step, jump)), axis=0)
        score = np.choose(choice, (stay, step, jump)) + rows[t, states]
        back[t] = choice
    state = size - 1 if score[-1] >= score[-2] else size - 2
    first = np.zeros(len(labels), dtype=np.int64)
    last = np.full(len(labels), -1, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        if state % 2 == 1:
            first[state // 2] = t  # overwritten down to the label's first frame
            if last[state // 2] < 0:
                last[state // 2] = t
        state -= int(back[t, state])
    return first, last
