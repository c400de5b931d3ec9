"""``nbq dead``: messages the consumer guard refused (workers/deadletters.py)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from nanobanana_queue.workers.cli.common import (
    EXIT_USAGE,
    console,
    emit_error,
    err_console,
    fail_on_config_error,
    line,
    print_json,
    shown,
)

dead_app = typer.Typer(
    help="Refused broker messages: list, show, replay, purge.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(dead_app, name="dead")


def _store() -> Any:
    from nanobanana_queue.workers.deadletters import DeadLetterStore
    from nanobanana_queue.workers.settings import get_settings

    return DeadLetterStore.from_settings(get_settings())


@dead_app.command("list")
@fail_on_config_error
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N, newest first.")] = 100,
) -> None:
    """Dead letters, newest first: id, time, queue, task, reason, detail."""
    from nanobanana_queue.workers.guard.inspect import REASONS as DEAD_LETTER_REASONS

    if reason is not None and reason not in DEAD_LETTER_REASONS:
        emit_error(
            f"--reason {reason!r} is not a dead-letter reason ({', '.join(DEAD_LETTER_REASONS)})",
            code="invalid_reason",
            exit_code=EXIT_USAGE,
            as_json=as_json,
        )
    store = _store()
    letters = store.list(reason=reason, limit=limit)
    stats = store.stats()
    if as_json:
        print_json(
            [
                letter.model_dump(exclude={"body", "headers"}) | {"body_preview": letter.body[:200]}
                for letter in letters
            ]
        )
        return
    console.print(
        f"{stats.count} dead letter(s), {stats.bytes:,} of {stats.max_bytes:,} bytes, "
        f"at most {stats.max_entries:,}; {stats.dropped:,} dropped by these bounds "
        f"(the first of each reason kept: {stats.pinned})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table("id", "at (UTC)", "queue", "task", "reason", "detail")
    for letter in letters:
        table.add_row(
            shown(letter.id),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at)),
            shown(letter.queue),
            shown(letter.task or ""),
            shown(letter.reason),
            shown(letter.detail[:80]),
        )
    console.print(table)


@dead_app.command("show")
@fail_on_config_error
def show(letter_id: Annotated[str, typer.Argument()]) -> None:
    """One dead letter as JSON, with its (capped, redacted) headers and body."""
    letter = _store().get(letter_id)
    if letter is None:
        err_console.print(line(("no dead letter ", "red"), repr(letter_id)))
        raise typer.Exit(1)
    print_json(letter.model_dump())


@dead_app.command("replay")
@fail_on_config_error
def replay(letter_id: Annotated[str, typer.Argument()]) -> None:
    """Re-check a dead letter and publish it again, to run now.

    Its ETA and expiry are dropped (they were part of why it was refused) and it gets a
    new message id; a letter that was cut or redacted when stored is not replayed.
    """
    from nanobanana_queue.workers.deadletters import replay_letter
    from nanobanana_queue.workers.settings import get_settings

    store = _store()
    letter = store.get(letter_id)
    if letter is None:
        err_console.print(line(("no dead letter ", "red"), repr(letter_id)))
        raise typer.Exit(1)
    outcome = replay_letter(get_settings(), letter)
    if outcome.refusal is not None:
        err_console.print(
            line(("not replayed: ", "red"), f"{outcome.refusal.reason}: {outcome.refusal.detail}")
        )
        raise typer.Exit(1)
    store.remove(letter_id)
    console.print(
        line(f"replayed {letter_id} to queue {outcome.queue} as message {outcome.message_id}")
    )


@dead_app.command("purge")
@fail_on_config_error
def purge(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="Only entries older than S seconds.")
    ] = 0.0,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete dead letters: all of them, or those older than --older-than seconds.

    Asks first on a terminal; elsewhere (scripts, --json) it needs --yes.
    """
    store = _store()
    if not yes:
        found = store.count(older_than_s=older_than)
        if found == 0:
            removed = 0
            _purged(removed, as_json=as_json)
            return
        if as_json or not console.is_terminal:
            emit_error(
                f"would delete {found} dead letter(s); pass --yes to confirm",
                code="confirmation_required",
                exit_code=EXIT_USAGE,
                as_json=as_json,
            )
        if not typer.confirm(f"Delete {found} dead letter(s)?", default=False):
            err_console.print("nothing deleted")
            raise typer.Exit(1)
    _purged(store.purge(older_than_s=older_than), as_json=as_json)


def _purged(removed: int, *, as_json: bool) -> None:
    if as_json:
        print_json({"purged": removed})
    else:
        console.print(f"purged {removed} dead letter(s)")
