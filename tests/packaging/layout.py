"""Where each ``hybrid_assistant`` module lives in the repository, read from pyproject.toml."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@cache
def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_dirs() -> dict[str, Path]:
    """Installed package name -> source folder (pyproject's package-dir)."""
    return {name: ROOT / folder for name, folder in setuptools_config()["package-dir"].items()}


def source_modules() -> dict[str, Path]:
    """Every module under the mapped folders, named as it is installed -> its source file.

    Folders without ``__init__.py`` (data, such as eval/data/) are not on the package path.
    """
    modules: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            folders = (folder / Path(*relative.parts[:i]) for i in range(len(relative.parts)))
            if "__pycache__" in relative.parts or not all((f / "__init__.py").exists() for f in folders):
                continue
            name = ".".join((package, *relative.with_suffix("").parts)).removesuffix(".__init__")
            modules[name] = path
    return dict(sorted(modules.items()))


def is_package(module: str) -> bool:
    path = source_modules().get(module)
    return path is not None and path.name == "__init__.py"
