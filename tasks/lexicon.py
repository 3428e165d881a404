"""The built-in English vocabulary (word lists authored for mmx, in `data/lexicon/`) and a few inflection rules."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

_DIR = Path(__file__).parent / "data" / "lexicon"
_VOWELS = set("aeiou")


def _lines(name: str) -> list[str]:
    """The non-empty, non-comment lines of one list file."""
    text = (_DIR / f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _words(name: str) -> list[str]:
    """Whitespace-separated entries of one list file, in order, duplicates dropped."""
    return list(dict.fromkeys(word for line in _lines(name) for word in line.split()))


@dataclass(frozen=True)
class Verb:
    """A verb with the forms prose templates ask for."""

    base: str
    past: str
    gerund: str

    @property
    def third(self) -> str:
        """Third person singular present: 'watch' -> 'watches', 'carry' -> 'carries'."""
        return _sibilant_plural(self.base)


def _sibilant_plural(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _regular_past(base: str) -> str:
    if base.endswith("e"):
        return base + "d"
    if base.endswith("y") and base[-2] not in _VOWELS:
        return base[:-1] + "ied"
    return base + "ed"


def _regular_gerund(base: str) -> str:
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"
    return base + "ing"


def _verb(entry: str) -> Verb:
    base, *forms = entry.split(":")
    past = forms[0] if forms else _regular_past(base)
    gerund = forms[1] if len(forms) > 1 else _regular_gerund(base)
    return Verb(base, past, gerund)


@dataclass(frozen=True)
class Lexicon:
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    verbs: tuple[Verb, ...]
    adverbs: tuple[str, ...]
    first_names: tuple[str, ...]
    surnames: tuple[str, ...]
    irregular_plurals: dict[str, str]

    def plural(self, noun: str) -> str:
        """'box' -> 'boxes', 'berry' -> 'berries', 'leaf' -> 'leaves' (from the irregular table)."""
        return self.irregular_plurals.get(noun) or _sibilant_plural(noun)

    @property
    def common_words(self) -> tuple[str, ...]:
        """Every distinct plain word of the lexicon (adjectives, nouns, verb bases, adverbs), in file order."""
        return tuple(dict.fromkeys([*self.nouns, *self.adjectives, *(v.base for v in self.verbs), *self.adverbs]))


@cache
def lexicon() -> Lexicon:
    """The lexicon, read once per process."""
    pairs = (line.split() for line in _lines("plurals"))
    return Lexicon(
        adjectives=tuple(_words("adjectives")),
        nouns=tuple(_words("nouns")),
        verbs=tuple(_verb(entry) for entry in _words("verbs")),
        adverbs=tuple(_words("adverbs")),
        first_names=tuple(_words("first_names")),
        surnames=tuple(_words("surnames")),
        irregular_plurals={singular: plural for singular, plural in pairs},
    )
