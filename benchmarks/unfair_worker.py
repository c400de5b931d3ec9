"""``nbq worker`` without the fair-share gate: "before" figures for benchmarks/fair_share.py.

Only for measuring; the gate always runs in a real worker.
"""

from __future__ import annotations


def apply() -> None:
    """Every job may create as soon as the rate limiter allows (today's FIFO behaviour)."""
    import nanobanana_queue.workers.stages.submit as submit

    setattr(submit, "fair_gate", lambda _rt, _record: None)  # noqa: B010 - a patch


if __name__ == "__main__":
    apply()
    from nanobanana_queue.producers.cli.main import app

    app()
