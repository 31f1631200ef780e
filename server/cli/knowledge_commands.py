"""``hybrid-assistant ingest`` and ``hybrid-assistant knowledge ...``: load and inspect the index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from hybrid_assistant.retrieval.loaders import DocumentLoader, LoadProblem
from hybrid_assistant.retrieval.types import DeleteSummary, Document, IngestSummary
from hybrid_assistant.server.cli.options import Connection, connection_options
from hybrid_assistant.v1 import assistant_pb2 as pb

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings


def _report_problem(problem: LoadProblem) -> None:
    tqdm.write(f"skipped {problem}")


def _summary(summary: IngestSummary | pb.IngestResponse, loader: DocumentLoader) -> None:
    typer.echo(
        f"files read {loader.files_read}, documents {summary.received}: {summary.added} added, "
        f"{summary.updated} updated, {summary.unchanged} unchanged; chunks +{summary.chunks_added} "
        f"-{summary.chunks_removed}; {len(loader.problems)} files/lines skipped"
    )
    for error in summary.errors:
        typer.echo(f"error: {error}", err=True)


def _with_ids(documents: Iterator[Document], ids: str) -> Iterator[Document]:
    """``stem`` names .md/.txt documents without their suffix (``kb/ferry.md`` -> ``kb/ferry``)."""
    for d in documents:
        path = Path(d.id)
        if ids == "stem" and path.suffix.lower() in (".md", ".txt"):
            d = Document(id=str(path.with_suffix("")), text=d.text, metadata=d.metadata, source=d.source)
        yield d


def _as_pb(documents: Iterator[Document], bar: tqdm) -> Iterator[pb.Document]:
    for d in documents:
        bar.update(1)
        yield pb.Document(id=d.id, text=d.text, metadata=dict(d.metadata), source=d.source)


def _ingest_local(settings: Settings, documents: Iterator[Document]) -> IngestSummary:
    """Into the data dir's index, or with database_url set straight into the shared PostgreSQL
    store (no local cache needed: every replica follows the store within seconds)."""
    from hybrid_assistant.retrieval.chunker import Chunker
    from hybrid_assistant.retrieval.shared_ingest import ingest_shared
    from hybrid_assistant.retrieval.shared_store import SharedStore
    from hybrid_assistant.server.knowledge import make_embedder, open_knowledge_base

    if settings.database_url is None:
        with open_knowledge_base(settings) as kb:
            return kb.ingest(list(documents), progress=True)
    retrieval = settings.retrieval
    store = SharedStore.open(settings.database_url.get_secret_value(), retrieval.change_retention)
    try:
        typer.echo(f"ingesting into the shared knowledge store {store.where}", err=True)
        embedder = make_embedder(settings)
        store.check_embedder(embedder.name, embedder.dimension)
        chunker = Chunker(retrieval.chunk_size, retrieval.chunk_overlap)
        summary, _ = ingest_shared(
            store, embedder, chunker, documents, retrieval.embed_batch_size, progress=True
        )
        return summary
    finally:
        store.close()


@connection_options(admin=True)
def ingest(
    paths: Annotated[list[Path], typer.Argument(help=".txt, .md, .jsonl files or folders (recursive).")],
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    ids: Annotated[
        str, typer.Option(help="Document ids of files: 'path' (relative path) or 'stem' (without .md/.txt).")
    ] = "path",
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Write the data dir's index directly (no server may be running on it); with "
            "HA_DATABASE_URL set, write the shared PostgreSQL store (servers pick it up within seconds).",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory for --local [HA_DATA_DIR].")] = None,
    connection: Connection = Connection(),
) -> None:
    """Add or update documents in the knowledge index (unchanged documents are skipped)."""
    if ids not in ("path", "stem"):
        raise typer.BadParameter(f"--ids must be 'path' or 'stem', got {ids!r}")
    loader = DocumentLoader(text_field=text_field, on_problem=_report_problem)
    documents = _with_ids(loader.iter_documents(paths), ids)
    if local:
        from hybrid_assistant.server.config import load_settings

        settings = load_settings(None, data_dir=data_dir)
        summary = _ingest_local(settings, documents)
        _summary(summary, loader)
        raise typer.Exit(1 if summary.errors else 0)
    with connection.connect() as client, tqdm(desc="documents sent", unit="doc") as bar:
        reply = client.ingest(_as_pb(documents, bar))
    _summary(reply, loader)
    raise typer.Exit(1 if reply.errors else 0)


@connection_options()
def stats(
    connection: Connection = Connection(),
) -> None:
    """Documents, chunks, index type and size of the server's knowledge index."""
    with connection.connect() as client:
        s = client.index_stats()
    typer.echo(
        f"{s.documents} documents, {s.chunks} chunks, {s.index_type} index, dimension {s.dimension}, "
        f"{s.bytes_on_disk / 1e6:.1f} MB on disk, embedder {s.embedder}, fingerprint {s.fingerprint}"
    )


@connection_options(admin=True)
def delete(
    ids: Annotated[list[str], typer.Argument(help="Document ids.")],
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Delete from the data dir's index directly (no server may be running on it); with "
            "HA_DATABASE_URL set, from the shared PostgreSQL store.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory for --local [HA_DATA_DIR].")] = None,
    connection: Connection = Connection(),
) -> None:
    """Delete documents by id."""
    if local:
        from hybrid_assistant.server.config import load_settings

        summary = _delete_local(load_settings(None, data_dir=data_dir), ids)
        deleted, not_found = summary.deleted, list(summary.not_found)
    else:
        with connection.connect() as client:
            reply = client.delete_documents(ids)
        deleted, not_found = reply.deleted, list(reply.not_found)
    typer.echo(f"deleted {deleted}" + (f"; not found: {', '.join(not_found)}" if not_found else ""))


def _delete_local(settings: Settings, ids: list[str]) -> DeleteSummary:
    from hybrid_assistant.retrieval.shared_ingest import delete_shared
    from hybrid_assistant.retrieval.shared_store import SharedStore
    from hybrid_assistant.server.knowledge import open_knowledge_base

    if settings.database_url is None:
        with open_knowledge_base(settings) as kb:
            return kb.delete(ids)
    store = SharedStore.open(settings.database_url.get_secret_value(), settings.retrieval.change_retention)
    try:
        return delete_shared(store, ids)[0]
    finally:
        store.close()


@connection_options()
def search(
    query: Annotated[str, typer.Argument()],
    top_k: Annotated[int, typer.Option(help="Hits to return.")] = 5,
    mode: Annotated[str, typer.Option(help="dense | lexical | hybrid")] = "hybrid",
    connection: Connection = Connection(),
) -> None:
    """Show what retrieval finds for a query."""
    if mode not in ("dense", "lexical", "hybrid"):
        raise typer.BadParameter(f"mode must be dense, lexical or hybrid, got {mode!r}")
    with connection.connect() as client:
        reply = client.retrieve(query, top_k=top_k, mode=mode)
    for i, p in enumerate(reply.passages, start=1):
        text = " ".join(p.text.split())
        typer.echo(f"[{i}] {p.document_id} #{p.chunk_id} score {p.score:.3f}: {text[:160]}")
    typer.echo(f"({reply.took_ms:.1f} ms)", err=True)
