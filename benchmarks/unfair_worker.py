"""``nbq worker`` without the fair pick: "before" figures for benchmarks/fair_share.py.

Only for measuring; the fair pick always runs in a real worker. Patched, every submit
message creates its own job as soon as the rate limiter allows: the plain FIFO order of
the queue, as before issue 28.
"""

from __future__ import annotations


def apply() -> None:
    """Every message creates its own job as soon as the rate limiter allows (FIFO)."""
    import nanobanana_queue.workers.stages.submit as submit
    from nanobanana_queue.workers.resilience.fairshare import Take

    setattr(submit, "_take", lambda _rt, record, **_: Take("direct", record.job_id))  # noqa: B010


if __name__ == "__main__":
    apply()
    from nanobanana_queue.producers.cli.main import app

    app()
