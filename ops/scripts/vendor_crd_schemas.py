"""Vendor the OpenAPI schemas of the CRDs ops/k8s uses, for offline validation in tests.

    python ops/scripts/vendor_crd_schemas.py CRD.yaml [CRD.yaml ...] --source "keda v2.20"

Each served version of each CustomResourceDefinition becomes
``tests/ops/crd_schemas/<kind>-<group>-<version>.json``: the CRD's ``openAPIV3Schema``
unchanged, with where it came from. The CRDs: KEDA's ``config/crd/bases``
(ScaledObject, TriggerAuthentication) and prometheus-operator's
``example/prometheus-operator-crd`` (ServiceMonitor, PrometheusRule).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "tests" / "ops" / "crd_schemas"


def vendor(crd_file: Path, source: str) -> list[Path]:
    written = []
    for crd in yaml.safe_load_all(crd_file.read_text(encoding="utf-8")):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            path = OUT / f"{kind.lower()}-{spec['group']}-{version['name']}.json"
            document = {
                "apiVersion": f"{spec['group']}/{version['name']}",
                "kind": kind,
                "source": f"{source}: {crd_file.name}",
                "openAPIV3Schema": version["schema"]["openAPIV3Schema"],
            }
            path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", "utf-8")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", nargs="+", type=Path)
    parser.add_argument("--source", required=True, help="project and version, for the record")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for crd in args.crds:
        for path in vendor(crd, args.source):
            print(path.relative_to(OUT.parents[2]))


if __name__ == "__main__":
    main()
