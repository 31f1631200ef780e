"""Check the deployment manifests against their published schemas, offline.

Kubernetes: kubernetes-validate (the API's JSON schemas, vendored in the package), strict, so a
misspelt field fails too; against the oldest and newest versions we claim. Compose: the compose-spec
JSON schema that check-jsonschema vendors. Both come from PyPI with the dev extra; nothing is
downloaded at check time. Also checks that the Kubernetes Envoy ConfigMap carries
deploy/compose/envoy.yaml verbatim, so the two deployments balance the same way.

    python deploy/validate.py [DEPLOY_DIR]      # exit 1 and one line per problem if any
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

# grpc: probes went GA in 1.27; 1.30 is the oldest release still common in managed clusters.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
ENVOY_CONFIGMAP = "hybrid-assistant-envoy"


def kubernetes_problems(k8s_dir: Path) -> list[str]:
    problems: list[str] = []
    files = sorted(k8s_dir.glob("*.yaml"))
    if not files:
        return [f"{k8s_dir}: no manifests"]
    for path in files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not YAML: {exc}")
            continue
        for doc in docs:
            where = f"{path}: {doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    at = "/".join(str(p) for p in exc.path) or "(top)"
                    problems.append(f"{where} (Kubernetes {version}) at {at}: {exc.message}")
                except kubernetes_validate.SchemaNotFoundError as exc:
                    problems.append(f"{where} (Kubernetes {version}): {exc}")
    return problems


def compose_schema() -> dict[str, object]:
    vendored = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, object] = json.loads(vendored.read_text())
    return schema


def compose_problems(compose_file: Path) -> list[str]:
    try:
        doc = yaml.safe_load(compose_file.read_text())
    except yaml.YAMLError as exc:
        return [f"{compose_file}: not YAML: {exc}"]
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{compose_file} at {'/'.join(str(p) for p in err.absolute_path) or '(top)'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def envoy_problems(deploy_dir: Path) -> list[str]:
    compose_envoy = deploy_dir / "compose" / "envoy.yaml"
    k8s_envoy = deploy_dir / "k8s" / "envoy.yaml"
    try:
        maps = [
            d
            for d in yaml.safe_load_all(k8s_envoy.read_text())
            if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == ENVOY_CONFIGMAP
        ]
        expected = compose_envoy.read_text()
    except (OSError, yaml.YAMLError) as exc:
        return [f"envoy config: {exc}"]
    if len(maps) != 1:
        return [f"{k8s_envoy}: expected one ConfigMap {ENVOY_CONFIGMAP}, found {len(maps)}"]
    if maps[0].get("data", {}).get("envoy.yaml") != expected:
        return [f"{k8s_envoy}: ConfigMap {ENVOY_CONFIGMAP} differs from {compose_envoy}"]
    return []


def problems(deploy_dir: Path) -> list[str]:
    return [
        *kubernetes_problems(deploy_dir / "k8s"),
        *compose_problems(deploy_dir / "compose" / "compose.yaml"),
        *envoy_problems(deploy_dir),
    ]


def main(argv: list[str]) -> int:
    deploy_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    found = problems(deploy_dir)
    for line in found:
        print(line)
    if found:
        return 1
    versions = ", ".join(KUBERNETES_VERSIONS)
    print(f"manifests valid: Kubernetes {versions} (strict), compose-spec, envoy config")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
