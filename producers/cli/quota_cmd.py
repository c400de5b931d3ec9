"""``nbq quota`` (the submissions breaker) and ``nbq credits`` (today's spend)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from nanobanana_queue.workers.cli.common import (
    console,
    fail_on_config_error,
    line,
    print_json,
    shown,
)
from nanobanana_queue.workers.resilience.fairshare import in_flight_text


def register(app: typer.Typer) -> None:
    app.command("quota")(quota)
    app.command("credits")(credits)


@fail_on_config_error
def quota(
    reset: Annotated[bool, typer.Option("--reset", help="Close the breaker by hand.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the quota breaker: state, since when, last 402 code and message, jobs waiting."""
    from nanobanana_queue.workers.jobs.state import JobState
    from nanobanana_queue.workers.runtime import get_runtime

    rt = get_runtime()
    if reset:
        was_open = rt.breaker.close()
        console.print("breaker closed" if was_open else "breaker was not open")
    status = rt.breaker.status()
    waiting = rt.store.count_in_state(JobState.QUEUED)
    shares = rt.fair().snapshot()
    data = {
        "state": status.state,
        "kind": status.kind,
        "since": status.since,
        "code": status.code,
        "message": status.message,
        "next_probe_at": status.next_probe_at,
        "trips": status.trips,
        "jobs_waiting": waiting,
        # The fair-share gate (workers/resilience/fairshare.py): producers whose jobs
        # asked for a create lately; "" = jobs without a producer.
        "producers": {
            share.producer: {
                "waiting": share.waiting,
                "weight": share.weight,
                "share": round(share.share, 4),
                "in_flight": share.in_flight,
            }
            for share in shares
        },
    }
    if as_json:
        print_json(data)
        return
    table = Table(show_header=False, box=None)
    colour = "red" if status.is_open else "green"
    table.add_row("state", shown(status.state, colour))
    if status.is_open:
        table.add_row("reason", shown(status.kind or ""))
        table.add_row("since", _ago(status.since))
        table.add_row("last code", shown(status.code or ""))
        table.add_row("message", shown(status.message or ""))
        table.add_row("next probe", _ago(status.next_probe_at))
    table.add_row("jobs waiting", str(waiting))
    for share in shares:
        counts = ", ".join(f"{n} {priority}" for priority, n in share.waiting.items())
        table.add_row(
            line("  ", share.producer or "(no producer)"),
            f"share {share.share:.0%} (weight {share.weight:g}), waiting {counts}"
            + in_flight_text(rt.fair(), share.in_flight, ", "),
        )
    console.print(table)


@fail_on_config_error
def credits(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Today's credits (UTC): paid, reserved by jobs not yet created, the daily budgets."""
    from nanobanana_queue.workers.runtime import get_runtime

    rt = get_runtime()
    ledger = rt.credits()
    day = ledger.today()
    producers = ledger.producers_today()
    limit = rt.settings.credit_limit_daily or None
    per_producer = rt.settings.credit_limit_daily_per_producer or None
    if as_json:
        print_json(
            {
                "paid_today": day.paid,
                "reserved_today": day.reserved,
                "spent_today": day.paid,  # the name before holds existed: paid
                "daily_limit": limit,  # null: unlimited
                "daily_limit_per_producer": per_producer,
                "unlimited": limit is None,
                "producers": {
                    name: {"paid": f.paid, "reserved": f.reserved} for name, f in producers.items()
                },
                "paid_by_failed_jobs": day.failed,
                "paid_by_cancelled_jobs": day.cancelled,
                # The names before holds existed (they meant the same: what those jobs paid)
                "reserved_by_failed_jobs": day.failed,
                "reserved_by_cancelled_jobs": day.cancelled,
                "unknown_outcome_creates": day.unknown_creates,
            }
        )
        return
    table = Table(show_header=False, box=None)
    table.add_row("paid today (UTC)", f"{day.paid:g} credits")
    table.add_row("reserved", f"{day.reserved:g} credits (held by jobs not yet created)")
    table.add_row(
        "daily budget",
        f"{limit:g} (NBQ_CREDIT_LIMIT_DAILY)" if limit else "unlimited",
    )
    table.add_row(
        "per producer",
        f"{per_producer:g} (NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER)" if per_producer else "unlimited",
    )
    for name, figures in producers.items():
        table.add_row(f"  {name}", f"paid {figures.paid:g}, reserved {figures.reserved:g}")
    table.add_row("of which paid by jobs that failed", f"{day.failed:g} credits")
    table.add_row("of which paid by jobs cancelled", f"{day.cancelled:g} credits")
    table.add_row(
        "creates of unknown outcome",
        f"{day.unknown_creates} (may be charged; their jobs keep their holds)",
    )
    console.print(table)


def _ago(at: float | None) -> str:
    if at is None:
        return ""
    delta = at - time.time()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    return f"{when} (in {delta:.0f}s)" if delta > 0 else f"{when} ({-delta:.0f}s ago)"
