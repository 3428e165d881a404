"""The documentation holds together: every relative link in the README and docs/ points at a file that exists (and
at a heading that exists, for `#anchors`, with GitHub's slugs), the README stays short, and no committed Markdown
talks about how the project was made rather than what it does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# Folders whose Markdown ships with the repository (README.md sits at the root).
MARKDOWN_FOLDERS = ("docs", "benchmarks", "model", "kernels", "tasks", "results", "mmx_cli", "tests")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+([^`]*)`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …
# Notes about how the project was made, which committed text must not carry: work sessions, issue numbers, the
# internal design notes, numbered measurement sweeps. Each pattern is narrow enough to have no innocent reading.
WORK_TALK = {
    "a numbered work session": re.compile(r"\bsessions?[- ]\d", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues? #?\d|(?<![\w&/])#\d+\b", re.IGNORECASE),
    "the internal design notes": re.compile(r"\bDESIGN\.md\b"),
    "a numbered sweep or call": re.compile(r"\bs\d (?:sweep|call|run|notes)\b", re.IGNORECASE),
}


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in MARKDOWN_FOLDERS:
        files += sorted(p for p in (ROOT / folder).rglob("*.md") if "__pycache__" not in p.parts)
    return files


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code replaced by its bare text."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link targets and inline-code ticks dropped, lower case, punctuation removed
    except hyphens and underscores, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = INLINE_CODE.sub(r"\1", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, … as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link and image targets written in a Markdown file's prose (code blocks and code spans excluded)."""
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub(lambda m: "x" * len(m.group(0)), line)
        targets += LINK.findall(line)
    return targets


def dead_links(path: Path) -> list[str]:
    """Relative links of `path` whose file, folder or heading does not exist, each with the reason."""
    problems = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: no such file or folder")
        elif anchor:
            if resolved.suffix != ".md" or resolved.is_dir():
                problems.append(f"{target}: an anchor into something that is not a Markdown file")
            elif anchor not in anchors(resolved):
                problems.append(f"{target}: no heading with the anchor #{anchor} in {resolved.name}")
    return problems


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", markdown_files(), ids=_label)
def test_every_relative_link_resolves(path: Path) -> None:
    assert dead_links(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=_label)
def test_no_notes_about_how_the_project_was_made(path: Path) -> None:
    found = [
        f"line {number}: {what}: {line.strip()[:100]}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for what, pattern in WORK_TALK.items()
        if pattern.search(line)
    ]
    assert found == []


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md")}
    assert sorted(_label(p) for p in pages - linked) == []


def test_the_checker_finds_dead_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The `run.json` file, briefly\n\n## Repeat\n\n## Repeat\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#the-runjson-file-briefly) [ok](other.md#repeat-1) [ok](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nothing-here) `[in code](missing-too.md)`\n\n"
        "```\n[in a fence](missing-three.md)\n```\n"
    )
    assert dead_links(page) == [
        "missing.md: no such file or folder",
        "other.md#nothing-here: no heading with the anchor #nothing-here in other.md",
    ]


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Numbers from session 2 of the work.", True),
        ("Targets of issue #9.", True),
        ("As planned in DESIGN.md.", True),
        ("The s2 sweep picked it.", True),
        ("Fixed in #12.", True),
        ("An HTTP session keeps the connection.", False),
        ("`mmx eval` writes run.json; see docs/formats.md#runjson.", False),
        ("Entity &#8212; and the heading anchor (#options).", False),
    ],
)
def test_the_work_talk_patterns(text: str, flagged: bool) -> None:
    assert any(pattern.search(text) for pattern in WORK_TALK.values()) is flagged
