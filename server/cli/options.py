"""Options shared by the client commands."""

from __future__ import annotations

from typing import Annotated

import typer

Target = Annotated[str, typer.Option("--target", "-t", envvar="HA_TARGET", help="Server address host:port.")]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="HA_ADMIN_TOKEN", help="Admin bearer token (for admin calls)."),
]
Tls = Annotated[bool, typer.Option("--tls", envvar="HA_TLS", help="Connect with TLS (system roots).")]
Json = Annotated[bool, typer.Option("--json", help="Print the raw response as JSON.")]
