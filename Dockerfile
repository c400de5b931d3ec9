# nanobanana-queue: one image for every role (worker, flower, metrics, reconciler, ingress,
# emulator); the role is the `nbq` sub-command given as the container command.
#
#   docker build -t nanobanana-queue .
#   docker run --rm --read-only --tmpfs /tmp nanobanana-queue worker --queues submit
#
# Dependencies come from requirements.lock, the lock CI tests (hash-pinned; regenerate it
# with `python ops/scripts/lock_requirements.py` after changing pyproject.toml): the build
# stage installs the part of it the image's roles need, hashes checked.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the locked dependencies, then the package -----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml ./
COPY ops/scripts/lock_requirements.py ops/scripts/lock_requirements.py
RUN python ops/scripts/lock_requirements.py --image > /tmp/image.lock \
 && python -m venv /opt/nbq \
 && /opt/nbq/bin/pip install --require-hashes --requirement /tmp/image.lock
COPY README.md* ./
COPY workers workers
COPY producers producers
COPY emulator emulator
COPY devstack devstack
# The one import name the package installs: links to the four directories above.
COPY nanobanana_queue nanobanana_queue
RUN /opt/nbq/bin/pip install --no-deps ".[worker,ingress,emulator,otel]" \
 && /opt/nbq/bin/pip check

# --- runtime: the venv only, as a non-root user --------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="nanobanana-queue" \
      org.opencontainers.image.description="Celery job system for the Evolink Nano Banana 2 Beta API"
# Read-only root friendly: no .pyc writes, HOME and temp files under /tmp (a tmpfs).
ENV PATH=/opt/nbq/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    NBQ_LOG_JSON=true
RUN groupadd --system --gid 10001 nbq \
 && useradd --system --uid 10001 --gid nbq --home-dir /tmp --shell /usr/sbin/nologin nbq \
 && mkdir -p /data && chown nbq:nbq /data
COPY --from=build /opt/nbq /opt/nbq
USER 10001:10001
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 5555 8080 8787 9808
# Each role has its own health check in docker-compose.yml; the image-wide one only
# proves the package imports with the given configuration.
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import nanobanana_queue.workers.settings as s; s.get_settings()"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["nbq"]
CMD ["--help"]
