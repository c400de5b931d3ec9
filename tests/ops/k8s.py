"""The Kubernetes manifests as a cluster would receive them, read offline for the tests.

Each overlay is rendered by kustomize (built into ``kubectl``: ``kubectl kustomize``, no
cluster needed) and checked against the Kubernetes schemas of ``kubernetes-validate``
and the CRD schemas vendored in ``tests/ops/crd_schemas`` (KEDA, prometheus-operator;
refreshed with ``ops/scripts/vendor_crd_schemas.py``), made strict as kubeconform does:
a field the schema does not name is an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
OVERLAYS = ("redis", "redis-sentinel", "rabbitmq")
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
#: The Kubernetes version whose built-in schemas the objects must satisfy (the oldest a
#: platform team is likely to run; the fields used are all older).
KUBERNETES_VERSION = "1.29"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not installed (kustomize renders the overlays)")
    return found


@cache
def _render(path: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k ops/k8s/overlays/<overlay>`` would send."""
    return list(_render(str(K8S / "overlays" / overlay)))


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return found


# --- schemas ----------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """An OpenAPI v3 CRD schema as a JSON Schema that refuses unknown fields.

    kubeconform's conversion: ``additionalProperties: false`` on every object that lists
    its properties (unless it preserves unknown fields), ``nullable`` as a null type.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` → strict schema, for every vendored CRD version."""
    found = {}
    for path in sorted(CRD_SCHEMAS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        found[(document["apiVersion"], document["kind"])] = strict(document["openAPIV3Schema"])
    return found


def validate(obj: dict[str, Any]) -> None:
    """Raise unless ``obj`` satisfies its kind's schema (built-in or vendored CRD)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        jsonschema.Draft7Validator(crd_schemas()[key]).validate(obj)
        return
    import kubernetes_validate

    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
