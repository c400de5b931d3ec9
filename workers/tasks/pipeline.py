"""The pipeline tasks: one Celery task per stage entry of ``workers/pipeline.py``.

Each is the same thin wrapper (``StageTask.run_stage``): it calls the entry's stage
function with the message's keyword arguments and executes the step it returns. Name,
ack mode and signature (the declared arguments in order, with the stage function's
defaults) come from the declaration, so adding a stage adds no code here. Nothing secret
ever travels in a message (docs/message-contract.md).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from nanobanana_queue.workers.app import app
from nanobanana_queue.workers.contract import (
    TASK_ADOPT,
    TASK_DOWNLOAD,
    TASK_GENERATE,
    TASK_POLL,
    TASK_SUBMIT,
)
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.pipeline import BY_STEP, PIPELINE, Stage
from nanobanana_queue.workers.runtime import get_runtime
from nanobanana_queue.workers.stages.steps import Done, Fail, Retry, Step
from nanobanana_queue.workers.tasks.base import StageTask

log = get_logger("nbq.tasks")

#: What the wrapper passes itself: the runtime first, the task's retry count by name.
NOT_FROM_THE_MESSAGE = ("rt", "retries")


def stage_function(stage: Stage) -> Callable[..., Any]:
    """The entry's ``module:function``."""
    assert stage.stage is not None
    module, _, name = stage.stage.partition(":")
    func: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return func


def task_signature(stage: Stage, func: Callable[..., Any]) -> inspect.Signature:
    """``(self, <declared params>)`` with the stage function's defaults. Refuses a
    declaration its stage function does not take, or a stage parameter no message fills
    that has no default."""
    own = inspect.signature(func).parameters
    missing = [name for name in stage.param_names if name not in own]
    unfilled = [
        name
        for name, p in own.items()
        if name not in (*stage.param_names, *NOT_FROM_THE_MESSAGE)
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if missing or unfilled or "retries" not in own:
        raise TypeError(
            f"{stage.stage} does not fit {stage.task}'s declaration: "
            f"missing {missing}, unfilled {unfilled} (and it takes retries=)"
        )
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    params += [inspect.Parameter(n, kind, default=own[n].default) for n in stage.param_names]
    return inspect.Signature(params)


def undeclared_next(stage: Stage, step: Step) -> str | None:
    """The task ``step`` would send that ``stage`` does not declare as its next (None if
    declared, or not a message: a Retry is the running task's own message again)."""
    if isinstance(step, Done | Fail | Retry):
        return None
    task = BY_STEP[type(step).__name__].task
    return None if task in stage.next else task


def _register(stage: Stage) -> Any:
    func = stage_function(stage)
    names = stage.param_names

    def declared(*args: Any, **kwargs: Any) -> Step:
        step: Step = func(*args, **kwargs)
        task = undeclared_next(stage, step)
        if task is not None:  # sent all the same: a message is never dropped for this
            log.error("undeclared_next_step", task=stage.task, next=task, see="workers/pipeline.py")
        return step

    def run(self: StageTask, *args: Any, **kwargs: Any) -> str:
        kwargs.update(zip(names, args, strict=False))  # the guard refused any name twice
        return self.run_stage(declared, get_runtime(), **kwargs)

    short = stage.task.removeprefix("nbq.")
    run.__name__ = run.__qualname__ = f"{short}_task"
    run.__doc__ = stage.does
    run.__signature__ = task_signature(stage, func)  # type: ignore[attr-defined]
    return app.task(name=stage.task, base=StageTask, bind=True, **stage.ack_options)(run)


#: Every stage task, by name.
TASKS: dict[str, Any] = {stage.task: _register(stage) for stage in PIPELINE if stage.stage}

generate_task = TASKS[TASK_GENERATE]
submit_task = TASKS[TASK_SUBMIT]
poll_task = TASKS[TASK_POLL]
download_task = TASKS[TASK_DOWNLOAD]
adopt_task = TASKS[TASK_ADOPT]
