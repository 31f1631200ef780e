"""The wheel, installed into a fresh venv, imports every module under the ``hybrid_assistant`` namespace.

pyproject.toml maps the product's top-level folders (``server/``, ``retrieval/``, ...) onto
``hybrid_assistant.*`` and lists the packages explicitly, so a new package folder that is not listed,
or data that is not declared, would be missing from real installs while the editable install used by
the rest of the suite still finds it. This test builds the wheel from a copy of the working tree and
imports everything from it, from a folder outside the repository and with ``python -P`` so that
nothing can come from the sources.

The fresh venv gets its third-party dependencies (torch, transformers, ...) through a ``.pth`` line
naming the dev venv's site-packages instead of reinstalling gigabytes: a path added by a ``.pth``
file does not run that folder's own ``.pth`` files, so the dev venv's editable-install hook stays off
and ``hybrid_assistant`` can only come from the wheel (the test checks every module's file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders whose packages install under hybrid_assistant (pyproject.toml's package-dir).
SOURCE_ROOTS = {"hybrid_assistant": ROOT / "proto" / "hybrid_assistant"}
# vLLM is an optional extra (the `vllm` engine); its module may not import without it.
OPTIONAL_IMPORTS = {"vllm"}


def _package_dirs() -> dict[str, Path]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def _source_modules(package_dirs: dict[str, Path]) -> list[str]:
    """Every module under the mapped folders, named as it will be installed."""
    modules: set[str] = set()
    for package, folder in package_dirs.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if "__pycache__" in relative.parts or not all(
                (folder / Path(*relative.parts[:i]) / "__init__.py").exists()
                for i in range(len(relative.parts))
            ):
                continue  # a data folder, or a folder not on the package path
            parts = relative.with_suffix("").parts
            name = ".".join((package, *parts))
            modules.add(name.removesuffix(".__init__"))
    return sorted(modules)


def _tracked_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and new, not ignored): what a clone would build."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if source.is_file():
            target = destination / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_listed_packages_cover_every_package_folder() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {m for m in _source_modules(_package_dirs()) if _is_package(m)}
    assert found <= listed, (
        f"package folders missing from pyproject's packages list: {sorted(found - listed)}"
    )


def _is_package(module: str) -> bool:
    dirs = _package_dirs()
    best = max((p for p in dirs if module == p or module.startswith(p + ".")), key=len)
    rest = module[len(best) :].lstrip(".")
    return (dirs[best] / Path(*rest.split(".")) / "__init__.py").exists() if rest else True


@pytest.mark.timeout(600)
def test_wheel_in_a_fresh_venv_imports_everything(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tracked_tree(source)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("hybrid_assistant-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (fresh_site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    modules = _source_modules(_package_dirs())
    script = textwrap.dedent(
        """
        import importlib, json, sys
        from importlib import resources
        modules, optional = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
        files, skipped = {}, []
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] in optional:
                    skipped.append(name)
                    continue
                raise
            files[name] = module.__file__
        data = resources.files("hybrid_assistant")
        shipped = {
            "proto": data.joinpath("v1/assistant.proto").is_file(),
            "py.typed": data.joinpath("py.typed").is_file(),
            "demo": data.joinpath("eval/data/demo/test.jsonl").is_file(),
            "demo_kb": len(list(data.joinpath("eval/data/demo/kb").iterdir())),
        }
        print(json.dumps({"files": files, "skipped": skipped, "shipped": shipped}))
        """
    )
    result = subprocess.run(
        [str(python), "-P", "-c", script, json.dumps(modules), json.dumps(sorted(OPTIONAL_IMPORTS))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    outside = {name: file for name, file in report["files"].items() if not file.startswith(str(fresh_site))}
    assert not outside, f"imported from outside the installed wheel: {outside}"
    assert len(report["files"]) + len(report["skipped"]) == len(modules)
    assert set(report["skipped"]) <= {m for m in modules if "vllm" in m}, report["skipped"]
    assert report["shipped"]["proto"] and report["shipped"]["py.typed"] and report["shipped"]["demo"]
    assert report["shipped"]["demo_kb"] == len(list((ROOT / "eval/data/demo/kb").iterdir()))

    cli = subprocess.run(
        [str(venv / "bin" / "hybrid-assistant"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert cli.returncode == 0 and "serve" in cli.stdout, cli.stderr[-2000:]
