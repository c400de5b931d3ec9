"""``nbq emulator`` / ``python -m emulator``: run the emulator under uvicorn."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from nanobanana_queue.emulator.config import EmulatorConfig


def uvicorn_speedups() -> dict[str, str]:
    """httptools and uvloop when installed (several times the request rate), else defaults."""
    options: dict[str, str] = {}
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    return options


#: What ``nbq emulator`` imports beyond the producer's install (the [emulator] extra).
EMULATOR_MODULES = ("fastapi", "uvicorn", "PIL")


def register(app: typer.Typer) -> None:
    app.command("emulator", help="Run the Evolink API emulator (for tests and local runs).")(
        emulator
    )


def stop_with(code: str, message: str, *, prefix: str) -> NoReturn:
    """Exit 2 with one line on stderr: ``<prefix>: <message>``, or under NBQ_LOG_JSON one
    JSON event (``event`` the ``code``) like every other line the emulator writes."""
    from nanobanana_queue.workers.logs import error_event_if_json

    if not error_event_if_json(code, message, logger="nbq.emulator"):
        typer.echo(f"{prefix}: {message}", err=True)
    raise typer.Exit(2)


def require_emulator_extra() -> None:
    """One clear line instead of a traceback when the [emulator] extra is missing."""
    missing = [name for name in EMULATOR_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        stop_with(
            "configuration_error",
            f"nbq emulator needs the [emulator] extra (missing: {', '.join(missing)}): "
            "pip install 'nanobanana-queue[emulator]'",
            prefix="configuration error",
        )


def emulator(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accepted bearer key (repeatable); default: any key."),
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Multiply every time the API reports or honours (0.01 = fast).")
    ] = 1.0,
    credits: Annotated[
        float | None, typer.Option(help="Starting credit balance; default unlimited.")
    ] = None,
    result_ttl: Annotated[
        float, typer.Option(help="Result link lifetime in nominal seconds (scaled).")
    ] = 86400,
    image_format: Annotated[str, typer.Option(help="png, jpeg or webp.")] = "png",
    max_pixels: Annotated[
        int | None, typer.Option(help="Cap result pixels (ratio kept), for fast tests.")
    ] = None,
    allow_insecure_callbacks: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-callbacks", help="Accept http:// and loopback/private callback URLs."
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for durations, ids, faults.")] = None,
    fixed_duration: Annotated[
        float | None, typer.Option(help="Every task takes this many nominal seconds.")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base of result links; default http://HOST:PORT.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    honour_idempotency: Annotated[
        bool,
        typer.Option(
            "--honour-idempotency",
            help="Return the first task for a repeated Idempotency-Key (the vendor documents "
            "no such support, so it is off by default).",
        ),
    ] = False,
) -> None:
    """Run the Evolink API emulator (for tests and local runs)."""
    require_emulator_extra()
    import uvicorn

    from nanobanana_queue.emulator.app import create_app

    try:
        config = EmulatorConfig(
            host=host,
            port=port,
            api_keys=list(api_key or []),
            time_scale=time_scale,
            credits=credits,
            result_ttl=result_ttl,
            image_format=image_format,  # validated by pydantic
            max_pixels=max_pixels,
            allow_insecure_callbacks=allow_insecure_callbacks,
            seed=seed,
            fixed_duration=fixed_duration,
            public_url=public_url,
            log_level=log_level,
            honour_idempotency=honour_idempotency,
        )
    except ValidationError as exc:  # one line naming the option, not pydantic's report
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "option"
        option = "--" + {"api_keys": "api_key"}.get(name, name).replace("_", "-")
        stop_with("option_error", f"{option}: {first['msg']}", prefix="error")
    from nanobanana_queue.workers.logs import configure_logging, log_json_from_env

    # The project's one log format (workers/logs.py): uvicorn's records through its root
    # handler (log_config=None), one JSON object per line under NBQ_LOG_JSON.
    configure_logging(log_level, json=log_json_from_env())
    options: dict[str, Any] = uvicorn_speedups()
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,
        access_log=False,
        lifespan="on",
        **options,
    )
