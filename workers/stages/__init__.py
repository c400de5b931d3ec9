"""Domain logic of each pipeline stage, free of Celery: load the job, act, record, schedule.

Celery tasks in ``workers.tasks`` are thin wrappers; tests call these functions directly
with a recording scheduler.
"""
