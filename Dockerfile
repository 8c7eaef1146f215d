# syntax=docker/dockerfile:1
#
# triggerd image: one daemon, any subset of roles (see docker-compose.yml).
#   docker build -t triggerd .
#   docker run --rm triggerd migrate          # once per release, before run
#   docker run -p 8080:8080 triggerd run --roles api
#
# Both stages use the same base so the virtualenv built in the first one runs
# unchanged in the second (same interpreter at the same path).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies come from setup.cfg; what is copied is filtered by .dockerignore.
COPY . .
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/triggerd-*.whl \
 && /opt/venv/bin/triggerd version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="triggerd" \
      org.opencontainers.image.description="Event trigger platform: scheduled and webhook triggers, Kafka jobs, HTTP delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIGGERD_SQL_DIR=/app/sql \
    TRIGGERD_HTTP_PORT=8080
RUN groupadd --system --gid 10001 triggerd \
 && useradd --system --uid 10001 --gid triggerd --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin triggerd
COPY --from=builder /opt/venv /opt/venv
# Migrations, read-only for the runtime user (owned by root).
COPY sql/ /app/sql/
WORKDIR /app
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# Stdlib only (the slim image has no curl): 200 = healthy; a 503 or no answer fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TRIGGERD_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["triggerd"]
CMD ["run"]
