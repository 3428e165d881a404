"""RULER's question answering (`qa_1`, `qa_2`): a question over numbered documents, gold ones among distractors.

`qa_1` reads SQuAD v2 dev and `qa_2` HotpotQA dev (multi-hop), from a file given as `data=PATH` or from the local
Hugging Face cache. Without either, an offline stand-in runs under its own name, `synth_qa_1` / `synth_qa_2`, with
`substitute_for` in its parameters: documents about invented people and organisations, a one-hop question about one
person (like SQuAD) or a two-hop one through an organisation's founder (like HotpotQA), among distractors from a fixed
pool of such documents. Distractor documents never contain the answer.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.fit import Budget, Draft, longest_prefix
from mmx.tasks.lexicon import lexicon
from mmx.tasks.prose import body_sentence, place_names
from mmx.tasks.qa_data import QaItem, QaSet, load_hotpot, load_squad
from mmx.tasks.tokens import TokenCounter
from mmx.tasks.values import Distinct

INSTRUCTION = "Answer the question using the documents below. Reply with a short phrase only, nothing else."
REMINDER = "Answer the question using the documents above. Reply with a short phrase only, nothing else."
QUESTION = "\n\n{reminder}\n\nQuestion: {question}\n"
ANSWER_PREFIX = "Answer:"
MIN_PARTIAL = 8  # tokens: a cut-off last document shorter than this is left out
POOL_DOCUMENTS = 4096  # synthetic distractors (~2 MB); longer prompts cycle through them, as RULER cycles a QA set


def header(i: int) -> str:
    return f"\n\nDocument {i}:"


class DocumentSource(Protocol):
    """Where a QA task's questions and documents come from; `recurring` says whether documents come back across
    samples (a dataset's pool: worth caching their token counts) or are made fresh each time."""

    recurring: bool

    def question(self, rng: random.Random, budget: Budget) -> tuple[QaItem, Iterator[str]]:
        """A question and an endless stream of distractor documents for it."""
        ...

    def describe(self) -> dict[str, Any]: ...


class DatasetSource:
    """Questions of a real QA set in a seeded order; distractors cycle through the set's other documents."""

    recurring = True

    def __init__(self, data: QaSet) -> None:
        self.data = data

    def describe(self) -> dict[str, Any]:
        return self.data.describe()

    def question(self, rng: random.Random, budget: Budget) -> tuple[QaItem, Iterator[str]]:
        order = list(range(len(self.data.items)))
        random.Random(budget.seed).shuffle(order)  # the same question for index i at every length
        item = self.data.items[order[budget.index % len(order)]]
        start = rng.randrange(len(self.data.pool))
        related = rng.sample(item.related, len(item.related))
        return item, self._distractors(start, related, set(item.gold))

    def _distractors(self, start: int, related: list[str], gold: set[str]) -> Iterator[str]:
        """The related documents first, then the pool from `start` on, cycling; the required documents are left
        out of the first round only, so at lengths past the whole set they come back, as RULER repeats its set."""
        yield from related
        pool, i, first_round = self.data.pool, start, set(gold) | set(related)
        for step in itertools.count():
            if step >= len(pool) or pool[i] not in first_round:
                yield pool[i]
            i = (i + 1) % len(pool)


PROFESSIONS = (
    "glassblower", "cartographer", "beekeeper", "clockmaker", "ferry pilot", "bookbinder", "stonemason", "violin maker",
    "lighthouse keeper", "botanist", "surveyor", "printer", "weaver", "locksmith", "astronomer", "blacksmith",
    "cheesemaker", "archivist", "shipwright", "perfumer", "potter", "tailor", "translator", "brewer",
)  # fmt: skip
INSTRUMENTS = (
    "cello", "oboe", "harp", "accordion", "banjo", "bassoon", "clarinet", "dulcimer", "flute", "lute", "mandolin",
    "marimba", "piano", "trombone", "tuba", "ukulele", "viola", "zither", "bagpipes", "harmonica", "sitar", "organ",
)  # fmt: skip
ORG_KINDS = ("Society", "Company", "Guild", "Institute", "Workshop", "Museum", "Orchestra", "Press", "Foundry", "Club")
QUESTIONS = {
    "hometown": "In which town was {name} born?",
    "year": "In which year was {name} born?",
    "profession": "What is the profession of {name}?",
    "instrument": "Which instrument does {name} play?",
}
TWO_HOP_QUESTION = "In which town was the founder of the {org} born?"


@dataclass(frozen=True)
class Person:
    name: str
    hometown: str
    year: str
    profession: str
    instrument: str

    @property
    def first(self) -> str:
        return self.name.split()[0]


def article(noun: str) -> str:
    """'a potter', 'an archivist'."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _person_name(rng: random.Random) -> str:
    lex = lexicon()
    return f"{rng.choice(lex.first_names)} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {rng.choice(lex.surnames)}"


def _org_name(rng: random.Random) -> str:
    return f"{rng.choice(place_names())} {rng.choice(lexicon().nouns).capitalize()} {rng.choice(ORG_KINDS)}"


class SyntheticSource:
    """Invented biographies (and, for two hops, organisations with founders).

    Like a real QA set, it has a fixed pool of distractor documents, generated once from a fixed seed, so their token
    counts are cached per tokenizer and a sample costs one encode of its prompt; each sample invents its own gold
    person (and organisation) under a name no pool document uses, and skips pool documents containing its answer.
    """

    recurring = True

    def __init__(self, hops: int) -> None:
        self.hops = hops

    def describe(self) -> dict[str, Any]:
        return {"source": "synthetic", "hops": self.hops, "facts": list(QUESTIONS), "pool_documents": POOL_DOCUMENTS}

    @cached_property
    def _pool(self) -> tuple[list[str], list[str], set[str], set[str]]:
        """Distractor documents, their case-folded text, and the person and organisation names they use."""
        rng = random.Random(f"synthetic-qa-pool-{self.hops}")
        names, orgs = Distinct(_person_name), Distinct(_org_name)
        docs = []
        for _ in range(POOL_DOCUMENTS):
            person = self._person(rng, names)
            org = self.hops == 2 and rng.random() < 0.5
            docs.append(self._org(rng, orgs(rng), person) if org else self._bio(rng, person))
        return docs, [d.casefold() for d in docs], names.seen, orgs.seen

    def _person(self, rng: random.Random, names: Distinct) -> Person:
        return Person(
            name=names(rng),
            hometown=rng.choice(place_names()),
            year=str(rng.randint(1850, 1990)),
            profession=rng.choice(PROFESSIONS),
            instrument=rng.choice(INSTRUMENTS),
        )

    def _bio(self, rng: random.Random, p: Person) -> str:
        filler = body_sentence()
        facts = [
            f"{p.first} works as {article(p.profession)}."
            if rng.random() < 0.5
            else f"By trade, {p.first} is {article(p.profession)}.",
            f"In spare hours, {p.first} plays the {p.instrument}.",
            filler(rng),
        ]
        rng.shuffle(facts)
        return " ".join([f"{p.name} was born in {p.hometown} in {p.year}.", *facts, filler(rng)])

    def _org(self, rng: random.Random, org: str, founder: Person) -> str:
        filler = body_sentence()
        return " ".join([f"The {org} was founded in {rng.randint(1880, 2010)} by {founder.name}.", filler(rng),
                         f"Today the {org} is best known for its {rng.choice(lexicon().nouns)} collection.",
                         filler(rng)])  # fmt: skip

    def question(self, rng: random.Random, budget: Budget) -> tuple[QaItem, Iterator[str]]:
        _, _, pool_names, pool_orgs = self._pool
        names, orgs = Distinct(_person_name, pool_names), Distinct(_org_name, pool_orgs)
        person = self._person(rng, names)
        if self.hops == 1:
            fact = rng.choice(list(QUESTIONS))
            answer = getattr(person, fact)
            item = QaItem(QUESTIONS[fact].format(name=person.name), (answer,), (self._bio(rng, person),))
        else:
            org = orgs(rng)
            answer = person.hometown
            gold = (self._org(rng, org, person), self._bio(rng, person))
            item = QaItem(TWO_HOP_QUESTION.format(org=org), (answer,), gold)
        return item, self._distractors(rng.randrange(POOL_DOCUMENTS), answer)

    def _distractors(self, start: int, answer: str) -> Iterator[str]:
        """Pool documents from `start` on, cycling, leaving out those that contain the answer."""
        docs, folded, _, _ = self._pool
        needle = answer.casefold()
        usable = [i for i in range(start, start + len(docs)) if needle not in folded[i % len(docs)]]
        if not usable:
            raise RuntimeError(f"every pool document contains {answer!r}")
        for i in itertools.cycle(usable):
            yield docs[i % len(docs)]


class QaTask(Task):
    """Documents numbered in order, gold ones at random places, the last one cut to land on the target length."""

    category = "QA"
    metric = "part"
    max_new_tokens = 32

    def __init__(self, name: str, source: DocumentSource, substitute_for: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.name = name
        self.source = source
        self.substitute_for = substitute_for

    def describe(self) -> dict[str, Any]:
        params = {"data": self.source.describe()}
        if self.substitute_for:
            params["substitute_for"] = self.substitute_for
        return params

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        item, distractors = self.source.question(rng, budget)
        question = QUESTION.format(reminder=REMINDER, question=item.question)
        prefix = self.answer_prefix(ANSWER_PREFIX)
        gold = ["\n" + doc for doc in item.gold]
        spent = sum(counter.once(doc) for doc in gold) + sum(counter(header(i + 1)) for i in range(len(gold)))
        fixed = counter.once(INSTRUCTION) + counter.once(question) + counter.once(prefix)
        too_short_unless(budget.aim, fixed + spent)
        room = budget.aim - fixed

        count_body = counter if self.source.recurring else counter.once  # pool documents come back: cache them
        docs: list[str] = []
        for doc in distractors:
            body = "\n" + doc
            cost = counter(header(len(gold) + len(docs) + 1)) + count_body(body)
            if spent + cost > room:
                break
            docs.append(body)
            spent += cost
        shuffled = rng.sample(gold, len(gold))  # for two hops, either gold document may come first
        for position, gold_doc in zip(
            sorted(rng.sample(range(len(docs) + len(gold)), len(gold))), shuffled, strict=True
        ):
            docs.insert(position, gold_doc)  # ascending positions: each insert lands where it is meant to stay
        positions = [docs.index(g) + 1 for g in gold]
        last = header(len(docs) + 1)
        spare = room - spent - counter(last)
        if spare >= MIN_PARTIAL:
            cut = longest_prefix(body, spare, counter.once, budget.slack)
            if cut.strip():
                docs.append(cut)
        parts = [INSTRUCTION]
        for i, doc in enumerate(docs, start=1):
            parts += [header(i), doc]
        metadata = {"documents": len(docs), "gold_documents": positions, "question": item.question}
        return Draft([*parts, question], prefix, list(item.answers), metadata)


def qa_task(which: str, *, data: str | None = None, **options: Any) -> QaTask:
    """`qa_1` or `qa_2` on real data when given or cached; otherwise the named synthetic stand-in.

    `data="synthetic"` asks for the stand-in explicitly.
    """
    hops = 1 if which == "qa_1" else 2
    if data != "synthetic":
        loaded = (load_squad if hops == 1 else load_hotpot)(data)
        if loaded is not None:
            return QaTask(which, DatasetSource(loaded), **options)
    return QaTask(f"synth_{which}", SyntheticSource(hops), substitute_for=which, **options)
