# navstream consumer image.
#   docker build -t navstream .
#   docker build -t navstream --build-arg NAVSTREAM_EXTRAS=firestore .   # with the Firestore sink
#   docker run --rm -e NAVSTREAM_REDIS_URL=redis://host:6379/0 navstream            # a consumer
#   docker run --rm -e NAVSTREAM_REDIS_URL=redis://host:6379/0 navstream status     # any command
#
# Two stages: `builder` installs the package (non-editable, runtime dependencies only) into the
# venv /opt/venv; the runtime stage is a clean python:3.11-slim with only that venv and the
# health-check script: no compiler, no pip cache, no sources, no tests or test dependencies.
# Both stages use the same base image, so the venv's interpreter links stay valid.
#
# Builds with BuildKit and with the legacy builder alike (DOCKER_BUILDKIT=0, which CI uses: no
# `RUN --mount`, no heredocs, no `COPY --chmod`). Every package comes from the hash-pinned lock
# files in requirements/ (`pip install --require-hashes`), navstream itself with --no-deps: a
# changed or substituted download fails the build. docs/deployment.md says how to regenerate them.
# The image has no `navstream demo` (its in-process Redis, fakeredis, is not installed).

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# Empty: the runtime set (requirements/runtime.lock). `firestore`: plus the Firestore sink's
# client (requirements/firestore.lock, pyproject's `firestore` extra). Nothing else.
ARG NAVSTREAM_EXTRAS=""
# A package index other than PyPI (a mirror or proxy), if the build host needs one; never a URL
# with credentials in it (build arguments are kept in the image's history).
ARG PIP_INDEX_URL=""

RUN python -m venv /opt/venv

WORKDIR /src
# The locked dependencies first, in a layer of their own (a change to the code alone reuses it):
# hashes required, wheels only; then setuptools from its own lock, to build navstream's wheel
# below without fetching anything unpinned (--no-build-isolation). Every dependency ships wheels
# for linux amd64/arm64 (hiredis, msgspec, grpcio), so no compiler is needed.
COPY requirements/runtime.lock requirements/firestore.lock requirements/build.lock requirements/
RUN case "$NAVSTREAM_EXTRAS" in \
      "") lock=requirements/runtime.lock ;; \
      firestore) lock=requirements/firestore.lock ;; \
      *) echo "NAVSTREAM_EXTRAS must be empty or 'firestore', got '$NAVSTREAM_EXTRAS'" >&2; exit 2 ;; \
    esac \
 && if [ -z "$PIP_INDEX_URL" ]; then unset PIP_INDEX_URL; fi \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r "$lock" \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements/build.lock

# Only what the build needs (.dockerignore keeps everything else out of the context);
# README.md is the package's long description (pyproject `readme`).
COPY pyproject.toml README.md ./
COPY core/ core/
COPY plugins/ plugins/

# navstream alone (--no-deps; not -e, no [test] extra): it lands in the venv's site-packages as
# navstream/ and navstream/plugins/. pip and setuptools are then removed from the venv: nothing
# installs packages at run time.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="navstream" \
      org.opencontainers.image.description="Plugin-based stream processor on Redis Streams (NAV and risk for a trading desk)"

# The HTTP endpoint (/healthz, /readyz, /metrics, the status page at /) on every interface of
# the container's own network namespace, so the orchestrator and Prometheus reach it; the
# health check below asks /healthz. Override either, or set NAVSTREAM_HTTP_PORT=0 to serve
# nothing (the check then reads the heartbeat in Redis). See docs/observability.md.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    NAVSTREAM_HTTP_PORT=8080 \
    NAVSTREAM_HTTP_HOST=0.0.0.0

EXPOSE 8080

# The consumer's state directory, the one place it writes: the risk gate's audit log
# ($NAVSTREAM_STATE_DIR/audit/risk-<consumer>.jsonl, unless `[risk] audit_dir` says otherwise).
# The root filesystem may be read-only and HOME is /nonexistent, so mount a volume here to keep
# it (compose shares one between the replicas, one file per consumer); without one, Docker gives
# each container an anonymous volume. Override the path with NAVSTREAM_STATE_DIR (the directory
# must be writable by 10001). See docs/deployment.md.
ENV NAVSTREAM_STATE_DIR=/var/lib/navstream

# Owned by root and read-only for the runtime user: the process cannot change its own code.
COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/navstream/healthcheck.py

# A fixed numeric non-root user, so orchestrators (runAsNonRoot) can verify it; the state
# directory is the only thing it owns.
RUN groupadd --system --gid 10001 navstream \
 && useradd --system --uid 10001 --gid navstream --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin navstream \
 && chmod 0644 /opt/navstream/healthcheck.py \
 && mkdir -p /var/lib/navstream \
 && chown 10001:10001 /var/lib/navstream \
 && chmod 0750 /var/lib/navstream
VOLUME ["/var/lib/navstream"]

USER 10001:10001
WORKDIR /opt/navstream

# navstream is PID 1 (exec-form ENTRYPOINT, no shell, no init): its consumer name is
# <hostname>-1, unique per container, and SIGTERM reaches it directly. The first SIGTERM stops
# gracefully (the batch in flight is finished and acknowledged, a final `stopped` heartbeat is
# written); a second one exits at once, and other consumers reclaim what was pending.
STOPSIGNAL SIGTERM

# Healthy while the consumer's /healthz answers 200 on 127.0.0.1:$NAVSTREAM_HTTP_PORT (its loop
# made progress within the heartbeat TTL); the script follows the consumer's own settings (config
# file, environment, `navstream run` flags), and without an HTTP port falls back to the heartbeat
# <prefix>:heartbeat:<hostname>-1 in Redis. See docs/observability.md and docs/deployment.md.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/navstream/healthcheck.py"]

ENTRYPOINT ["navstream"]
CMD ["run"]
