"""Celery workers for nanobanana-queue: submit, poll and download stages."""
