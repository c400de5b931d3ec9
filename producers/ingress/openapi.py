"""The served OpenAPI document, and its copy in the repository.

    python -m producers.ingress.openapi          # rewrite docs/ingress-openapi.json
    python -m producers.ingress.openapi --check  # exit 1 if the copy is out of date

The document does not depend on settings, so it is built with placeholder ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "ingress-openapi.json"


def openapi_document() -> dict[str, Any]:
    """What ``GET /openapi.json`` serves (no connection is made to build it)."""
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.producers.ingress.app import create_app
    from nanobanana_queue.workers.app import create_app as create_celery_app
    from nanobanana_queue.workers.runtime import Runtime
    from nanobanana_queue.workers.settings import load_settings

    settings = load_settings(broker_url="redis://127.0.0.1:1/0")
    producer = Producer(
        settings, celery_app=create_celery_app(settings), runtime=Runtime.from_settings(settings)
    )
    return create_app(settings, producer=producer).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render(openapi_document())
    if "--check" in argv:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(
                f"{DOC_PATH} is out of date: "
                "run python -m nanobanana_queue.producers.ingress.openapi",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
