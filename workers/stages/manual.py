"""What a person decides: re-send a failed job's create, or attach a task they found.

Both are guarded, logged transitions on the job record (the only ways out of ``failed``).
Inside the code a person's re-send is a *resubmit*; its public names (``nbq retry``,
``Producer.retry``, the ``manual_retry`` transition) stay as promised. "Retry" alone means
a task running itself again (a ``Retry`` step, ``workers/errors.py``'s retry rules).

* :func:`resubmit_job` — ``failed`` / ``outcome_unknown`` → ``queued``. A job whose last
  create's outcome is unknown may already have a paid task; re-sending may pay twice,
  so it needs ``accept_may_pay_twice`` (``nbq retry --yes``). Its create keeps the same
  round (``Idempotency-Key``), so a server that does honour the key returns the first
  task; any other failed job gets a fresh round. A job that failed for a reason the API
  calls permanent (``retryable: false``, e.g. ``content_policy_violation``) would most
  likely be refused again after a new paid create: it needs the same consent.
* :func:`check_adoptable` — the checks before ``nbq adopt`` sends ``nbq.adopt``; the
  worker re-fetches the task and moves the job (:mod:`workers.stages.adopt`).
"""

from __future__ import annotations

import re

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    JobActionRefusedError,
    JobNotFoundError,
    MayPayTwiceError,
)
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.stages.adopt import ADOPTABLE_FROM

log = get_logger("nbq.manual")

RESUBMITTABLE_FROM = lifecycle.MANUAL_RETRY.sources
#: What a task id may look like (the vendor's are ``task-unified-<unix>-<8 alnum>``).
TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def may_have_paid_task(record: JobRecord) -> bool:
    """The job's last create may have made (and charged) a task nobody recorded."""
    if record.state is JobState.OUTCOME_UNKNOWN:
        return True
    return record.error is not None and record.error.code == "outcome_unknown"


def permanent_failure(record: JobRecord) -> bool:
    """The job failed for a reason the same request meets again (``retryable: false``):
    a new create is paid and most likely fails the same way."""
    return (
        record.state is JobState.FAILED
        and record.error is not None
        and not record.error.retryable
        and record.error.code != "outcome_unknown"
    )


def resubmit_job(
    store: JobStore, job_id: str, *, accept_may_pay_twice: bool = False, by: str = "cli"
) -> JobRecord:
    """Move a failed (or unknown-outcome) job back to ``queued`` for a new create."""
    record = store.get(job_id)
    if record is None:
        raise JobNotFoundError(job_id)
    if record.state not in RESUBMITTABLE_FROM:
        raise JobActionRefusedError(
            f"job {job_id} is {record.state.value}; only failed or outcome_unknown jobs can "
            "be retried"
        )
    unknown = may_have_paid_task(record)
    if unknown and not accept_may_pay_twice:
        raise MayPayTwiceError(
            f"job {job_id}'s last create may already have made and charged a task (its "
            "answer was lost); a new create may pay twice. Look for the task in the Evolink "
            f"dashboard first (`nbq adopt {job_id} TASK_ID`), or confirm with --yes"
        )
    permanent = permanent_failure(record)
    if permanent and not accept_may_pay_twice:
        assert record.error is not None
        raise MayPayTwiceError(
            f"job {job_id} failed with {record.error.code!r}, which the API calls permanent "
            "(retryable: false): a new create is paid again and the same request will most "
            "likely be refused again. Change the request and enqueue a new job, or confirm "
            "with --yes"
        )
    previous = list(record.previous_task_ids)
    if record.evolink_task_id:
        previous.append(record.evolink_task_id)
    moved, applied = store.apply(
        lifecycle.MANUAL_RETRY.only_from(record.state),  # the state the checks above saw
        job_id,
        previous_task_ids=previous,
        # Unknown: the same round and key (a server honouring it returns the first task).
        create_seq=record.create_seq if unknown else record.create_seq + 1,
        waiting_reason=f"retry requested by a person ({by})",
    )
    if not applied or moved is None:
        raise JobActionRefusedError(f"job {job_id} changed while retrying; look again (nbq status)")
    log.warning(
        "job_retry_requested",
        job_id=job_id,
        from_state=record.state.value,
        previous_error=record.error.code if record.error else None,
        may_pay_twice=unknown,
        permanent_failure=permanent,
        by=by,
    )
    return moved


def check_adoptable(
    store: JobStore, job_id: str, task_id: str, *, accept_may_pay_twice: bool = False
) -> JobRecord:
    """The job exists and may take a task from a person; the id looks like one; the task is
    not another job's (the worker checks again, with the task's creation time)."""
    if not TASK_ID_PATTERN.match(task_id):
        raise JobActionRefusedError(f"{task_id!r} does not look like an Evolink task id")
    record = store.get(job_id)
    if record is None:
        raise JobNotFoundError(job_id)
    if record.state not in ADOPTABLE_FROM["person"]:
        raise JobActionRefusedError(
            f"job {job_id} is {record.state.value}; a task can be attached only to a failed "
            "or outcome_unknown job"
        )
    owner = owners_of(store).owner(task_id)
    if owner is not None and owner != job_id:
        metrics.ownership_refused("person", "foreign_task")
        log.warning(
            "adoption_refused", job_id=job_id, evolink_task_id=task_id, reason="foreign_task"
        )
        raise JobActionRefusedError(
            f"task {task_id} belongs to another job (its create made it); a task can be "
            f"attached only to the job whose create made it"
        )
    if accept_may_pay_twice:
        # The consent lives on the record (only who can write the store can give it), for
        # this task only: the worker re-creates the task if it had failed, retryable.
        consented, applied = store.apply(
            lifecycle.CONSENT_PAY_TWICE.only_from(record.state),
            job_id,
            adopt_consent_task_id=task_id,
        )
        if not applied or consented is None:
            raise JobActionRefusedError(f"job {job_id} changed while adopting; look again")
        record = consented
    log.warning(
        "job_adopt_requested",
        job_id=job_id,
        evolink_task_id=task_id,
        may_pay_twice=accept_may_pay_twice,
    )
    return record
