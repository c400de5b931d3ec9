"""Job ids: generated or caller-chosen, always safe as an S3 key segment."""

from __future__ import annotations

import re
import uuid

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class InvalidJobIdError(ValueError):
    """A caller-chosen job id that cannot be used (it would escape its key prefix)."""


def new_job_id() -> str:
    return uuid.uuid4().hex


def validate_job_id(job_id: str) -> str:
    """Refuse ids with slashes, ``..``, spaces or over 128 characters."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id) or ".." in job_id:
        raise InvalidJobIdError(
            f"job_id {str(job_id)[:140]!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit, without '..'"
        )
    return job_id


#: Separates a producer's namespace from the id it chose: ``alice~order-1``. Never allowed
#: in a caller-chosen id, so no caller can name (or squat) an id in another's namespace.
SCOPE_SEPARATOR = "~"
PRODUCER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def validate_producer(producer: str) -> str:
    """Producer names become id namespaces: 1-64 characters of A-Z a-z 0-9 _ . -."""
    if (
        not isinstance(producer, str)
        or not PRODUCER_PATTERN.fullmatch(producer)
        or ".." in producer
    ):
        raise InvalidJobIdError(
            f"producer {str(producer)[:80]!r} is invalid: use 1-64 characters from "
            "A-Z a-z 0-9 _ . - starting with a letter or digit, without '..'"
        )
    return producer


def scoped_job_id(producer: str | None, job_id: str) -> str:
    """The stored id of ``job_id`` chosen by ``producer``: its own namespace.

    Job ids are scoped per producer: ``alice``'s ``order-1`` is stored as
    ``alice~order-1``, ``bob``'s as ``bob~order-1``, so one producer can never receive
    (or block) another's job, and nothing about another producer's ids can be learnt.
    Without a producer the id is stored as given (the unnamed namespace). Idempotent: an
    id already in ``producer``'s namespace is returned unchanged; one in another's is
    refused like any invalid id.
    """
    if isinstance(job_id, str) and SCOPE_SEPARATOR in job_id:
        namespace, _, rest = job_id.partition(SCOPE_SEPARATOR)
        if producer is None or namespace != producer:
            raise InvalidJobIdError(
                f"job_id {job_id[:140]!r} is invalid: '{SCOPE_SEPARATOR}' is not allowed"
            )
        validate_job_id(rest)
        return job_id
    validate_job_id(job_id)
    if producer is None:
        return job_id
    return f"{validate_producer(producer)}{SCOPE_SEPARATOR}{job_id}"


def caller_job_id(job_id: str) -> str:
    """The id as its producer chose it (the stored id without its namespace)."""
    return job_id.rpartition(SCOPE_SEPARATOR)[2]


def is_stored_job_id(job_id: object) -> bool:
    """A well-formed stored id: ``<id>`` or ``<producer>~<id>``."""
    if not isinstance(job_id, str):
        return False
    namespace, sep, _ = job_id.partition(SCOPE_SEPARATOR)
    try:
        scoped_job_id(namespace if sep else None, job_id)
    except InvalidJobIdError:
        return False
    return True
