"""``nbq serve``: the HTTP ingress (and Evolink callback receiver) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from workers.cli.common import fail_on_config_error
from workers.extras import require_extra


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

    from producers.ingress.app import create_app
    from producers.ingress.server import uvicorn_options
    from workers.logs import configure_logging, register_secret
    from workers.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.callback_secret is not None:
        register_secret(settings.callback_secret.get_secret_value())
    if workers > 1:
        uvicorn.run(
            "producers.ingress.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            **uvicorn_options(settings),
        )
        return
    # The limits (and no access log: callback URLs carry a per-job token) are documented
    # in producers/ingress/server.py and docs/operations.md.
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level=log_level, **uvicorn_options(settings)
    )
