"""Producers: the Python API, CLI and HTTP ingress that enqueue generation jobs."""
