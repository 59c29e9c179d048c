# deploybot's image: the same pattern as the service's (docker/Dockerfile): uv installs the
# locked dependencies in a builder stage, the runtime holds only the venv, as a non-root user.
#   docker build --platform linux/amd64 -f docker/bot.Dockerfile -t deploybot .
# linux/amd64 and RELEASE_VERSION / RELEASE_COMMIT as for the service's image (docker/Dockerfile).
# Offline (see .ci/steps/10-docker.sh): --network host
#   --build-arg BASE_IMAGE=deploybot-base:bookworm
#   --build-arg CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Builder and runtime share one base, so the venv's interpreter path is valid in both.
ARG BASE_IMAGE=python:3.13-slim

FROM ${BASE_IMAGE} AS builder
# uv's version, installed with pip; CA_BUNDLE: a CA file inside the base image that pip
# and uv should trust (empty: their defaults).
ARG UV_VERSION=0.13.9
ARG CA_BUNDLE=""
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN if [ -n "$CA_BUNDLE" ]; then export PIP_CERT="$CA_BUNDLE"; fi \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install "uv==${UV_VERSION}"
# Dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN if [ -n "$CA_BUNDLE" ]; then export SSL_CERT_FILE="$CA_BUNDLE"; fi \
    && /opt/uv/bin/uv sync --locked --no-dev --no-install-project --python python3
# Production code only: .dockerignore keeps bot/local (the playground, the emulators) out of
# the context, and --no-dev installs no dependency group, so no moto (pyproject.toml's `local`).
# `deploybot demo` says so here, and nothing else imports them (tests/docker/test_images.py).
COPY bot ./bot
COPY service ./service
# --no-editable: the project itself goes into site-packages; /src is not needed at run time.
RUN if [ -n "$CA_BUNDLE" ]; then export SSL_CERT_FILE="$CA_BUNDLE"; fi \
    && /opt/uv/bin/uv sync --locked --no-dev --no-editable --python python3

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_PORT=3000
WORKDIR /app
USER 10001:10001
EXPOSE 3000
# No curl in a slim image: the venv's Python asks /healthz, which is 200 while the process and
# the follower of rollouts work, whatever Slack does (a Slack outage must not get the bot
# replaced). Set HEALTHCHECK_PORT together with --port when the bot listens elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHCHECK_PORT', '3000'), timeout=4)"]
# Socket Mode by default (no inbound port); `serve --http` answers Slack over HTTP.
CMD ["deploybot", "serve"]
# Last, so a new release rebuilds no layer above. Labels: OCI image-spec annotations.
ARG RELEASE_VERSION=dev
ARG RELEASE_COMMIT=dev
LABEL org.opencontainers.image.version="${RELEASE_VERSION}" \
      org.opencontainers.image.revision="${RELEASE_COMMIT}"
ENV RELEASE_VERSION="${RELEASE_VERSION}" \
    RELEASE_COMMIT="${RELEASE_COMMIT}"
