# syntax=docker/dockerfile:1
# One image for every batchscope role (migrate, topics, poll, worker, simulate, run, query, status):
# the compose file picks the role with the command. Multi-stage: wheels are built in the first
# stage (with a compiler for any dependency that ships no wheel), only the wheels reach the second.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchscope ./batchscope
COPY agents ./agents
COPY pipeline ./pipeline
COPY simulator ./simulator
COPY sql ./sql
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BATCHSCOPE_PIPELINE_DATA_DIR=/var/lib/batchscope
RUN groupadd --system --gid 10001 batchscope \
 && useradd --system --uid 10001 --gid batchscope --home-dir /var/lib/batchscope --create-home \
        --shell /usr/sbin/nologin batchscope
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels batchscope \
 && rm -rf /wheels
USER batchscope
WORKDIR /var/lib/batchscope
VOLUME ["/var/lib/batchscope"]
# The poller and the workers serve /metrics on pipeline.metrics_port; `batchscope health` GETs it
# (no curl in a slim image). Services without that endpoint override the healthcheck in compose.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["batchscope", "health"]
ENTRYPOINT ["batchscope"]
CMD ["--help"]
