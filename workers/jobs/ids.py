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
            f"job_id {job_id!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit, without '..'"
        )
    return job_id
