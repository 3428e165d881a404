"""The built-in essay corpus: varied English prose from a seeded template grammar, so essay haystacks need no download.

Sentences are drawn from templates written for mmx, with slots filled from the authored lexicon (hundreds of nouns,
adjectives and verbs, plus names and invented place names), grouped into paragraphs of three to seven sentences. The
same seed always gives the same text, and its SHA-256 is recorded with every run that uses it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import cache

from mmx.tasks.lexicon import Lexicon, lexicon

SEED = 20250101
PARAGRAPHS = 6000  # ~1.9 MB of text: a 4M-byte haystack cycles through it about twice

_OPENERS = (
    "There is a {adj} lesson hidden in the way {nouns} are made.",
    "For a long time I believed that {nouns} were mostly a matter of luck.",
    "Consider the {noun} of {place}.",
    "Most people who {verb} {nouns} never stop to ask why.",
    "The first time I saw a {adj} {noun}, I was not impressed.",
    "It took me years to understand what {name} meant about {nouns}.",
    "Every town has a {noun} that nobody talks about.",
    "In {year}, a small group in {place} decided to {verb} their {nouns} differently.",
    "Ask anyone who has tried to {verb} a {noun} and they will tell you the same thing.",
    "Some ideas arrive {adv}, and some arrive all at once.",
    "The story of the {adj} {noun} begins in {place}.",
    "Nobody plans to spend a decade thinking about {nouns}, but it happens.",
)

_BODY = (
    "The {nouns} there were {adj}, and the {nouns} were even more so.",
    "{name} used to say that a {adj} {noun} is worth more than a {adj} {noun}.",
    "It is hard to {verb} a {noun} without first learning to {verb} the {noun} beside it.",
    "The {adj} thing about {nouns} is that they rarely {verb} the way we expect.",
    "Over time the {nouns} of {place} became {adj} and then, {adv}, {adj}.",
    "Most of the work is {verbing} {nouns}, and most of the rest is waiting.",
    "When {name} {verbed} the old {noun}, the whole {noun} changed.",
    "You can {verb} a {noun} in an afternoon, but you cannot {verb} a {noun} that fast.",
    "That is why {adj} {nouns} tend to outlast {adj} ones.",
    "I have seen {number} {nouns} {verbed} in a single season.",
    "The {noun} {verbs} the {noun}, and the {noun} {verbs} nothing at all.",
    "If you {verb} enough {nouns}, patterns start to appear.",
    "A {adj} {noun} is not the same as a {adj} {noun}, though people confuse them.",
    "{name} {name_surname} spent {number} years {verbing} {nouns} near {place}.",
    "Even the {adj} {nouns} needed someone to {verb} them.",
    "The answer, as usual, was hiding in the {noun}.",
    "People in {place} still {verb} their {nouns} {adv}.",
    "It sounds {adj}, but the {nouns} disagree.",
    "By {year} the {noun} had become {adj}, and nobody could say exactly why.",
    "There were {number} {nouns} on the {noun}, each more {adj} than the last.",
    "What matters is not the {noun} but the {noun} that surrounds it.",
    "The best {nouns} are {verbed} {adv}, one {noun} at a time.",
    "A {noun} that {verbs} {nouns} will sooner or later {verb} a {noun}.",
    '"Never {verb} a {noun} you cannot {verb}," {name} once told me.',
    "The {nouns} were {adv} {adj}, which made the {noun} seem {adj}.",
    "Nothing about the {noun} was {adj}, and yet it {verbed} everyone who saw it.",
    "We {verbed} the {nouns}, {verbed} the {nouns}, and then {verbed} the {noun} itself.",
    "I suspect the same is true of {nouns} and of {nouns}.",
    "It is easier to {verb} a {adj} {noun} than to {verb} a {adj} one.",
    "The {adj} {nouns} of {place} are a good example.",
    "Some {nouns} {verb} {nouns}; others only {verb} them.",
    "For every {adj} {noun} there is a {adj} {noun} waiting to {verb} it.",
    "The trick is to {verb} the {noun} before the {noun} {verbs} you.",
    "In the end, the {noun} mattered less than the {nouns} around it.",
    "{name} kept a {adj} {noun} on the {noun} for {number} years.",
    "The {nouns} grew {adj}, and the {noun} grew {adj} with them.",
    "Why would anyone {verb} a {noun} in {place}?",
    "Because the {nouns} were {adj}, the {noun} had to be {adj} too.",
    "Not every {noun} can be {verbed}, but most can be {verbed}.",
    "A {adj} {noun} {adv} {verbs} more {nouns} than a {adj} one.",
    "The {noun} near the {noun} was where {name} {verbed} the {nouns}.",
    "That winter, {number} {nouns} {verbed} the {noun} of {place}.",
    "Nobody remembers the {nouns}; everyone remembers the {noun}.",
    "{verbing_cap} {nouns} is {adj} work, but it is rarely {adj} work.",
)

_CLOSERS = (
    "So the {noun} stays {adj}, and the {nouns} keep {verbing}.",
    "That, more than anything, is what the {nouns} taught me.",
    "Perhaps that is all a {noun} can hope for.",
    "It is a {adj} conclusion, but I think it is the right one.",
    "And the {nouns} of {place} are still there, {adv} {verbing}.",
    "I doubt the {nouns} will ever be quite so {adj} again.",
)

_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a dozen", "twenty", "forty")
_PLACE_HEADS = (
    "Ash",
    "Bel",
    "Bright",
    "Cold",
    "Elm",
    "Fair",
    "Glen",
    "Green",
    "Hart",
    "High",
    "Kings",
    "Lake",
    "Mill",
    "North",
    "Oak",
    "Red",
    "Rose",
    "Silver",
    "Stone",
    "West",
    "Wood",
    "Wind",
    "Brook",
    "Clear",
    "Fox",
    "Iron",
    "Marsh",
    "Thorn",
)
_PLACE_TAILS = ("bury", "field", "ford", "haven", "mere", "moor", "port", "ridge", "ton", "vale", "wick", "gate")
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiou])")

Filler = Callable[[random.Random], str]


@cache
def place_names() -> tuple[str, ...]:
    """The invented place names prose and synthetic documents use."""
    return tuple(head + tail for head in _PLACE_HEADS for tail in _PLACE_TAILS)


def _fillers(lex: Lexicon) -> dict[str, Filler]:
    """One function per slot name; each draws a word from the lexicon."""
    places = place_names()
    plurals = [lex.plural(noun) for noun in lex.nouns]
    return {
        "adj": lambda r: r.choice(lex.adjectives),
        "noun": lambda r: r.choice(lex.nouns),
        "nouns": lambda r: r.choice(plurals),
        "verb": lambda r: r.choice(lex.verbs).base,
        "verbs": lambda r: r.choice(lex.verbs).third,
        "verbed": lambda r: r.choice(lex.verbs).past,
        "verbing": lambda r: r.choice(lex.verbs).gerund,
        "verbing_cap": lambda r: r.choice(lex.verbs).gerund.capitalize(),
        "adv": lambda r: r.choice(lex.adverbs),
        "name": lambda r: r.choice(lex.first_names),
        "name_surname": lambda r: r.choice(lex.surnames),
        "place": lambda r: r.choice(places),
        "year": lambda r: str(r.randint(1820, 2015)),
        "number": lambda r: r.choice(_NUMBERS),
    }


def _compile(template: str, fillers: dict[str, Filler]) -> Callable[[random.Random], str]:
    """A template as alternating literals and slot fillers, so a sentence is one pass of joins."""
    pieces = _SLOT.split(template)  # literal, slot, literal, slot, ..., literal
    literals, slots = pieces[0::2], [fillers[name] for name in pieces[1::2]]

    def render(rng: random.Random) -> str:
        out = [literals[0]]
        for slot, literal in zip(slots, literals[1:], strict=True):
            out.append(slot(rng))
            out.append(literal)
        text = _ARTICLE.sub(r"\1n ", "".join(out))  # "a owl" -> "an owl"
        return text[0].upper() + text[1:] if text[0].islower() else text

    return render


@cache
def body_sentence() -> Callable[[random.Random], str]:
    """A function drawing one random body sentence, for filler inside other generated text."""
    fillers = _fillers(lexicon())
    body = [_compile(t, fillers) for t in _BODY]
    return lambda rng: rng.choice(body)(rng)


def generate_paragraphs(count: int = PARAGRAPHS, seed: int = SEED) -> list[list[str]]:
    """`count` paragraphs of 3-7 sentences each: an opener, body sentences, and sometimes a closing line."""
    fillers = _fillers(lexicon())
    openers = [_compile(t, fillers) for t in _OPENERS]
    body = [_compile(t, fillers) for t in _BODY]
    closers = [_compile(t, fillers) for t in _CLOSERS]
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(count):
        sentences = [rng.choice(openers)(rng)] if rng.random() < 0.35 else []
        sentences += [rng.choice(body)(rng) for _ in range(rng.randint(3, 6))]
        if rng.random() < 0.2:
            sentences.append(rng.choice(closers)(rng))
        paragraphs.append(sentences)
    return paragraphs
