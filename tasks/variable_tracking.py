"""RULER's variable tracking (`vt`): follow a chain of assignments hidden in noise and name every variable on it.

A chain starts with "VAR ABCDE = 12345." and each hop copies the previous variable: "VAR FGHIJ = VAR ABCDE.". With
RULER's parameters there is one chain of four hops (five variables, five-letter capital names, a five-digit value),
its statements spread over the noise haystack in order at random line boundaries, and one worked example before the
real text. The answer is the five variable names; as in RULER, the answer prefix says how many there are.
"""

from __future__ import annotations

import random
import string
from typing import Any

from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.fit import Budget, Draft
from mmx.tasks.haystack import NOISE_SENTENCES, noise_haystack, weave
from mmx.tasks.tokens import TokenCounter
from mmx.tasks.values import Distinct

INSTRUCTION = (
    "Variable assignments are hidden among the filler lines below. VAR ABCDE = 12345 gives ABCDE a value; "
    "VAR FGHIJ = VAR ABCDE copies it into FGHIJ. Track every chain of assignments."
)
EXAMPLE_HEAD = "\n\nHere is a short example."
REAL_HEAD = "\n\nNow the real text."
QUESTION = "\n\nQuestion: Which variables hold the value {value} in the text above?\n"
ANSWER_PREFIX = "Answer: Following the assignments above, {count} variables hold the value {value}. They are:"
EXAMPLE_NOISE_LINES = 1


def variable_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=5))


def five_digits(rng: random.Random) -> str:
    return str(rng.randint(10_000, 99_999))


def chain_statements(names: list[str], value: str) -> list[str]:
    """The assignments of one chain, in order: the value first, then each copy."""
    return [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:], strict=False)]


class VariableTracking(Task):
    """Multi-hop tracing over a noise haystack; `num_chains - 1` extra chains with other values act as distractors."""

    name = "vt"
    category = "multi-hop tracing"
    metric = "all"
    max_new_tokens = 30

    def __init__(self, *, num_chains: int = 1, num_hops: int = 4, **options: Any) -> None:
        super().__init__(**options)
        self.num_chains = num_chains
        self.num_hops = num_hops
        self.haystack = noise_haystack()

    def describe(self) -> dict[str, Any]:
        return {
            "haystack": "noise",
            "num_chains": self.num_chains,
            "num_hops": self.num_hops,
            "examples": 1,
            "count_in_answer_prefix": True,  # as RULER: the prefix says how many variables to name
            "haystack_params": self.haystack.params,
        }

    def _chains(self, rng: random.Random, count: int, names: Distinct, values: Distinct) -> list[tuple[str, list[str]]]:
        return [(values(rng), names.take(rng, self.num_hops + 1)) for _ in range(count)]

    def _example(self, rng: random.Random, names: Distinct, values: Distinct) -> str:
        """A worked example: a few noise lines with one chain woven in, the question, and its answer."""
        value, chain = self._chains(rng, 1, names, values)[0]
        lines = chain_statements(chain, value)
        for _ in range(EXAMPLE_NOISE_LINES):
            lines.insert(rng.randint(0, len(lines)), " ".join(NOISE_SENTENCES))
        body = "\n".join(lines)
        answer = ANSWER_PREFIX.format(count=len(chain), value=value) + " " + " ".join(chain)
        return f"{EXAMPLE_HEAD}\n{body}{QUESTION.format(value=value)}{answer}"

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        aim, slack = budget.aim, budget.slack
        names, values = Distinct(variable_name), Distinct(five_digits)
        chains = self._chains(rng, self.num_chains, names, values)
        example = self._example(rng, names, values)
        value, answer_chain = chains[0]
        placed: list[tuple[float, str]] = []
        for chain_value, chain in chains:  # random depths, sorted within a chain so each hop follows the one it copies
            statements = chain_statements(chain, chain_value)
            placed += zip(sorted(rng.random() for _ in statements), statements, strict=True)

        head = INSTRUCTION + example + REAL_HEAD + self.haystack.opening
        question = QUESTION.format(value=value)
        prefix = self.answer_prefix(ANSWER_PREFIX.format(count=len(answer_chain), value=value))
        fixed = counter.once(head) + counter.once(question) + counter.once(prefix)
        too_short_unless(aim, fixed + sum(counter.once("\n" + s) for _, s in placed) + 16)
        woven = weave(self.haystack, rng, counter, aim - fixed, placed, slack)
        metadata = {"value": value, "depths": [round(100 * d, 2) for d, _ in placed], "haystack_tokens": woven.tokens}
        return Draft([head, *woven.parts, question], prefix, list(answer_chain), metadata)
