"""The cost probe against a real server (tiny model): every arm on the same items, uncached, with
the adapter's training time read from its metadata as the server lists it."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.cost import costs_to_dict, measure_costs, sample_items, train_seconds
from hybrid_assistant.eval.dataset import EvalItem, load_style_spec
from hybrid_assistant.eval.runner import RunConfig, Runner
from tests.helpers import ServerThread, preloads

SPEC = load_style_spec(Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_spec.json")


def items(n: int) -> list[EvalItem]:
    return [
        EvalItem(id=f"q{i}", question=f"What is fact {i}?", messages=None, answers=("x",)) for i in range(n)
    ]


def test_sample_items_spreads_deterministically() -> None:
    assert [it.id for it in sample_items(items(10), 4)] == ["q0", "q2", "q5", "q7"]
    assert [it.id for it in sample_items(items(3), 8)] == ["q0", "q1", "q2"]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"train_s": "12.5"}, 12.5), ({"train_s": "0"}, 0.0), ({}, None), (None, None)]
    + [({"train_s": bad}, None) for bad in ("", "nan", "inf", "-1", "fast")],
)
def test_train_seconds(metadata: dict[str, str] | None, expected: float | None) -> None:
    assert train_seconds(metadata) == expected


def test_measure_costs_on_a_real_server(
    start_server: Callable[..., ServerThread],
    tiny_adapters: dict[str, Path],
    adapter_root: Path,
    tmp_path: Path,
) -> None:
    trained = adapter_root / "costed"
    if not trained.exists():
        shutil.copytree(tiny_adapters["alpha"], trained)
    (trained / "adapter_metadata.json").write_text(json.dumps({"train_s": 12.5, "purpose": "style"}))
    server = start_server(preload_adapters=preloads({"costed": trained, "alpha": tiny_adapters["alpha"]}))
    # The main run's settings: cached, with a progress bar and option scoring; the probe overrides them.
    cache = tmp_path / "answers.sqlite"
    config = RunConfig(target=server.target, max_tokens=4, concurrency=16, cache_path=cache, progress=True)

    def factory(**overrides: Any) -> Runner:
        return Runner(replace(config, **overrides), style=SPEC)

    arms = parse_arms("base,prompt,adapter:costed,adapter:alpha")
    costs = asyncio.run(measure_costs(factory, items(6), arms, sample=4, concurrency=2))

    assert list(costs) == [a.name for a in arms]
    for cost in costs.values():
        assert (cost.n, cost.errors, cost.concurrency) == (4, 0, 2)
        assert cost.item_ids == ["q0", "q1", "q3", "q4"]  # the same items, in the same order
        assert all(x is not None and x > 0 for x in cost.latencies_ms)
        assert cost.latency_mean_ms is not None and cost.latency_p50_ms is not None
        assert cost.ttft_p50_ms is not None and cost.answers_per_s is not None and cost.answers_per_s > 0
        assert cost.answers_per_s == pytest.approx(4 / cost.wall_s)
    tokens = {name: cost.prompt_tokens_mean for name, cost in costs.items()}
    assert tokens["prompt"] is not None and tokens["base"] is not None
    assert tokens["prompt"] > tokens["base"]  # the instruction is paid on every request
    assert costs["adapter:costed"].train_s == 12.5
    assert costs["adapter:alpha"].train_s is None and costs["base"].train_s is None
    assert json.loads(json.dumps(costs_to_dict(costs)))["adapter:costed"]["train_s"] == 12.5
    assert not cache.exists()  # uncached: every probe request reached the model

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(measure_costs(factory, items(6), arms, sample=0, concurrency=2))
