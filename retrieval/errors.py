"""Domain exceptions of the retrieval package.

The server maps these to status codes in one place (``server/errors.py``): ``InvalidQueryError``
to ``INVALID_ARGUMENT``, ``SharedStoreUnavailableError`` to ``UNAVAILABLE``, the others to
``FAILED_PRECONDITION`` (``IndexLockedError``, ``IncompatibleIndexError`` (and its
``SharedSchemaError``), ``CorruptIndexError`` and ``EmbedderError`` are mostly start-up failures).
Invalid ``RetrievalSettings`` raise pydantic's ``ValidationError`` (a ``ValueError``).
Every message shows the offending value.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error raised on purpose by ``retrieval``."""


class InvalidQueryError(RetrievalError, ValueError):
    """A search request is malformed: empty query, top_k out of range, unknown mode, bad filter."""


class EmptyIndexError(RetrievalError):
    """A search was made on an index that holds no chunks yet."""


class EmbedderError(RetrievalError):
    """The embedder could not be loaded or returned vectors of the wrong shape or values."""


class IncompatibleIndexError(RetrievalError):
    """The directory holds an index built with another embedder (name or dimension)."""


class IndexLockedError(RetrievalError):
    """Another process has the knowledge-base directory open."""


class CorruptIndexError(RetrievalError):
    """The docstore is unreadable or not a knowledge-base docstore."""


class SharedSchemaError(IncompatibleIndexError):
    """The shared PostgreSQL store has a knowledge schema this code does not know (newer)."""


class SharedStoreUnavailableError(RetrievalError):
    """The shared PostgreSQL store cannot be reached (mapped to ``UNAVAILABLE``)."""
