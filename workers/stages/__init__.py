"""Domain logic of each pipeline stage, free of Celery: load the job, act, record, and
return the next step (``steps.py``) instead of sending it.

Celery tasks in ``workers.tasks`` are thin wrappers that execute the returned step (the
dispatcher, ``workers.dispatch``, builds every message); tests call these functions
directly and assert on the step.
"""
