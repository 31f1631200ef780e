"""TLS and mutual TLS that people can use (issue 10, defect 15), against real servers.

A private CA made here signs the server certificate (SAN localhost and 127.0.0.1) and a client
certificate; a second CA signs a client certificate the server must not accept. The checks go
through the Python clients, the CLI (`--tls-ca`, `--tls-client-cert/-key`), the Dockerfile's
HEALTHCHECK command as written, and `serve`'s configuration errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from hybrid_assistant.client import AssistantClient, AsyncAssistantClient
from hybrid_assistant.process import free_port
from hybrid_assistant.server.cli import app as cli_app
from tests.helpers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
# Environment variables the CLI reads for TLS: cleared so the caller's shell cannot leak in.
TLS_ENV = ("HA_TLS", "HA_TLS_CA", "HA_TLS_CLIENT_CERT", "HA_TLS_CLIENT_KEY", "HA_TLS_CERT", "HA_TLS_KEY")
TLS_ENV_EXTRA = ("HA_TLS_CLIENT_CA", "HA_TLS_SERVER_NAME", "HA_TARGET", "HA_CONFIG")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_chain: Path  # server certificate followed by the CA: what a fullchain.pem holds
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_client_cert: Path  # signed by another CA
    rogue_client_key: Path

    def read(self, name: str) -> bytes:
        path: Path = getattr(self, name)
        return path.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    if server:
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key = _key(), _key()
    ca = _cert("test CA", ca_key, None)
    rogue_ca = _cert("rogue CA", rogue_ca_key, None)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    server = _cert("localhost", server_key, (ca, ca_key), server=True)
    client = _cert("test client", client_key, (ca, ca_key), client=True)
    rogue = _cert("rogue client", rogue_key, (rogue_ca, rogue_ca_key), client=True)
    files = {
        "ca.pem": _pem(ca),
        "server-chain.pem": _pem(server, ca),
        "server-key.pem": _key_pem(server_key),
        "client.pem": _pem(client),
        "client-key.pem": _key_pem(client_key),
        "rogue.pem": _pem(rogue),
        "rogue-key.pem": _key_pem(rogue_key),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(
        ca=d / "ca.pem",
        server_chain=d / "server-chain.pem",
        server_key=d / "server-key.pem",
        client_cert=d / "client.pem",
        client_key=d / "client-key.pem",
        rogue_client_cert=d / "rogue.pem",
        rogue_client_key=d / "rogue-key.pem",
    )


def _server(
    tiny_model_dir: Path, data_dir: Path, pki: Pki, *, mutual: bool
) -> Iterator[tuple[ServerThread, str]]:
    from hybrid_assistant.server.config import load_settings

    settings = load_settings(
        None,
        listen="127.0.0.1:0",
        model_path=tiny_model_dir,
        data_dir=data_dir,
        max_total_tokens=512,
        max_prompt_tokens=384,
        default_max_tokens=4,
        threads=1,
        embedder="hashing",
        tls_cert=pki.server_chain,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca if mutual else None,
    )
    server = ServerThread(settings)
    try:
        server.wait_ready()
        yield server, f"localhost:{server.port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(
    tiny_model_dir: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, str]]:
    yield from _server(tiny_model_dir, tmp_path_factory.mktemp("tls-data"), pki, mutual=False)


@pytest.fixture(scope="module")
def mtls_server(
    tiny_model_dir: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, str]]:
    yield from _server(tiny_model_dir, tmp_path_factory.mktemp("mtls-data"), pki, mutual=True)


def cli(*args: str, **env: str) -> Any:
    """Run the CLI in-process with only the given TLS variables set."""
    clean: dict[str, str | None] = dict.fromkeys((*TLS_ENV, *TLS_ENV_EXTRA))
    clean.update(env)
    return CliRunner().invoke(cli_app, list(args), env=clean)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()


# ------------------------------------------------------------------ one-way TLS


def test_python_client_with_the_ca_gets_answers(tls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = tls_server
    with AssistantClient(target, root_certificates=pki.read("ca"), timeout=30) as client:
        assert client.server_info().model
        assert client.generate("Tell me a story.", max_tokens=2).usage.completion_tokens >= 1


def test_by_ip_address_and_with_a_server_name_override(
    tls_server: tuple[ServerThread, str], pki: Pki
) -> None:
    server, _ = tls_server
    ca = pki.read("ca")
    with AssistantClient(server.target, root_certificates=ca, timeout=30) as client:  # the IP SAN
        assert client.server_info().model
    with AssistantClient(server.target, root_certificates=ca, tls_server_name="localhost") as client:
        assert client.server_info(timeout=30).model
    wrong = AssistantClient(server.target, root_certificates=ca, tls_server_name="other.example")
    with wrong, pytest.raises(grpc.RpcError) as exc:
        wrong.server_info(timeout=10)
    assert _code(exc) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("how", ["system roots", "plaintext"])
def test_client_without_the_ca_is_unavailable(tls_server: tuple[ServerThread, str], how: str) -> None:
    _, target = tls_server
    client = AssistantClient(target, tls=how == "system roots", timeout=10)
    with client, pytest.raises(grpc.RpcError) as exc:
        client.server_info()
    assert _code(exc) == grpc.StatusCode.UNAVAILABLE


def test_cli_health_and_generate_with_tls_ca(tls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = tls_server
    health = cli("health", "--target", target, "--tls-ca", str(pki.ca))
    assert health.exit_code == 0, health.output
    assert health.stdout.strip() == "SERVING"
    generate = cli(
        "generate", "Tell me a story.", "--max-tokens", "2", "--json", "-t", target, "--tls-ca", str(pki.ca)
    )
    assert generate.exit_code == 0, generate.output
    assert json.loads(generate.stdout)["usage"]["completion_tokens"] >= 1
    by_env = cli("info", "--target", target, HA_TLS_CA=str(pki.ca))
    assert by_env.exit_code == 0, by_env.output
    assert '"model"' in by_env.output


def test_cli_without_the_ca_fails_with_one_line(tls_server: tuple[ServerThread, str]) -> None:
    _, target = tls_server
    result = cli("info", "--target", target, "--tls")
    assert result.exit_code == 1
    assert "error: UNAVAILABLE" in result.output
    health = cli("health", "--target", target, "--timeout", "5")
    assert health.exit_code == 1 and "NOT_SERVING" in health.output


def test_docker_healthcheck_command_works_with_tls_on(tls_server: tuple[ServerThread, str], pki: Pki) -> None:
    """The Dockerfile's HEALTHCHECK, as written, against a server configured the Docker way
    (HA_TLS_CERT/HA_TLS_KEY in the environment, the certificate file holding its CA)."""
    server, _ = tls_server
    dockerfile = (ROOT / "Dockerfile").read_text()
    commands = re.findall(r'^\s*CMD (\[.*"health".*\])\s*$', dockerfile, flags=re.MULTILINE)
    assert len(commands) == 2, "one HEALTHCHECK per image"
    for command in commands:
        argv: list[str] = json.loads(command)
        assert argv[:2] == ["hybrid-assistant", "health"]
        args = [a.replace("localhost:50051", f"localhost:{server.port}") for a in argv[2:]]
        env = {"HA_TLS_CERT": str(pki.server_chain), "HA_TLS_KEY": str(pki.server_key)}
        result = cli("health", *args, **env)
        assert result.exit_code == 0, result.output
        # With TLS off (no HA_TLS_CERT) the same command speaks plaintext, as before.
        plain = cli("health", *args, "--timeout", "5")
        assert plain.exit_code == 1


# ------------------------------------------------------------------ mutual TLS


def test_mtls_refuses_a_client_without_a_certificate(mtls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = mtls_server
    client = AssistantClient(target, root_certificates=pki.read("ca"), timeout=10)
    with client, pytest.raises(grpc.RpcError) as exc:
        client.server_info()
    assert _code(exc) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_from_another_ca(mtls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = mtls_server
    client = AssistantClient(
        target,
        root_certificates=pki.read("ca"),
        certificate_chain=pki.read("rogue_client_cert"),
        private_key=pki.read("rogue_client_key"),
        timeout=10,
    )
    with client, pytest.raises(grpc.RpcError) as exc:
        client.server_info()
    assert _code(exc) == grpc.StatusCode.UNAVAILABLE


def test_mtls_accepts_the_client_certificate(mtls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = mtls_server
    creds: dict[str, Any] = {
        "root_certificates": pki.read("ca"),
        "certificate_chain": pki.read("client_cert"),
        "private_key": pki.read("client_key"),
    }
    with AssistantClient(target, timeout=30, **creds) as client:
        assert client.generate("Tell me a story.", max_tokens=2).usage.completion_tokens >= 1

    async def run_async() -> str:
        async with AsyncAssistantClient(target, timeout=30, **creds) as client:
            return (await client.server_info()).model

    assert asyncio.run(run_async())


def test_mtls_cli(mtls_server: tuple[ServerThread, str], pki: Pki) -> None:
    _, target = mtls_server
    ca, cert, key = str(pki.ca), str(pki.client_cert), str(pki.client_key)
    refused = cli("health", "--target", target, "--tls-ca", ca, "--timeout", "5")
    assert refused.exit_code == 1
    flags = cli(
        "health", "--target", target, "--tls-ca", ca, "--tls-client-cert", cert, "--tls-client-key", key
    )
    assert flags.exit_code == 0, flags.output
    env = {"HA_TLS_CA": ca, "HA_TLS_CLIENT_CERT": cert, "HA_TLS_CLIENT_KEY": key}
    for args in (
        ["generate", "Tell me a story.", "--max-tokens", "2"],
        ["adapters", "list"],
        ["experiments", "list"],
    ):
        result = cli(*args, "--target", target, **env)
        assert result.exit_code == 0, (args, result.output)
    stats = cli("knowledge", "stats", "--target", target, **env)
    assert stats.exit_code == 0, stats.output
    half = cli("info", "--target", target, "--tls-ca", ca, "--tls-client-cert", cert)
    assert half.exit_code == 2
    assert "--tls-client-cert and --tls-client-key must be given together" in half.output


def test_serve_flags_start_an_mtls_server(pki: Pki, tiny_model_dir: Path, tmp_path: Path) -> None:
    """`hybrid-assistant serve --tls-cert --tls-key --tls-client-ca`, as a process, end to end."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in (*TLS_ENV, *TLS_ENV_EXTRA)},
        "HA_MODEL_PATH": str(tiny_model_dir),
        "HA_DATA_DIR": str(tmp_path / "data"),
        "HA_THREADS": "1",
        "HA_EMBEDDER": "hashing",
        "HA_MAX_TOTAL_TOKENS": "512",
        "HA_MAX_PROMPT_TOKENS": "384",
    }
    tls = ["--tls-cert", str(pki.server_chain), "--tls-key", str(pki.server_key)]
    command = [
        sys.executable,
        "-m",
        "hybrid_assistant.server",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        *tls,
    ]
    proc = subprocess.Popen(
        [*command, "--tls-client-ca", str(pki.ca)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    target = f"localhost:{port}"
    creds: dict[str, Any] = {
        "root_certificates": pki.read("ca"),
        "certificate_chain": pki.read("client_cert"),
        "private_key": pki.read("client_key"),
    }
    try:
        with AssistantClient(target, **creds) as client:
            client.wait_ready(timeout=120)
            assert client.generate("Tell me a story.", max_tokens=2, timeout=30).usage.completion_tokens >= 1
        anonymous = AssistantClient(target, root_certificates=pki.read("ca"), timeout=10)
        with anonymous, pytest.raises(grpc.RpcError) as exc:
            anonymous.server_info()
        assert _code(exc) == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output


# ------------------------------------------------------------------ configuration errors


def test_python_client_needs_key_and_chain_together(pki: Pki) -> None:
    with pytest.raises(ValueError, match="private_key and certificate_chain"):
        AssistantClient("localhost:1", certificate_chain=pki.read("client_cert"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{server_chain}"], "tls_cert and tls_key must be set together"),
        (["--tls-client-ca", "{ca}"], "tls_client_ca (mutual TLS) needs tls_cert and tls_key"),
        (
            ["--tls-cert", "{server_chain}", "--tls-key", "{missing}"],
            "tls_key file '{missing}' does not exist",
        ),
        (["--tls-cert", "{server_key}", "--tls-key", "{server_key}"], "holds no PEM certificate"),
        (
            ["--tls-cert", "{server_chain}", "--tls-key", "{server_key}", "--tls-client-ca", "{missing}"],
            "tls_client_ca file '{missing}' does not exist",
        ),
    ],
)
def test_serve_tls_configuration_errors_exit_2(
    pki: Pki, tmp_path: Path, flags: list[str], message: str
) -> None:
    paths = {
        "server_chain": pki.server_chain,
        "server_key": pki.server_key,
        "ca": pki.ca,
        "missing": tmp_path / "missing.pem",
    }
    result = cli("serve", "--data-dir", str(tmp_path), *(f.format(**paths) for f in flags))
    assert result.exit_code == 2, result.output
    assert "configuration error" in result.output
    assert message.format(**paths) in result.output
