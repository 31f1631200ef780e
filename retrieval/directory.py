"""The knowledge-base directory: its process lock, its size, and the embedder it was built with."""

from __future__ import annotations

import fcntl
import uuid
from pathlib import Path
from typing import IO

from hybrid_assistant.retrieval.docstore import Docstore
from hybrid_assistant.retrieval.embedder import Embedder
from hybrid_assistant.retrieval.errors import IncompatibleIndexError, IndexLockedError

LOCK_FILE = "LOCK"


def lock_directory(directory: Path) -> IO[str]:
    """Hold an exclusive lock on the directory until the returned handle is closed.

    Two processes writing one index would each keep a FAISS index the other cannot see. The
    kernel drops the lock when the process dies, so a crash never leaves it stuck.
    """
    handle = open(directory / LOCK_FILE, "a+")  # noqa: SIM115 - held open until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise IndexLockedError(
            f"the knowledge base in {str(directory)!r} is open in another process"
        ) from exc
    return handle


def directory_size(directory: Path) -> int:
    total = 0
    for path in directory.iterdir():
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # an old index file removed by a concurrent save
            continue
    return total


def record_embedder(docstore: Docstore, embedder: Embedder, directory: Path) -> None:
    """Refuse to mix embedders in one index; record the embedder of a new or empty one."""
    stored_name = docstore.get_meta("embedder")
    stored_dimension = docstore.get_meta("dimension")
    _, chunks = docstore.counts()
    if (
        chunks
        and stored_name is not None
        and (stored_name != embedder.name or stored_dimension != str(embedder.dimension))
    ):
        raise IncompatibleIndexError(
            f"the knowledge base in {str(directory)!r} was built with embedder {stored_name!r} "
            f"(dimension {stored_dimension}), not {embedder.name!r} (dimension {embedder.dimension}); "
            "open it with that embedder, or ingest into a new directory"
        )
    if docstore.get_meta("kb_id") is None:
        docstore.set_meta("kb_id", uuid.uuid4().hex)
    docstore.set_meta("embedder", embedder.name)
    docstore.set_meta("dimension", str(embedder.dimension))
