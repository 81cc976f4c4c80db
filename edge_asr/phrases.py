"""What a grammar is made of, shared by `grammar.py` (which compiles and scores phrases) and
`templates.py` (which expands templates into phrases): the `Phrase`, the caps, and a grammar file's
text and JSON. Both import this module and neither imports the other's, so there is no import circle:
templates -> phrases <- grammar -> templates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

from .errors import InputError

MAX_PHRASES = 1_000_000
"""The most phrases a grammar may have anywhere (`edge-asr serve` takes fewer: --max-grammar-phrases)."""
MAX_GRAMMAR_FILE_BYTES = 256 * 1000 * 1000
"""A grammar file's largest size: the JSON of 1,000,000 phrases with slots (about 200 MB) fits."""
_TEMPLATE_CHARS = re.compile(r"[()\[\]{}<>|]")

Check = Callable[[], None]
"""Called by the long loops of expanding and compiling a grammar (per phrase, or per 1024 trie nodes):
it raises to abandon the work, as a server does when the request that wanted the grammar has given up
(a thread cannot be stopped from outside). `no_check` never raises."""


def no_check() -> None:
    """The `Check` of work that nobody abandons."""


@dataclass(frozen=True)
class Phrase:
    """One allowed utterance: its text as written and the slot values it stands for."""

    text: str
    slots: Tuple[Tuple[str, str], ...] = ()

    @property
    def slot_dict(self) -> Dict[str, str]:
        return dict(self.slots)


def text_lines(text: str) -> List[str]:
    """A phrase or template file's lines without "#" comments and blank lines."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line]


def is_template(lines: Sequence[str]) -> bool:
    """Whether any line uses template syntax (alternatives, optionals, lists, rules, definitions)."""
    return any(_TEMPLATE_CHARS.search(line) or "=" in line for line in lines)


def phrases_json(phrases: Iterable[Phrase]) -> str:
    """The JSON a grammar is saved as (`phrases_from_json` reads it)."""
    items = [{"text": p.text, "slots": p.slot_dict} for p in phrases]
    return json.dumps({"phrases": items}, ensure_ascii=False, indent=1) + "\n"


def phrases_from_json(text: str, where: object) -> List[Phrase]:
    """The phrases of `phrases_json`'s JSON; InputError (one line) for anything else."""
    shape = '{"phrases": [{"text", "slots"}, ...]}'
    try:
        items = json.loads(text)["phrases"]
        return [Phrase(str(p["text"]), tuple(sorted(p.get("slots", {}).items()))) for p in items]
    except RecursionError:  # json.loads recurses once per level: a hostile file nests thousands deep
        raise InputError(f"{where}: not a grammar JSON file ({shape}): nested too deeply") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"{where}: not a grammar JSON file ({shape}): {detail}") from None
