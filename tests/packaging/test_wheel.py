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

from tests.packaging.layout import ROOT, is_package, setuptools_config, source_modules

# vLLM is an optional extra (the `vllm` engine); its module may not import without it.
OPTIONAL_IMPORTS = {"vllm"}


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
    listed = set(setuptools_config()["packages"])
    found = {name for name in source_modules() if is_package(name)}
    assert found <= listed, f"package folders missing from pyproject's packages: {sorted(found - listed)}"


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

    modules = list(source_modules())
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
            "row_gemv_source": data.joinpath("server/engines/row_gemv.cpp").is_file(),
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
    assert report["shipped"]["row_gemv_source"]  # compiled on the user's machine, so it must ship
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
