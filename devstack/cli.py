"""``nbq dev``: run the whole system locally, optionally with a demo."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated

import typer

from nanobanana_queue.workers.cli.common import console, err_console, fail_on_config_error, line
from nanobanana_queue.workers.extras import require_extra

if TYPE_CHECKING:
    from rich.console import Console

    from nanobanana_queue.devstack.stack import DevStack

#: Seconds between health checks of the children while the stack runs.
WATCH_INTERVAL_S = 0.5


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)


@fail_on_config_error
def dev(
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Submit 3 prompts (different sizes), show progress, print where the "
            "images are, then keep running.",
        ),
    ] = False,
    exit_after_demo: Annotated[
        bool,
        typer.Option(
            "--exit-after-demo",
            help="Run the demo, then stop everything and exit (implies "
            "--demo; exit code 1 unless all 3 jobs are stored).",
        ),
    ] = False,
    port_base: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=65530,
            help="Fixed ports: Redis N, S3 N+1, emulator N+2, Flower N+3, metrics N+4 "
            "(default: free ports).",
        ),
    ] = None,
) -> None:
    """Run Redis, S3 (moto), the Evolink emulator, a worker, Flower and metrics here.

    Redis: NBQ_BROKER_URL if set and answering, else a private redis-server.

    S3: NBQ_S3_ENDPOINT if set, else moto's server with the bucket created (in memory:
    its images vanish when the stack stops).

    API: the real one if NBQ_EVOLINK_API_KEY is set and NBQ_EVOLINK_BASE_URL is not
    loopback, else the emulator (fast time scale, a throwaway dev key, images capped at
    262,144 pixels, ratio kept: 2K and 4K come back small).

    Prints every URL and the `export` lines for a second shell (never a real secret).
    Ctrl-C or SIGTERM stops everything and removes the temp dir.
    """
    require_extra("dev", what="nbq dev")
    from nanobanana_queue.devstack.errors import DevStackError
    from nanobanana_queue.devstack.report import event_console, print_service, print_summary
    from nanobanana_queue.devstack.signals import Shutdown, shutdown_on_signals, signals_ignored
    from nanobanana_queue.devstack.stack import DevStack
    from nanobanana_queue.workers.settings import get_settings
    from nanobanana_queue.workers.startup import configure_process

    configure_process()
    # Production log setting: what it prints becomes log events too (one format).
    if get_settings().log_json:
        out = err = event_console()
    else:
        out, err = console, err_console
    stack = DevStack(
        get_settings(),
        dict(os.environ),
        port_base=port_base,
        on_ready=lambda service: print_service(out, service),
    )
    code = 0
    try:
        with shutdown_on_signals():
            stack.start()
            print_summary(out, stack, exits_after_demo=exit_after_demo)
            if demo or exit_after_demo:
                code = _demo(stack, out, exits_after=exit_after_demo)
            if not exit_after_demo:
                out.print("[bold]Running.[/bold] Press Ctrl-C to stop.")
                while True:
                    stack.check()
                    time.sleep(WATCH_INTERVAL_S)
    except Shutdown as stop:
        out.print(f"{stop} received, stopping…")
    except DevStackError as exc:
        err.print(line(("nbq dev: ", "red"), str(exc)), highlight=False)
        code = 1
    finally:
        with signals_ignored():
            stack.stop()
    out.print("stopped.")
    raise typer.Exit(code)


def _demo(stack: DevStack, console: Console, *, exits_after: bool = False) -> int:
    """Run the demo against the stack; 0 when all its jobs were stored."""
    from nanobanana_queue.devstack.demo import run_demo
    from nanobanana_queue.producers.api import Producer

    console.print("[bold]Demo:[/bold] 3 prompts through the producer API")
    if any(service.name == "api" for service in stack.services):
        console.print(
            "[yellow]The demo runs on the real Evolink API and spends credits "
            "(3 images at 1K).[/yellow]"
        )
    producer = Producer(stack.settings())
    try:
        ok = run_demo(producer, console)
    finally:
        producer.celery.close()
    if stack.s3_is_ephemeral:
        until = "now (--exit-after-demo)" if exits_after else "nbq dev stops"
        console.print(
            "[yellow]These images live in the stack's in-memory S3 (moto): the links work "
            f"until {until}, then the images are gone.[/yellow]",
            soft_wrap=True,
        )
    return 0 if ok else 1
