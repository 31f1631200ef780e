"""Options shared by the client commands, so every command spells and documents them the same way.

A client command declares one ``connection: Connection`` parameter and is decorated with
:func:`connection_options`: typer then sees ``--target``, ``--token`` (admin commands only) and
the four TLS options in that parameter's place, and the command gets them back as one
:class:`Connection` that opens the client.

TLS: ``--tls`` trusts the system roots; ``--tls-ca`` (implies TLS) trusts a private CA or a
self-signed server certificate; ``--tls-client-cert``/``--tls-client-key`` present a client
certificate to a server that requires one (``serve --tls-client-ca``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer

from hybrid_assistant.client import AssistantClient, TlsOptionError, tls_options

F = TypeVar("F", bound=Callable[..., Any])

# How the TLS files are spelled on the command line, for hybrid_assistant.client.tls_options' errors.
TLS_OPTION_NAMES = {"ca": "--tls-ca", "client_cert": "--tls-client-cert", "client_key": "--tls-client-key"}

Target = Annotated[str, typer.Option("--target", "-t", envvar="HA_TARGET", help="Server address host:port.")]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="HA_ADMIN_TOKEN", help="Admin bearer token (for admin calls)."),
]
Tls = Annotated[
    bool,
    typer.Option("--tls", envvar="HA_TLS", help="Connect with TLS, trusting the system roots (or --tls-ca)."),
]
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        envvar="HA_TLS_CA",
        help="PEM CA (or self-signed server certificate) to trust instead of the system roots; "
        "implies --tls.",
    ),
]
TlsClientCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-cert",
        envvar="HA_TLS_CLIENT_CERT",
        help="PEM client certificate chain, for servers that require mutual TLS (with --tls-client-key).",
    ),
]
TlsClientKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-key",
        envvar="HA_TLS_CLIENT_KEY",
        help="PEM private key of --tls-client-cert.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the raw response as JSON.")]


@dataclass(frozen=True)
class ClientTls:
    """The TLS options of one client command, turned into :class:`AssistantClient` arguments."""

    tls: bool = False
    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Read the PEM files; a missing or unpaired file is a usage error (exit 2)."""
        try:
            return tls_options(
                tls=self.tls,
                ca=self.ca,
                client_cert=self.client_cert,
                client_key=self.client_key,
                server_name=self.server_name,
                names=TLS_OPTION_NAMES,
            )
        except TlsOptionError as exc:
            raise typer.BadParameter(str(exc)) from None


@dataclass(frozen=True)
class Connection:
    """How a client command reaches the server: ``--target``, ``--token`` and the TLS options."""

    target: str = "localhost:50051"
    token: str | None = None
    tls: ClientTls = field(default_factory=ClientTls)

    def client(self) -> AssistantClient:
        """A client with the token and TLS settings; a bad TLS file is a usage error (exit 2)."""
        return AssistantClient(self.target, token=self.token, **self.tls.client_kwargs())

    @contextlib.contextmanager
    def connect(self) -> Iterator[AssistantClient]:
        """A client whose RPC errors become a one-line message and exit status 1."""
        client = self.client()
        try:
            yield client
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            typer.echo(f"error: {code}: {details}", err=True)
            raise typer.Exit(1) from None
        finally:
            client.close()


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
    )


_TARGET = _option("target", Target, "localhost:50051")
_TOKEN = _option("token", Token, None)
_TLS = [
    _option("tls", Tls, False),
    _option("tls_ca", TlsCa, None),
    _option("tls_client_cert", TlsClientCert, None),
    _option("tls_client_key", TlsClientKey, None),
]


def connection_options(*, admin: bool = False) -> Callable[[F], F]:
    """Give a command the connection options in place of its ``connection: Connection`` parameter.

    ``admin``: the command makes admin calls, so it also takes ``--token``. typer reads the
    command's signature, so the options appear (in ``--help`` too) where ``connection`` stood.
    """
    added = [_TARGET, *([_TOKEN] if admin else []), *_TLS]

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        params = list(signature.parameters.values())
        at = [p.name for p in params].index("connection")

        @functools.wraps(command)
        def with_connection(*args: Any, **kwargs: Any) -> Any:
            given = {p.name: kwargs.pop(p.name) for p in added}
            tls = ClientTls(given["tls"], given["tls_ca"], given["tls_client_cert"], given["tls_client_key"])
            kwargs["connection"] = Connection(given["target"], given.get("token"), tls)
            return command(*args, **kwargs)

        new = signature.replace(parameters=[*params[:at], *added, *params[at + 1 :]])
        with_connection.__signature__ = new  # type: ignore[attr-defined]
        with_connection.__annotations__ = {p.name: p.annotation for p in new.parameters.values()}
        return with_connection  # type: ignore[return-value]

    return decorate
