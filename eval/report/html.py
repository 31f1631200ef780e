"""Render the report document as one self-contained HTML page (plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING

from hybrid_assistant.eval.report.blocks import Section, Table
from hybrid_assistant.eval.report.document import build_document

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;padding-bottom:4px;
border-bottom:1px solid #d8dee4}
.sub{color:#656d76;margin:0 0 16px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 14px;width:100%}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600;position:sticky;top:0}
td.n{font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;color:#656d76;font-size:12px;padding:2px 0 4px}
tr:hover td{background:#fafbfc}
img{max-width:100%;display:block;margin:8px 0 12px}
ul{margin:6px 0 12px;padding-left:22px}li{margin:3px 0}
details>summary{cursor:pointer;font-weight:600;font-size:1.2em;margin:28px 0 8px;padding-bottom:4px;
border-bottom:1px solid #d8dee4}
.ok{color:#1a7f37}.bad{color:#cf222e}
.scroll{overflow-x:auto}td.item{min-width:260px;max-width:380px}.tags{color:#656d76;font-size:11px}
code{background:#f3f5f7;padding:0 3px;border-radius:3px}
"""


def _cell(text: str) -> str:
    if text[:2] in ("✓ ", "✗ "):
        cls = "ok" if text[0] == "✓" else "bad"
        return f'<td><span class="{cls}">{text[0]}</span> {escape(text[2:])}</td>'
    numeric = bool(text) and (text[0].isdigit() or text[0] in "+-–<")
    if numeric:
        return f'<td class="n">{escape(text)}</td>'
    head, sep, rest = text.partition("\n")
    if sep:  # a first line of tags, then lines of text
        lines = "<br>".join(escape(line) for line in rest.split("\n"))
        return f'<td class="item"><span class="tags">{escape(head)}</span><br>{lines}</td>'
    return f"<td>{escape(text)}</td>"


def render_table(table: Table) -> str:
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    table_html = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _section(section: Section) -> str:
    body = "".join(f"<p>{_inline(p)}</p>" for p in section.paragraphs)
    if section.bullets:
        body += "<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in section.bullets) + "</ul>"
    for image in section.images:
        data = base64.b64encode(image.png).decode("ascii")
        body += f'<img alt="{escape(image.alt)}" src="data:image/png;base64,{data}">'
    body += "".join(render_table(t) for t in section.tables)
    if section.collapsed:
        return f"<details><summary>{escape(section.title)}</summary>{body}</details>"
    return f"<section><h2>{escape(section.title)}</h2>{body}</section>"


def render_html(analysis: EvalAnalysis, title: str = "Evaluation report") -> str:
    meta = analysis.meta
    sub = (
        f"{meta['n_items']} items · {len(meta['arms'])} arms · {meta['n_resamples']} bootstrap resamples · "
        f"primary metrics: {meta['primary_knowledge']} (knowledge), {meta['primary_style']} (style)"
    )
    return render_page(title, sub, build_document(analysis))


def render_page(title: str, sub: str, sections: list[Section]) -> str:
    """One self-contained page: a title, a subtitle line, then the sections."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><main><h1>{escape(title)}</h1>"
        f'<p class="sub">{escape(sub)}</p>'
        + "".join(_section(s) for s in sections)
        + "</main></body></html>\n"
    )
