"""``nbq retry`` and ``nbq adopt``: a person decides what happens to a failed job.

A job that failed ``outcome_unknown`` may already have a paid task that nobody recorded.
``nbq adopt JOB TASK_ID`` attaches that task (found in the vendor's dashboard) and
resumes polling: nothing paid again. ``nbq retry JOB`` sends a new create instead; for
such a job it may pay twice, so it asks for ``--yes``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from producers.errors import JobNotFoundError, MayPayTwiceError, ProducerError
from workers.cli.common import err_console, fail_on_config_error, line, print_json, shown
from workers.jobs.state import JobState
from workers.visible import visible

if TYPE_CHECKING:
    from producers.api import Producer


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)
    app.command("adopt")(adopt)


def _producer() -> Producer:
    from producers.api import Producer  # lazy: keeps `nbq --help` fast

    return Producer()


@fail_on_config_error
def retry(
    job_id: Annotated[str, typer.Argument(help="A failed or outcome_unknown job.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Re-send even if the last create may have been paid, or the job failed "
            "for a permanent reason (retryable: false).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-send a failed job's create (asks for --yes when it may pay twice or for nothing)."""
    try:
        record = _producer().retry(job_id, accept_may_pay_twice=yes)
    except MayPayTwiceError as exc:
        err_console.print(line(("warning: ", "yellow"), str(exc)))
        raise typer.Exit(1) from None
    except ProducerError as exc:
        err_console.print(line(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    if as_json:
        print_json(record.public_view())
        return
    typer.echo(visible(f"{record.job_id} {record.state.value}: a new create is on its way"))


@fail_on_config_error
def adopt(
    job_id: Annotated[str, typer.Argument(help="A failed or outcome_unknown job.")],
    task_id: Annotated[str, typer.Argument(help="The Evolink task id to attach.")],
    wait_s: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for a worker to take it (0: don't).")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Attach a task you found (e.g. in the vendor's dashboard) and resume polling."""
    producer = _producer()
    try:
        before = producer.adopt(job_id, task_id)
    except ProducerError as exc:
        err_console.print(line(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    record = before
    refused = f"adopt of task {task_id} refused"
    verdict = None  # the worker's, as soon as the record has it
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            record = producer.status(job_id)
        except JobNotFoundError:
            break
        if record.state is not before.state or record.evolink_task_id == task_id:
            break
        if record.updated_at > before.updated_at and (record.waiting_reason or "").startswith(
            refused
        ):
            verdict = record.waiting_reason
            break
        time.sleep(0.2)
    if as_json:
        print_json(record.public_view())
        if verdict:
            raise typer.Exit(1)
        return
    if verdict:
        err_console.print(line(f"{job_id} still {record.state.value}: {verdict}"), soft_wrap=True)
        raise typer.Exit(1)
    if record.evolink_task_id == task_id and record.state is not JobState.FAILED:
        typer.echo(visible(f"{job_id} {record.state.value}: task {task_id} adopted"))
    elif wait_s > 0:
        err_console.print(
            line(
                shown(f"{job_id} still {record.state.value}", "yellow"),
                ": the task was not adopted yet (unknown to the API, or no worker on the poll "
                f"queue); see the worker log and `nbq status {job_id}`",
            )
        )
        raise typer.Exit(1)
    else:
        typer.echo(visible(f"{job_id}: adoption of {task_id} requested"))
