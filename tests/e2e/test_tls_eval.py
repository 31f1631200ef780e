"""`hybrid-assistant eval` over TLS (issue 10): `--tls-ca` trusts the private CA of test_tls.py's
server; without it the run stops with a one-line error, not a traceback or a two-minute wait."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e import test_tls
from tests.e2e.test_eval_run import write_dataset
from tests.e2e.test_tls import Pki, cli
from tests.helpers import ServerThread

# test_tls.py's fixtures, used here as they are: its private CA, and a server whose certificate it signed.
pki = test_tls.pki
tls_server = test_tls.tls_server


def _flat(output: str) -> str:
    """Usage errors come in a box that wraps long lines: compare without spaces and box lines."""
    return re.sub(r"[\s│╭╮╰╯─]+", "", output)


def _eval(dataset: Path, out: Path, target: str, *flags: str) -> list[str]:
    return [
        "eval",
        "--dataset",
        str(dataset),
        "--arms",
        "base",
        "--max-tokens",
        "2",
        "--resamples",
        "20",
        "--no-cache",
        "--out",
        str(out),
        "--target",
        target,
        *flags,
    ]


def test_eval_with_tls_ca_completes(
    tls_server: tuple[ServerThread, str],
    pki: Pki,
    tmp_path: Path,
) -> None:
    _, target = tls_server
    dataset, _, _ = write_dataset(tmp_path)
    out = tmp_path / "report"
    result = cli(*_eval(dataset, out, target, "--tls-ca", str(pki.ca)))
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    run = json.loads((out / "run.json").read_text())
    assert (run["requests"], run["failed"]) == (5, 0)  # write_dataset's five items, one arm
    assert run["server"]["model"]
    # The same through the environment, as the other client commands read it.
    by_env = cli(*_eval(dataset, tmp_path / "by-env", target), HA_TLS_CA=str(pki.ca))
    assert by_env.exit_code == 0, by_env.output


def test_eval_without_the_ca_fails_with_one_line(
    tls_server: tuple[ServerThread, str],
    tmp_path: Path,
) -> None:
    _, target = tls_server
    dataset, _, _ = write_dataset(tmp_path)
    for how in (["--tls"], []):  # the system roots, then plaintext
        result = cli(*_eval(dataset, tmp_path / "r", target, *how, "--ready-timeout", "2"))
        assert result.exit_code == 1, (how, result.output)
        assert isinstance(result.exception, SystemExit), result.exception
        assert f"error: cannot reach a ready server at {target}" in result.output
        assert "UNAVAILABLE" in result.output  # why: the last health check's status
        assert "Traceback" not in result.output
        assert not (tmp_path / "r" / "run.json").exists()


def test_eval_tls_file_errors_are_usage_errors(
    pki: Pki,
    tmp_path: Path,
) -> None:
    dataset, _, _ = write_dataset(tmp_path)
    missing = tmp_path / "missing.pem"
    result = cli(*_eval(dataset, tmp_path / "r", "localhost:1", "--tls-ca", str(missing)))
    assert result.exit_code == 2, result.output
    assert f"--tls-ca'{missing}':Nosuchfile" in _flat(result.output)
    half = cli(*_eval(dataset, tmp_path / "r", "localhost:1", "--tls-client-cert", str(pki.client_cert)))
    assert half.exit_code == 2, half.output
    assert "--tls-client-certand--tls-client-keymustbegiventogether" in _flat(half.output)
