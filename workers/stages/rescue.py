"""Rescue: finish a paid job whose record vanished from the store.

Every message after the create carries the job id and the Evolink task id, so a poll or a
download (or a verified callback, through the poll it sends) that finds no record can
still deliver what was paid for:

1. one rescue per job: a minimal ``generating`` record (task id, a fresh poll token,
   ``recovered_at``, and its producer: the ``producer~id`` prefix of the job id names it,
   so its owner still finds it) is written with the store's create script, which refuses
   if any record exists — a second message for the same job finds it and stops. The task
   is claimed for the job first (``workers/jobs/owners.py``): a task owned by another job
   (a forged callback body, a raw message naming another's task) is refused, nothing
   recorded;
2. then it returns a ``Poll`` step carrying the record's fresh token: the ordinary poll
   stage, in its own message, re-fetches the task from the API (the only source of fresh
   result links), the download stores the images under the job's normal keys, and the
   manifest is marked ``recovered`` (request unknown, task id, time). The rescue never
   runs the poll itself: stages never run each other (workers/pipeline.py).

The rescue never calls create: a recovered record has no request, so a failed task ends
the job ``failed`` instead of being recreated. A job whose manifest is already in S3 (its
record expired after retention) is not re-downloaded.

A message without a task id for a vanished job (``nbq.submit``: the create had not
happened, nothing was paid; or a message from before this version) cannot be finished:
the job is *reported* lost — ERROR with its id, ``nbq_jobs_lost_total`` — and a failed
record (``record_lost``) is written so ``nbq status`` answers.
"""

from __future__ import annotations

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import PipelineError, RecordLostError
from nanobanana_queue.workers.jobs.ids import SCOPE_SEPARATOR
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import log, new_token, now
from nanobanana_queue.workers.stages.steps import Done, Poll, Step
from nanobanana_queue.workers.storage.manifest import manifest_key

#: Error code of a job whose record vanished before anything could finish it.
RECORD_LOST = RecordLostError.reason


def rescue(rt: Runtime, job_id: str, task_id: str, *, via: str) -> Step:
    """Re-record ``job_id`` from its task id; returns its poll (labelled ``rescued``)."""
    rt.epoch().check_now()  # a vanished record is the moment a reset shows: report it
    if _manifest_exists(rt, job_id):
        log.info("rescue_not_needed", job_id=job_id, evolink_task_id=task_id, via=via)
        return Done("gone_stored")
    owner = owners_of(rt.store).claim(task_id, job_id)
    if owner != job_id:
        metrics.ownership_refused(via, "foreign_task")
        log.error(
            "rescue_refused",
            job_id=job_id,
            evolink_task_id=task_id,
            via=via,
            reason="foreign_task",
            detail="the task belongs to another job; nothing recorded",
        )
        return Done("refused_foreign_task")
    token = new_token()
    at = now()
    minimal = JobRecord(
        job_id=job_id,
        producer=producer_of(job_id),
        state=JobState.GENERATING,
        evolink_task_id=task_id,
        poll_token=token,
        deadline_at=at + rt.settings.poll_deadline_s,
        next_poll_at=at,
        recovered_at=at,
    )
    _, created = rt.store.create(minimal)
    if not created:
        return Done("rescue_lost_race")  # another message rescued it (or the record is back)
    metrics.job_rescued(via)
    log.error(
        "job_rescued",
        job_id=job_id,
        evolink_task_id=task_id,
        via=via,
        detail="the job's record was missing from the store; re-recorded from the message "
        "(request unknown) and polled so the paid result is stored",
    )
    return Poll(job_id, token, evolink_task_id=task_id, label="rescued")


def producer_of(job_id: str) -> str | None:
    """The producer a stored id belongs to (``alice~order-1`` → ``alice``; else None)."""
    namespace, sep, _ = job_id.partition(SCOPE_SEPARATOR)
    return namespace if sep else None


def report_lost(
    rt: Runtime, job_id: str, *, stage: str, request: dict[str, object] | None = None
) -> Done:
    """Say loudly that ``job_id`` vanished and cannot be finished; record it as failed."""
    rt.epoch().check_now()
    if stage != "submit" and _manifest_exists(rt, job_id):
        return Done("gone_stored")  # the record expired after retention; the manifest holds it
    paid = "nothing was paid (no API task yet)" if stage == "submit" else "an old message"
    failed = JobRecord(
        job_id=job_id,
        producer=producer_of(job_id),
        state=JobState.FAILED,
        request=request or {},
        error=RecordLostError(
            f"the job store lost this job's record before it finished ({paid}); enqueue it again"
        ).job_error(),
    )
    _, created = rt.store.create(failed)
    if created:
        metrics.job_lost(stage)
        metrics.job_failed(RECORD_LOST)
        log.error("job_lost", job_id=job_id, stage=stage, detail=paid)
    return Done("lost")


def _manifest_exists(rt: Runtime, job_id: str) -> bool:
    try:
        return rt.objects().exists(manifest_key(rt.settings.s3_prefix, job_id))
    except PipelineError as exc:
        log.warning("rescue_manifest_unchecked", job_id=job_id, error=str(exc)[:200])
        return False
