"""Report tables as GitHub-flavoured Markdown, for pasting into an issue or a model card."""

from __future__ import annotations

from mmx.results.tables import Table


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _headers(table: Table) -> list[str]:
    """Markdown has no spanning headers either: a block's heading prefixes its first column, in bold."""
    if not any(label for label, _ in table.groups):
        return list(table.columns)
    return [f"**{label}** {name}" if label and first else name for label, first, name in table.headed_columns()]


def table_markdown(table: Table) -> str:
    """One table with its title as a heading and its notes as a list under it."""
    headers = _headers(table)
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(_escape(h) for h in headers) + " |")
    lines.append("|" + "|".join([":---"] * table.text_columns + ["---:"] * (len(headers) - table.text_columns)) + "|")
    for row in table.rows:
        texts = [_escape(c.text) for c in row.cells]
        if "effective" in {t for c in row.cells for t in c.tags}:
            texts = [f"**{t}**" if "effective" in c.tags else t for t, c in zip(texts, row.cells, strict=True)]
        if "mean" in row.tags:
            texts[0] = f"**{texts[0]}**"
        lines.append("| " + " | ".join(texts) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def report_markdown(tables: list[Table], title: str = "mmx report") -> str:
    """All tables as one Markdown document."""
    return f"# {title}\n\n" + "\n".join(table_markdown(t) for t in tables)
