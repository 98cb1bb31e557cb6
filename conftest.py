"""Fixtures shared by every test: users for permission tests and isolated data folders."""

from __future__ import annotations

import time

import pytest

from tests.celery_worker import start_celery_worker  # noqa: F401  (a fixture for every app's tests)
from tests.factories import make_user


@pytest.fixture(autouse=True)
def _isolated_data(settings, tmp_path):
    """Each test writes files, the cache and the MLflow store under its own temporary folder."""
    if settings.STORAGES["default"]["BACKEND"].endswith("FileSystemStorage"):
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(tmp_path / "media")}},
        }
        settings.MEDIA_ROOT = tmp_path / "media"
    else:
        import uuid

        # One bucket serves the whole run: a key prefix per test keeps content-addressed objects that
        # another test stored from turning this test's writes into no-ops.
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                **settings.STORAGES["default"],
                "OPTIONS": {
                    **settings.STORAGES["default"]["OPTIONS"],
                    "location": f"tests/{uuid.uuid4().hex}",
                },
            },
        }
    if settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
        settings.CACHES = {
            **settings.CACHES,
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        }
    from django.core.cache import caches

    # Throttle counters live in the caches: a test must not inherit another test's request count.
    for alias in settings.CACHES:
        caches[alias].clear()
    # The default hasher costs ~0.35 s per user created; tests do not need its strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings.MLFLOW_ARTIFACT_ROOT = (tmp_path / "mlflow-artifacts").as_uri()
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from mlops_site.celery import app

    app.conf.task_always_eager = True
    _process_caches_clear()
    yield
    app.conf.task_always_eager = False
    _process_caches_clear()


def _process_caches_clear() -> None:
    """The per-process caches of loaded models, resolved versions and version facts: a rolled-back test
    reuses ids, which a cache would take for the previous test's rows."""
    from feedback import checks as feedback_checks
    from predictions import model_cache

    model_cache.predictors.clear()
    model_cache.resolutions.clear()
    feedback_checks._version_infos.clear()


@pytest.fixture
def throttle_clock_frozen(monkeypatch) -> float:
    """The API throttles' clock stopped half-way through the current minute.

    They count in fixed windows (mlops_site/throttling.py): requests of one test that straddled the end of
    a minute would get a second budget, and a test counting 429s would fail now and then.
    """
    from rest_framework.throttling import SimpleRateThrottle

    now = time.time()
    frozen = now - now % 60 + 30
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: frozen))
    return frozen


@pytest.fixture
def alice(db):
    """The owner in permission tests."""
    return make_user("alice")


@pytest.fixture
def bob(db):
    """A second ordinary user."""
    return make_user("bob")


@pytest.fixture
def charlie(db):
    """The outsider in permission tests."""
    return make_user("charlie")


@pytest.fixture
def staff(db):
    return make_user("sam-staff", staff=True)


@pytest.fixture
def admin_user(db):
    return make_user("root-admin", superuser=True)


# ------------------------------------------------------------------------------
# Service markers: a test marked postgres/redis/s3/browser runs only where that service is configured.
# Under REQUIRE_SERVICES=True (set by .ci/run) a missing service fails the test instead of skipping it.
# ------------------------------------------------------------------------------
def _missing_service(marker: str) -> str | None:
    import shutil

    from django.conf import settings

    if marker == "postgres":
        if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
            return "PostgreSQL is not configured (set DATABASE_URL to a postgres:// URL)"
    elif marker == "redis":
        if not settings.REDIS_URL:
            return "Redis is not configured (set REDIS_URL)"
    elif marker == "s3":
        if not settings.AWS_STORAGE_BUCKET_NAME:
            return "S3 is not configured (set AWS_STORAGE_BUCKET_NAME and AWS_S3_ENDPOINT_URL)"
    elif marker == "browser" and not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    import os

    for marker in ("postgres", "redis", "s3", "browser"):
        if item.get_closest_marker(marker) is None:
            continue
        reason = _missing_service(marker)
        if reason is None:
            continue
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(f"required service missing: {reason}", pytrace=False)
        pytest.skip(reason)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright; Playwright's own browser download cannot work here."""
    import shutil

    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def logged_in_page(page, live_server):
    """Returns a function that logs the given user in through the real login form."""
    from tests.factories import PASSWORD

    def log_in(user):
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        return page

    return log_in


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """A file, not memory, for the SQLite test database, so real worker processes can open it too.

    A per-session temporary file rather than a fixed path: two pytest sessions may run at once.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.getbasetemp() / "test-db.sqlite3")
