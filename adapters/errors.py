"""Adapter errors. The server maps them to gRPC status codes in one place (server/errors.py).

Their messages reach clients as gRPC status details, which are capped (about 16 KB of
metadata) and are read by people: so every echoed value is shortened with :func:`show`, and
an AdapterValidationError lists at most :data:`MAX_LISTED_PROBLEMS` problems. A hostile file
with a million bad entries still gives a short, readable INVALID_ARGUMENT, not a
RESOURCE_EXHAUSTED that hides the real error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

MAX_ECHO_CHARS = 200
"""Longest echo of a caller's value (a name, a path, a config value) in an error message."""
MAX_PROBLEM_CHARS = 500
MAX_LISTED_PROBLEMS = 20


def show(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with a note of how long it was."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not replace the error being reported
        text = f"<unprintable {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class AdapterError(Exception):
    """Base class for adapter problems."""


class AdapterNotFoundError(AdapterError):
    """The adapter directory does not exist under any adapter root."""


class UnsafeAdapterPathError(AdapterError):
    """A name or path that could escape the adapter roots (traversal, symlink, bad characters)."""


class AdapterValidationError(AdapterError):
    """The directory is not an adapter this server can load; lists every problem found at once.

    ``problems`` keeps at most :data:`MAX_LISTED_PROBLEMS` entries (each cut to
    :data:`MAX_PROBLEM_CHARS`); the last one then says how many more there were.
    """

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = str(path)
        listed = [_cut(str(p), MAX_PROBLEM_CHARS) for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more problems")
        self.problems = listed
        joined = "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, start=1))
        super().__init__(f"adapter at {show(self.path, 400)} cannot be loaded: {joined}")
