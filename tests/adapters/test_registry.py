"""The local registry: scan roots, read metadata, validate with the server's checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from hybrid_assistant.adapters.peft_format import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, BaseModelSpec
from hybrid_assistant.adapters.registry import scan_adapters
from hybrid_assistant.testing.models import build_adapter


@pytest.fixture(scope="module")
def spec(tiny_model_dir: Path) -> BaseModelSpec:
    return BaseModelSpec.from_config_dir(tiny_model_dir, "tiny-llama")


def test_spec_from_config_matches_the_loaded_model(tiny_model_dir: Path, spec: BaseModelSpec) -> None:
    loaded = BaseModelSpec.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "tiny-llama")
    assert spec == loaded
    assert spec.linear_shapes["model.layers.0.self_attn.k_proj"] == (128, 64)


def test_scan_lists_valid_and_broken_adapters(
    tiny_model_dir: Path, spec: BaseModelSpec, tmp_path: Path
) -> None:
    first, second = tmp_path / "r1", tmp_path / "r2"
    good = build_adapter(tiny_model_dir, first / "good", rank=4)
    (good / METADATA_FILE).write_text(json.dumps({"purpose": "tests", "examples": 12, "val_loss": 0.5}))
    build_adapter(tiny_model_dir, first / "big", rank=16)
    (first / "no-weights").mkdir()
    shutil.copy(good / CONFIG_FILE, first / "no-weights" / CONFIG_FILE)
    (first / "bad-meta").mkdir()
    shutil.copytree(good, first / "bad-meta", dirs_exist_ok=True)
    (first / "bad-meta" / METADATA_FILE).write_text("{not json")
    shutil.copytree(good, first / ".good.tmp-123")  # a trainer's staging directory: not listed
    (first / "notes").mkdir()  # nothing adapter-like: not listed
    shutil.copytree(good, second / "good")

    entries = scan_adapters([first, second, tmp_path / "missing"], spec, max_rank=8)
    by_key = {(e.root.name, e.name): e for e in entries}
    assert sorted(by_key) == [
        ("r1", "bad-meta"),
        ("r1", "big"),
        ("r1", "good"),
        ("r1", "no-weights"),
        ("r2", "good"),
    ]

    ok = by_key[("r1", "good")]
    assert ok.valid and ok.problems == () and ok.rank == 4 and ok.base_model.endswith("tiny-llama")
    assert (ok.purpose, ok.examples, ok.val_loss) == ("tests", "12", "0.5")
    assert ok.shadowed_by is None
    assert by_key[("r2", "good")].valid and by_key[("r2", "good")].shadowed_by == first / "good"
    assert not by_key[("r1", "big")].valid
    assert "rank 16 exceeds the server's max_lora_rank 8" in by_key[("r1", "big")].problems
    assert by_key[("r1", "no-weights")].problems == (f"{WEIGHTS_FILE} is missing",)
    bad_meta = by_key[("r1", "bad-meta")]
    assert not bad_meta.valid and bad_meta.rank == 4
    assert bad_meta.problems[0].startswith(f"{METADATA_FILE} is not readable JSON")


def test_a_symlink_out_of_the_root_is_refused(
    tiny_model_dir: Path, spec: BaseModelSpec, tmp_path: Path
) -> None:
    outside = build_adapter(tiny_model_dir, tmp_path / "outside" / "evil", rank=4)
    root = tmp_path / "root"
    root.mkdir()
    (root / "evil").symlink_to(outside, target_is_directory=True)
    [entry] = scan_adapters([root], spec, max_rank=64)
    assert not entry.valid and "outside the adapter roots" in entry.problems[0]


def test_hostile_adapters_are_listed_as_invalid_with_their_problems(
    tiny_model_dir: Path, spec: BaseModelSpec, tmp_path: Path
) -> None:
    # Issue 10: a float rank slipped past the cap, and metadata was read through a symlink out.
    root = tmp_path / "root"
    good = build_adapter(tiny_model_dir, tmp_path / "src", rank=8)
    shutil.copytree(good, root / "float-rank")
    config = json.loads((root / "float-rank" / CONFIG_FILE).read_text())
    (root / "float-rank" / CONFIG_FILE).write_text(json.dumps({**config, "r": 8.0}))
    shutil.copytree(good, root / "meta-link")
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"purpose": "outside"}))
    (root / "meta-link" / METADATA_FILE).symlink_to(secret)

    by_name = {e.name: e for e in scan_adapters([root], spec, max_rank=64)}
    assert not by_name["float-rank"].valid
    assert "r must be a positive integer, got 8.0 (float)" in by_name["float-rank"].problems
    assert not by_name["meta-link"].valid and len(by_name["meta-link"].problems) == 1
    assert (
        f"{METADATA_FILE} is a symlink leading outside the adapter directory" in by_name["meta-link"].problems
    )
