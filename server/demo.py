"""The product's main job, end to end, as one call (``hybrid-assistant demo``, ``make demo``).

:func:`run_demo` prepares the model, trains or reuses the demo adapters, starts a server in a
child process, ingests the fictional knowledge base, evaluates every arm on the demo questions
(:func:`~hybrid_assistant.eval.workflow.run_eval`), and stops the server. Each step is the same
library code a user runs by hand (see the README).

It lives in the server's room because it is the one workflow that spans all of them: the
server's configuration decides where the model cache and the adapter root are, steps 1 and 2
run on this machine through the server's model store and :mod:`hybrid_assistant.adapters`, and
the eval (which never imports the server) measures through the gRPC API of the server process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.process import ServerProcess
from hybrid_assistant.server.base_model import resolve_base_model
from hybrid_assistant.server.config import load_settings

if TYPE_CHECKING:
    from hybrid_assistant.adapters.demo import DemoOutcome
    from hybrid_assistant.eval.workflow import RunSummary

log = logging.getLogger(__name__)

DEMO_ARMS = (
    "base,adapter:style,prompt,fewshot@4,rag@3,adapter:style+rag@3,prompt+rag@3,oracle,"
    "adapter:knowledge,adapter:knowledge+rag@3,"
    "adapter:style-context,adapter:style-context+rag@3,adapter:raft,adapter:raft+rag@3"
)

DEMO_ADAPTERS = ("style", "knowledge", "style-context", "raft")


def demo_adapters(arms: str) -> tuple[str, ...]:
    """The demo adapters ``arms`` use, in :data:`DEMO_ADAPTERS` order: only these are trained and
    loaded, so ``--arms`` without the context-recipe adapters skips their ~40 minutes of training.
    An adapter arm that names no demo adapter is left for the eval to refuse (not loaded)."""
    from hybrid_assistant.eval.arms import parse_arms

    used = {arm.adapter for arm in parse_arms(arms)}
    return tuple(name for name in DEMO_ADAPTERS if name in used)


class DemoAdapterError(RuntimeError):
    """The demo adapters cannot be trained (a user's own adapter is in the way, bad data...)."""


@dataclass(frozen=True)
class DemoConfig:
    """One demo run. Field names follow ``hybrid-assistant demo``'s flags."""

    data_dir: Path = Path("data/demo")
    """Demo data directory (model cache, adapters, index)."""
    out: Path = Path("reports/demo")
    """Report directory."""
    arms: str = DEMO_ARMS
    """Arms to evaluate."""
    limit: int = 100
    """Questions: a deterministic subset keeping each stratum's share; 0 = all."""
    dtype: str = "float32"
    """Server dtype: float32 (reproducible) or bfloat16."""
    max_tokens: int = 48
    """Answer length limit for every arm."""
    sequential_sample: int = 16
    """Answers timed one at a time (speed-up)."""
    cost_sample: int = 10
    """Items asked of each arm alone, one at a time, to price it (cost table, break-even)."""


@dataclass
class DemoSummary:
    eval: RunSummary
    adapters: list[DemoOutcome]
    phases_s: dict[str, float]
    """Seconds per step: model_s, adapters_s, server_start_s, ingest_s, eval_s."""


def demo_documents() -> list[dict[str, str]]:
    """The demo knowledge base as ``Ingest`` documents (ids are the file stems)."""
    from hybrid_assistant.retrieval.loaders import DocumentLoader

    return [
        {"id": Path(d.id).stem, "text": d.text, "source": d.source}
        for d in DocumentLoader().iter_documents([DEMO_DIR / "kb"])
    ]


def run_demo(config: DemoConfig, *, notify: Callable[[str], None] = log.info) -> DemoSummary:
    """Run the five steps; ``notify`` gets each step's heading and what it did.

    ``run.json`` in ``config.out`` gets the demo's phases (``demo_phases_s``) beside the eval's.
    Raises :class:`DemoAdapterError`, and what :func:`run_eval` raises.
    """
    # Heavy (torch, the eval's statistics): imported when the demo runs, not with the command line.
    from hybrid_assistant.adapters.demo import describe_outcome, train_demo
    from hybrid_assistant.eval.arms import ArmError
    from hybrid_assistant.eval.workflow import EvalConfig, EvalInputError, run_eval
    from hybrid_assistant.server.model_store import resolve_model

    try:  # bad --arms: a usage error before anything is trained
        adapters = demo_adapters(config.arms)
    except ArmError as exc:
        raise EvalInputError(str(exc)) from exc
    phases: dict[str, float] = {}
    data_dir, out = config.data_dir, config.out
    data_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    settings = load_settings(None, data_dir=data_dir)
    notify("== 1/5 model cache")
    resolve_model(None, None, settings.models_dir)
    phases["model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    notify("== 2/5 demo adapters (trained once, then reused)")
    try:
        outcomes = train_demo(
            resolve_base_model(settings),
            settings.resolved_adapter_roots[0],
            settings.data_dir / "demo-data",
            names=adapters,
            max_lora_rank=settings.max_lora_rank,
        )
    except (ValueError, FileExistsError) as exc:
        raise DemoAdapterError(str(exc)) from exc
    for outcome in outcomes:
        notify(describe_outcome(outcome))
    phases["adapters_s"] = time.perf_counter() - t

    t = time.perf_counter()
    notify("== 3/5 server")
    out.mkdir(parents=True, exist_ok=True)
    preload = [a for name in adapters for a in ("--preload", f"{name}={name}")]
    server = ServerProcess(
        ["--data-dir", str(data_dir), *preload, "--dtype", config.dtype], log=out / "server.log"
    )
    try:
        server.wait_ready()
        phases["server_start_s"] = time.perf_counter() - t

        t = time.perf_counter()
        notify("== 4/5 knowledge base")
        with AssistantClient(server.target) as client:
            ingested = client.ingest(demo_documents())
        notify(f"{ingested.added} added, {ingested.updated} updated, {ingested.unchanged} unchanged")
        phases["ingest_s"] = time.perf_counter() - t

        t = time.perf_counter()
        notify("== 5/5 evaluation")
        summary = run_eval(
            EvalConfig(
                dataset=DEMO_DIR / "test.jsonl",
                arms=config.arms,
                out=out,
                style_spec=DEMO_DIR / "style_spec.json",
                exemplars=DEMO_DIR / "style_exemplars.jsonl",
                documents=[DEMO_DIR / "kb"],
                max_tokens=config.max_tokens,
                limit=config.limit or None,
                sequential_sample=config.sequential_sample,
                cost_sample=config.cost_sample,
                target=server.target,
            )
        )
        phases["eval_s"] = time.perf_counter() - t
    finally:
        server.stop()
    summary.write_run_json(out, demo_phases_s=phases)
    return DemoSummary(summary, outcomes, phases)
