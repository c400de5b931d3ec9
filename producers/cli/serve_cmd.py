"""``nbq serve``: the HTTP ingress (and Evolink callback receiver) on uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from nanobanana_queue.workers.cli.common import fail_on_config_error
from nanobanana_queue.workers.extras import require_extra

if TYPE_CHECKING:
    from fastapi import FastAPI


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@fail_on_config_error
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP ingress: /v1/jobs, /v1/batches, /healthz, /readyz, callbacks."""
    require_extra("ingress", what="nbq serve")
    import uvicorn

    from nanobanana_queue.producers.ingress.server import uvicorn_options
    from nanobanana_queue.workers.settings import get_settings
    from nanobanana_queue.workers.startup import configure_logging

    settings = get_settings()
    configure_logging(settings)  # uvicorn's own lines, in a supervisor process too
    # log_config=None: uvicorn's loggers keep the root handler of workers.logs (one
    # format). The limits, and no uvicorn access log (callback URLs carry a per-job token;
    # the ingress logs each request itself, producers/ingress/accesslog.py), are
    # documented in producers/ingress/server.py and docs/operations.md.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "log_config": None,
        **uvicorn_options(settings),
    }
    if workers > 1:
        uvicorn.run(
            "nanobanana_queue.producers.cli.serve_cmd:served_app",
            factory=True,
            workers=workers,
            **options,
        )
        return
    uvicorn.run(served_app(), **options)


def served_app() -> FastAPI:
    """The ingress app as ``nbq serve`` runs it (in each uvicorn worker process): logging
    configured first, every secret of the settings redacted."""
    from nanobanana_queue.producers.ingress.app import create_app
    from nanobanana_queue.workers.settings import get_settings
    from nanobanana_queue.workers.startup import configure_logging

    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)
