"""Settings: production refuses weak secrets, and each variable switches its integration on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from mlops_site import env

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k" * 20 + "-strong-enough-for-the-test-0123456789"
SHOW = (
    "import json, mlops_site.settings as s; print(json.dumps({"
    "'engine': s.DATABASES['default']['ENGINE'], 'db_name': str(s.DATABASES['default']['NAME']),"
    "'cache': s.CACHES['default']['BACKEND'], 'broker': s.CELERY_BROKER_URL,"
    "'storage': s.STORAGES['default']['BACKEND'], 'storage_options': s.STORAGES['default']['OPTIONS'],"
    "'mlflow': s.MLFLOW_TRACKING_URI, 'debug': s.DEBUG, 'secret_key': s.SECRET_KEY}, default=str))"
)


@pytest.fixture(autouse=True)
def _untouched_read_variables(monkeypatch):
    """The made-up variables read here must not leak into the README and compose checks."""
    monkeypatch.setattr(env, "READ_VARIABLES", set(env.READ_VARIABLES))


def _settings_in_subprocess(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with only the given variables (plus PATH)."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(tmp_path / "data")}
    environment.update(variables)
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def _settings(tmp_path: Path, **variables: str) -> dict[str, object]:
    result = _settings_in_subprocess(tmp_path, **{"SECRET_KEY": STRONG_KEY, **variables})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = _settings_in_subprocess(tmp_path, DEBUG="False")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("weak", ["changeme", "short-key", "insecure-" + "x" * 40])
def test_production_settings_refuse_a_weak_secret_key(tmp_path, weak):
    result = _settings_in_subprocess(tmp_path, DEBUG="False", SECRET_KEY=weak)

    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:5000", "ftp://mlflow", "javascript:alert(1)"])
def test_an_mlflow_ui_url_that_is_not_http_is_refused(tmp_path, address):
    result = _settings_in_subprocess(tmp_path, SECRET_KEY=STRONG_KEY, MLFLOW_UI_URL=address)

    assert result.returncode != 0
    assert "MLFLOW_UI_URL must be an http:// or https:// address" in result.stderr


def test_debug_settings_start_without_a_secret_key(tmp_path):
    shown = _settings(tmp_path, DEBUG="True", SECRET_KEY="")

    assert shown["debug"] is True


def test_the_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(STRONG_KEY + "-from-file\n")

    result = _settings_in_subprocess(tmp_path, DEBUG="False", SECRET_KEY_FILE=str(key_file))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["secret_key"] == STRONG_KEY + "-from-file"


def test_a_missing_secret_key_file_is_named_in_the_error(tmp_path):
    result = _settings_in_subprocess(tmp_path, SECRET_KEY_FILE=str(tmp_path / "nope"))

    assert result.returncode != 0
    assert "SECRET_KEY_FILE points at" in result.stderr
    assert "nope" in result.stderr


def test_debug_accepts_only_true_or_false(tmp_path):
    result = _settings_in_subprocess(tmp_path, DEBUG="yes", SECRET_KEY=STRONG_KEY)

    assert result.returncode != 0
    assert "DEBUG must be True or False, not 'yes'" in result.stderr


@pytest.mark.parametrize("raw", ["true", "1", "", "FALSE"])
def test_env_bool_rejects_anything_but_true_or_false(monkeypatch, raw):
    monkeypatch.setenv("SOME_FLAG", raw)

    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG must be True or False"):
        env.env_bool("SOME_FLAG", False)


def test_env_bool_reads_true_false_and_the_default(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "True")
    assert env.env_bool("SOME_FLAG", False) is True
    monkeypatch.setenv("SOME_FLAG", "False")
    assert env.env_bool("SOME_FLAG", True) is False
    monkeypatch.delenv("SOME_FLAG")
    assert env.env_bool("SOME_FLAG", True) is True


@pytest.mark.parametrize("raw", ["-1", "61", "soon", "nan", "inf", ""])
def test_env_float_refuses_what_is_not_a_number_in_its_range(monkeypatch, raw):
    monkeypatch.setenv("SOME_DELAY", raw)

    with pytest.raises(ImproperlyConfigured, match=f"SOME_DELAY must be a number from 0 to 60, not {raw!r}"):
        env.env_float("SOME_DELAY", 0.0, low=0.0, high=60.0)


def test_env_float_reads_the_number_and_the_default(monkeypatch):
    monkeypatch.setenv("SOME_DELAY", "0.25")
    assert env.env_float("SOME_DELAY", 0.0, low=0.0, high=60.0) == 0.25
    monkeypatch.delenv("SOME_DELAY")
    assert env.env_float("SOME_DELAY", 1.5, low=0.0, high=60.0) == 1.5


def test_a_bad_rollup_delay_stops_the_start_with_its_name(tmp_path):
    result = _settings_in_subprocess(tmp_path, SECRET_KEY=STRONG_KEY, PREDICTION_ROLLUP_DELAY_SECONDS="-2")

    assert result.returncode != 0
    assert "PREDICTION_ROLLUP_DELAY_SECONDS must be a number from 0 to 60, not '-2'" in result.stderr


def test_env_int_names_the_variable_it_cannot_read(monkeypatch):
    monkeypatch.setenv("SOME_NUMBER", "ten")

    with pytest.raises(ImproperlyConfigured, match="SOME_NUMBER must be an integer, not 'ten'"):
        env.env_int("SOME_NUMBER", 1)


def test_with_no_variables_everything_is_embedded(tmp_path):
    shown = _settings(tmp_path)

    assert shown["engine"] == "mlops_site.db.sqlite3"
    assert shown["db_name"] == str(tmp_path / "data" / "db.sqlite3")
    assert shown["cache"].endswith("FileBasedCache")
    assert shown["broker"] == "filesystem://"
    assert shown["storage"] == "django.core.files.storage.FileSystemStorage"
    assert shown["mlflow"] == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    assert shown["debug"] is False


def test_database_url_selects_postgresql(tmp_path):
    shown = _settings(tmp_path, DATABASE_URL="postgres://u:p@db.example:5432/mlops")

    assert shown["engine"] == "django.db.backends.postgresql"
    assert shown["db_name"] == "mlops"


def test_redis_url_selects_the_redis_cache_and_broker(tmp_path):
    shown = _settings(tmp_path, REDIS_URL="redis://cache.example:6379/0")

    assert shown["cache"] == "mlops_site.redis_cache.RedisCache"
    assert shown["broker"] == "redis://cache.example:6379/0"


def test_celery_broker_url_wins_over_redis_url(tmp_path):
    shown = _settings(tmp_path, REDIS_URL="redis://a:6379/0", CELERY_BROKER_URL="redis://b:6379/1")

    assert shown["broker"] == "redis://b:6379/1"


def test_a_bucket_name_selects_s3_storage_with_its_endpoint_and_keys(tmp_path):
    shown = _settings(
        tmp_path,
        AWS_STORAGE_BUCKET_NAME="datasets",
        AWS_S3_ENDPOINT_URL="http://s3.example:9000",
        AWS_ACCESS_KEY_ID="key-id",
        AWS_SECRET_ACCESS_KEY="secret",
    )

    assert shown["storage"] == "storages.backends.s3.S3Storage"
    assert shown["storage_options"]["bucket_name"] == "datasets"
    assert shown["storage_options"]["endpoint_url"] == "http://s3.example:9000"
    assert shown["storage_options"]["access_key"] == "key-id"


def test_mlflow_tracking_uri_selects_a_tracking_server(tmp_path):
    shown = _settings(tmp_path, MLFLOW_TRACKING_URI="http://mlflow.example:5000")

    assert shown["mlflow"] == "http://mlflow.example:5000"


#: What a production deployment behind a TLS proxy sets (README, "Security").
PRODUCTION_HTTPS = {
    "DEBUG": "False",
    "ALLOWED_HOSTS": "mlops.example.com",
    "SECURE_PROXY_SSL": "True",
    "SECURE_SSL_REDIRECT": "True",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
    "SECURE_HSTS_PRELOAD": "True",
    "TRUSTED_PROXIES": "10.0.0.5,172.18.0.0/16",
}
SHOW_SECURITY = (
    "import json, mlops_site.settings as s; print(json.dumps({name: getattr(s, name, None) for name in ("
    "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD',"
    "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER', 'TRUSTED_PROXIES')}))"
)


def _security_settings(tmp_path: Path, **variables: str) -> dict[str, object]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(tmp_path / "data")}
    environment.update({"SECRET_KEY": STRONG_KEY, **variables})
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SECURITY],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_with_production_https_settings(tmp_path):
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(tmp_path / "data")}
    environment.update({"SECRET_KEY": STRONG_KEY, **PRODUCTION_HTTPS})

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_https_variables_set_hsts_redirect_and_secure_cookies(tmp_path):
    shown = _security_settings(tmp_path, **PRODUCTION_HTTPS)

    assert shown == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "TRUSTED_PROXIES": ["10.0.0.5", "172.18.0.0/16"],
    }


def test_by_default_plain_http_works_no_redirect_no_hsts_and_no_forwarded_header_believed(tmp_path):
    shown = _security_settings(tmp_path)

    assert shown == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "TRUSTED_PROXIES": [],
    }


def test_a_redirect_to_https_turns_secure_cookies_on_without_a_proxy(tmp_path):
    shown = _security_settings(tmp_path, SECURE_SSL_REDIRECT="True")

    assert shown["SESSION_COOKIE_SECURE"] is True
    assert shown["CSRF_COOKIE_SECURE"] is True


@pytest.mark.parametrize("proxies", ["10.0.0.300", "proxy.example", "10.0.0.0/40"])
def test_trusted_proxies_must_be_addresses_or_networks(tmp_path, proxies):
    result = _settings_in_subprocess(tmp_path, SECRET_KEY=STRONG_KEY, TRUSTED_PROXIES=proxies)

    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
    assert "is not an IP address or network" in result.stderr


@pytest.mark.parametrize(
    "variable",
    [
        "LOGIN_FAILURE_LIMIT",
        "LOGIN_CLIENT_FAILURE_LIMIT",
        "LOGIN_LOCKOUT_MINUTES",
        "PASSWORD_RESET_CLIENT_LIMIT",
        "PASSWORD_RESET_ADDRESS_LIMIT",
        "AWS_S3_CONNECT_TIMEOUT",
        "AWS_S3_READ_TIMEOUT",
        "AWS_S3_MAX_ATTEMPTS",
    ],
)
def test_limits_and_timeouts_must_be_at_least_one(tmp_path, variable):
    result = _settings_in_subprocess(tmp_path, SECRET_KEY=STRONG_KEY, **{variable: "0"})

    assert result.returncode != 0
    assert f"{variable} must be at least 1, not 0" in result.stderr


@pytest.mark.django_db
def test_the_default_settings_serve_plain_http_without_a_redirect(client):
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_with_the_https_redirect_on_pages_redirect_but_health_checks_and_metrics_do_not(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    page = client.get("/accounts/login/")

    assert page.status_code == 301
    assert page["Location"] == "https://testserver/accounts/login/"
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/metrics"):
        assert client.get(path).status_code != 301, path
    assert client.get("/accounts/login/", secure=True).status_code == 200


def test_object_storage_timeouts_come_from_the_environment(tmp_path):
    show = (
        "import mlops_site.settings as s; c = s.STORAGES['default']['OPTIONS']['client_config'];"
        "print(c.connect_timeout, c.read_timeout, c.retries['max_attempts'])"
    )
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": STRONG_KEY,
        "AWS_STORAGE_BUCKET_NAME": "models",
        "AWS_S3_CONNECT_TIMEOUT": "2",
        "AWS_S3_READ_TIMEOUT": "7",
        "AWS_S3_MAX_ATTEMPTS": "1",
    }

    result = subprocess.run(
        [sys.executable, "-c", show], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "7", "1"]
