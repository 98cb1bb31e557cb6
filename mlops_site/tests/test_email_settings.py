"""E-mail settings: EMAIL_URL read into Django's EMAIL_* settings, bad values stopping the start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from mlops_site import env
from mlops_site.env import email_url_parse

ROOT = Path(__file__).resolve().parents[2]
SMTP = "django.core.mail.backends.smtp.EmailBackend"
SHOW = (
    "import json, mlops_site.settings as s; print(json.dumps({name: getattr(s, name, None) for name in ["
    "'EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_HOST_USER', 'EMAIL_HOST_PASSWORD', 'EMAIL_USE_TLS',"
    "'EMAIL_USE_SSL', 'EMAIL_TIMEOUT', 'EMAIL_FILE_PATH', 'DEFAULT_FROM_EMAIL', 'SERVER_EMAIL']}))"
)


@pytest.fixture(autouse=True)
def _untouched_read_variables(monkeypatch):
    """Variables read here must not leak into the README and compose checks."""
    monkeypatch.setattr(env, "READ_VARIABLES", set(env.READ_VARIABLES))


def _start(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with only the given variables (plus PATH)."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "test-only-secret-key-not-for-production-0123456789",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_with_no_configuration_mail_is_written_to_the_console(tmp_path):
    result = _start(tmp_path)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert shown["EMAIL_TIMEOUT"] == 10
    assert shown["DEFAULT_FROM_EMAIL"] == shown["SERVER_EMAIL"] == "webmaster@localhost"


def test_an_smtp_url_from_a_file_sets_server_credentials_and_starttls(tmp_path):
    url_file = tmp_path / "email_url"
    url_file.write_text("smtp://mlops%40example.com:p%40ss%3Aw%2Frd@mail.example.com:2525\n")

    result = _start(
        tmp_path,
        EMAIL_URL_FILE=str(url_file),
        EMAIL_TIMEOUT="5",
        DEFAULT_FROM_EMAIL="MLOps <mlops@example.com>",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "EMAIL_BACKEND": SMTP,
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 2525,
        "EMAIL_HOST_USER": "mlops@example.com",
        "EMAIL_HOST_PASSWORD": "p@ss:w/rd",
        "EMAIL_USE_TLS": True,
        "EMAIL_USE_SSL": False,
        "EMAIL_TIMEOUT": 5,
        "EMAIL_FILE_PATH": None,
        "DEFAULT_FROM_EMAIL": "MLOps <mlops@example.com>",
        "SERVER_EMAIL": "MLOps <mlops@example.com>",
    }


def test_a_bad_email_url_stops_the_start_naming_it_without_the_password(tmp_path):
    result = _start(tmp_path, EMAIL_URL="smtp://user:s3cret-pw@mail.example.com:notaport")

    assert result.returncode != 0
    assert "ImproperlyConfigured: EMAIL_URL: the port must be a number" in result.stderr
    assert "s3cret-pw" not in result.stderr


def test_a_bad_sender_address_stops_the_start(tmp_path):
    result = _start(tmp_path, DEFAULT_FROM_EMAIL="not an address")

    assert result.returncode != 0
    assert "DEFAULT_FROM_EMAIL must be an e-mail address" in result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", {"backend": "django.core.mail.backends.console.EmailBackend"}),
        ("console://", {"backend": "django.core.mail.backends.console.EmailBackend"}),
        ("dummy://", {"backend": "django.core.mail.backends.dummy.EmailBackend"}),
        (
            "file:///var/mail/ml%20ops",
            {"backend": "django.core.mail.backends.filebased.EmailBackend", "file_path": "/var/mail/ml ops"},
        ),
        ("smtp://mail.example.com", {"host": "mail.example.com", "port": 587, "use_tls": True}),
        ("smtps://u:p@mail.example.com", {"port": 465, "use_ssl": True, "use_tls": False, "user": "u"}),
        ("smtp://localhost:25?starttls=False", {"port": 25, "use_tls": False, "use_ssl": False}),
        ("SMTP://[::1]:1025", {"host": "::1", "port": 1025}),
    ],
)
def test_email_urls_become_django_s_settings(url, expected):
    parsed = email_url_parse(url)

    for name, value in {"backend": SMTP, **expected}.items():
        assert getattr(parsed, name) == value, name


def test_the_user_name_and_password_are_percent_decoded():
    parsed = email_url_parse("smtps://me%40example.com:a%23b%2Fc%25d@mail.example.com")

    assert (parsed.user, parsed.password) == ("me@example.com", "a#b/c%d")
    assert "a#b/c%d" not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("console", "must be a URL"),
        ("sendgrid://key@api", "unknown scheme 'sendgrid'"),
        ("smtp://", "needs a host"),
        ("smtp://user:s3#cret@mail.example.com", "holds a '#'"),
        ("smtp://user:s3/cret@mail.example.com", "port must be a number"),
        ("smtp://mail.example.com:70000", "port must be a number"),
        ("smtp://mail.example.com:0", "port must be a number"),
        ("smtp://mail.example.com/inbox", "takes no path"),
        ("smtp://:s3cret@mail.example.com", "needs a user name"),
        ("smtp://mail.example.com?tls=yes", "the only option is starttls=False"),
        ("smtp://mail.example.com?starttls=no", "starttls must be True or False"),
        ("smtps://mail.example.com?starttls=False", "starttls is for smtp:// only"),
        ("file://relative/folder", "absolute folder"),
        ("console://somewhere", "takes no host, path or options"),
    ],
)
def test_bad_email_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(ImproperlyConfigured, match=r"^EMAIL_URL") as refused:
        email_url_parse(url)

    assert message in str(refused.value)
    # No message quotes the URL: it may hold a password.
    assert "cret" not in str(refused.value)


@pytest.mark.parametrize("address", ["mlops@example.com", "MLOps <mlops@example.com>", "webmaster@localhost"])
def test_sender_addresses_are_accepted_bare_or_with_a_name(monkeypatch, address):
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", address)

    assert env.env_email_address("DEFAULT_FROM_EMAIL", "webmaster@localhost") == address


@pytest.mark.parametrize("address", ["mlops", "MLOps <>", "a@b.example\nBcc: x@evil.example"])
def test_bad_sender_addresses_are_refused(monkeypatch, address):
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", address)

    with pytest.raises(ImproperlyConfigured, match="DEFAULT_FROM_EMAIL must be an e-mail address"):
        env.env_email_address("DEFAULT_FROM_EMAIL", "webmaster@localhost")
