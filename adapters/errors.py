"""Adapter errors. The server maps them to gRPC status codes in one place (server/errors.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class AdapterError(Exception):
    """Base class for adapter problems."""


class AdapterNotFoundError(AdapterError):
    """The adapter directory does not exist under any adapter root."""


class UnsafeAdapterPathError(AdapterError):
    """A name or path that could escape the adapter roots (traversal, symlink, bad characters)."""


class AdapterValidationError(AdapterError):
    """The directory is not an adapter this server can load; lists every problem found at once."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, start=1))
        super().__init__(f"adapter at {self.path!r} cannot be loaded: {listed}")
