"""Credit budgets that hold: each job *holds* its price before it may cost anything.

One UTC day's book in Redis (``credits.lua``, one atomic script per call):

* **hold** — at enqueue (the producer API, the ingress, a raw ``nbq.generate``'s intake)
  a job holds its estimated price, unless the day's ``paid + reserved + price`` would pass
  ``NBQ_CREDIT_LIMIT_DAILY`` or the producer's ``NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER``:
  then nothing is enqueued (``CreditBudgetExceededError``, HTTP 429). Submit holds again
  right before the create (idempotent per job): a job queued on an earlier day holds on
  today's book, a lowered limit refuses the job (it fails ``credit_budget_exceeded``).
* **settle** — a create answered with a charge (``usage.credits_reserved``): the hold is
  released and the charge added to ``paid``.
* **ended** — a job ended ``failed`` or ``cancelled``: its hold is released, and the part
  of its ``credits_paid`` not yet counted today goes to the book's ``failed`` /
  ``cancelled`` (a job that ends twice in a day is counted once).

So ``paid + reserved`` never passes a limit, whatever the concurrency or backlog: paid
stays within the limit by at most nothing (a charge larger than the estimate aside).
Amounts are integer micro-credits (exact sums). Every key is the day's, one hash tag per
day on a Redis Cluster (one slot per call). Without a budget, jobs hold nothing and the
book still counts paid, failed, cancelled and creates of unknown outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import redis

from nanobanana_queue.workers.redis_client import tagged

#: Estimated credits per create by quality (the price a job holds); the real figure
#: recorded on each job is the API's own ``usage.credits_reserved`` (its charge).
ESTIMATED_CREDITS = {"1K": 1.6, "2K": 2.5, "4K": 5.0}

#: Day keys outlive the 7-day spend report by a day.
DAY_TTL_S = 8 * 24 * 3600

#: A job's error code when a daily budget refuses it after enqueue (raw message, submit).
BUDGET_EXCEEDED = "credit_budget_exceeded"

#: Micro-credits per credit: the book's integer unit.
MICRO = 1_000_000

CREDITS_LUA = (
    files("nanobanana_queue.workers.resilience").joinpath("credits.lua").read_text(encoding="utf-8")
)


def day_of(now: float | None = None) -> str:
    """The UTC day (``YYYY-MM-DD``) a book belongs to."""
    return datetime.fromtimestamp(now or time.time(), tz=UTC).strftime("%Y-%m-%d")


def price_of(request: dict[str, Any]) -> float:
    """What a job holds: the estimate for its quality (the dearest when unknown)."""
    quality = str(request.get("quality") or "2K")
    return ESTIMATED_CREDITS.get(quality, max(ESTIMATED_CREDITS.values()))


def to_micro(credits: float) -> int:
    return round(credits * MICRO)


def to_credits(micro: int | float) -> float:
    return round(micro / MICRO, 6)


@dataclass(frozen=True)
class Hold:
    """A hold's outcome: held (``amount`` credits, on ``day``), or refused by ``budget``."""

    held: bool
    day: str
    amount: float = 0.0
    budget: str | None = None  # "total" (NBQ_CREDIT_LIMIT_DAILY) or "producer"
    paid: float = 0.0  # the refusing budget's paid and reserved today
    reserved: float = 0.0

    def record_fields(self) -> dict[str, Any]:
        """The job record's fields for this hold (none when refused)."""
        if not self.held:
            return {}
        return {"credits_reserved": self.amount, "credits_held_on": self.day}


def refusal(hold: Hold, ledger: CreditLedger, *, price: float, producer: str | None) -> str:
    """Why a job may not hold its price: names the budget, its setting and the figures."""
    figures = (
        f"paid today {hold.paid:g}, held by jobs not yet created {hold.reserved:g}, "
        f"this job {price:g} credits"
    )
    if hold.budget == "producer":
        return (
            f"producer {producer!r} would exceed its daily credit budget "
            f"NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER={ledger.limit_daily_per_producer:g} "
            f"({figures})"
        )
    return (
        f"daily credit budget NBQ_CREDIT_LIMIT_DAILY={ledger.limit_daily:g} would be "
        f"exceeded ({figures})"
    )


@dataclass(frozen=True)
class DayFigures:
    """One day's book: what was charged, what queued jobs hold, what ended badly."""

    paid: float
    reserved: float
    failed: float = 0.0
    cancelled: float = 0.0
    unknown_creates: int = 0


class CreditLedger:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        limit_daily: float = 0.0,
        limit_daily_per_producer: float = 0.0,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.limit_daily = limit_daily
        self.limit_daily_per_producer = limit_daily_per_producer
        self._script = client.register_script(CREDITS_LUA)

    @property
    def budgeted(self) -> bool:
        """Whether any daily budget is set (only then do jobs hold their price)."""
        return bool(self.limit_daily or self.limit_daily_per_producer)

    def _keys(self, day: str, producer: str | None) -> list[str]:
        tag = tagged(day, self.redis)
        legacy = f"{self.prefix}:credits:{tag}"
        return [
            f"{self.prefix}:credit-book:{tag}",
            f"{self.prefix}:credit-holds:{tag}",
            legacy,
            f"{legacy}:{producer}" if producer else legacy,
            f"{self.prefix}:credit-ended:{tag}",
        ]

    def _args(
        self, op: str, day: str, job_id: str, *, producer: str | None, micro: int, word: str
    ) -> tuple[list[str], list[Any]]:
        """``credits.lua``'s KEYS and ARGV for one call (``_run``, ``settle_after``)."""
        own_limit = self.limit_daily_per_producer if producer else 0.0
        return self._keys(day, producer), [
            op,
            job_id,
            producer or "",
            micro,
            to_micro(self.limit_daily),
            to_micro(own_limit),
            DAY_TTL_S,
            word,
            repr(time.time()),
        ]

    def _run(
        self,
        op: str,
        day: str,
        job_id: str,
        *,
        producer: str | None,
        micro: int = 0,
        word: str = "",
    ) -> list[Any]:
        """One ``credits.lua`` call; ``word`` is its ARGV[8] (ended: the end state;
        settle: 'unheld')."""
        keys, args = self._args(op, day, job_id, producer=producer, micro=micro, word=word)
        reply = self._script(keys=keys, args=args)
        return [v.decode() if isinstance(v, bytes) else v for v in reply]

    # -- a job's book-keeping ------------------------------------------------------------
    def hold(self, job_id: str, price: float, *, producer: str | None) -> Hold:
        """Hold ``price`` for ``job_id`` on today's book, or refuse (nothing held)."""
        day = day_of()
        reply = self._run("hold", day, job_id, producer=producer, micro=to_micro(price))
        if reply[0] == 1:
            return Hold(held=True, day=day, amount=to_credits(int(reply[1])))
        return Hold(
            held=False,
            day=day,
            budget=str(reply[1]),
            paid=to_credits(int(reply[2])),
            reserved=to_credits(int(reply[3])),
        )

    def _settle_words(self, charge: float, held_on: str | None) -> dict[str, Any]:
        """The settle's amount and its ``unheld`` word (no hold to look up: no budget and
        no day the record says it held on)."""
        unheld = not held_on and not self.budgeted
        return {"micro": to_micro(charge), "word": "unheld" if unheld else ""}

    def settle(
        self, job_id: str, charge: float, *, producer: str | None, held_on: str | None
    ) -> None:
        """A create answered with ``charge``: paid today; the job's hold released.

        Without a budget a job holds nothing unless its record says on which day it held
        (``held_on``, written with the hold): then the holds are not even looked up."""
        today = day_of()
        self._run("settle", today, job_id, producer=producer, **self._settle_words(charge, held_on))
        if held_on and held_on != today:
            self._run("release", held_on, job_id, producer=producer)

    def settle_after(
        self,
        before: list[Any],
        job_id: str,
        charge: float,
        *,
        producer: str | None,
        held_on: str | None,
    ) -> Any:
        """``settle`` sent in one round trip right after the command ``before`` (a
        pipeline, not a transaction: ``before`` runs first, whatever its reply; the
        settle runs whatever ``before`` answered, as when they were sent one by one).
        Returns ``before``'s reply (an exception instance if it failed alone: the
        settle has run; the caller judges).

        EVALSHA, not the registered script: redis-py would add a ``SCRIPT EXISTS`` round
        trip for a script in a pipeline. A server without the script (restarted, flushed)
        answers NOSCRIPT without running anything: then the settle is sent alone."""
        today = day_of()
        keys, args = self._args(
            "settle", today, job_id, producer=producer, **self._settle_words(charge, held_on)
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command(*before)  # type: ignore[no-untyped-call]
        pipe.execute_command(  # type: ignore[no-untyped-call]
            "EVALSHA", self._script.sha, len(keys), *keys, *args
        )
        first, settled = pipe.execute(raise_on_error=False)
        if isinstance(settled, redis.exceptions.NoScriptError):
            self._script(keys=keys, args=args)  # (loads the script; nothing ran before)
        elif isinstance(settled, Exception):
            raise settled
        if held_on and held_on != today:
            self._run("release", held_on, job_id, producer=producer)
        return first

    def release(self, job_id: str, *, producer: str | None, held_on: str | None) -> None:
        """The job's hold (on ``held_on``'s book) is no longer needed."""
        if held_on:
            self._run("release", held_on, job_id, producer=producer)

    def ended(
        self,
        job_id: str,
        state: str,
        *,
        paid: float,
        producer: str | None,
        held_on: str | None,
    ) -> None:
        """The job ended ``failed`` / ``cancelled`` having paid ``paid`` in all."""
        today = day_of()
        self._run("ended", today, job_id, producer=producer, micro=to_micro(paid), word=state)
        if held_on and held_on != today:
            self._run("release", held_on, job_id, producer=producer)

    def record_unknown(self) -> None:
        """A create whose outcome is unknown: it may have been charged (amount unknown)."""
        key = self._keys(day_of(), None)[0]
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "unknown_creates", 1)
        pipe.expire(key, DAY_TTL_S)
        pipe.execute()

    # -- reading -----------------------------------------------------------------------
    def today(self, *, producer: str | None = None) -> DayFigures:
        """Today's book (one producer's paid and reserved with ``producer``)."""
        keys = self._keys(day_of(), producer)
        suffix = f"|{producer}" if producer else ""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(
            keys[0], f"paid{suffix}", f"reserved{suffix}", "failed", "cancelled", "unknown_creates"
        )
        pipe.get(keys[3])
        (paid, reserved, failed, cancelled, unknown), legacy = pipe.execute()
        old = to_micro(float(legacy)) if legacy else 0
        return DayFigures(
            paid=to_credits(int(paid or 0) + old),
            reserved=to_credits(int(reserved or 0)),
            failed=to_credits(int(failed or 0)),
            cancelled=to_credits(int(cancelled or 0)),
            unknown_creates=int(unknown or 0),
        )

    def producers_today(self) -> dict[str, DayFigures]:
        """Every producer's paid and reserved today (from the book's per-producer fields)."""
        raw = self.redis.hgetall(self._keys(day_of(), None)[0])
        out: dict[str, dict[str, int]] = {}
        for name, value in raw.items():
            field = name.decode() if isinstance(name, bytes) else str(name)
            kind, _, producer = field.partition("|")
            if producer and kind in ("paid", "reserved"):
                out.setdefault(producer, {"paid": 0, "reserved": 0})[kind] = int(value)
        return {
            p: DayFigures(paid=to_credits(v["paid"]), reserved=to_credits(v["reserved"]))
            for p, v in sorted(out.items())
        }

    def spent_today(self, *, producer: str | None = None) -> float:
        """Credits charged today (paid; holds not included)."""
        return self.today(producer=producer).paid

    def old_holds(
        self, *, older_than_s: float, cursor: int = 0, count: int = 200
    ) -> tuple[int, list[tuple[str, str | None]]]:
        """One ``HSCAN`` step over today's holds: ``(next cursor, [(job_id, producer)])``
        of those held longer than ``older_than_s`` ago (next cursor 0: the scan is done)."""
        key = self._keys(day_of(), None)[1]
        cursor, page = self.redis.hscan(key, cursor, count=count)
        assert isinstance(page, dict)  # (no_values=False)
        cutoff = time.time() - older_than_s
        old = []
        for job, value in page.items():
            name = job.decode() if isinstance(job, bytes) else str(job)
            text = value.decode() if isinstance(value, bytes) else str(value)
            _, producer, held_at = [*text.split("|", 2), "", ""][:3]
            if held_at and float(held_at) < cutoff:
                old.append((name, producer or None))
        return int(cursor), old

    def holds_today(self) -> dict[str, float]:
        """``job_id -> credits`` every job holding on today's book (tests, inspection)."""
        raw = self.redis.hgetall(self._keys(day_of(), None)[1])
        out = {}
        for job, value in raw.items():
            name = job.decode() if isinstance(job, bytes) else str(job)
            text = value.decode() if isinstance(value, bytes) else str(value)
            out[name] = to_credits(int(text.split("|", 1)[0]))
        return out
