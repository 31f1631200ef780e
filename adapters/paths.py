"""Adapter names and paths that cannot escape the configured adapter roots.

Paths come from clients (LoadAdapter), so everything the operating system could choke on
(a NUL byte, a component longer than a file name may be, a path longer than PATH_MAX,
characters that do not encode) is refused here as an UnsafeAdapterPathError: the client gets
INVALID_ARGUMENT, never an INTERNAL from a ValueError or OSError deep in ``os.path``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hybrid_assistant.adapters.errors import AdapterNotFoundError, UnsafeAdapterPathError, show

# Names travel in logs, metrics labels and file names: keep them boring.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

MAX_COMPONENT_BYTES = 255
"""NAME_MAX on Linux: the longest file name, in bytes of the file-system encoding."""
MAX_PATH_BYTES = 4096
"""PATH_MAX on Linux, for the path as given and for the path under each root."""


def check_adapter_name(name: str) -> str:
    """Return ``name`` if it is a safe adapter name, else raise UnsafeAdapterPathError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UnsafeAdapterPathError(
            f"adapter name {show(name)} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_path_text(path: str) -> None:
    """Refuse what the OS cannot take, before the OS sees it."""
    if "\x00" in path:
        raise UnsafeAdapterPathError(f"adapter path {show(path)} contains a NUL byte")
    try:
        encoded = os.fsencode(path)
    except (UnicodeError, ValueError) as exc:
        raise UnsafeAdapterPathError(
            f"adapter path {show(path)} cannot be encoded as a file name: {exc}"
        ) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafeAdapterPathError(
            f"adapter path {show(path)} is {len(encoded)} bytes long; the limit is {MAX_PATH_BYTES}"
        )
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > MAX_COMPONENT_BYTES:
        raise UnsafeAdapterPathError(
            f"adapter path {show(path)} has a component of {longest} bytes; "
            f"the limit is {MAX_COMPONENT_BYTES}"
        )


def _realpath(path: Path, shown: str) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise UnsafeAdapterPathError(f"adapter path {shown} cannot be resolved: {exc}") from None


def _is_dir(path: Path, shown: str) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError) as exc:
        raise UnsafeAdapterPathError(f"adapter path {shown} cannot be read: {exc}") from None


def resolve_adapter_dir(path: str | os.PathLike[str], roots: Sequence[Path]) -> Path:
    """Resolve ``path`` to a real directory inside one of ``roots``.

    Relative paths are looked up under each root in order. Symlinks are resolved before the
    containment check, so a link that points outside every root is refused like ``..`` is.
    """
    if not roots:
        raise UnsafeAdapterPathError("no adapter roots are configured: loading adapters is disabled")
    try:
        text = os.fspath(path)
    except TypeError:
        raise UnsafeAdapterPathError(f"adapter path {show(path)} is not a path") from None
    if not isinstance(text, str):
        raise UnsafeAdapterPathError(f"adapter path {show(path)} is not text")
    shown = show(text)
    if text.strip() == "":
        raise UnsafeAdapterPathError("adapter path is empty")
    _check_path_text(text)
    raw = Path(text)
    real_roots = [_realpath(Path(r), show(str(r))) for r in roots]
    candidates = [raw] if raw.is_absolute() else [root / raw for root in real_roots]
    for candidate in candidates:
        _check_path_text(str(candidate))
        real = _realpath(candidate, shown)
        if not any(_inside(real, root) for root in real_roots):
            raise UnsafeAdapterPathError(
                f"adapter path {shown} resolves to {show(str(real))}, outside the adapter roots "
                f"{[str(r) for r in real_roots]}"
            )
        if _is_dir(real, shown):
            return real
    raise AdapterNotFoundError(
        f"adapter directory {shown} not found under adapter roots {[str(r) for r in real_roots]}"
    )


def check_file_inside(file: Path, root: Path) -> bool:
    """True if ``file`` (after resolving symlinks) stays inside ``root``; False if it cannot be resolved."""
    try:
        return _inside(Path(os.path.realpath(file)), Path(os.path.realpath(root)))
    except (OSError, ValueError):
        return False
