"""Client commands: talk to a running server through :mod:`hybrid_assistant.client`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from hybrid_assistant.server.cli.options import Connection, Json, connection_options


def print_json(message: Message, *, every_field: bool = False) -> None:
    """``every_field``: also the fields at their zero value (a greedy default_temperature of 0)."""
    typer.echo(
        MessageToJson(
            message,
            preserving_proto_field_name=True,
            indent=2,
            always_print_fields_with_no_presence=every_field,
        )
    )


@connection_options()
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    adapter: Annotated[str | None, typer.Option("--adapter", "-a", help="Adapter name ('' = base).")] = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they arrive.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="0 = greedy. Default: the server's (see `info`).")
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="Default: the server's (see `info`).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string, repeatable.")] = None,
    min_tokens: Annotated[
        int | None, typer.Option(help="Neither EOS nor a stop string ends the answer before this many.")
    ] = None,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Generate past EOS until --max-tokens (benchmarks).")
    ] = False,
    rag: Annotated[bool, typer.Option("--rag", help="Ground the answer in the knowledge index.")] = False,
    top_k: Annotated[int, typer.Option(help="Passages to retrieve with --rag (0 = default).")] = 0,
    show_contexts: Annotated[bool, typer.Option("--contexts", help="Print the cited passages.")] = False,
    connection: Connection = Connection(),
    json_out: Json = False,
) -> None:
    """Ask the server one question."""
    options: dict[str, Any] = {
        "adapter": adapter,
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop or (),
        "min_tokens": min_tokens,
        "ignore_eos": ignore_eos or None,
        "retrieval": rag,
        "top_k": top_k,
    }
    with connection.connect() as client:
        if stream:
            summary = None
            for part in client.stream(prompt, **options):
                if part.HasField("summary"):
                    summary = part.summary
                else:
                    sys.stdout.write(part.delta)
                    sys.stdout.flush()
            typer.echo("")
            if summary is not None and json_out:
                print_json(summary)
            response = summary
        else:
            response = client.generate(prompt, **options)
            if json_out:
                print_json(response)
            else:
                typer.echo(response.text)
        if response is not None and show_contexts and not json_out:
            for passage in response.contexts:
                typer.echo(f"[{passage.index}] {passage.document_id} (score {passage.score:.3f})", err=True)


@connection_options()
def info(
    connection: Connection = Connection(),
) -> None:
    """Show what the server runs, with the sampling a request gets when it sets none."""
    with connection.connect() as client:
        print_json(client.server_info(), every_field=True)


@connection_options()
def adapters_list(
    connection: Connection = Connection(),
    json_out: Json = False,
) -> None:
    """List adapters registered on the server."""
    with connection.connect() as client:
        adapters = client.list_adapters()
    if json_out:
        for adapter in adapters:
            print_json(adapter)
        return
    if not adapters:
        typer.echo("no adapters loaded")
    for a in adapters:
        state = ("resident" if a.resident else "evicted") + (", pinned" if a.pinned else "")
        purpose = a.metadata.get("purpose", "")
        typer.echo(
            f"{a.name:<20} rank {a.rank:<3} {','.join(a.target_modules):<28} {state:<18} "
            f"in-flight {a.in_flight:<3} {purpose}"
        )


@connection_options(admin=True)
def adapters_load(
    name: Annotated[str, typer.Argument(help="Name requests will use.")],
    path: Annotated[str, typer.Argument(help="Adapter directory (inside an adapter root on the server).")],
    replace: Annotated[bool, typer.Option(help="Replace an adapter of the same name.")] = False,
    pin: Annotated[bool, typer.Option(help="Never evict it.")] = False,
    connection: Connection = Connection(),
) -> None:
    """Load (or replace) an adapter on a running server."""
    with connection.connect() as client:
        reply = client.load_adapter(name, path, replace=replace, pin=pin)
    verb = "replaced" if reply.replaced else "loaded"
    typer.echo(f"{verb} {reply.adapter.name} (rank {reply.adapter.rank}) in {reply.adapter.load_ms:.0f} ms")


@connection_options(admin=True)
def adapters_unload(
    name: Annotated[str, typer.Argument()],
    connection: Connection = Connection(),
) -> None:
    """Unload an adapter; if requests still use it, its memory is freed when they finish."""
    with connection.connect() as client:
        reply = client.unload_adapter(name)
    if reply.deferred:
        typer.echo(f"unloaded {name}; {reply.in_flight} in-flight requests finish on it first")
    else:
        typer.echo(f"unloaded {name}")


@connection_options()
def health_check(
    connection: Connection = Connection(),
    tls_server_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-server-cert",
            envvar="HA_TLS_CERT",
            help="The server's own certificate, trusted when neither --tls-ca nor --tls is given: "
            "a container checking itself with a self-signed HA_TLS_CERT needs nothing else.",
        ),
    ] = None,
    tls_server_name: Annotated[
        str | None,
        typer.Option(
            envvar="HA_TLS_SERVER_NAME",
            help="Check the server certificate against this name instead of the target's host.",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 3.0,
) -> None:
    """Exit 0 if the server reports SERVING (for container health checks), else 1.

    Trusted for TLS, the first that is given: --tls-ca; --tls (system roots); --tls-server-cert.
    The last reads $HA_TLS_CERT, the server's own certificate, so the Docker HEALTHCHECK keeps working
    when TLS is turned on.
    """
    from grpc_health.v1 import health_pb2

    tls = dataclasses.replace(connection.tls, server_name=tls_server_name)
    if tls.ca is None and not tls.tls and tls_server_cert is not None:
        tls = dataclasses.replace(tls, ca=tls_server_cert)
    client = dataclasses.replace(connection, tls=tls).client()
    try:
        reply = client.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError as exc:
        typer.echo(f"not serving: {exc.code().name}", err=True)
        serving = False
    finally:
        client.close()
    typer.echo("SERVING" if serving else "NOT_SERVING")
    raise typer.Exit(0 if serving else 1)
