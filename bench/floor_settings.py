"""Settings of the bench-only floor server: no apps, no database, no middleware, just one URL."""

import os

SECRET_KEY = os.environ.get("SECRET_KEY", "benchmark-floor-only-0123456789abcdef")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor_app"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
