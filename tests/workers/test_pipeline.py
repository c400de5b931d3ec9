"""The pipeline's declaration (workers/pipeline.py) is the one place a job's path is told:
every task, queue, argument list, ack mode, time limit and next hop elsewhere is read
from it, and stages never run each other."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import pytest

import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks on the app
from nanobanana_queue.workers import contract
from nanobanana_queue.workers.app import app, celery_config
from nanobanana_queue.workers.dispatch import envelope
from nanobanana_queue.workers.errors import RETRY_RULES
from nanobanana_queue.workers.guard.inspect import CHECKS, TASK_PARAMS
from nanobanana_queue.workers.pipeline import (
    BY_STEP,
    BY_TASK,
    PIPELINE,
    SUBMIT_LIMITS,
    Stage,
    markdown,
)
from nanobanana_queue.workers.settings import Settings, load_settings
from nanobanana_queue.workers.stages import steps
from nanobanana_queue.workers.stages.steps import Done, Download, Poll, Submit
from nanobanana_queue.workers.tasks.pipeline import TASKS, stage_function, undeclared_next

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {stage.task for stage in PIPELINE}


def test_every_registered_nbq_task_is_declared_and_every_declared_task_is_registered() -> None:
    registered = {name for name in app.tasks if name.startswith("nbq.")}
    assert registered == DECLARED


def test_the_contract_routing_and_the_guard_are_the_declarations() -> None:
    assert {s.task: s.queue for s in PIPELINE} == contract.TASK_QUEUES
    assert set(contract.DECLARED_QUEUES) == {s.queue for s in PIPELINE}
    routes = celery_config(Settings())["task_routes"]
    assert routes == {s.task: {"queue": s.queue} for s in PIPELINE}
    assert {task: params for task, (params, _) in TASK_PARAMS.items()} == {
        s.task: s.param_names for s in PIPELINE
    }
    assert all(TASK_PARAMS[s.task][1] is CHECKS[s.check] for s in PIPELINE)


def test_the_names_other_services_use_are_unchanged() -> None:
    # Promises (docs/message-contract.md): the declaration keeps them as they are (a new
    # task may be added; none of these may move or go).
    assert (
        contract.TASK_QUEUES.items()
        >= {
            "nbq.generate": "submit",
            "nbq.submit": "submit",
            "nbq.poll": "poll",
            "nbq.download": "download",
            "nbq.reconcile": "poll",
            "nbq.adopt": "poll",
            "nbq.notify": "notify",
        }.items()
    )
    assert BY_TASK["nbq.generate"].param_names == (
        "request",
        "job_id",
        "producer",
        "batch_id",
        "notify_url",
        "on_done",
        "priority",
        "producer_proof",
    )


def test_each_task_has_its_declared_time_limits_the_submitting_ones_from_the_setting() -> None:
    settings = load_settings(submit_time_limit_s=36)
    annotations = celery_config(settings)["task_annotations"]
    assert set(annotations) == DECLARED
    for stage in PIPELINE:
        assert not isinstance(stage.limits, str) or stage.limits == SUBMIT_LIMITS
        soft, hard = (24.0, 36.0) if isinstance(stage.limits, str) else stage.limits
        assert annotations[stage.task] == {"soft_time_limit": soft, "time_limit": hard}


def test_each_stage_task_takes_the_declared_arguments_in_order_and_acks_as_declared() -> None:
    for stage in PIPELINE:
        task = app.tasks[stage.task]
        assert task.acks_late is (stage.acks == "late"), stage.task
        assert task.reject_on_worker_lost is (stage.acks == "late"), stage.task
        assert tuple(inspect.signature(task.run).parameters) == stage.param_names, stage.task
    assert set(TASKS) == {s.task for s in PIPELINE if s.stage}


def test_each_stage_function_takes_its_tasks_arguments_and_a_retry_count() -> None:
    for stage in PIPELINE:
        if stage.stage is None:
            continue
        own = inspect.signature(stage_function(stage)).parameters
        assert "retries" in own, stage.stage
        assert set(stage.param_names) <= set(own), stage.stage


def test_every_message_step_has_one_entry_whose_arguments_are_its_fields() -> None:
    message_steps = {cls.__name__ for cls in typing.get_args(steps.Message)}
    assert set(BY_STEP) == message_steps
    for name, stage in BY_STEP.items():
        fields = set(getattr(steps, name).__dataclass_fields__)
        assert set(stage.param_names) <= fields, name


def test_the_declared_retries_are_the_error_modules_retry_rules() -> None:
    declared = {rule for stage in PIPELINE for rule in stage.retries}
    table = {rule.name for rule in RETRY_RULES}
    assert declared <= table
    assert table - declared == {"store_wait"}  # every stage task's, in tasks/base.py


def test_a_step_outside_the_declared_next_hops_is_named() -> None:
    download = BY_TASK["nbq.download"]
    assert undeclared_next(download, Poll("j", "t")) is None
    assert undeclared_next(download, Submit("j")) == "nbq.submit"
    assert undeclared_next(download, Done("stored")) is None
    assert envelope(Download("j")).task in BY_TASK["nbq.poll"].next


def _imported_names(path: Path) -> set[tuple[str, str]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {(node.module, alias.name) for alias in node.names}
    return found


def test_stages_never_run_each_other_but_the_declared_composition() -> None:
    """No stage module imports another entry's stage function (nor poll's task handling),
    except what an entry declares in ``composes``."""
    entry_points = {tuple(s.stage.split(":")): s.task for s in PIPELINE if s.stage is not None} | {
        ("nanobanana_queue.workers.stages.poll", "handle_task_state"): "nbq.poll"
    }
    allowed = {
        (s.stage.split(":")[0], BY_TASK[composed].stage.split(":")[0])  # type: ignore[union-attr]
        for s in PIPELINE
        if s.stage is not None
        for composed in s.composes
    }
    crossing = []
    for path in sorted((ROOT / "workers" / "stages").glob("*.py")):
        module = f"nanobanana_queue.workers.stages.{path.stem}"
        for imported in _imported_names(path):
            if (
                imported in entry_points
                and imported[0] != module
                and (module, imported[0]) not in allowed
            ):
                crossing.append(f"{module} runs {'.'.join(imported)}")
    assert crossing == []
    assert allowed == {
        ("nanobanana_queue.workers.stages.intake", "nanobanana_queue.workers.stages.submit")
    }


def test_the_docs_pipeline_table_is_the_declaration() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- pipeline: generated from workers/pipeline.py -->\n(.*?)\n<!-- /pipeline -->",
        text,
        re.S,
    )
    assert found is not None, "docs/architecture.md lost its pipeline table"
    assert found.group(1).strip() == markdown(), (
        "docs/architecture.md's pipeline table differs from workers/pipeline.py; paste this:\n"
        + markdown()
    )


@pytest.mark.parametrize("stage", PIPELINE, ids=lambda s: s.task)
def test_the_message_contract_lists_each_task_on_its_queue(stage: Stage) -> None:
    text = (ROOT / "docs" / "message-contract.md").read_text(encoding="utf-8")
    assert f"| `{stage.task}` | `{stage.queue}` |" in text
