# syntax=docker/dockerfile:1
#
# One image per service, all from this file:
#
#   docker build --build-arg SERVICE=ingest -t arrears-ingest .
#
# SERVICE is one of ingest, scoring, case_manager, notifier. The image holds that service and
# arrears_shared only; its default command is `python -m arrears_<SERVICE>.main serve` and
# `python -m arrears_<SERVICE>.main migrate` is the prestart step (compose and Kubernetes run it).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# No default: the build fails at once when it is not given.
ARG SERVICE

# --------------------------------------------------------------------------- builder
# checkov:skip=CKV_DOCKER_7: the base image is the ARG above, pinned to an exact Python and Debian release
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN case "${SERVICE}" in \
        ingest|scoring|case_manager|notifier) ;; \
        *) echo "build arg SERVICE must be ingest, scoring, case_manager or notifier (got '${SERVICE}')" >&2; exit 1 ;; \
    esac \
    && python -m venv /opt/venv

WORKDIR /src

# Dependencies first, from the pyproject files and the exact pins only, so this layer stays
# cached until a dependency changes. The arrears-* packages themselves come from the sources below.
COPY constraints.txt ./
COPY shared/pyproject.toml shared/
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/
RUN python -c 'import sys, tomllib; print("\n".join(sorted({d for p in sys.argv[1:] for d in tomllib.load(open(p, "rb"))["project"]["dependencies"] if not d.startswith("arrears-")})))' \
        shared/pyproject.toml "services/${SERVICE}/pyproject.toml" > /tmp/requirements.txt \
    && pip install --no-cache-dir --constraint constraints.txt --requirement /tmp/requirements.txt

# Then the sources: the shared library and this one service, dependencies already in place.
COPY shared/ shared/
COPY services/${SERVICE}/ services/${SERVICE}/
RUN pip install --no-cache-dir --no-deps ./shared "./services/${SERVICE}" \
    && pip check \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
    && python -c "import importlib; importlib.import_module('arrears_${SERVICE}.main')"

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE

LABEL org.opencontainers.image.title="arrears-${SERVICE}" \
      org.opencontainers.image.description="Arrears ${SERVICE} service"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    ARREARS_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 arrears \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin arrears

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# One small stage per service: its port, its health check (for Docker and compose; Kubernetes uses
# its own probes on the same /healthz) and its command, written out because an ARG does not
# expand inside a JSON-form CMD. The last stage picks the one SERVICE names.
FROM runtime AS ingest
EXPOSE 8001
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARREARS_INGEST_PORT', '8001') + '/healthz', timeout=2)"]
CMD ["python", "-m", "arrears_ingest.main", "serve"]

FROM runtime AS scoring
EXPOSE 8002
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARREARS_SCORING_PORT', '8002') + '/healthz', timeout=2)"]
CMD ["python", "-m", "arrears_scoring.main", "serve"]

FROM runtime AS case_manager
EXPOSE 8003
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARREARS_CASES_PORT', '8003') + '/healthz', timeout=2)"]
CMD ["python", "-m", "arrears_case_manager.main", "serve"]

FROM runtime AS notifier
EXPOSE 8004
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARREARS_NOTIFIER_PORT', '8004') + '/healthz', timeout=2)"]
CMD ["python", "-m", "arrears_notifier.main", "serve"]

FROM ${SERVICE} AS final
