"""Django settings: every value comes from the environment, with a working embedded default.

See the "Configuration" table in README.md for each variable.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from mlops_site import logging_setup
from mlops_site.env import (
    email_url_parse,
    env_bool,
    env_email_address,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the embedded default writes (SQLite, files, MLflow store, broker queue) lives here.
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data"))).resolve()

# ------------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/
# ------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE) to a long random string; "
            "`make run` generates one for you under the data folder."
        )
    SECRET_KEY = "insecure-development-only-key"  # noqa: S105 (only ever with DEBUG=True)
elif not DEBUG and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith(("insecure", "changeme"))):
    raise ImproperlyConfigured("SECRET_KEY is too weak for DEBUG=False: use at least 32 random characters.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_NAME = env_str("SITE_NAME", "MLOps")

INSTALLED_APPS = [
    "django_prometheus",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "jobs",
    "datasets",
    "models_registry",
    "training",
    "predictions",
    "feedback",
    "monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Before anything logs or answers: every log line and every answer (a 411/413 too) has the id.
    "mlops_site.request_id.RequestIdMiddleware",
    # Before anything reads the body: a chunked body gets its Content-Length here, or a 411/413.
    "mlops_site.middleware.ChunkedBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, without the trailing-slash redirect under /api/ (it would drop a POST body).
    "mlops_site.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Django's, with the message storage made when a message is first added or read.
    "mlops_site.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "mlops_site.metrics_middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "mlops_site.urls"
WSGI_APPLICATION = "mlops_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "mlops_site.context_processors.site",
            ],
        },
    },
]

# ------------------------------------------------------------------------------
# Database: DATABASE_URL, or a SQLite file in DATA_DIR
# https://github.com/jazzband/dj-database-url
# ------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's, but the threads of a process take turns to write instead of polling SQLite's lock.
    DATABASES["default"]["ENGINE"] = "mlops_site.db.sqlite3"
    # WAL lets the web process read while the worker writes; the timeout rides out short write locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Redis: cache (API throttling) and, unless CELERY_BROKER_URL says otherwise, the Celery broker
# ------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # Django's, reusing its redis-py client (mlops_site/redis_cache.py).
    _redis_cache = {"BACKEND": "mlops_site.redis_cache.RedisCache", "LOCATION": REDIS_URL}
    CACHES = {"default": _redis_cache, "throttle": _redis_cache}
else:
    CACHES = {
        # A file cache is shared by every gunicorn worker on the host, unlike the local-memory one.
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        },
        # API rate counters are touched on every request: a file write each would cost more than the
        # prediction, so without Redis they are kept per web process (the limit then applies per worker).
        "throttle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"},
    }

# ------------------------------------------------------------------------------
# Celery
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
_celery_visibility_timeout = env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL == "filesystem://":
    # The embedded broker: a queue folder on disk, so a real worker runs with no server at all.
    _queue_dir = str(DATA_DIR / "celery" / "queue")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": _queue_dir,
        "data_folder_out": _queue_dir,
        "processed_folder": str(DATA_DIR / "celery" / "processed"),
        # kombu's default is ./control, relative to whatever folder the worker started in.
        "control_folder": str(DATA_DIR / "celery" / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Must exceed the longest task, or Redis redelivers a task that is still running.
        "visibility_timeout": _celery_visibility_timeout,
        # A broker that is down or unreachable fails a submission within seconds (the job row stays
        # QUEUED and the stale sweep sends it later) instead of holding the web request.
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ (docker-compose.rabbitmq.yml): a submission returns once the broker has the message, so
    # one sent just before a broker crash is not lost silently. Redelivery of a running task is bounded
    # by RabbitMQ's consumer_timeout (deploy/rabbitmq/rabbitmq.conf), not by a visibility timeout.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Sending a message retries briefly, then gives up: the caller keeps the job for the stale sweep.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# A killed worker must not lose a job: acknowledge after the task ran and requeue on worker loss.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celery" / "beat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # every minute: workers report that they are alive, shown on /readyz and the status page
    "worker-heartbeat": {"task": "monitoring.tasks.worker_heartbeat_task", "schedule": 60.0},
    # every minute: re-send training runs whose message the broker lost or whose worker died
    "training-runs-stale-requeue": {
        "task": "training.tasks.training_runs_stale_requeue_task",
        "schedule": 60.0,
    },
    # every 5 minutes: re-send webhook deliveries whose retry message was lost
    "webhook-deliveries-sweep": {
        "task": "models_registry.tasks.webhook_deliveries_sweep_task",
        "schedule": 300.0,
    },
    # every minute: re-send batch prediction jobs whose message the broker lost or whose worker died
    "batch-prediction-jobs-stale-requeue": {
        "task": "predictions.tasks.batch_prediction_jobs_stale_requeue_task",
        "schedule": 60.0,
    },
    # every minute: re-send feedback imports whose message the broker lost or whose worker died
    "feedback-imports-stale-requeue": {
        "task": "feedback.tasks.feedback_imports_stale_requeue_task",
        "schedule": 60.0,
    },
    # every 10 seconds: cut new production predictions of models in shadow mode into batches for the
    # challenger to score on a worker
    "shadow-batches-create": {
        "task": "predictions.tasks.shadow_batches_create_task",
        "schedule": 10.0,
    },
    # every minute: re-send shadow batches whose message the broker lost or whose worker died
    "shadow-batches-stale-requeue": {
        "task": "predictions.tasks.shadow_batches_stale_requeue_task",
        "schedule": 60.0,
    },
    # every minute: the closed loop: live metrics against each policy's threshold, shadow decisions,
    # and the watch over new champions' first outcomes
    "retraining-loop-check": {
        "task": "training.tasks.retraining_loop_check_task",
        "schedule": 60.0,
    },
    # every minute: re-send retrainings whose message the broker lost or whose worker died
    "retrainings-stale-requeue": {
        "task": "training.tasks.retrainings_stale_requeue_task",
        "schedule": 60.0,
    },
    # crontab(minute=5), hourly just after the hour closes: drift reports over the last
    # DRIFT_WINDOW_HOURS complete hours for every production (and shadow or canary) version
    "drift-reports-compute": {
        "task": "monitoring.tasks.drift_reports_compute_task",
        "schedule": crontab(minute=5),
    },
    # every minute: load each opted-in model's production version into Triton and unload the rest
    # (repairs a restarted Triton and lost sync messages); does nothing while TRITON_URL is empty
    "triton-sync-all": {
        "task": "models_registry.tasks.triton_sync_all_task",
        "schedule": 60.0,
    },
    # hourly: repair MLflow aliases whose sync message was lost
    "model-aliases-sync-all": {
        "task": "models_registry.tasks.model_aliases_sync_all_task",
        "schedule": 3600.0,
    },
}

# ------------------------------------------------------------------------------
# Object storage: S3 (MinIO, SeaweedFS, AWS) when a bucket is named, else files under DATA_DIR
# https://django-storages.readthedocs.io/en/latest/backends/amazon-S3.html
# ------------------------------------------------------------------------------
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL")
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", "us-east-1")
AWS_ACCESS_KEY_ID = env_secret("AWS_ACCESS_KEY_ID")
AWS_SECRET_ACCESS_KEY = env_secret("AWS_SECRET_ACCESS_KEY")
AWS_S3_ADDRESSING_STYLE = env_str("AWS_S3_ADDRESSING_STYLE", "path")
# A key prefix inside the bucket, so several sites (or test runs) can share one bucket.
AWS_LOCATION = env_str("AWS_LOCATION")
# Seconds to connect and to wait for each answer, and tries per call (1 = no retry).
AWS_S3_CONNECT_TIMEOUT = env_int("AWS_S3_CONNECT_TIMEOUT", 5)
AWS_S3_READ_TIMEOUT = env_int("AWS_S3_READ_TIMEOUT", 30)
AWS_S3_MAX_ATTEMPTS = env_int("AWS_S3_MAX_ATTEMPTS", 3)
for _name in ("AWS_S3_CONNECT_TIMEOUT", "AWS_S3_READ_TIMEOUT", "AWS_S3_MAX_ATTEMPTS"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, not {globals()[_name]}.")
MEDIA_ROOT = DATA_DIR / "media"
if AWS_STORAGE_BUCKET_NAME:
    from botocore.config import Config

    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL or None,
            "region_name": AWS_S3_REGION_NAME,
            "access_key": AWS_ACCESS_KEY_ID or None,
            "secret_key": AWS_SECRET_ACCESS_KEY or None,
            "addressing_style": AWS_S3_ADDRESSING_STYLE,
            "location": AWS_LOCATION,
            "signature_version": "s3v4",
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
            # A storage server that is down or stalls fails the request within these bounds (a 503, or a
            # job retried later) instead of holding a web worker or a job for minutes.
            "client_config": Config(
                connect_timeout=AWS_S3_CONNECT_TIMEOUT,
                read_timeout=AWS_S3_READ_TIMEOUT,
                retries={"max_attempts": AWS_S3_MAX_ATTEMPTS, "mode": "standard"},
                s3={"addressing_style": AWS_S3_ADDRESSING_STYLE},
                signature_version="s3v4",
            ),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
# Static files: collectstatic names each file after its content (site.3f2a….css) and WhiteNoise serves
# those names with a year-long immutable cache, so a browser downloads plotly once per release. Without
# a manifest (STATIC_MANIFEST=False: the test suite, which never runs collectstatic) names stay plain.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", True)
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]

# ------------------------------------------------------------------------------
# MLflow: MLFLOW_TRACKING_URI, or a SQLite tracking store with artifacts in DATA_DIR
# ------------------------------------------------------------------------------
MLFLOW_TRACKING_URI = env_str("MLFLOW_TRACKING_URI") or f"sqlite:///{DATA_DIR / 'mlflow.db'}"
MLFLOW_ARTIFACT_ROOT = env_str("MLFLOW_ARTIFACT_ROOT") or (DATA_DIR / "mlflow-artifacts").as_uri()
MLFLOW_EXPERIMENT_NAME = env_str("MLFLOW_EXPERIMENT_NAME", "mlops-site")
# Where people open MLflow's UI (e.g. `make mlflow`'s http://127.0.0.1:5000): run ids become links to it.
# Empty: links go to MLFLOW_TRACKING_URI when that is a tracking server, else run ids are plain text.
MLFLOW_UI_URL = env_str("MLFLOW_UI_URL").rstrip("/")
if MLFLOW_UI_URL and not MLFLOW_UI_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"MLFLOW_UI_URL must be an http:// or https:// address, not {MLFLOW_UI_URL!r}")

# ------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------
DATASET_MAX_UPLOAD_MB = env_int("DATASET_MAX_UPLOAD_MB", 200)
DATASET_MIN_ROWS = env_int("DATASET_MIN_ROWS", 10)
# Checked on the header before the file is parsed; every page stays usable up to this width.
DATASET_MAX_COLUMNS = env_int("DATASET_MAX_COLUMNS", 1000)
# Django rejects larger request bodies before our own size check could name the limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# ------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------
MODEL_MAX_UPLOAD_MB = env_int("MODEL_MAX_UPLOAD_MB", 100)

# ------------------------------------------------------------------------------
# Triton Inference Server (optional): the production version of each model opted in on its Triton page
# is loaded into this Triton through its repository API, and the API's predictions for it go through it.
# https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_model_repository.html
# ------------------------------------------------------------------------------
# Triton's HTTP address (http://triton:8000). Empty: off, every prediction runs in-process.
TRITON_URL = env_str("TRITON_URL").rstrip("/")
if TRITON_URL and not TRITON_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"TRITON_URL must be an http:// or https:// address, not {TRITON_URL!r}")
# onnxruntime: Triton's ONNX Runtime backend (NVIDIA's container). python: a model.py around onnxruntime,
# for a Triton with only the Python backend (nvidia-pytriton's tritonserver).
TRITON_BACKEND = env_str("TRITON_BACKEND", "onnxruntime")
if TRITON_BACKEND not in ("onnxruntime", "python"):
    raise ImproperlyConfigured(f"TRITON_BACKEND must be onnxruntime or python, not {TRITON_BACKEND!r}")
# Seconds a prediction waits for Triton before it is answered in-process instead.
TRITON_TIMEOUT_SECONDS = env_int("TRITON_TIMEOUT_SECONDS", 5)
if TRITON_TIMEOUT_SECONDS < 1:
    raise ImproperlyConfigured(f"TRITON_TIMEOUT_SECONDS must be at least 1, not {TRITON_TIMEOUT_SECONDS}.")

# ------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------
PREDICTION_MAX_ROWS = env_int("PREDICTION_MAX_ROWS", 1000)
# Longest category or text value a prediction (single row or batch cell) may carry.
PREDICTION_MAX_TEXT_CHARS = env_int("PREDICTION_MAX_TEXT_CHARS", 1000)
# False: on PostgreSQL each page or API prediction commits without waiting for its WAL flush
# (synchronous_commit=off for that transaction only). A database crash may then lose the predictions of
# the last few hundred milliseconds; it never corrupts or half-writes them. SQLite ignores it.
PREDICTION_LOG_DURABLE = env_bool("PREDICTION_LOG_DURABLE", True)
# Above 0: each web process sums what its page and API predictions add to the hourly rollups and writes
# the sums at most this many seconds later; a process killed without warning loses those counts, never
# the predictions (predictions/live_rollups.py). 0: each prediction's transaction adds them itself, exact
# at every moment but a third more CPU per prediction, and concurrent requests queue on the hour's rows.
PREDICTION_ROLLUP_DELAY_SECONDS = env_float("PREDICTION_ROLLUP_DELAY_SECONDS", 1.0, low=0.0, high=60.0)
# Big enough that per-chunk costs (a transaction, two storage writes) vanish, small enough that a
# chunk stays far below 100 MB in memory.
BATCH_CHUNK_ROWS = env_int("BATCH_CHUNK_ROWS", 50_000)
BATCH_MAX_UPLOAD_MB = env_int("BATCH_MAX_UPLOAD_MB", 500)
# Production predictions one shadow batch gives the challenger to score on a worker (one leased job).
SHADOW_BATCH_ROWS = env_int("SHADOW_BATCH_ROWS", 5000)
if SHADOW_BATCH_ROWS < 1:
    raise ImproperlyConfigured(f"SHADOW_BATCH_ROWS must be at least 1, not {SHADOW_BATCH_ROWS}")

# ------------------------------------------------------------------------------
# Feedback and live quality
# ------------------------------------------------------------------------------
# Items one bulk feedback request may carry; larger sets go in a file import.
FEEDBACK_BULK_MAX = env_int("FEEDBACK_BULK_MAX", 1000)
# The "last N labelled predictions" window of live quality.
FEEDBACK_LAST_N = env_int("FEEDBACK_LAST_N", 200)
FEEDBACK_IMPORT_MAX_UPLOAD_MB = env_int("FEEDBACK_IMPORT_MAX_UPLOAD_MB", 200)
FEEDBACK_IMPORT_CHUNK_ROWS = env_int("FEEDBACK_IMPORT_CHUNK_ROWS", 20_000)

# ------------------------------------------------------------------------------
# The closed loop: retraining from feedback (policies are per model, in the app)
# ------------------------------------------------------------------------------
# The most labelled predictions a retraining may add to the champion's training data, whatever a
# model's policy asks for (its feedback_rows): they are read into memory at once.
RETRAINING_MAX_FEEDBACK_ROWS = env_int("RETRAINING_MAX_FEEDBACK_ROWS", 100_000)
# Bearer token Alertmanager sends to POST /api/alerts/alertmanager/; empty turns the receiver off.
ALERTMANAGER_WEBHOOK_TOKEN = env_secret("ALERTMANAGER_WEBHOOK_TOKEN")

# ------------------------------------------------------------------------------
# Metrics: /metrics for Prometheus (monitoring.metrics_view); see "Metrics" in README.md
# https://prometheus.github.io/client_python/multiprocess/
# ------------------------------------------------------------------------------
# A folder where every process (gunicorn workers, Celery workers on this host) writes its metrics for
# /metrics to add up. prometheus_client reads it from the environment when imported; empty: per process.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
# A scrape with `Authorization: Bearer <METRICS_TOKEN>` is allowed from anywhere.
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Client networks (mlops_site.client_ip) allowed without the token. Neither set: loopback only.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS")
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not an IP address or network (e.g. 10.0.0.0/8)"
        ) from None
# A Celery worker on a host without the web serves that host's metric files on this port (0: off).
CELERY_METRICS_PORT = env_int("CELERY_METRICS_PORT", 0)
if CELERY_METRICS_PORT and not PROMETHEUS_MULTIPROC_DIR:
    raise ImproperlyConfigured(
        "CELERY_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: the worker's pool processes count the tasks."
    )
if not 0 <= CELERY_METRICS_PORT <= 65535:
    raise ImproperlyConfigured(f"CELERY_METRICS_PORT must be a port number or 0, not {CELERY_METRICS_PORT}")

# ------------------------------------------------------------------------------
# Drift and estimated performance (monitoring.drift_services); see "Drift and estimated performance"
# in README.md
# ------------------------------------------------------------------------------
# Complete hours of predictions the hourly drift report compares with the training data.
DRIFT_WINDOW_HOURS = env_int("DRIFT_WINDOW_HOURS", 24)
if not 1 <= DRIFT_WINDOW_HOURS <= 24 * 90:
    raise ImproperlyConfigured(f"DRIFT_WINDOW_HOURS must be from 1 to 2160, not {DRIFT_WINDOW_HOURS}")
# A model is drifting when at least this share of its tested features drifted (Evidently's default).
try:
    DRIFT_SHARE = float(env_str("DRIFT_SHARE", "0.5"))
except ValueError:
    raise ImproperlyConfigured("DRIFT_SHARE must be a number from 0 to 1, e.g. 0.5") from None
if not 0 < DRIFT_SHARE <= 1:
    raise ImproperlyConfigured(f"DRIFT_SHARE must be above 0 and at most 1, not {DRIFT_SHARE}")

# ------------------------------------------------------------------------------
# Accounts and the API
# https://www.django-rest-framework.org/api-guide/settings/
# ------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Every login path (the pages, the admin, POST /api/auth/token/) goes through this backend's limits.
AUTHENTICATION_BACKENDS = ["accounts.backends.LimitedModelBackend"]
# Failed sign-ins counted in the throttle cache: after this many per account, or per client address,
# within LOGIN_LOCKOUT_MINUTES, further attempts are refused unchecked for LOGIN_LOCKOUT_MINUTES.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_CLIENT_FAILURE_LIMIT = env_int("LOGIN_CLIENT_FAILURE_LIMIT", 20)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15)
for _name in ("LOGIN_FAILURE_LIMIT", "LOGIN_CLIENT_FAILURE_LIMIT", "LOGIN_LOCKOUT_MINUTES"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, not {globals()[_name]}")
# Password reset requests counted in the throttle cache per clock hour: per client address, and per
# e-mail address asked for (whether or not an account uses it). Over either, no mail is sent: a 429.
PASSWORD_RESET_CLIENT_LIMIT = env_int("PASSWORD_RESET_CLIENT_LIMIT", 10)
PASSWORD_RESET_ADDRESS_LIMIT = env_int("PASSWORD_RESET_ADDRESS_LIMIT", 3)
for _name in ("PASSWORD_RESET_CLIENT_LIMIT", "PASSWORD_RESET_ADDRESS_LIMIT"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, not {globals()[_name]}")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: a refused API call then gets 401 with `WWW-Authenticate: Token`, not 403.
        "accounts.authentication.FastTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's parsers, with JSON nesting limited: deep nesting is a 400, not a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "mlops_site.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's, with the usual Accept headers' answer kept per view (mlops_site/negotiation.py).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "mlops_site.negotiation.ContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": "mlops_site.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "mlops_site.schema.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "mlops_site.throttling.AnonRateThrottle",
        "mlops_site.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("API_THROTTLE_ANON", "60/minute"),
        "user": env_str("API_THROTTLE_USER", "6000/minute"),
        "auth": env_str("API_THROTTLE_AUTH", "10/minute"),
    },
    "EXCEPTION_HANDLER": "mlops_site.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": f"{SITE_NAME} API",
    "DESCRIPTION": "Datasets, training, the model registry, predictions and feedback.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc from the drf-spectacular-sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields named alike with different choices get names of their own (the jobs' keeps its old name).
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "jobs.models.LeasedJob.Status",
        "FeedbackSourceEnum": "feedback.models.Source",
        "OutcomeStatusEnum": "feedback.services.STORED_STATUSES",
    },
}

# ------------------------------------------------------------------------------
# E-mail (password reset): EMAIL_URL, or console:// (mails written to the web process's output)
# https://docs.djangoproject.com/en/5.2/topics/email/
# ------------------------------------------------------------------------------
# smtp://user:password@host:587 (STARTTLS), smtps://...:465, console://, file:///folder or dummy:// (off).
# Kept in a private name: Django masks EMAIL_HOST_PASSWORD on error pages, but not a URL holding it.
_email = email_url_parse(env_secret("EMAIL_URL"))
EMAIL_BACKEND = _email.backend
EMAIL_HOST = _email.host
EMAIL_PORT = _email.port
EMAIL_HOST_USER = _email.user
EMAIL_HOST_PASSWORD = _email.password
EMAIL_USE_TLS = _email.use_tls
EMAIL_USE_SSL = _email.use_ssl
if _email.file_path:
    EMAIL_FILE_PATH = _email.file_path
# Seconds to connect and for each answer of the mail server: a dead one must not hold a web thread.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
if EMAIL_TIMEOUT < 1:
    raise ImproperlyConfigured(f"EMAIL_TIMEOUT must be at least 1, not {EMAIL_TIMEOUT}")
DEFAULT_FROM_EMAIL = env_email_address("DEFAULT_FROM_EMAIL", "webmaster@localhost")
# Django's own mails (errors to ADMINS) come from the same sender.
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# ------------------------------------------------------------------------------
# HTTPS and proxies: all off by default, so `make run` works over plain HTTP on 127.0.0.1
# https://docs.djangoproject.com/en/5.2/ref/middleware/#module-django.middleware.security
# ------------------------------------------------------------------------------
SECURE_PROXY_SSL = env_bool("SECURE_PROXY_SSL", False)
if SECURE_PROXY_SSL:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health checks and Prometheus call the app over plain HTTP from inside the network, past the proxy:
# redirecting them to https would make a healthy site look down.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS must be 0 (off) or more, not {SECURE_HSTS_SECONDS}")
# A site reached over HTTPS must never send its session or CSRF cookie over plain HTTP.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_PROXY_SSL or SECURE_SSL_REDIRECT

# Proxies whose X-Forwarded-For we believe (mlops_site.client_ip): comma-separated addresses or networks.
# Empty trusts no forwarded header: the client is the address that connected.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES: {_proxy!r} is not an IP address or network (e.g. 10.0.0.5 or 172.18.0.0/16)"
        ) from None

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------
# Logs and traces (mlops_site.logging_setup, mlops_site.request_id, mlops_site.tracing)
# https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/
# ------------------------------------------------------------------------------
# console: lines for people; json: one object per line (timestamp, level, logger, message, request_id,
# trace_id, span_id) for a log shipper. Both carry the request id.
LOG_FORMAT = env_str("LOG_FORMAT", "console")
if LOG_FORMAT not in logging_setup.FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be console or json, not {LOG_FORMAT!r}")
LOGGING = logging_setup.config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# Tracing is off unless an OTLP/HTTP endpoint is given (e.g. http://tempo:4318); set up at process
# start by mlops_site.tracing, not here. Empty service name: mlops-web, mlops-worker or mlops-beat.
OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT")
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME")
