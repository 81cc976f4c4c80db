"""Spoken-form text: rewrite a sentence so that every TTS engine reads exactly the words we label.

Engines disagree on digits, acronyms, abbreviations and symbols ("1984", "NASA", "St.", "&"), so the
corpus never hands them any: numbers, ordinals, money, percentages and a few unambiguous abbreviations
are written out in words here, and a sentence holding anything else we cannot spell safely is dropped
(`to_spoken` returns None). The training label is `TextNormalization()` of the returned spoken text.

It lives on the device side (pure Python) because the device spells numbers the same way: a voice
command grammar saying "set a timer for 10 minutes" is matched as "ten" (`edge_asr.grammar`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip

# Abbreviations whose reading does not depend on context ("St.", saint/street, is dropped below).
_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Dr.": "Doctor", "Prof.": "Professor", "Jr.": "Junior",
    "Sr.": "Senior", "Mt.": "Mount", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "Gen.": "General", "Capt.": "Captain", "Lt.": "Lieutenant", "Sgt.": "Sergeant",
}  # fmt: skip
# Abbreviations that engines expand in their own way ("St." saint/street, "Co." company, "lbs." pounds):
# a sentence holding one is dropped. Anywhere for these (not ordinary words, case-sensitive) ...
_ABBREVIATION_ANYWHERE = re.compile(
    r"\b(St|Co|Inc|Ltd|Corp|Bros|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Tues|Wed|Thu|Thur|"
    r"Thurs|Fri|Sat|Sun|No|Nos|Ave|Rd|Blvd|Esq|Messrs|Mme|Mlle|Ms|Jas|Wm|Chas|Geo|Thos|Gov|Sen|Rep|Rev|Col|Maj|"
    r"Cpl|Pvt|Adm|Ft|Pt|Fr|Vol|Ch|Fig|Dept|Univ|lbs|lb|oz|ft|mph|hrs|hr|yds|kg|km|cm|mm|ml|approx|viz|cf|esp|"
    r"misc|vol|pp)\."
)
# ... and any word followed by a period and a lower-case word ("in. of", "ed. by", "min. later").
_ABBREVIATION_MID = re.compile(r"\b[A-Za-z]+\.\s+[a-z]")
# Capitalised words that are ordinary words, not acronyms (the KJV writes LORD and GOD in capitals).
_CAPS_WORDS = {"LORD": "Lord", "GOD": "God", "JEHOVAH": "Jehovah", "JESUS": "Jesus", "OK": "okay"}
_SINGLE_LETTERS = {"A", "I", "O", "a"}

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u201c": '"', "\u201d": '"'})
_CLOCK = re.compile(r"\b(\d{1,2}):([1-5]\d)\b")
_MONEY = re.compile(r"\$(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?\b")
_PERCENT = re.compile(r"\b(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b")
# Characters an engine might read aloud or skip unpredictably; a sentence holding one is dropped.
_FORBIDDEN = re.compile(r"[0-9#@*/\\|<>{}\[\]^_~+=%$]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_ALLOWED = re.compile(r"^[A-Za-z ,.;:!?'\"()-]*$")
_STRAY_APOSTROPHE = re.compile(r"(?<![A-Za-z])'|'(?![A-Za-z])")


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 <= n < 10**12 ("one hundred and five" style without "and")."""
    if n < 0 or n >= 10**12:
        raise ValueError(f"number out of range for spelling: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_to_words(head)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Ordinal words: 1 -> "first", 21 -> "twenty first", 100 -> "one hundredth"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(n: int) -> str:
    """A year as people say it: 1984 -> "nineteen eighty four", 1900 -> "nineteen hundred"."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_to_words(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return f"{number_to_words(head)} hundred"
    if tail < 10:
        return f"{number_to_words(head)} oh {number_to_words(tail)}"
    return f"{number_to_words(head)} {number_to_words(tail)}"


def _cardinal(token: str) -> str:
    digits = token.replace(",", "")
    if len(digits) > 1 and digits.startswith("0"):
        # "007", "0800": read digit by digit by some engines, as a number by others. Refuse.
        raise ValueError(token)
    value = int(digits)
    if "," not in token and len(digits) == 4 and 1100 <= value <= 2099:
        return year_to_words(value)
    return number_to_words(value)


def _expand_numbers(text: str) -> str:
    def money(m: re.Match[str]) -> str:
        dollars = int(m.group(1).replace(",", ""))
        words = f"{number_to_words(dollars)} dollar{'s' if dollars != 1 else ''}"
        if m.group(2) and int(m.group(2)):
            cents = int(m.group(2))
            words += f" and {number_to_words(cents)} cent{'s' if cents != 1 else ''}"
        return words

    def percent(m: re.Match[str]) -> str:
        return f"{_decimal_words(m.group(1))} percent"

    def ordinal(m: re.Match[str]) -> str:
        value, suffix = int(m.group(1)), m.group(2).lower()
        expected = {1: "st", 2: "nd", 3: "rd"}.get(value % 10 if value % 100 not in (11, 12, 13) else 0, "th")
        if suffix != expected:
            raise ValueError(m.group(0))
        return ordinal_to_words(value)

    # Clock times "7:30" -> "seven thirty"; "7:00"/"7:05" stay and are refused (o'clock/oh readings vary).
    def clock(m: re.Match[str]) -> str:
        return f"{number_to_words(int(m.group(1)))} {number_to_words(int(m.group(2)))}"

    text = _CLOCK.sub(clock, text)
    text = _MONEY.sub(money, text)
    text = _PERCENT.sub(percent, text)
    text = _ORDINAL.sub(ordinal, text)
    text = _DECIMAL.sub(lambda m: _decimal_words(m.group(0)), text)
    return _NUMBER.sub(lambda m: _cardinal(m.group(0)), text)


def _decimal_words(token: str) -> str:
    if "." not in token:
        return _cardinal(token)
    whole, frac = token.split(".", 1)
    return f"{number_to_words(int(whole))} point " + " ".join(_ONES[int(d)] for d in frac)


def spell_numbers(text: str) -> str:
    """`text` with its numbers written out the way corpus labels say them, and nothing else changed.

    Cardinals, years, ordinals ("3rd"), decimals, clock times, "$" amounts and "%" become words exactly
    as `to_spoken` writes them ("Press 1." -> "Press one.", "$5.50" -> "five dollars and fifty cents").
    Unlike `to_spoken` it never refuses and never returns None: a number it cannot spell ("007", "1th",
    a trillion, "7:00") is left as it was, and the other numbers of the text are still spelled.
    """
    try:
        return _expand_numbers(text)
    except ValueError:
        pass
    # Something was refused: spell piece by piece between spaces (not the one in "10 %"), keeping a
    # refused piece as it was.
    return "".join(_spell_piece(piece) for piece in re.split(r"(\s+(?!%))", text))


def _spell_piece(piece: str) -> str:
    try:
        return _expand_numbers(piece)
    except ValueError:
        return piece


def _expand_abbreviations(text: str) -> str:
    for short, long in _ABBREVIATIONS.items():
        text = re.sub(rf"(?<![A-Za-z]){re.escape(short)}", long, text)
    return text.replace("&", " and ")


def _words_are_safe(text: str) -> Optional[str]:
    """Lower-case known capitalised words; None if an acronym, initial or odd casing remains."""
    out = []
    pos = 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        stem = word.split("'")[0]
        replacement = word
        if stem.isupper() and len(stem) > 1:
            if stem not in _CAPS_WORDS:
                return None  # an acronym or a shouted word: engines spell some, read others
            replacement = _CAPS_WORDS[stem] + word[len(stem) :]
        elif len(stem) == 1 and stem.isalpha() and stem not in _SINGLE_LETTERS and word == stem:
            return None  # a lone letter ("J. K.", "plan B"): engines name it in different ways
        elif any(ch.isupper() for ch in stem[1:]) and not re.match(r"^(Mc|Mac)[A-Z][a-z]+$", stem):
            return None  # internal capitals (iPhone, VAXen): read unpredictably
        out.append(text[pos : m.start()])
        out.append(replacement)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def to_spoken(text: str) -> Optional[str]:
    """The sentence as the engines should read it, or None if it cannot be spoken unambiguously."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    text = re.sub(r"\s+", " ", text).strip()
    if not text or not text.isascii():
        return None
    text = re.sub(r"\s*--\s*", ", ", text)
    expanded = _expand_abbreviations(text)
    if _ABBREVIATION_ANYWHERE.search(expanded) or _ABBREVIATION_MID.search(expanded):
        return None
    try:
        text = _expand_numbers(_expand_abbreviations(text))
    except ValueError:
        return None
    if _FORBIDDEN.search(text):
        return None
    text = _STRAY_APOSTROPHE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    if not _ALLOWED.match(text):
        return None
    # A period inside a sentence that is not an abbreviation we expanded ("U.S.", "a.m.") is read
    # differently by every engine.
    if re.search(r"[A-Za-z]\.[A-Za-z]", text):
        return None
    return _words_are_safe(text)
