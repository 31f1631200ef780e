"""Options shared by the client commands, so every command spells and documents them the same way.

TLS: ``--tls`` trusts the system roots; ``--tls-ca`` (implies TLS) trusts a private CA or a
self-signed server certificate; ``--tls-client-cert``/``--tls-client-key`` present a client
certificate to a server that requires one (``serve --tls-client-ca``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from hybrid_assistant.client import TlsOptionError, tls_options

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
