"""The ``hybrid-assistant`` command line (typer). Every option can also come from its env var."""

from __future__ import annotations

import typer

from hybrid_assistant.server.cli import (
    adapter_sweep,
    adapter_training,
    client_commands,
    context_sweep_command,
    demo_command,
    eval_command,
    experiment_commands,
    knowledge_commands,
    prepare,
    serve,
)

app = typer.Typer(
    name="hybrid-assistant",
    help="A gRPC LLM server with per-request LoRA adapters, retrieval, and a knowledge-vs-style eval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
adapters_app = typer.Typer(help="List, load, unload (on a running server); train and sweep (locally).")
app.add_typer(adapters_app, name="adapters")
knowledge_app = typer.Typer(help="Inspect and edit the server's knowledge index.")
app.add_typer(knowledge_app, name="knowledge")
experiments_app = typer.Typer(help="A/B experiments: create, pause/resume/stop, weights, report, export.")
app.add_typer(experiments_app, name="experiments")

app.command("serve")(serve.serve)
app.command("generate")(client_commands.generate)
app.command("info")(client_commands.info)
app.command("health")(client_commands.health_check)
app.command("prepare")(prepare.prepare)
app.command("eval")(eval_command.evaluate)
app.command("demo")(demo_command.demo)
app.command("ingest")(knowledge_commands.ingest)
knowledge_app.command("stats")(knowledge_commands.stats)
knowledge_app.command("delete")(knowledge_commands.delete)
knowledge_app.command("search")(knowledge_commands.search)
adapters_app.command("list")(client_commands.adapters_list)
adapters_app.command("load")(client_commands.adapters_load)
adapters_app.command("unload")(client_commands.adapters_unload)
adapters_app.command("train")(adapter_training.train)
adapters_app.command("train-demo")(adapter_training.train_demo)
adapters_app.command("available")(adapter_training.available)
adapters_app.command("sweep")(adapter_sweep.sweep)
adapters_app.command("sweep-context")(context_sweep_command.sweep_context)
experiments_app.command("create")(experiment_commands.create)
experiments_app.command("list")(experiment_commands.list_experiments)
experiments_app.command("pause")(experiment_commands.pause)
experiments_app.command("resume")(experiment_commands.resume)
experiments_app.command("stop")(experiment_commands.stop)
experiments_app.command("weights")(experiment_commands.weights)
experiments_app.command("report")(experiment_commands.report)
experiments_app.command("export")(experiment_commands.export)
