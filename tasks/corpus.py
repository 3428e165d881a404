"""Prose corpora for the essay haystack: the built-in generated essays, or the user's own text.

A corpus is a cycle of sentences, each stored with the separator that precedes it (" " inside a paragraph, a blank line
at a paragraph start), so any run of consecutive sentences joins into readable text and counts add up piece by piece.
User corpora: a text file, a directory of `.txt`/`.md` files, or `hf:NAME[:COLUMN]` for a Hugging Face dataset already
in the local cache (read offline; nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.prose import PARAGRAPHS, SEED, generate_paragraphs
from mmx.tasks.tokens import TokenCounter

PARAGRAPH_SEP = "\n\n"
SENTENCE_SEP = " "
MAX_SENTENCE_CHARS = 1000  # text without sentence ends is split at word boundaries into pieces about this long
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_BLANK_LINES = re.compile(r"\n\s*\n")
_TEXT_SUFFIXES = {".txt", ".md", ".text"}


@dataclass(frozen=True)
class Corpus:
    """Sentences with their leading separators; `starts` indexes the paragraph openings."""

    name: str
    sentences: tuple[str, ...]
    starts: tuple[int, ...]
    sha256: str

    def describe(self) -> dict[str, Any]:
        """What a run records: where the text came from and a hash of exactly that text."""
        chars = sum(len(s) for s in self.sentences)
        return {"corpus": self.name, "corpus_sha256": self.sha256, "sentences": len(self.sentences), "chars": chars}

    def counts(self, counter: TokenCounter) -> list[int]:
        """Per-sentence token counts in `counter`'s tokenizer, 0 where not counted yet (see `count`).

        Counting lazily means a short haystack pays only for the sentences it uses; the table is kept per tokenizer.
        """
        return counter.tables.setdefault(("corpus", self.sha256), [0] * len(self.sentences))

    def count(self, counter: TokenCounter, counts: list[int], i: int) -> int:
        """The token count of sentence `i` (with its separator), counted on first use."""
        if not counts[i]:
            counts[i] = counter.once(self.sentences[i])
        return counts[i]


def from_paragraphs(name: str, paragraphs: list[list[str]]) -> Corpus:
    """Build a corpus from paragraphs given as sentence lists (empty ones dropped)."""
    sentences: list[str] = []
    starts: list[int] = []
    for paragraph in filter(None, paragraphs):
        starts.append(len(sentences))
        sentences.append(PARAGRAPH_SEP + paragraph[0])
        sentences.extend(SENTENCE_SEP + s for s in paragraph[1:])
    if not sentences:
        raise MmxError(f"corpus {name!r} has no text", "give a file or directory with some prose in it")
    digest = hashlib.sha256("".join(sentences).encode("utf-8")).hexdigest()
    return Corpus(name, tuple(sentences), tuple(starts), digest)


@cache
def builtin_corpus() -> Corpus:
    """The generated essays (deterministic; built once per process)."""
    return from_paragraphs("builtin", generate_paragraphs(PARAGRAPHS, SEED))


def split_text(text: str) -> list[list[str]]:
    """Paragraphs (blank-line separated) of sentences; whitespace inside a paragraph collapses to single spaces."""
    paragraphs = []
    for block in _BLANK_LINES.split(text):
        flat = " ".join(block.split())
        if flat:
            paragraphs.append([piece for s in _SENTENCE_END.split(flat) for piece in _wrap(s)])
    return paragraphs


def _wrap(sentence: str) -> list[str]:
    """A very long 'sentence' (a list, a table, text without full stops) cut at spaces into manageable pieces."""
    pieces = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        cut = sentence.rfind(" ", 0, MAX_SENTENCE_CHARS)
        cut = cut if cut > 0 else MAX_SENTENCE_CHARS
        pieces.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    return [*pieces, sentence] if sentence else pieces


def load_corpus(spec: str | None) -> Corpus:
    """`None`/"builtin": the generated essays; else a file, a directory, or `hf:NAME[:COLUMN]` (local cache)."""
    if spec in (None, "", "builtin"):
        return builtin_corpus()
    return _load_user_corpus(spec)


def read_texts(spec: str) -> list[str]:
    """The raw texts of a corpus spec: one file, every `.txt`/`.md` file under a folder (sorted by path), or the
    `COLUMN` (default `text`) of `hf:NAME[:COLUMN]` in the local Hugging Face cache."""
    if spec.startswith("hf:"):
        name, _, column = spec[3:].partition(":")
        return _cached_dataset_texts(name, column or "text")
    path = Path(spec).expanduser()
    if not path.exists():
        raise MmxError(f"corpus path {spec!r} does not exist", "pass an existing text file or directory")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in _TEXT_SUFFIXES)
    if not files:
        raise MmxError(f"no .txt or .md files under {spec!r}", "point corpus= at a text file or a folder of them")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if not any(t.strip() for t in texts):
        raise MmxError(f"corpus {spec!r} is empty", "give a file or directory with some prose in it")
    return texts


@cache
def _load_user_corpus(spec: str) -> Corpus:
    name = spec if spec.startswith("hf:") else str(Path(spec).expanduser())
    return from_paragraphs(name, split_text("\n\n".join(read_texts(spec))))


def _cached_dataset_texts(name: str, column: str) -> list[str]:
    """The `column` of a dataset in the local Hugging Face cache; never downloads."""
    from mmx.tasks.hf_cache import load_cached_dataset

    rows = load_cached_dataset(name)
    if rows is None:
        raise MmxError(f"dataset {name!r} is not in the local Hugging Face cache", "download it once, or pass a path")
    if column not in rows.column_names:
        raise MmxError(f"dataset {name!r} has no column {column!r}", f"choose one of {', '.join(rows.column_names)}")
    return [str(t) for t in rows[column] if t]
