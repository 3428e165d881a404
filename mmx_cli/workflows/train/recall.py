"""Dense associative-recall documents: many key → value pairs, then many of them asked back in another order.

A task document teaches one retrieval per few thousand tokens; this one teaches dozens per thousand, with the keys
and values the NIAH tasks use (adjective-noun words, 7-digit numbers, uuids). Everything after `Recall:` is answer:
the values are retrievable, the queried keys only guessable, so the loss there is dominated by retrieval.
"""

from __future__ import annotations

import random

from mmx.tasks.values import number, uuid4, word_key
from mmx.workflows.train.packing import Document

NAME = "recall"  # the name `--data` uses for this source
_VALUES = (number, number, uuid4)
_HEADER = "Memorize each key and its value; some will be asked back.\n"
_QUERIES = "\nRecall:\n"


def recall_document(rng: random.Random, length: int, bos: int, eos: int) -> Document:
    """One document of at most `length` + 2 byte tokens: BOS, pairs, queries (the answer part), EOS."""
    value_of = rng.choice(_VALUES)
    pairs: list[tuple[str, str]] = []
    keys: set[str] = set()
    size = len(_HEADER) + len(_QUERIES)
    while True:
        key, value = word_key(rng), value_of(rng)
        line = len(f"{key}: {value}\n")
        if size + 2 * line > length:  # every pair may be asked back once
            break
        if key in keys:
            continue
        keys.add(key)
        pairs.append((key, value))
        size += 2 * line
    asked = rng.sample(pairs, k=len(pairs))
    context = _HEADER + "".join(f"{k}: {v}\n" for k, v in pairs) + _QUERIES
    answer = "".join(f"{k}: {v}\n" for k, v in asked)
    head = [bos, *context.encode()]
    return Document(head + list(answer.encode()) + [eos], answer_start=len(head))
