"""Question-answering data for `qa_1` (SQuAD v2) and `qa_2` (HotpotQA), from a local file or the local HF cache.

Both become the same shape as RULER builds them: questions with the documents every prompt must hold and the answers,
plus a pool of every document in the set from which distractors are drawn. SQuAD: only answerable questions (as
RULER), the gold paragraph required, the other paragraphs of its article as the first distractors. HotpotQA: all ten
paragraphs of the distractor setting required (two gold, eight distractors, as RULER), yes/no questions kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.hf_cache import load_cached_dataset

SQUAD_HF = ("rajpurkar/squad_v2", None, "validation")
HOTPOT_HF = ("hotpotqa/hotpot_qa", "distractor", "validation")


@dataclass(frozen=True)
class QaItem:
    question: str
    answers: tuple[str, ...]
    gold: tuple[str, ...]  # documents every prompt holds (the answer's, and for HotpotQA its given distractors)
    related: tuple[str, ...] = ()  # the first distractors (SQuAD: the other paragraphs of the same article)


@dataclass(frozen=True)
class QaSet:
    """Questions plus the pool of all documents; `source` and `sha256` say exactly which data was read."""

    items: tuple[QaItem, ...]
    pool: tuple[str, ...]
    source: str
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "questions": len(self.items), "documents": len(self.pool)}


def _qa_set(items: list[QaItem], source: str, documents: Iterable[str] = ()) -> QaSet:
    """Items plus the distractor pool: every gold document and any `documents` besides, each once."""
    if not items:
        raise MmxError(f"no usable questions in {source}", "pass a SQuAD v2 / HotpotQA dev file with answers")
    pool = tuple(dict.fromkeys([*(doc for item in items for doc in item.gold), *documents]))
    content = json.dumps([[i.question, i.answers, i.gold, i.related] for i in items])
    digest = hashlib.sha256(content.encode()).hexdigest()
    return QaSet(tuple(items), pool, source, digest)


def squad_items(rows: Iterable[tuple[str, str, list[str], str]]) -> list[QaItem]:
    """(context, question, answer texts, article) rows -> answerable items, with their article's other paragraphs."""
    rows = [row for row in rows if any(x.strip() for x in row[2])]
    articles: dict[str, list[str]] = {}
    for context, _, _, article in rows:
        articles.setdefault(article, [])
        if context not in articles[article]:
            articles[article].append(context)
    return [
        QaItem(q, tuple(dict.fromkeys(a)), (c,), tuple(p for p in articles[article] if p != c))
        for c, q, a, article in rows
    ]


HotpotRow = tuple[str, str, list[tuple[str, str]], set[str]]


def hotpot_document(title: str, text: str) -> str:
    return f"{title}\n{text}"


def hotpot_items(rows: Iterable[HotpotRow]) -> list[QaItem]:
    """(question, answer, [(title, text)], supporting titles) rows -> items that require all their paragraphs."""
    items = []
    for question, answer, paragraphs, _support in rows:
        gold = tuple(hotpot_document(title, text) for title, text in paragraphs)
        if gold and answer.strip():
            items.append(QaItem(question, (answer,), gold))
    return items


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise MmxError(f"QA data file {str(path)!r} does not exist", "pass the path of a SQuAD v2 / HotpotQA dev JSON")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MmxError(f"QA data file {str(path)!r} is not valid JSON ({err})", "check the file") from None


def load_squad(path: str | None) -> QaSet | None:
    """SQuAD v2 dev from a JSON file (the official layout), else from the HF cache, else None."""
    if path:
        data = _read_json(Path(path).expanduser())
        try:
            rows = [
                (para["context"], qa["question"], [a["text"] for a in qa.get("answers", [])], article.get("title", ""))
                for article in data["data"]
                for para in article["paragraphs"]
                for qa in para["qas"]
                if not qa.get("is_impossible")
            ]
        except (KeyError, TypeError):
            hint = "expected {data: [{paragraphs: [{context, qas}]}]}"
            raise MmxError(f"{path!r} is not in SQuAD's layout", hint) from None
        return _qa_set(squad_items(rows), path)
    name, config, split = SQUAD_HF
    rows_hf = load_cached_dataset(name, config, split)
    if rows_hf is None:
        return None
    rows = [(r["context"], r["question"], list(r["answers"]["text"]), r.get("title", "")) for r in rows_hf]
    return _qa_set(squad_items(rows), f"hf:{name}:{split}")


def load_hotpot(path: str | None) -> QaSet | None:
    """HotpotQA dev (distractor setting) from a JSON file (the official layout), else the HF cache, else None."""
    if path:
        data = _read_json(Path(path).expanduser())
        try:
            rows = [
                (
                    row["question"],
                    row["answer"],
                    [(title, "".join(sents)) for title, sents in row["context"]],
                    {title for title, _ in row["supporting_facts"]},
                )
                for row in data
            ]
        except (KeyError, TypeError, ValueError):
            hint = "expected [{question, answer, context, supporting_facts}]"
            raise MmxError(f"{path!r} is not in HotpotQA's layout", hint) from None
        return _hotpot_set(rows, path)
    name, config, split = HOTPOT_HF
    rows_hf = load_cached_dataset(name, config, split)
    if rows_hf is None:
        return None
    rows = [
        (
            r["question"],
            r["answer"],
            [(t, "".join(s)) for t, s in zip(r["context"]["title"], r["context"]["sentences"], strict=True)],
            set(r["supporting_facts"]["title"]),
        )
        for r in rows_hf
    ]
    return _hotpot_set(rows, f"hf:{name}:{config}:{split}")


def _hotpot_set(rows: list[HotpotRow], source: str) -> QaSet:
    """Every paragraph of the set, gold or not, serves as a distractor for other questions (as in RULER)."""
    documents = (hotpot_document(title, text) for _, _, paragraphs, _ in rows for title, text in paragraphs)
    return _qa_set(hotpot_items(rows), source, documents)
