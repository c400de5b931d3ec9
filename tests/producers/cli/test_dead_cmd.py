"""``nbq dead``: a purge asks first and says what it did; a wrong reason names the valid ones."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.deadletters import DeadLetterStore, build_letter
from tests.producers.cli.conftest import Nbq, settings_for


@pytest.fixture
def letters(redis_env: dict[str, str]) -> DeadLetterStore:
    store = DeadLetterStore.from_settings(settings_for(redis_env))
    store.add(
        build_letter(queue="submit", reason="unknown_task", detail="x", hostname="h",
                     headers={"task": "evil"}, body="[]", content_type="application/json",
                     content_encoding="utf-8")
    )  # fmt: skip
    return store


def test_purge_without_yes_off_a_terminal_deletes_nothing_and_says_how_to_confirm(
    nbq: Nbq, letters: DeadLetterStore
) -> None:
    done = nbq("dead", "purge")
    assert done.code == 2 and "would delete 1 dead letter(s); pass --yes" in done.stderr
    assert letters.count() == 1


def test_purge_on_a_terminal_asks_first(
    nbq: Nbq, letters: DeadLetterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanobanana_queue.workers.cli import common

    monkeypatch.setattr(type(common.console), "is_terminal", property(lambda self: True))
    refused = nbq("dead", "purge", input="n\n")
    assert refused.code == 1 and "Delete 1 dead letter(s)?" in refused.stdout
    assert letters.count() == 1
    confirmed = nbq("dead", "purge", input="y\n")
    assert confirmed.code == 0 and "purged 1 dead letter(s)" in confirmed.stdout


def test_purge_with_yes_prints_a_sentence_and_json_only_with_json(
    nbq: Nbq, letters: DeadLetterStore
) -> None:
    done = nbq("dead", "purge", "--yes")
    assert done.code == 0 and done.stdout.strip() == "purged 1 dead letter(s)"
    assert nbq("dead", "purge", "--yes", "--json").json() == {"purged": 0}


def test_list_with_an_unknown_reason_names_the_valid_reasons(nbq: Nbq) -> None:
    done = nbq("dead", "list", "--reason", "bogus")
    assert done.code == 2
    assert "'bogus' is not a dead-letter reason" in done.stderr
    assert "unknown_task" in done.stderr and "unknown_job" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
