"""Speech normalisation: turn what a TTS reads badly into words, then apply the user's lexicon.

``normalize`` removes control characters and terminal escape sequences, expands common
abbreviations, numbers with units, currency and symbols, and speaks URLs and e-mail addresses.
``PronunciationDictionary`` (global and per document, whole words, smart case) runs last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vvreader.text.unsafe import SPEECH_UNSAFE

__all__ = ["PronunciationDictionary", "normalize", "strip_controls"]

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def strip_controls(text: str) -> str:
    """Remove ANSI escape sequences, control characters and bidi overrides."""
    return SPEECH_UNSAFE.sub("", _ANSI.sub("", text))


# Each rewrite with a piece of text that every match of it contains: most sentences hold
# none of them (no replacement holds a full stop, so none makes a later one appear).
_ABBREVIATIONS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(p), r, needle)
    for p, r, needle in (
        (r"\bMr\.(?=\s)", "Mister", "Mr."),
        (r"\bMrs\.(?=\s)", "Missus", "Mrs."),
        (r"\bDr\.(?=\s+[A-Z])", "Doctor", "Dr."),
        (r"\bProf\.(?=\s)", "Professor", "Prof."),
        (r"\bSt\.(?=\s+[A-Z])", "Saint", "St."),
        (r"\bSt\.(?=\s+[a-z])", "Street", "St."),
        (r"\bMt\.(?=\s)", "Mount", "Mt."),
        (r"\bJr\.", "Junior", "Jr."),
        (r"\bSr\.", "Senior", "Sr."),
        (r"\be\.g\.", "for example", "e.g."),
        (r"\bi\.e\.", "that is", "i.e."),
        (r"\betc\.", "et cetera", "etc."),
        (r"\bvs\.", "versus", "vs."),
        (r"\bapprox\.", "approximately", "approx."),
        (r"\b[Nn]o\.(?=\s*\d)", "number", "o."),
        (r"\bpp\.(?=\s*\d)", "pages", "pp."),
        (r"\bp\.(?=\s*\d)", "page", "p."),
        (r"\b[Ff]ig\.(?=\s*\d)", "figure", "ig."),
        (r"\b[Cc]h\.(?=\s*\d)", "chapter", "h."),
        (r"\b(\d+)\s?([ap])\.?m\.(?=\s|$)", r"\1 \2 m", "m."),
        (r"\b(\d+)\s?([AP])\.?M\.(?=\s|$)", r"\1 \2 M", "M."),
    )
)

# One search that every abbreviation above needs to match: most sentences have none, and
# this spares them 21 substitutions (the plan of a book normalises every sentence).
_ABBREVIATION_HINT = re.compile(
    r"\b(?:Mrs?|Dr|Prof|St|Mt|Jr|Sr|e\.g|i\.e|etc|vs|approx|[Nn]o|pp|p|[Ff]ig|[Cc]h)\."
    r"|\d\s?[apAP]\.?[mM]\."
)

_UNITS = {
    "km": "kilometer",
    "m": "meter",
    "cm": "centimeter",
    "mm": "millimeter",
    "kg": "kilogram",
    "g": "gram",
    "mg": "milligram",
    "lb": "pound",
    "lbs": "pound",
    "oz": "ounce",
    "ms": "millisecond",
    "s": "second",
    "sec": "second",
    "min": "minute",
    "h": "hour",
    "hr": "hour",
    "hrs": "hour",
    "Hz": "hertz",
    "kHz": "kilohertz",
    "MHz": "megahertz",
    "GHz": "gigahertz",
    "KB": "kilobyte",
    "kB": "kilobyte",
    "MB": "megabyte",
    "GB": "gigabyte",
    "TB": "terabyte",
    "mph": "mile per hour",
    "km/h": "kilometer per hour",
    "kph": "kilometer per hour",
    "V": "volt",
    "W": "watt",
    "kW": "kilowatt",
    "kWh": "kilowatt hour",
    "mAh": "milliamp hour",
    "ml": "milliliter",
    "mL": "milliliter",
    "l": "liter",
    "L": "liter",
    "ft": "foot",
    "in": "inch",
    "mi": "mile",
    "yd": "yard",
    "°C": "degree Celsius",
    "°F": "degree Fahrenheit",
}
_PLURAL_IRREGULAR = {
    "foot": "feet",
    "inch": "inches",
    "degree Celsius": "degrees Celsius",
    "degree Fahrenheit": "degrees Fahrenheit",
    "mile per hour": "miles per hour",
    "kilometer per hour": "kilometers per hour",
}
_NUMBER = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
# Units that are also words need the number glued to them or a tight context.
_AMBIGUOUS = {"m", "s", "h", "in", "l", "L", "V", "W", "g", "min", "mi", "ft", "yd"}
_UNIT_RE = re.compile(
    _NUMBER
    + r"(\s?)("
    + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
    + r")(?![\w°])"
)
_CURRENCY = {"$": "dollar", "€": "euro", "£": "pound", "¥": "yen"}
_MONEY = re.compile(r"([$€£¥])\s?" + _NUMBER + r"(?:\s(million|billion|thousand|trillion))?\b")
_PERCENT = re.compile(_NUMBER + r"\s?%")
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE)
# Each rewrite with the characters that any match of it contains: a sentence without them
# skips the substitution (most sentences need two or three of the fifteen). No replacement
# adds a trigger character, so the set of the characters is taken once.
_SYMBOLS: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...] = tuple(
    (re.compile(p), r, frozenset(t))
    for p, r, t in (
        (r"\s*&\s*", " and ", "&"),
        (r"(?<=\d)\s*[x×]\s*(?=\d)", " by ", "x×"),
        (r"\s*[\u2014\u2015]\s*|\s+\u2013\s+|\s*--\s*", ", ", "\u2014\u2015\u2013-"),
        (r"(?<=\d)\u2013(?=\d)", " to ", "\u2013"),
        (r"\s*\+\s*(?=\d)|(?<=\d)\s*\+\s*", " plus ", "+"),
        (r"(?<=\s)=(?=\s)", "equals", "="),
        (r"#(?=\d)", "number ", "#"),
        (r"(?<=\s)~(?=\d)", "about ", "~"),
        (r"°", " degrees", "°"),
        (r"@", " at ", "@"),
        (r"(?<=\w)/(?=\w)", " ", "/"),
        (r"(?<!\w)/|/(?!\w)", " ", "/"),
        (r"[*_|\\^<>{}\[\]#~`=+]+", " ", "*_|\\^<>{}[]#~`=+"),
        (r"[\u201c\u201d\u201e\u00ab\u00bb]", '"', "\u201c\u201d\u201e\u00ab\u00bb"),
        (r"[\u2018\u2019\u201a]", "'", "\u2018\u2019\u201a"),
    )
)
_SPACES = re.compile(r"\s+")
_HAS_DIGIT = re.compile(r"\d")
_HAS_SYMBOL = re.compile(
    r"[&x×\u2013\u2014\u2015+=#~°@/*_|\\^<>{}\[\]`\u201c-\u201e\u00ab\u00bb\u2018-\u201a-]"
)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_SPACED_PUNCT = (" ,", " .", " ;", " :", " !", " ?")  # what it needs once spaces are single


def _unit(m: re.Match[str]) -> str:
    number, gap, unit = m.group(1), m.group(2), m.group(3)
    if unit in _AMBIGUOUS and gap:
        return m.group()
    word = _UNITS[unit]
    if number not in ("1", "1.0") and not word.endswith("hertz"):
        word = _PLURAL_IRREGULAR.get(word, word + "s")
    return f"{number} {word}"


def _money(m: re.Match[str]) -> str:
    symbol, number, scale = m.group(1), m.group(2), m.group(3)
    name = _CURRENCY[symbol]
    plural = "" if number == "1" else ("" if name == "yen" else "s")
    if "." in number and not scale:
        whole, cents = number.split(".", 1)
        if len(cents) == 2 and cents != "00":
            return f"{whole} {name}{'' if whole == '1' else plural} {int(cents)}"
        number = whole
    return f"{number} {scale + ' ' if scale else ''}{name}{plural}"


def _url(m: re.Match[str]) -> str:
    host = re.sub(r"^[a-z]+://", "", m.group(), flags=re.IGNORECASE).split("/")[0]
    host = host.removeprefix("www.").split(":")[0]
    return " dot ".join(p for p in host.split(".") if p)


def _email(m: re.Match[str]) -> str:
    user = m.group(1).replace(".", " dot ")
    return f"{user} at {m.group(2).replace('.', ' dot ')}"


def normalize(text: str, dictionary: PronunciationDictionary | None = None) -> str:
    """Rewrite ``text`` into what the engine should say.

    Args:
        text: Speakable text of one utterance (markup already removed).
        dictionary: Pronunciation rules applied last.

    Returns:
        One line of plain words and punctuation.
    """
    out = strip_controls(text) if SPEECH_UNSAFE.search(text) else text
    if "://" in out or "www." in out:
        out = _URL.sub(_url, out)
    if "@" in out:
        out = _EMAIL.sub(_email, out)
    if "." in out and _ABBREVIATION_HINT.search(out):
        for pattern, repl, needle in _ABBREVIATIONS:
            if needle in out:
                out = pattern.sub(repl, out)
    if _HAS_DIGIT.search(out):
        if not _CURRENCY.keys().isdisjoint(out):
            out = _MONEY.sub(_money, out)
        if "%" in out:
            out = _PERCENT.sub(lambda m: f"{m.group(1)} percent", out)
        out = _UNIT_RE.sub(_unit, out)
    if _HAS_SYMBOL.search(out):
        chars = set(out)
        for pattern, repl, trigger in _SYMBOLS:
            if not chars.isdisjoint(trigger):
                out = pattern.sub(repl, out)
    if "  " in out or not out.isprintable():  # any whitespace but single spaces
        out = _SPACES.sub(" ", out)
    if any(p in out for p in _SPACED_PUNCT):
        out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    out = out.strip()
    out = out.lstrip(",;: ")  # a clause piece may start after the break
    if dictionary is not None:
        out = dictionary.apply(out)
    return out


@dataclass(frozen=True)
class _Rule:
    word: str
    say: str
    case_sensitive: bool


class PronunciationDictionary:
    """Whole-word replacements; later layers (per document) override earlier ones (global).

    Case rule ("smart case"): an entry written all in lower case matches any case; an entry
    with a capital letter matches only that exact spelling.
    """

    def __init__(self, entries: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._rules: dict[str, _Rule] = {}
        self._pattern: re.Pattern[str] | None = None
        self.update(entries)

    def update(self, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Add or override entries (a later layer wins for the same word)."""
        items = entries.items() if isinstance(entries, Mapping) else entries
        for word, say in items:
            word = word.strip()
            if word:
                sensitive = word != word.lower()
                self._rules[word if sensitive else word.lower()] = _Rule(word, say, sensitive)
        self._pattern = None

    def layered(self, other: PronunciationDictionary) -> PronunciationDictionary:
        """A new dictionary with ``other``'s entries over this one's."""
        merged = PronunciationDictionary((r.word, r.say) for r in self._rules.values())
        merged.update((r.word, r.say) for r in other._rules.values())
        return merged

    def __len__(self) -> int:
        return len(self._rules)

    @classmethod
    def from_file(cls, path: str | Path) -> PronunciationDictionary:
        """Read ``word = say`` lines (``#`` starts a comment)."""
        entries = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                word, say = line.split("=", 1)
                entries.append((word.strip(), say.strip()))
        return cls(entries)

    @classmethod
    def from_front_matter(cls, front_matter: str) -> PronunciationDictionary:
        """Read a ``pronounce:`` mapping (``  word: say`` lines) from YAML front matter."""
        entries, inside = [], False
        for line in front_matter.splitlines():
            if not line.strip():
                continue
            if not line[0].isspace():
                inside = line.strip() in ("pronounce:", "pronunciations:")
                continue
            if inside and ":" in line:
                word, say = line.strip().split(":", 1)
                entries.append((word.strip().strip("'\""), say.strip().strip("'\"")))
        return cls(entries)

    def apply(self, text: str) -> str:
        """Replace every whole-word match in ``text``."""
        if not self._rules:
            return text
        if self._pattern is None:
            words = sorted({r.word for r in self._rules.values()}, key=len, reverse=True)
            alt = "|".join(re.escape(w) for w in words)
            self._pattern = re.compile(rf"(?<!\w)(?:{alt})(?!\w)", re.IGNORECASE)

        def repl(m: re.Match[str]) -> str:
            found = m.group()
            rule = self._rules.get(found) or self._rules.get(found.lower())
            if rule is None or (rule.case_sensitive and rule.word != found):
                return found
            return rule.say

        return self._pattern.sub(repl, text)
