"""One generated test item: the text a model continues, what counts as a right answer, and where it came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """A prompt built to an exact token length; the model continues `prompt + answer_prefix`.

    `length` is the target in the backend's tokens and covers the prompt, the answer prefix and the answer budget
    (`max_new_tokens`), as RULER counts it. `metadata` holds what a report needs to slice scores (e.g. needle depth).
    """

    task: str
    length: int
    index: int
    prompt: str
    answer_prefix: str
    references: list[str]
    max_new_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_hash(self) -> str:
        """A short, stable fingerprint of exactly what the model reads, so resumed runs can prove they match."""
        digest = hashlib.sha256()
        digest.update(self.prompt.encode("utf-8"))
        digest.update(b"\x00")
        digest.update(self.answer_prefix.encode("utf-8"))
        return digest.hexdigest()[:16]

    @property
    def text(self) -> str:
        """The full input with the answer prefix, as most backends receive it."""
        return self.prompt + self.answer_prefix
