"""What each arm costs, measured: a probe that asks the same items through every arm in turn.

The main run answers every (item, arm) at once, so its latencies mix the arms' requests in one
batch and depend on what else was queued. Prices need each arm alone: :func:`measure_costs`
asks ``sample`` items (spread over the dataset, the same ones, in the same order, for every
arm), uncached and without option scoring, at one given concurrency, one arm after the other.
Per arm it keeps every request's latency (paired by item across arms, for the break-even
interval in :mod:`eval.decision`), and reports mean prompt tokens, TTFT and latency p50 and
answers per second (``sample / wall time``).

The recurring cost of a prompt lever is its longer prompt; the adapter's cost is one-time: the
training time its metadata records (``train_s``, as the server lists it with the adapter;
``None`` when absent, e.g. an adapter trained elsewhere).

Each arm gets one untimed request first, on an item outside the sample, so no arm pays for
loading its adapter or for a cold prefix cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hybrid_assistant.eval.arms import Arm
    from hybrid_assistant.eval.dataset import EvalItem
    from hybrid_assistant.eval.records import AnswerRecord
    from hybrid_assistant.eval.runner import Runner

#: ``runner_factory(**overrides)`` -> a Runner for the evaluated server, its :class:`RunConfig`
#: updated with ``overrides`` (concurrency, cache_path=None, progress=False, score_options=False).
RunnerFactory = Callable[..., "Runner"]


@dataclass
class ArmCost:
    """One arm's cost in the probe; latencies in milliseconds, one per sampled item (None: failed)."""

    arm: str
    concurrency: int
    n: int
    errors: int
    wall_s: float
    answers_per_s: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    ttft_p50_ms: float | None
    latency_p50_ms: float | None
    latency_mean_ms: float | None
    train_s: float | None  # the adapter's one-time training time; None without adapter or metadata
    item_ids: list[str]
    latencies_ms: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_items(items: Sequence[EvalItem], sample: int) -> list[EvalItem]:
    """``sample`` items spread evenly over ``items`` (all of them when fewer), deterministic."""
    count = min(sample, len(items))
    return [items[i * len(items) // count] for i in range(count)]


def train_seconds(metadata: Mapping[str, str] | None) -> float | None:
    """The ``train_s`` an adapter's metadata records, or None when absent or not a finite number >= 0."""
    try:
        value = float((metadata or {})["train_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _stat(values: list[float], fn: Callable[[np.ndarray], Any]) -> float | None:
    return float(fn(np.asarray(values))) if values else None


def arm_cost(
    arm: Arm, records: Sequence[AnswerRecord], wall_s: float, concurrency: int, train_s: float | None
) -> ArmCost:
    """Summarise one arm's probe records (in item order) into its cost."""
    ok = [r for r in records if not r.error]
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    prompt = [float(r.prompt_tokens) for r in ok if r.prompt_tokens is not None]
    completion = [float(r.completion_tokens) for r in ok if r.completion_tokens is not None]
    return ArmCost(
        arm=arm.name,
        concurrency=concurrency,
        n=len(records),
        errors=len(records) - len(ok),
        wall_s=wall_s,
        answers_per_s=len(records) / wall_s if wall_s > 0 else None,
        prompt_tokens_mean=_stat(prompt, np.mean),
        completion_tokens_mean=_stat(completion, np.mean),
        ttft_p50_ms=_stat(ttfts, np.median),
        latency_p50_ms=_stat(latencies, np.median),
        latency_mean_ms=_stat(latencies, np.mean),
        train_s=train_s,
        item_ids=[r.item_id for r in records],
        latencies_ms=[None if r.error else r.latency_ms for r in records],
    )


async def measure_costs(
    runner_factory: RunnerFactory,
    items: Sequence[EvalItem],
    arms: Sequence[Arm],
    sample: int,
    concurrency: int,
) -> dict[str, ArmCost]:
    """Probe every arm in turn on the same ``sample`` items at ``concurrency``; arm name -> cost."""
    if sample < 1 or concurrency < 1:
        raise ValueError(f"sample and concurrency must be at least 1, got {sample} and {concurrency}")
    chosen = sample_items(items, sample)
    # One untimed request per arm first, on an item outside the sample: the arm's adapter is
    # loaded and its shared prefix (instruction, exemplars) cached, as in steady serving, whether
    # or not the main run just asked (a fully cached rerun leaves the server cold).
    warm = next((it for it in items if it not in chosen), None)
    costs: dict[str, ArmCost] = {}
    for arm in arms:
        runner = runner_factory(concurrency=concurrency, cache_path=None, progress=False, score_options=False)
        if warm is not None:
            await runner.run([warm], [arm])
        records = await runner.run(chosen, [arm])
        adapters = runner.stats.server.get("adapters", {})
        train_s = train_seconds(adapters.get(arm.adapter)) if arm.adapter else None
        costs[arm.name] = arm_cost(arm, records, runner.stats.wall_s, concurrency, train_s)
    return costs


def costs_to_dict(costs: Mapping[str, ArmCost]) -> dict[str, Any]:
    """The JSON-ready form stored in ``EvalAnalysis.costs``: arm name -> :meth:`ArmCost.to_dict`."""
    return {name: cost.to_dict() for name, cost in costs.items()}
