"""What adapters are on disk: scan the adapter roots, read metadata, validate like the server does.

Local and read-only: it answers "what could the server load, and how was each made?" without
a running server. Validation is :func:`adapters.peft_format.inspect_adapter`, the very check
the server runs before loading, against a :class:`BaseModelSpec` built from the model's config.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_assistant.adapters.errors import AdapterError, AdapterValidationError
from hybrid_assistant.adapters.metadata import read_metadata
from hybrid_assistant.adapters.paths import resolve_adapter_dir
from hybrid_assistant.adapters.peft_format import (
    CONFIG_FILE,
    METADATA_FILE,
    PICKLE_WEIGHTS_FILE,
    WEIGHTS_FILE,
    BaseModelSpec,
    inspect_adapter,
)

log = logging.getLogger(__name__)

_ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, PICKLE_WEIGHTS_FILE, METADATA_FILE)


@dataclass(frozen=True)
class RegistryEntry:
    """One adapter directory under a root."""

    name: str
    path: Path
    root: Path
    valid: bool
    problems: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    rank: int | None = None
    target_modules: tuple[str, ...] = ()
    base_model: str = ""
    shadowed_by: Path | None = None
    """An earlier root holds the same name; the server resolves the name to that one."""

    @property
    def purpose(self) -> str:
        return self.metadata.get("purpose", "")

    @property
    def examples(self) -> str:
        return self.metadata.get("examples", "")

    @property
    def val_loss(self) -> str:
        return self.metadata.get("val_loss", "")


def _candidates(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    # Hidden directories are the trainer's staging and trash directories: never adapters.
    return sorted(
        p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and _looks_like_adapter(p)
    )


def _looks_like_adapter(path: Path) -> bool:
    return any((path / name).exists() for name in _ADAPTER_FILES)


def inspect_entry(path: Path, root: Path, base: BaseModelSpec, max_rank: int) -> RegistryEntry:
    """Validate one directory; problems are collected, never raised."""
    metadata, metadata_problem = read_metadata(path)
    problems: list[str] = [metadata_problem] if metadata_problem else []
    try:
        real = resolve_adapter_dir(path.name, [root])  # the server's containment rules
        spec = inspect_adapter(real, base, max_rank)
    except AdapterValidationError as exc:
        problems += [p for p in exc.problems if p not in problems]  # the metadata check runs in both
    except AdapterError as exc:
        problems.append(str(exc))
    else:
        return RegistryEntry(
            name=path.name,
            path=path,
            root=root,
            valid=not problems,
            problems=tuple(problems),
            metadata=metadata,
            rank=spec.rank,
            target_modules=spec.target_modules,
            base_model=spec.base_model,
        )
    return RegistryEntry(
        name=path.name,
        path=path,
        root=root,
        valid=False,
        problems=tuple(problems),
        metadata=metadata,
        base_model=metadata.get("base_model", ""),
    )


def scan_adapters(roots: Sequence[Path], base: BaseModelSpec, max_rank: int) -> list[RegistryEntry]:
    """Every adapter-like directory in ``roots`` (in root order, then by name), validated."""
    entries: list[RegistryEntry] = []
    first: dict[str, Path] = {}
    for root in roots:
        for path in _candidates(Path(root)):
            entry = inspect_entry(path, Path(root), base, max_rank)
            if entry.name in first:
                entry = dataclasses.replace(entry, shadowed_by=first[entry.name])
            else:
                first[entry.name] = path
            entries.append(entry)
    log.debug("scanned %d adapter roots: %d adapters", len(roots), len(entries))
    return entries
