"""What every production deployment (compose, Kubernetes) must give the app."""

#: Without these the settings fall back to their embedded defaults (SQLite, local files, no secret).
REQUIRED_IN_PRODUCTION = frozenset(
    {
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "AWS_STORAGE_BUCKET_NAME",
        "AWS_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_URI",
    }
)
