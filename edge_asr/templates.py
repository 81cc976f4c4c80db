"""Home Assistant style sentence templates -> the phrases of a `grammar.Grammar`, with slot values.

The template syntax is Home Assistant's (parsed by its own library, hassil, from the `grammar`
extra), so templates Pi users already write for Assist work here::

    # lights
    (turn | switch) (on | off) [the] {area} light[s]
    set [a] timer for {minutes} minute[s]
    what's the weather [like] [<today>]

    {area} = kitchen | living room | bedroom      # a list: the slot value is the spoken text
    {scene} = movie night:movie | good night:night  # spoken:value
    {minutes} = 1-60                               # a range, spoken in words ("twenty one")
    <today> = today | right now                   # an expansion rule

`(a | b)` alternatives, `[x]` optional, `{list}` or `{list:slot}` a list (slot named after the list
unless given), `{name:1-60}` an inline range, `<rule>` an expansion rule. hassil only parses; the
expansion and its slots are ours (hassil's own sampler drops the slot values).

Templates are counted before anything is expanded, and refused past the caller's phrase cap
(`phrases.MAX_PHRASES` at most). Rules make a template a graph: 300 bytes of rules that each use the
one before four times describe 2**(4**10) phrases. So the count is memoized per rule (each rule is
counted once, however often it is used) and saturates at `SATURATED` (it never builds a number larger
than that): a hostile template is refused in milliseconds with a one-line error.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import InputError
from .phrases import (
    MAX_GRAMMAR_FILE_BYTES,
    MAX_PHRASES,
    Check,
    Phrase,
    is_template,
    no_check,
    phrases_json,
    text_lines,
)
from .spoken import number_to_words

Expansion = Tuple[str, Tuple[Tuple[str, str], ...]]
_DEFINITION = re.compile(r"^(\{[^{}:]+\}|<[^<>]+>)\s*=\s*(.+)$")
_INLINE_RANGE = re.compile(r"\{(\w+)(?::(\w+))?:(\d+)(?:-|\.\.)(\d+)\}")
_RANGE = re.compile(r"^(\d+)\s*(?:-|\.\.)\s*(\d+)$")
MAX_RANGE = 10_000
AVERAGE_CHARS = 100
"""The phrases of a grammar may hold this many characters each on average (memory grows with them)."""
SATURATED = 10**15
"""Counts stop growing here ("more than 10^15"): far past any cap, and cheap to multiply."""


def expand_templates(
    lines: Sequence[str], where: str = "grammar", max_phrases: int = MAX_PHRASES, check: Check = no_check
) -> List[Phrase]:
    """The phrases of template `lines` (comments already removed); InputError, before expanding,
    when they would be more than `max_phrases`. `check` is called as they expand (`phrases.Check`)."""
    return expand_sentences(*_definitions(lines, where), where, max_phrases, check)


def count_templates(lines: Sequence[str], where: str = "grammar", max_phrases: int = MAX_PHRASES) -> int:
    """How many phrases template `lines` expand to, counted without expanding them (milliseconds,
    whatever the count: a server checks this before it queues the expansion); InputError past
    `max_phrases` or for templates that cannot be used."""
    return _parse_counted(*_definitions(lines, where), where, max_phrases)[2]


def _definitions(
    lines: Sequence[str], where: str
) -> Tuple[List[str], Dict[str, List[Tuple[str, str]]], Dict[str, str]]:
    """Template `lines` as (sentence templates, lists, rule texts); InputError without hassil, saying
    how to install it."""
    try:
        import hassil  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        raise InputError(
            f"{where} uses template syntax, which needs hassil: pip install hassil (or, from a clone of "
            "edge-asr, pip install '.[grammar]'); or expand it on another machine with "
            "`python -m edge_asr.templates FILE OUT.json` and use the JSON"
        ) from None
    lists: Dict[str, List[Tuple[str, str]]] = {}
    rule_text: Dict[str, str] = {}
    templates: List[str] = []
    for line in lines:
        definition = _DEFINITION.match(line)
        if definition is None:
            templates.append(_inline_ranges(line, lists, where))
            continue
        name, body = definition.group(1)[1:-1].strip(), definition.group(2).strip()
        if definition.group(1).startswith("<"):
            rule_text[name] = body
        else:
            lists[name] = _list_values(name, body, where)
    if not templates:
        raise InputError(f"{where}: no sentence templates (only definitions)")
    return templates, lists, rule_text


def expand_sentences(
    templates: Sequence[str],
    lists: Dict[str, List[Tuple[str, str]]],
    rule_text: Dict[str, str],
    where: str = "grammar",
    max_phrases: int = MAX_PHRASES,
    check: Check = no_check,
) -> List[Phrase]:
    """Every phrase of the `templates` (hassil syntax), with `lists` (name -> (spoken, value) pairs)
    and expansion rules (`rule_text`: name -> template) already known; at most `max_phrases`."""
    expander, parsed, _ = _parse_counted(templates, lists, rule_text, where, max_phrases, check)
    phrases: List[Phrase] = []
    chars = 0
    most_chars = max_phrases * AVERAGE_CHARS  # memory grows with the text, not only the phrase count
    for expression in parsed:
        for text, slots in expander.expand(expression, depth=0):
            phrases.append(Phrase(" ".join(text.split()), slots))
            chars += len(text)
            if len(phrases) > max_phrases:
                raise InputError(f"{where}: the templates expand to more than {max_phrases} phrases")
            if chars > most_chars:
                raise InputError(
                    f"{where}: the templates expand to more than {most_chars} characters of phrases "
                    f"({AVERAGE_CHARS} a phrase for {max_phrases} phrases); use shorter list values"
                )
    return phrases


def _parse_counted(
    templates: Sequence[str],
    lists: Dict[str, List[Tuple[str, str]]],
    rule_text: Dict[str, str],
    where: str,
    max_phrases: int,
    check: Check = no_check,
) -> Tuple[_Expander, List[Any], int]:
    """The templates parsed, their expander, and how many phrases they make, counted before anything
    is expanded: InputError past `max_phrases` (expanding millions would take minutes, then fail)."""
    from hassil import parse_sentence  # type: ignore[import-not-found,import-untyped,unused-ignore]

    def parse(text: str) -> Any:
        try:
            return parse_sentence(text)
        except Exception as exc:  # hassil raises several types for bad syntax
            raise InputError(f"{where}: cannot parse template {text!r}: {exc}") from None

    rules = {name: parse(text) for name, text in rule_text.items()}
    expander = _Expander(lists, rules, where, check)
    parsed = [parse(template).expression for template in templates]
    total = saturating_sum(expander.count(expression, depth=0) for expression in parsed)
    if total > max_phrases:
        raise InputError(
            f"{where}: the templates expand to {describe_count(total)} phrases, and at most {max_phrases} "
            "are taken; use fewer optional words, alternatives or list values"
        )
    return expander, parsed, total


def saturating_sum(counts: Iterable[int]) -> int:
    """The sum, or `SATURATED` when it reaches that."""
    total = 0
    for count in counts:
        total = min(SATURATED, total + count)
    return total


def saturating_product(counts: Iterable[int]) -> int:
    """The product, or `SATURATED` when it reaches that (0 when any factor is 0)."""
    total = 1
    for count in counts:
        if count == 0:
            return 0
        total = min(SATURATED, total * count)
    return total


def describe_count(count: int) -> str:
    return f"more than {SATURATED:.0e}".replace("e+", "e") if count >= SATURATED else str(count)


def sample_sentences(
    templates: Sequence[str],
    lists: Dict[str, List[Tuple[str, str]]],
    rule_text: Dict[str, str],
    per_template: int,
    seed: int = 0,
    where: str = "grammar",
) -> List[Phrase]:
    """Like `expand_sentences`, but a template with more than `per_template` expansions gives that
    many drawn at random (uniformly over its expansions): test sets from templates too large to use
    whole, such as Home Assistant's own."""
    import random

    from hassil import parse_sentence  # type: ignore[import-not-found,import-untyped,unused-ignore]

    rng = random.Random(seed)
    rules = {name: parse_sentence(text) for name, text in rule_text.items()}
    expander = _Expander(lists, rules, where)
    phrases: List[Phrase] = []
    for template in templates:
        expression = parse_sentence(template).expression
        if expander.count(expression, depth=0) <= per_template:
            drawn: Iterable[Expansion] = expander.expand(expression, depth=0)
        else:
            drawn = (expander.draw(expression, rng, depth=0) for _ in range(per_template))
        phrases.extend(Phrase(" ".join(text.split()), slots) for text, slots in drawn)
    return phrases


def _inline_ranges(line: str, lists: Dict[str, List[Tuple[str, str]]], where: str) -> str:
    """Replace `{name:1-60}` (or `{name:slot:1..60}`) by a list reference and define the list."""

    def replace(match: re.Match[str]) -> str:
        name, slot, low, high = match.groups()
        lists[name] = _range_values(int(low), int(high), where)
        return "{" + name + (":" + slot if slot else "") + "}"

    return _INLINE_RANGE.sub(replace, line)


def _range_values(low: int, high: int, where: str) -> List[Tuple[str, str]]:
    if low > high or high - low >= MAX_RANGE:
        raise InputError(f"{where}: range {low}-{high} must go upwards and hold at most {MAX_RANGE} numbers")
    return [(number_to_words(n), str(n)) for n in range(low, high + 1)]


def _list_values(name: str, body: str, where: str) -> List[Tuple[str, str]]:
    numbers = _RANGE.match(body)
    if numbers:
        return _range_values(int(numbers.group(1)), int(numbers.group(2)), where)
    values = []
    for item in body.split("|"):
        spoken, _, value = item.partition(":")
        spoken = spoken.strip()
        if not spoken:
            raise InputError(f"{where}: list {{{name}}} has an empty value")
        values.append((spoken, value.strip() or spoken))
    return values


def _hassil_expression() -> Any:
    """hassil's expression classes (imported when a template is expanded: the `grammar` extra)."""
    from hassil import expression  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return expression


class _Expander:
    """Walks hassil's parsed expression, yielding (text, slots) for every way it can be said."""

    def __init__(
        self,
        lists: Dict[str, List[Tuple[str, str]]],
        rules: Dict[str, Any],
        where: str,
        check: Check = no_check,
    ):
        self.lists = lists
        self.rules = rules
        self.where = where
        self.check = check  # per combination: the work grows with their number
        self._rule_counts: Dict[str, int] = {}  # `count` of each rule, once known

    def expand(self, expression: Any, depth: int) -> Iterator[Expansion]:
        h = _hassil_expression()

        if depth > 32:
            raise InputError(f"{self.where}: expansion rules refer to each other in a loop")
        if isinstance(expression, h.TextChunk):
            yield expression.original_text, ()
        elif isinstance(expression, h.Alternative):
            for item in expression.items:
                yield from self.expand(item, depth + 1)
        elif isinstance(expression, h.Permutation):
            for order in itertools.permutations(expression.items):
                yield from self._sequence(list(order), depth, separator=" ")
        elif isinstance(expression, h.Sequence):
            yield from self._sequence(expression.items, depth, separator="")
        elif isinstance(expression, h.ListReference):
            values = self.lists.get(expression.list_name)
            if values is None:
                raise InputError(
                    f"{self.where}: list {{{expression.list_name}}} is used but not defined; add a line "
                    f"'{{{expression.list_name}}} = value one | value two'"
                )
            for spoken, value in values:
                yield spoken, ((expression.slot_name, value),)
        elif isinstance(expression, h.RuleReference):
            rule = self.rules.get(expression.rule_name)
            if rule is None:
                raise InputError(
                    f"{self.where}: rule <{expression.rule_name}> is used but not defined; add a line "
                    f"'<{expression.rule_name}> = ...'"
                )
            yield from self.expand(rule.expression, depth + 1)
        else:
            raise InputError(f"{self.where}: unsupported template element {type(expression).__name__}")

    def count(self, expression: Any, depth: int) -> int:
        """How many (text, slots) `expand` yields (at most `SATURATED`), without expanding. Each rule
        is counted once and remembered, so the work is the size of the text, not of the expansion."""
        h = _hassil_expression()

        if depth > 32:
            raise InputError(f"{self.where}: expansion rules refer to each other in a loop")
        if isinstance(expression, h.Alternative):
            return saturating_sum(self.count(item, depth + 1) for item in expression.items)
        if isinstance(expression, (h.Sequence, h.Permutation)):
            total = saturating_product(self.count(item, depth + 1) for item in expression.items)
            if isinstance(expression, h.Permutation):  # every order: n! times
                total = saturating_product([total, *range(1, len(expression.items) + 1)])
            return total
        if isinstance(expression, h.ListReference):
            return len(self.lists.get(expression.list_name, [None]))
        if isinstance(expression, h.RuleReference) and expression.rule_name in self.rules:
            name = expression.rule_name
            if name not in self._rule_counts:
                self._rule_counts[name] = self.count(self.rules[name].expression, depth + 1)
            return self._rule_counts[name]
        return 1

    def draw(self, expression: Any, rng: Any, depth: int) -> Expansion:
        """One expansion at random, each of the `count` equally likely."""
        h = _hassil_expression()

        if isinstance(expression, h.Alternative):
            weights = [self.count(item, depth + 1) for item in expression.items]
            return self.draw(rng.choices(expression.items, weights)[0], rng, depth + 1)
        if isinstance(expression, (h.Sequence, h.Permutation)):
            items = list(expression.items)
            separator = ""
            if isinstance(expression, h.Permutation):
                rng.shuffle(items)
                separator = " "
            parts = [self.draw(item, rng, depth + 1) for item in items]
            return separator.join(t for t, _ in parts), tuple(slot for _, found in parts for slot in found)
        if isinstance(expression, h.ListReference) and expression.list_name in self.lists:
            spoken, value = rng.choice(self.lists[expression.list_name])
            return spoken, ((expression.slot_name, value),)
        if isinstance(expression, h.RuleReference) and expression.rule_name in self.rules:
            return self.draw(self.rules[expression.rule_name].expression, rng, depth + 1)
        return next(iter(self.expand(expression, depth)))  # text (or an undefined name: its error)

    def _sequence(self, items: List[Any], depth: int, separator: str) -> Iterator[Expansion]:
        parts = [list(self.expand(item, depth + 1)) for item in items]
        for combination in itertools.product(*parts):
            self.check()
            text = separator.join(text for text, _ in combination)
            slots = tuple(slot for _, found in combination for slot in found)
            yield text, slots


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m edge_asr.templates FILE OUT.json`: expand templates for a device without hassil."""
    import argparse
    import sys

    from . import limits
    from .atomic import write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m edge_asr.templates", description=main.__doc__)
    parser.add_argument("templates", help="a template or phrase file")
    parser.add_argument("out", help="the JSON file to write (Grammar.from_file reads it)")
    args = parser.parse_args(argv)
    try:
        lines = text_lines(limits.read_text(args.templates, MAX_GRAMMAR_FILE_BYTES, "grammar"))
        phrases = expand_templates(lines, args.templates) if is_template(lines) else map(Phrase, lines)
        unique: Dict[str, Phrase] = {}
        for phrase in phrases:  # the first of each text, as `Grammar` keeps it
            unique.setdefault(" ".join(phrase.text.split()), phrase)
        if not unique:
            raise InputError(f"{args.templates}: no phrases")
        write_text_atomic(args.out, phrases_json(unique.values()))
    except InputError as exc:
        print(f"edge-asr: {exc}", file=sys.stderr)
        return 2
    print(f"{len(unique)} phrases -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
