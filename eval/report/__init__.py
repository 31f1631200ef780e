"""Reports: ``report.json``, ``report.md`` and one self-contained ``report.html``; a terminal summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hybrid_assistant.eval.report.html import render_html
from hybrid_assistant.eval.report.markdown import render_markdown
from hybrid_assistant.eval.report.terminal import terminal_table

if TYPE_CHECKING:
    from hybrid_assistant.eval.analysis import EvalAnalysis

__all__ = ["render_html", "render_markdown", "terminal_table", "write_reports"]


def write_reports(
    analysis: EvalAnalysis, out_dir: str | Path, title: str = "Evaluation report"
) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if needed).

    Returns their paths under the keys ``json``, ``md`` and ``html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(analysis.to_json() + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(analysis, title), encoding="utf-8")
    paths["html"].write_text(render_html(analysis, title), encoding="utf-8")
    return paths
