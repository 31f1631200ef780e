"""Render the report document as Markdown (no images; the HTML report has the plots)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.eval.report.blocks import Section, Table
from hybrid_assistant.eval.report.document import build_document

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " — ")


def table_markdown(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _section(section: Section) -> str:
    parts = [f"## {section.title}"]
    parts += section.paragraphs
    if section.bullets:
        parts.append("\n".join(f"- {b}" for b in section.bullets))
    parts += [table_markdown(t) for t in section.tables]
    return "\n\n".join(parts)


def render_markdown(analysis: EvalAnalysis, title: str = "Evaluation report") -> str:
    sections = build_document(analysis, markdown=True)
    return f"# {title}\n\n" + "\n\n".join(_section(s) for s in sections) + "\n"
