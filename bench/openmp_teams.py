"""What a second OpenMP team costs the engine's decode step, and what releasing it gives back.

The server decodes on its scheduler thread, not the main thread, while executor threads load the
model and embed queries (server/openmp.py says why that matters). This times 1-row and 16-row
decode steps of the model runner on a long-lived thread, as the scheduler runs them, in three
states, interleaved over several rounds:

- ``alone``: no other thread has an OpenMP team;
- ``other team alive``: another long-lived thread ran one parallel operation and kept its team
  (what the server did before ``ReleasingExecutor``);
- ``other team released``: the same, after that thread called ``openmp.release_team()``.

    python bench/openmp_teams.py        # writes bench/results/openmp-teams.json
"""

from __future__ import annotations

import argparse
import functools
import queue
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.harness import table, write_results
from bench.roofline import CONTEXT, time_steps
from hybrid_assistant.server import openmp
from hybrid_assistant.server.engines.model_runner import ModelRunner


class Worker:
    """A long-lived thread that runs what it is given, as the scheduler and executor threads are."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def run(self, fn: Callable[[], Any]) -> Any:
        done: queue.Queue[Any] = queue.Queue()
        self._jobs.put(lambda: done.put(fn()))
        return done.get()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()

    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    model_dir = resolve_model(None, None, load_settings(None).models_dir).path
    scheduler, other = Worker("scheduler"), Worker("executor")
    runner: ModelRunner = scheduler.run(
        lambda: ModelRunner(
            model_dir, dtype=torch.float32, max_rows=32, max_tokens=CONTEXT + args.steps + 8,
            model_name="SmolLM2-135M-Instruct", aliases=set(),
        )
    )  # fmt: skip
    big = torch.randn(1024, 1024)
    states: dict[str, Callable[[], Any]] = {
        "alone": lambda: None,
        "other team alive": lambda: other.run(lambda: big @ big),
        "other team released": lambda: other.run(lambda: (big @ big, openmp.release_team())),
    }
    openmp.release_team()  # the main thread keeps no team either
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.rounds):
        for rows in (1, 16):
            for name, enter in states.items():
                enter()
                measured = scheduler.run(functools.partial(time_steps, runner, rows, [0] * rows, args.steps))
                times.setdefault((rows, name), []).append(measured)
                other.run(openmp.release_team)  # every state starts from no other team
    scheduler.close()
    other.close()
    results = []
    for rows in (1, 16):
        row: dict[str, Any] = {"rows": rows}
        for name in states:
            row[f"{name} ms"] = statistics.median(times[(rows, name)])
        row["alive ÷ alone"] = row["other team alive ms"] / row["alone ms"]
        row["released ÷ alone"] = row["other team released ms"] / row["alone ms"]
        results.append(row)
    print(
        table(
            results,
            ["rows", "alone ms", "other team alive ms", "other team released ms", "alive ÷ alone",
             "released ÷ alone"],
            f"decode steps on a long-lived thread (SmolLM2, float32), medians of {args.rounds} rounds",
        )
    )  # fmt: skip
    path = write_results("openmp-teams", {"steps": results, "rounds": args.rounds})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
