"""Read documents from ``.txt``, ``.md`` and ``.jsonl`` files and folders.

Problems never stop a load: unreadable, binary or non-UTF-8 files are skipped and malformed
JSONL lines are reported with their file and line number, as ``LoadProblem`` records.

Document ids: a JSONL line's ``id`` field when present, otherwise the file's path relative to
the folder it was found under (``guide/setup.md``), or its name when the file itself was given;
JSONL lines without an id get ``<path>#<line number>``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_assistant.retrieval.types import Document

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES
_BINARY_PROBE_BYTES = 8192


@dataclass(frozen=True)
class LoadProblem:
    """Something skipped during a load. ``line`` is 1-based, or None for a whole file."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)
    files_read: int = 0


ProblemSink = Callable[[LoadProblem], None]


def _discover(path: Path, report: ProblemSink) -> Iterator[tuple[Path, str]]:
    """``(file, relative id)`` of every supported file under ``path``, in sorted order."""
    if path.is_file():
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            yield path, path.name
        else:
            report(LoadProblem(str(path), f"unsupported file type {path.suffix!r} (use .txt, .md or .jsonl)"))
        return
    if not path.is_dir():
        report(LoadProblem(str(path), "no such file or folder"))
        return
    for folder, dirs, files in os.walk(path, onerror=lambda exc: report(LoadProblem(str(path), str(exc)))):
        # Hidden folders (.git, .venv) hold tooling, not knowledge.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            candidate = Path(folder) / name
            if name.startswith(".") or candidate.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            yield candidate, candidate.relative_to(path).as_posix()


def _read_text(path: Path, report: ProblemSink) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        report(LoadProblem(str(path), f"unreadable: {exc.strerror or exc}"))
        return None
    if b"\x00" in data[:_BINARY_PROBE_BYTES]:
        report(LoadProblem(str(path), "binary file skipped"))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report(LoadProblem(str(path), f"not UTF-8 text (byte {exc.start}); skipped"))
        return None


def _metadata_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _jsonl_documents(
    path: Path, rel_id: str, text: str, text_field: str, report: ProblemSink
) -> Iterator[Document]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report(LoadProblem(str(path), f"malformed JSON: {exc.msg} (column {exc.colno})", number))
            continue
        if not isinstance(record, dict):
            report(LoadProblem(str(path), f"expected a JSON object, got {type(record).__name__}", number))
            continue
        body = record.get(text_field)
        if not isinstance(body, str) or not body.strip():
            report(LoadProblem(str(path), f"no text in field {text_field!r}: {body!r:.60}", number))
            continue
        raw_id = record.get("id")
        doc_id = f"{rel_id}#{number}" if raw_id is None or raw_id == "" else _metadata_value(raw_id)
        metadata = {
            key: _metadata_value(value)
            for key, value in record.items()
            if key not in (text_field, "id") and value is not None
        }
        yield Document(id=doc_id, text=body, metadata=metadata, source=f"{path}:{number}")


class DocumentLoader:
    """Loads documents lazily and keeps count: ``problems`` and ``files_read`` fill as it goes."""

    def __init__(self, *, text_field: str = "text", on_problem: ProblemSink | None = None) -> None:
        if not text_field:
            raise ValueError(f"text_field must be a non-empty string, got {text_field!r}")
        self.text_field = text_field
        self.problems: list[LoadProblem] = []
        self.files_read = 0
        self._on_problem = on_problem

    def _report(self, problem: LoadProblem) -> None:
        logger.warning("skipped %s", problem)
        self.problems.append(problem)
        if self._on_problem is not None:
            self._on_problem(problem)

    def iter_documents(self, paths: Iterable[str | Path]) -> Iterator[Document]:
        """Documents from files and folders (recursively), in sorted path order."""
        for given in paths:
            for path, rel_id in _discover(Path(given), self._report):
                text = _read_text(path, self._report)
                if text is None:
                    continue
                self.files_read += 1
                if path.suffix.lower() in JSONL_SUFFIXES:
                    yield from _jsonl_documents(path, rel_id, text, self.text_field, self._report)
                elif not text.strip():
                    self._report(LoadProblem(str(path), "empty file skipped"))
                else:
                    yield Document(id=rel_id, text=text, metadata={}, source=str(path))


def load_documents(paths: Iterable[str | Path], *, text_field: str = "text") -> LoadResult:
    """Every document under ``paths`` plus the problems met on the way."""
    loader = DocumentLoader(text_field=text_field)
    documents = list(loader.iter_documents(paths))
    return LoadResult(documents=documents, problems=loader.problems, files_read=loader.files_read)
