# syntax=docker/dockerfile:1
# The app image: web (gunicorn), worker and beat run from it, only the command differs.
# Two stages: `builder` installs the pinned requirements into a virtualenv (compilers and pip caches stay
# behind), `runtime` copies that virtualenv beside the code and collects the static files.
# Checked by hadolint (tests/test_dockerfiles.py); the base image is pinned to a patch release.

FROM python:3.11.16-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt


FROM python:3.11.16-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/app/data

# pg_dump and pg_restore, for deploy/backup.py and deploy/restore.py, must be at least the server's major
# version (postgres:16 in docker-compose.yml) and bookworm ships 15: the client comes from the PostgreSQL
# project's own repository.
ARG POSTGRES_CLIENT_MAJOR=16
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# scikit-learn and onnxruntime load OpenMP at run time. Debian replaces a package version when it ships a
# security fix, so a pinned version would stop building; the base image tag pins the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 ca-certificates curl gnupg \
    && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
       | gpg --dearmor -o /usr/share/keyrings/postgresql.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/postgresql.gpg] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
       > /etc/apt/sources.list.d/postgresql.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${POSTGRES_CLIENT_MAJOR}" \
    && apt-get purge -y --auto-remove curl gnupg \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The code stays root-owned: the app user can write only to its data folder.
COPY . .
# collectstatic writes content-hashed names and their manifest (STATIC_MANIFEST=True, the settings'
# default), which WhiteNoise serves with a year-long cache. The settings refuse to load without a strong
# key; this one exists only for this build step and is not kept in the image.
RUN SECRET_KEY=collectstatic-at-build-time-only-$(date +%s%N)-not-a-runtime-key \
    STATIC_MANIFEST=True \
    python manage.py collectstatic --noinput -v 0 \
    && python -m compileall -q -j 0 . \
    && mkdir -p /app/data/celery \
    && chown -R 10001:10001 /app/data

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 CMD ["python", "deploy/healthcheck.py"]

# Workers, threads and timeouts: deploy/gunicorn.conf.py (WEB_CONCURRENCY, WEB_THREADS, WEB_READ_TIMEOUT).
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
