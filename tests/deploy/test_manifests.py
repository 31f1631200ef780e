"""deploy/: the Kubernetes manifests and the Compose file pass their schemas, and the check fails
on broken copies (a misspelt field, a wrong type, an unknown Compose key, Envoy configs that drift
apart). The server settings the manifests pass as HA_* variables exist and parse.

The schemas are the ones vendored in kubernetes-validate and check-jsonschema (dev extra): nothing
is downloaded here.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from hybrid_assistant.server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_validate", DEPLOY / "validate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = _validator()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of deploy/ to break."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_manifests_validate() -> None:
    assert validate.problems(DEPLOY) == []


def test_the_command_exits_0_on_the_manifests_and_1_on_a_broken_copy(broken: Path) -> None:
    ok = subprocess.run([sys.executable, DEPLOY / "validate.py"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _edit(broken / "k8s" / "assistant.yaml", "readinessProbe:", "readinesProbe:")
    bad = subprocess.run([sys.executable, DEPLOY / "validate.py", broken], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "readinesProbe" in bad.stdout


def test_a_misspelt_kubernetes_field_fails(broken: Path) -> None:
    _edit(broken / "k8s" / "assistant.yaml", "readinessProbe:", "readinesProbe:")
    found = validate.problems(broken)
    assert found, "strict validation let a misspelt field through"
    assert all("Deployment/hybrid-assistant" in p and "readinesProbe" in p for p in found), found


def test_a_grpc_probe_on_a_named_port_fails(broken: Path) -> None:
    # Unlike httpGet and tcpSocket, a grpc probe takes a port number only.
    _edit(broken / "k8s" / "assistant.yaml", "grpc: {port: 50051}", "grpc: {port: grpc}")
    found = validate.problems(broken)
    assert found
    assert any("startupProbe/grpc/port" in p and "'grpc'" in p for p in found), found


def test_a_missing_required_field_fails(broken: Path) -> None:
    pvc = broken / "k8s" / "pvc.yaml"
    _edit(pvc, "kind: PersistentVolumeClaim", "kind: PersistentVolumeClaim\nspec_: {}")
    _edit(broken / "k8s" / "postgres.yaml", "  serviceName: postgres\n", "")
    found = validate.problems(broken)
    assert any("PersistentVolumeClaim" in p and "spec_" in p for p in found), found
    assert any("StatefulSet/postgres" in p and "serviceName" in p for p in found), found


def test_an_unknown_compose_key_fails(broken: Path) -> None:
    _edit(broken / "compose" / "compose.yaml", "    stop_grace_period: 40s", "    stop_grace: 40s")
    found = validate.problems(broken)
    assert len(found) == 1
    assert "compose.yaml at services/assistant" in found[0]
    assert "stop_grace" in found[0]


def test_a_wrong_compose_type_fails(broken: Path) -> None:
    _edit(broken / "compose" / "compose.yaml", 'expose: ["50051", "8000"]', "expose: 50051")
    found = validate.problems(broken)
    assert any("services/assistant/expose: 50051 is not of type 'array'" in p for p in found), found


def test_envoy_configs_that_drift_apart_fail(broken: Path) -> None:
    _edit(broken / "compose" / "envoy.yaml", "lb_policy: LEAST_REQUEST", "lb_policy: ROUND_ROBIN")
    assert validate.problems(broken) == [
        f"{broken / 'k8s' / 'envoy.yaml'}: ConfigMap hybrid-assistant-envoy differs from "
        f"{broken / 'compose' / 'envoy.yaml'}"
    ]


def _k8s_env() -> dict[str, str]:
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "assistant.yaml").read_text())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # Secret-backed values get a stand-in of the right shape.
    stand_ins = {"HA_DATABASE_URL": "postgresql://u:p@postgres:5432/db", "HA_ADMIN_TOKEN": "t"}
    return {e["name"]: e.get("value", stand_ins.get(e["name"], "x")) for e in container["env"]}


def _compose_env() -> dict[str, str]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    env: dict[str, str] = compose["services"]["assistant"]["environment"]
    # Interpolated values (${POSTGRES_PASSWORD:?...}) get a stand-in.
    return {k: ("stand-in" if "${" in v else v) for k, v in env.items()}


def _unknown_settings(names: Iterable[str]) -> list[str]:
    """HA_X or HA_X__Y names whose X is not a Settings field (pydantic-settings would ignore them)."""
    fields = Settings.model_fields
    return sorted(n for n in names if n.removeprefix("HA_").split("__")[0].lower() not in fields)


@pytest.mark.parametrize("env", [_k8s_env(), _compose_env()], ids=["kubernetes", "compose"])
def test_the_manifests_set_real_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _unknown_settings(env) == []
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.threads == 2
    assert settings.adapter_roots == [Path("/adapters")]
    assert settings.database_url is not None
    assert settings.admin_token is not None


def test_the_dockerfile_sets_real_settings() -> None:
    # Both stages and the comments that tell users what to set.
    names = set(re.findall(r"\b(HA_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    assert "HA_LISTEN" in names
    assert _unknown_settings(names) == []
