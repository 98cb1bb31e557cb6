"""Tests of the ensure_admin command that `make run` and the compose migrate service call."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tests.factories import make_user


def _run() -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ensure_admin", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_admin_variables(monkeypatch):
    for name in ("DJANGO_ADMIN_USERNAME", "DJANGO_ADMIN_PASSWORD", "DJANGO_ADMIN_EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.django_db
def test_it_creates_admin_with_a_generated_password_shown_once():
    first, _ = _run()
    second, _ = _run()

    password = re.search(r"Admin login: admin / (\S+)", first).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.is_staff
    assert admin.check_password(password)
    assert password not in second
    assert "the account exists" in second
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


@pytest.mark.django_db
def test_it_uses_the_username_password_and_email_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_ADMIN_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_ADMIN_PASSWORD", "a-long-and-unusual-passphrase-42")
    monkeypatch.setenv("DJANGO_ADMIN_EMAIL", "ops@example.com")

    out, _ = _run()

    admin = get_user_model().objects.get(username="ops")
    assert admin.is_superuser
    assert admin.email == "ops@example.com"
    assert admin.check_password("a-long-and-unusual-passphrase-42")
    assert "a-long-and-unusual-passphrase-42" not in out
    assert "DJANGO_ADMIN_PASSWORD" in out


@pytest.mark.django_db
def test_it_rejects_a_weak_password_from_the_environment_and_creates_nobody(monkeypatch):
    monkeypatch.setenv("DJANGO_ADMIN_PASSWORD", "12345")

    with pytest.raises(CommandError, match="DJANGO_ADMIN_PASSWORD is not accepted"):
        _run()

    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_it_leaves_an_existing_account_and_its_password_alone(monkeypatch):
    make_user("admin", superuser=True)
    monkeypatch.setenv("DJANGO_ADMIN_PASSWORD", "a-long-and-unusual-passphrase-42")

    out, _ = _run()

    assert "the account exists" in out
    assert (
        not get_user_model().objects.get(username="admin").check_password("a-long-and-unusual-passphrase-42")
    )


@pytest.mark.django_db
def test_it_does_not_promote_an_ordinary_account_with_the_admin_name():
    make_user("admin")

    _, err = _run()

    assert "not a superuser" in err
    assert not get_user_model().objects.get(username="admin").is_superuser
