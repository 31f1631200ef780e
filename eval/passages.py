"""Gold passages for the oracle arm: document id -> text, read from the same files that were ingested.

A text file is known by its ingest id (its path, e.g. ``kb/ferry.md``) and by that id without
the ``.md``/``.txt`` suffix, so datasets may name it either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hybrid_assistant.retrieval.loaders import DocumentLoader


def load_passages(paths: Iterable[str | Path]) -> dict[str, str]:
    passages: dict[str, str] = {}
    for document in DocumentLoader().iter_documents(paths):
        passages[document.id] = document.text
        stem = Path(document.id)
        if stem.suffix.lower() in (".md", ".txt"):
            passages.setdefault(str(stem.with_suffix("")), document.text)
    return passages
