"""``nbq notify``: webhook deliveries that ran out of tries (workers/notify/deadletter.py)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from nanobanana_queue.workers.cli.common import (
    console,
    err_console,
    fail_on_config_error,
    print_json,
)

notify_app = typer.Typer(
    help="Completion webhooks that were never delivered: list, replay.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")


def _store() -> Any:
    from nanobanana_queue.workers.notify.deadletter import NotifyDeadLetters
    from nanobanana_queue.workers.redis_client import redis_client
    from nanobanana_queue.workers.settings import get_settings

    settings = get_settings()
    return NotifyDeadLetters(redis_client(settings), prefix=settings.key_prefix)


@notify_app.command("list")
@fail_on_config_error
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N, newest first.")] = 100,
) -> None:
    """Dead deliveries, newest first: webhook id, time, job, event, last status, reason."""
    entries = _store().list(limit=limit)
    if as_json:
        print_json([{k: v for k, v in e.items() if k != "payload"} for e in entries])
        return
    table = Table("webhook id", "dead at (UTC)", "job", "event", "status", "reason")
    for entry in entries:
        table.add_row(
            entry["webhook_id"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["dead_at"])),
            entry["job_id"],
            entry["event"],
            str(entry.get("status") or ""),
            str(entry.get("reason") or "")[:80],
        )
    console.print(table)


@notify_app.command("replay")
@fail_on_config_error
def replay(
    webhook_ids: Annotated[list[str] | None, typer.Argument(help="Webhook ids (or --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead delivery.")] = False,
) -> None:
    """Send dead deliveries again: same webhook id and body, a fresh retry period."""
    from nanobanana_queue.workers.app import create_app
    from nanobanana_queue.workers.dispatch import Dispatcher
    from nanobanana_queue.workers.settings import get_settings

    store = _store()
    ids = [e["webhook_id"] for e in store.list(limit=100_000)] if all_ else list(webhook_ids or [])
    if not ids:
        err_console.print("[red]name webhook ids, or --all[/red]")
        raise typer.Exit(2)
    settings = get_settings()
    dispatcher = Dispatcher.for_settings(create_app(settings), settings)
    missing = 0
    for webhook_id in ids:
        step = store.take(webhook_id)
        if step is None:
            err_console.print(f"[red]no dead delivery {webhook_id!r}[/red]")
            missing += 1
            continue
        dispatcher.send(step)
        store.remove(webhook_id)
        console.print(f"replayed {webhook_id} ({step.event} of {step.job_id})")
    if missing:
        raise typer.Exit(1)
