"""Every hostile adapter is refused with an adapter error, quickly, with a short message.

Why: the server maps AdapterValidationError and UnsafeAdapterPathError to INVALID_ARGUMENT;
any other exception becomes INTERNAL, and a hang blocks LoadAdapter (issue 10, defects 3, 6,
7, 11, 14). This is the in-process sweep over hybrid_assistant.testing.hostile_adapters; the
end-to-end fuzz sends the same directories to a live server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybrid_assistant.adapters.errors import AdapterValidationError, UnsafeAdapterPathError
from hybrid_assistant.adapters.paths import resolve_adapter_dir
from hybrid_assistant.adapters.peft_format import BaseModelSpec, inspect_adapter, load_lora_weights
from hybrid_assistant.testing.hostile_adapters import HOSTILE_KINDS, HOSTILE_PATHS, MAX_RANK, REFUSED_AT_LOAD

# gRPC status details above ~16 KB come back as RESOURCE_EXHAUSTED instead of the error.
MAX_MESSAGE_CHARS = 12_000


@pytest.fixture(scope="module")
def base_spec(tiny_model_dir: Path) -> BaseModelSpec:
    return BaseModelSpec.from_config_dir(tiny_model_dir, "tiny-llama")


def inspect_then_load(directory: Path, base: BaseModelSpec, stages: list[str]) -> None:
    """What the server does on LoadAdapter, recording how far it got."""
    stages.append("inspect")
    spec = inspect_adapter(directory, base, MAX_RANK)
    stages.append("load")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        load_lora_weights(spec, dtype)
    stages.append("loaded")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(HOSTILE_KINDS))
def test_hostile_adapter_is_refused(
    kind: str, tiny_model_dir: Path, tmp_path: Path, base_spec: BaseModelSpec
) -> None:
    directory = HOSTILE_KINDS[kind](tiny_model_dir, tmp_path / kind)
    assert directory == tmp_path / kind and directory.is_dir()
    stages: list[str] = []
    with pytest.raises((AdapterValidationError, UnsafeAdapterPathError)) as info:
        inspect_then_load(directory, base_spec, stages)
    assert stages[-1] == ("load" if kind in REFUSED_AT_LOAD else "inspect"), str(info.value)
    assert len(str(info.value)) < MAX_MESSAGE_CHARS, kind
    if isinstance(info.value, AdapterValidationError):
        assert info.value.problems and all(len(p) <= 600 for p in info.value.problems)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(HOSTILE_PATHS))
def test_hostile_path_is_unsafe(kind: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeAdapterPathError) as info:
        resolve_adapter_dir(HOSTILE_PATHS[kind], [tmp_path])
    assert len(str(info.value)) < 2_000


def test_builders_make_a_fresh_directory_each_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = HOSTILE_KINDS["zero_rank"](tiny_model_dir, tmp_path / "one")
    second = HOSTILE_KINDS["zero_rank"](tiny_model_dir, tmp_path / "two")
    assert first != second
    assert (first / "adapter_config.json").read_text() == (second / "adapter_config.json").read_text()
