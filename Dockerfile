# The app image: web (gunicorn), worker and beat run from it, only the command differs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/app/data

# scikit-learn and onnxruntime load OpenMP at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays root-owned: the app user can write only to its data folder.
COPY . .
# collectstatic imports the settings, which refuse to load without a strong key; this one exists only
# for this build step and is not kept in the image.
RUN SECRET_KEY=collectstatic-at-build-time-only-$(date +%s%N)-not-a-runtime-key \
    python manage.py collectstatic --noinput -v 0 \
    && mkdir -p /app/data/celery \
    && chown -R app:app /app/data

USER app
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 CMD ["python", "deploy/healthcheck.py"]

# Workers, threads and timeouts: deploy/gunicorn.conf.py (WEB_CONCURRENCY, WEB_THREADS, WEB_READ_TIMEOUT).
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
