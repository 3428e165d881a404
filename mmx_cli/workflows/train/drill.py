"""Needle drills: many RULER-style needles in a short haystack, then many questions in the evaluation's own wording.

A NIAH task document teaches one retrieval per document. The dense `recall` documents teach dozens, but their
queries put the value right after the key, while a NIAH answer comes after "… for KEY in the text above are:", so
the model must carry the key across a gap it never practised. A drill asks its questions with exactly the NIAH
tasks' question and answer prefix (`mmx.tasks.niah`), one after another, over needles woven between haystack lines
(noise sentences or the built-in essays' prose), so each document teaches a few dozen retrievals in the evaluated form:
single keys, several keys at once (multi-query) and keys holding several values (multi-value).
"""

from __future__ import annotations

import random

from mmx.tasks.corpus import load_corpus
from mmx.tasks.haystack import NOISE_SENTENCES
from mmx.tasks.niah import ANSWER_PREFIX, INSTRUCTION, QUESTION, join_keys, needle_text
from mmx.tasks.values import KINDS, Distinct
from mmx.workflows.train.packing import Document

NAME = "drill"  # the name `--data` uses for this source
_VALUE_KINDS = ("numbers", "numbers", "uuids")
SINGLE_VALUE_SHARE = 0.6  # drills with one value per key; the rest hold 2–4 values per key (multi-value)
KEYS_PER_QUESTION = (1, 1, 2, 3, 4)  # drawn per question: multi-query questions ask several keys at once
_FILLER_PER_NEEDLE = (0, 3)  # haystack sentences before each needle, drawn uniformly


def _filler(rng: random.Random, essay: bool) -> str:
    """A few noise sentences, or a run of consecutive essay sentences (each keeps its leading separator)."""
    count = rng.randint(*_FILLER_PER_NEEDLE)
    if not essay:
        return " ".join(rng.sample(NOISE_SENTENCES, count))
    sentences = load_corpus(None).sentences
    first = rng.randrange(len(sentences))
    return "".join(sentences[(first + i) % len(sentences)] for i in range(count)).strip()


def _size(text: str) -> int:
    return len(text.encode())  # byte tokens


def _question(kind: str, keys: list[str]) -> str:
    return QUESTION.format(kind=kind, keys=join_keys(keys)) + ANSWER_PREFIX.format(kind=kind, keys=join_keys(keys))


def drill_document(rng: random.Random, length: int, bos: int, eos: int) -> Document:
    """One document of at most `length` + 2 byte tokens: BOS, instruction and needles, questions (the answer), EOS.

    About half of the bytes go to the context and half to the questions; each needle's key is asked at most once.
    """
    kind = rng.choice(_VALUE_KINDS)
    keys = Distinct(KINDS["uuids" if rng.random() < 0.1 else "words"])
    values = Distinct(KINDS[kind])
    per_key = 1 if rng.random() < SINGLE_VALUE_SHARE else rng.randint(2, 4)
    essay = rng.random() < 0.5

    context = INSTRUCTION.format(kind=kind) + "\n"
    needles: list[tuple[str, str, str]] = []  # key, value, line with its filler
    size = _size(context)
    while True:
        key = keys(rng)
        block = [(key, value, _filler(rng, essay)) for value in (values(rng) for _ in range(per_key))]
        lines = [(k, v, (f"\n{f}" if f else "") + "\n" + needle_text(kind, k, v)) for k, v, f in block]
        if size + sum(_size(line) for *_, line in lines) > length // 2:
            break
        size += sum(_size(line) for *_, line in lines)
        needles += lines
    rng.shuffle(needles)  # a multi-value key's needles end up apart, as in the NIAH tasks
    context += "".join(line for *_, line in needles)
    owned: dict[str, list[str]] = {}  # each key's values in the order the text gives them
    for key, value, _ in needles:
        owned.setdefault(key, []).append(value)

    answer = ""
    pending = rng.sample(list(owned), k=len(owned))
    while pending:
        asked = pending[: rng.choice(KEYS_PER_QUESTION)]
        text = _question(kind, asked) + " " + ", ".join(v for key in asked for v in owned[key]) + "."
        if size + _size(answer) + _size(text) > length:
            break
        answer += text
        pending = pending[len(asked) :]
    head = [bos, *context.encode()]
    return Document(head + list(answer.encode()) + [eos], answer_start=len(head))
