"""``hybrid-assistant demo`` (``make demo``): the product's main job, end to end, in one command.

Prepare the model, train or reuse the demo adapters, start a server, ingest the fictional
knowledge base, evaluate every arm on the demo questions, print the table and the report's
path, stop the server. Each step is the same code a user runs by hand (see the README).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import ServerProcess

DEMO_DIR = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo"
DEMO_ARMS = "base,adapter:style,rag@3,adapter:style+rag@3,oracle,adapter:knowledge,adapter:knowledge+rag@3"


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Demo data directory (model cache, adapters, index).")
    ] = Path("data/demo"),
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/demo"),
    arms: Annotated[str, typer.Option(help="Arms to evaluate.")] = DEMO_ARMS,
    limit: Annotated[
        int,
        typer.Option(help="Questions: a deterministic subset keeping each stratum's share; 0 = all."),
    ] = 100,
    dtype: Annotated[str, typer.Option(help="Server dtype: float32 (reproducible) or bfloat16.")] = "float32",
    max_tokens: Annotated[int, typer.Option(help="Answer length limit for every arm.")] = 48,
    sequential_sample: Annotated[int, typer.Option(help="Answers timed one at a time (speed-up).")] = 16,
) -> None:
    """Train/reuse the demo adapters, ingest the demo knowledge base, evaluate 7 arms, write the report."""
    from hybrid_assistant.server.cli.adapter_training import train_demo
    from hybrid_assistant.server.cli.eval_command import evaluate
    from hybrid_assistant.server.config import load_settings
    from hybrid_assistant.server.model_store import resolve_model

    phases: dict[str, float] = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    settings = load_settings(None, data_dir=data_dir)
    typer.echo("== 1/5 model cache")
    resolve_model(None, None, settings.models_dir)
    phases["model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    typer.echo("== 2/5 demo adapters (trained once, then reused)")
    train_demo(data_dir=data_dir, only=None, documents=False, force=False, limit=None, adapter_root=None,
               model_path=None, model_name=None, progress=True, threads=None)  # fmt: skip
    phases["adapters_s"] = time.perf_counter() - t

    t = time.perf_counter()
    typer.echo("== 3/5 server")
    out.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        [
            "--data-dir",
            str(data_dir),
            "--preload",
            "style=style",
            "--preload",
            "knowledge=knowledge",
            "--dtype",
            dtype,
        ],
        log=out / "server.log",
    )
    target = server.target
    try:
        server.wait_ready()
        phases["server_start_s"] = time.perf_counter() - t

        t = time.perf_counter()
        typer.echo("== 4/5 knowledge base")
        from hybrid_assistant.retrieval.loaders import DocumentLoader

        docs = [
            {"id": Path(d.id).stem, "text": d.text, "source": d.source}
            for d in DocumentLoader().iter_documents([DEMO_DIR / "kb"])
        ]
        with AssistantClient(target) as client:
            summary = client.ingest(docs)
        typer.echo(f"{summary.added} added, {summary.updated} updated, {summary.unchanged} unchanged")
        phases["ingest_s"] = time.perf_counter() - t

        t = time.perf_counter()
        typer.echo("== 5/5 evaluation")
        try:
            evaluate(
                dataset=DEMO_DIR / "test.jsonl",
                arms=arms,
                out=out,
                style_spec=DEMO_DIR / "style_spec.json",
                exemplars=DEMO_DIR / "style_exemplars.jsonl",
                documents=[DEMO_DIR / "kb"],
                max_tokens=max_tokens,
                concurrency=32,
                limit=limit or None,
                score_options=True,
                cache=True,
                sequential_sample=sequential_sample,
                resamples=2000,
                target=target,
                token=None,
            )
        except typer.Exit as done:
            if done.exit_code:
                raise
        phases["eval_s"] = time.perf_counter() - t
    finally:
        server.stop()
    run_file = out / "run.json"
    run = json.loads(run_file.read_text())
    run["demo_phases_s"] = phases
    run_file.write_text(json.dumps(run, indent=2))
    typer.echo("\nphases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
