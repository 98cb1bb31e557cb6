# syntax=docker/dockerfile:1
# MLflow tracking server: PostgreSQL backend store, artifacts proxied to MinIO (S3).
# Built with the project folder as context, so requirements.txt and requirements-mlflow-ui.txt pin mlflow,
# psycopg and boto3 to the versions the app itself uses (the app runs the same version's mlflow-skinny).
# Checked by hadolint (tests/test_dockerfiles.py); the base image is the app image's.
FROM python:3.11.16-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.txt requirements-mlflow-ui.txt /tmp/
RUN pip install --no-cache-dir --constraint /tmp/requirements.txt --constraint /tmp/requirements-mlflow-ui.txt \
        mlflow psycopg psycopg-binary boto3 \
    && rm /tmp/requirements.txt /tmp/requirements-mlflow-ui.txt \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /home/mlflow --create-home mlflow

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=5)"]

# Compose passes the store, artifact and host options (docker-compose.yml, service mlflow).
CMD ["mlflow", "server", "--host=0.0.0.0", "--port=5000"]
