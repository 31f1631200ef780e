"""The vLLM tests run only where vLLM imports: the vllm-cpu environment (`make test-vllm`).

Elsewhere (the main .venv, where `make test` runs) every module here is reported as skipped,
with the reason, without being imported (they import vLLM).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

MISSING = (
    None
    if importlib.util.find_spec("vllm") is not None
    else "vLLM is not installed in this environment: build it with `make vllm-cpu-env`, "
    "then run these tests with `make test-vllm`"
)


class _NeedsVllm(pytest.File):
    def collect(self) -> Iterable[Any]:
        pytest.skip(str(MISSING))


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if MISSING:
        return _NeedsVllm.from_parent(parent, path=module_path)
    return None
