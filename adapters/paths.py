"""Adapter names and paths that cannot escape the configured adapter roots."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from adapters.errors import AdapterNotFoundError, UnsafeAdapterPathError

# Names travel in logs, metrics labels and file names: keep them boring.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_adapter_name(name: str) -> str:
    """Return ``name`` if it is a safe adapter name, else raise UnsafeAdapterPathError."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise UnsafeAdapterPathError(
            f"adapter name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_adapter_dir(path: str | os.PathLike[str], roots: Sequence[Path]) -> Path:
    """Resolve ``path`` to a real directory inside one of ``roots``.

    Relative paths are looked up under each root in order. Symlinks are resolved before the
    containment check, so a link that points outside every root is refused like ``..`` is.
    """
    if not roots:
        raise UnsafeAdapterPathError("no adapter roots are configured: loading adapters is disabled")
    raw = Path(path)
    if str(path).strip() == "":
        raise UnsafeAdapterPathError("adapter path is empty")
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    candidates = [raw] if raw.is_absolute() else [root / raw for root in real_roots]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if not any(_inside(real, root) for root in real_roots):
            raise UnsafeAdapterPathError(
                f"adapter path {str(path)!r} resolves to {str(real)!r}, outside the adapter roots "
                f"{[str(r) for r in real_roots]}"
            )
        if real.is_dir():
            return real
    raise AdapterNotFoundError(
        f"adapter directory {str(path)!r} not found under adapter roots {[str(r) for r in real_roots]}"
    )


def check_file_inside(file: Path, root: Path) -> bool:
    """True if ``file`` (after resolving symlinks) stays inside ``root``."""
    return _inside(Path(os.path.realpath(file)), Path(os.path.realpath(root)))
