"""``hybrid-assistant experiments ...``: define, steer and report A/B experiments on a running server."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from hybrid_assistant.requests import ExperimentState
from hybrid_assistant.server.cli.client_commands import print_json
from hybrid_assistant.server.cli.options import Connection, Json, connection_options

ARM_HELP = (
    "An arm as NAME:key=value,... with keys adapter, retrieval, top_k, mode, min_score, weight, "
    "control (flags without '='). Repeat for each arm, e.g. --arm style:adapter=style,control "
    "--arm rag:retrieval,top_k=4"
)
_ARM_KEYS = {"adapter": str, "top_k": int, "mode": str, "min_score": float, "weight": float}
_ARM_FLAGS = ("retrieval", "control")
EXPORT_COLUMNS = [
    "request_id",
    "time_unix",
    "experiment",
    "arm",
    "in_test",
    "subject_key",
    "adapter",
    "retrieval",
    "document_ids",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "total_ms",
    "status",
]


def parse_arm(spec: str) -> dict[str, Any]:
    """``rag:retrieval,top_k=4,weight=2`` -> ``{"name": "rag", "retrieval": True, "top_k": 4, ...}``."""
    name, _, rest = spec.partition(":")
    arm: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep and key in _ARM_FLAGS:
            arm[key] = True
        elif sep and key in _ARM_KEYS:
            try:
                arm[key] = _ARM_KEYS[key](value)
            except ValueError:
                raise typer.BadParameter(f"{key}={value!r} in arm {spec!r} is not a number") from None
        else:
            raise typer.BadParameter(f"{part!r} in arm {spec!r}: expected one of {_expected()}")
    return arm


def _expected() -> str:
    return ", ".join([*(f"{k}=..." for k in _ARM_KEYS), *_ARM_FLAGS])


@connection_options(admin=True)
def create(
    name: Annotated[str, typer.Argument(help="Experiment name (letters, digits, '_', '.', '-').")],
    arm: Annotated[list[str], typer.Option("--arm", "-a", help=ARM_HELP)],
    description: Annotated[str, typer.Option(help="What the experiment compares.")] = "",
    connection: Connection = Connection(),
) -> None:
    """Create and start an experiment (admin)."""
    arms = [parse_arm(a) for a in arm]
    with connection.connect() as client:
        experiment = client.create_experiment(name, arms, description=description)
    typer.echo(f"created {experiment.name}: " + ", ".join(_arm_text(a) for a in experiment.arms))


def _arm_text(arm: Any) -> str:
    parts = [f"adapter {arm.adapter}" if arm.HasField("adapter") else "base"]
    if arm.retrieval.enabled:
        parts.append(f"retrieval top_k={arm.retrieval.top_k or 'default'}")
    control = ", control" if arm.control else ""
    return f"{arm.name} ({' + '.join(parts)}, weight {arm.weight:g}{control})"


@connection_options()
def list_experiments(
    connection: Connection = Connection(),
    json_out: Json = False,
) -> None:
    """List experiments with their state and arms."""
    from hybrid_assistant.server.experiments.convert import STATE_FROM_PB

    with connection.connect() as client:
        experiments = client.list_experiments()
    if json_out:
        for experiment in experiments:
            print_json(experiment)
        return
    if not experiments:
        typer.echo("no experiments")
    for e in experiments:
        state = STATE_FROM_PB[e.state].value if e.state in STATE_FROM_PB else "?"
        typer.echo(f"{e.name:<24} {state:<8} " + "; ".join(_arm_text(a) for a in e.arms))


def _set_state(name: str, state: ExperimentState, connection: Connection) -> None:
    with connection.connect() as client:
        client.update_experiment(name, state=state)
    typer.echo(f"{name}: {state}")


@connection_options(admin=True)
def pause(
    name: Annotated[str, typer.Argument()],
    connection: Connection = Connection(),
) -> None:
    """Pause (admin): every subject gets the control arm; those requests are left out of the report."""
    _set_state(name, "paused", connection)


@connection_options(admin=True)
def resume(
    name: Annotated[str, typer.Argument()],
    connection: Connection = Connection(),
) -> None:
    """Resume a paused experiment (admin); subjects get the same arms as before."""
    _set_state(name, "running", connection)


@connection_options(admin=True)
def stop(
    name: Annotated[str, typer.Argument()],
    connection: Connection = Connection(),
) -> None:
    """Stop for good (admin): the control arm for everyone; cannot be resumed."""
    _set_state(name, "stopped", connection)


@connection_options(admin=True)
def weights(
    name: Annotated[str, typer.Argument()],
    assignments: Annotated[list[str], typer.Argument(help="ARM=WEIGHT for each arm to change.")],
    connection: Connection = Connection(),
) -> None:
    """Change arm weights (admin). Only subjects at the moved range boundaries change arm."""
    new: dict[str, float] = {}
    for item in assignments:
        arm, sep, value = item.partition("=")
        try:
            new[arm] = float(value) if sep else float("nan")
        except ValueError:
            new[arm] = float("nan")
        if new[arm] != new[arm]:
            raise typer.BadParameter(f"{item!r}: expected ARM=WEIGHT, e.g. rag=0.3")
    with connection.connect() as client:
        experiment = client.update_experiment(name, weights=new)
    typer.echo(f"{name}: " + ", ".join(f"{a.name}={a.weight:g}" for a in experiment.arms))


@connection_options()
def report(
    name: Annotated[str, typer.Argument()],
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML page here (default: NAME-report.html).")
    ] = None,
    connection: Connection = Connection(),
    json_out: Json = False,
) -> None:
    """Per-arm traffic, feedback means with intervals, differences from the control; HTML with plots."""
    from hybrid_assistant.server.cli.experiment_page import render_report_html, terminal_report
    from hybrid_assistant.server.experiments.convert import report_from_pb

    with connection.connect() as client:
        message = client.experiment_report(name)
    if json_out:
        print_json(message)
        return
    result = report_from_pb(message)
    typer.echo(terminal_report(result), nl=False)
    path = html or Path(f"{name}-report.html")
    path.write_text(render_report_html(result), encoding="utf-8")
    typer.echo(f"HTML report: {path}")


@connection_options(admin=True)
def export(
    experiment: Annotated[str, typer.Option(help="Only this experiment's requests (default: all).")] = "",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout).")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl or csv (feedback as metric columns).")
    ] = "jsonl",
    since: Annotated[float, typer.Option(help="Unix time: only requests from then on.")] = 0.0,
    until: Annotated[float, typer.Option(help="Unix time: only requests before then.")] = 0.0,
    connection: Connection = Connection(),
) -> None:
    """Export the request log with its feedback (admin: it holds subject keys)."""
    from google.protobuf.json_format import MessageToDict

    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter(f"--format is {fmt!r}; expected jsonl or csv")
    with connection.connect() as client:
        rows = [
            MessageToDict(r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for r in client.export_request_log(experiment, since=since, until=until)
        ]
    out = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        if fmt == "csv":
            _write_csv(rows, out)
        else:
            _write_jsonl(rows, out)
    finally:
        if output:
            out.close()
    if output:
        typer.echo(f"{len(rows)} requests -> {output}", err=True)


def _write_jsonl(rows: list[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    metrics = sorted({m for row in rows for m in row.get("feedback", {})})
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *(f"feedback.{m}" for m in metrics)])
    for row in rows:
        feedback = row.get("feedback", {})
        cells = [row.get(c, "") for c in EXPORT_COLUMNS]
        cells[EXPORT_COLUMNS.index("document_ids")] = " ".join(row.get("document_ids", []))
        writer.writerow([*cells, *(feedback.get(m, "") for m in metrics)])
