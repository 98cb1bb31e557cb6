"""Sign-in limits on every login path: per account and per client, refused unchecked while locked."""

from __future__ import annotations

import logging
import re
import time

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import SignInEvent
from accounts.tests.helpers import Clock
from mlops_site.tests.helpers import error_body
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed sign-in attempts for this account or from your address; try again in"
ADMIN_LOGIN = "/admin/login/"
TOKEN = "/api/auth/token/"


@pytest.fixture(autouse=True)
def clock(settings, monkeypatch) -> Clock:
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_CLIENT_FAILURE_LIMIT = 10
    settings.LOGIN_LOCKOUT_MINUTES = 15
    made = Clock(15 * 60)
    monkeypatch.setattr(time, "time", made)
    return made


@pytest.fixture(autouse=True)
def _api_rates(monkeypatch):
    # The API's own rate limits stay out of the way of these tests.
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {"anon": "1000/minute", "user": "1000/minute", "auth": "1000/minute"},
    )


def _page_login(client, username: str, password: str, *, address: str = "127.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def _admin_login(client, username: str, password: str):
    return client.post(ADMIN_LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_the_login_page_refuses_the_right_password_once_the_account_is_locked(client, alice):
    for _ in range(3):
        assert "didn't match" in _page_login(client, "alice", "wrong").content.decode()

    response = _page_login(client, "alice", PASSWORD)

    assert response.status_code == 200
    assert f"{LOCKED} 15 minutes." in response.content.decode()
    assert "didn't match" not in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_account_is_allowed_again_once_the_lockout_has_passed(client, alice, clock):
    for _ in range(3):
        _page_login(client, "alice", "wrong")
    clock.advance(10 * 60)
    assert LOCKED + " 5 minutes." in _page_login(client, "alice", PASSWORD).content.decode()

    clock.advance(5 * 60 + 1)
    response = _page_login(client, "alice", PASSWORD)

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_account_lock_holds_from_every_address(client, alice):
    for number in range(3):
        _page_login(client, "alice", "wrong", address=f"198.51.100.{number}")

    response = _page_login(client, "alice", PASSWORD, address="203.0.113.50")

    assert LOCKED in response.content.decode()


def test_the_admin_login_locks_the_account_too(client, staff):
    for _ in range(3):
        assert _admin_login(client, staff.username, "wrong").status_code == 200

    response = _admin_login(client, staff.username, PASSWORD)

    assert response.status_code == 200
    assert f'<p class="errornote">\n    {LOCKED} 15 minutes.\n</p>' in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_failures_on_one_login_path_lock_the_others(client, api_client, staff):
    _page_login(client, staff.username, "wrong")
    _admin_login(client, staff.username, "wrong")
    api_client.post(TOKEN, {"username": staff.username, "password": "wrong"})

    assert LOCKED in _admin_login(client, staff.username, PASSWORD).content.decode()
    assert api_client.post(TOKEN, {"username": staff.username, "password": PASSWORD}).status_code == 429


def test_the_token_endpoint_answers_429_with_retry_after_while_the_account_is_locked(
    api_client, alice, clock
):
    for _ in range(3):
        assert api_client.post(TOKEN, {"username": "alice", "password": "wrong"}).status_code == 401

    response = api_client.post(TOKEN, {"username": "alice", "password": PASSWORD})

    body = error_body(response, 429, "sign_in_locked")
    assert body["detail"] == f"{LOCKED} 15 minutes."
    assert int(response["Retry-After"]) == 15 * 60
    assert not Token.objects.filter(user=alice).exists()
    clock.advance(15 * 60 + 1)
    assert api_client.post(TOKEN, {"username": "alice", "password": PASSWORD}).status_code == 200


def test_one_client_is_locked_after_failing_on_many_accounts(client, settings, alice):
    settings.LOGIN_CLIENT_FAILURE_LIMIT = 4
    for number in range(4):
        _page_login(client, f"guess-{number}", "wrong", address="198.51.100.7")

    refused = _page_login(client, "alice", PASSWORD, address="198.51.100.7")
    elsewhere = _page_login(client, "alice", PASSWORD, address="203.0.113.8")

    assert LOCKED in refused.content.decode()
    assert elsewhere.status_code == 302


def test_a_forwarded_header_does_not_escape_the_client_lock(client, settings, alice):
    settings.LOGIN_CLIENT_FAILURE_LIMIT = 4
    settings.TRUSTED_PROXIES = []
    for number in range(4):
        client.post(
            reverse("login"),
            {"username": f"guess-{number}", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=f"192.0.2.{number}",
        )

    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="192.0.2.99"
    )

    assert LOCKED in response.content.decode()


def test_a_successful_login_does_not_reset_the_client_s_failures_on_other_accounts(
    client, settings, alice, bob
):
    settings.LOGIN_CLIENT_FAILURE_LIMIT = 3
    _page_login(client, "guess-1", "wrong")
    _page_login(client, "guess-2", "wrong")
    assert _page_login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    _page_login(client, "guess-3", "wrong")

    response = _page_login(client, "bob", PASSWORD)

    assert LOCKED in response.content.decode()


def test_a_successful_login_clears_the_account_s_own_failures(client, alice):
    _page_login(client, "alice", "wrong")
    _page_login(client, "alice", "wrong")
    assert _page_login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    _page_login(client, "alice", "wrong")
    _page_login(client, "alice", "wrong")
    assert _page_login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    for _ in range(3):
        _page_login(client, "alice", "wrong")

    assert LOCKED in _page_login(client, "alice", PASSWORD).content.decode()


def _errors(response) -> list[str]:
    return re.findall(r'<p class="error"[^>]*>(.*?)</p>', response.content.decode())


def test_unknown_and_existing_accounts_get_the_same_answers(client, alice):
    answers = {}
    for username in ("alice", "nobody-by-this-name"):
        wrong = [
            (response.status_code, _errors(response))
            for response in (_page_login(client, username, "wrong") for _ in range(3))
        ]
        locked = _page_login(client, username, PASSWORD)
        answers[username] = (wrong, locked.status_code, _errors(locked))

    assert answers["alice"] == answers["nobody-by-this-name"]
    assert answers["alice"][2] == [f"{LOCKED} 15 minutes."]


def test_account_names_are_counted_whatever_their_case(client, alice):
    for username in ("alice", "ALICE", "Alice"):
        _page_login(client, username, "wrong")

    assert LOCKED in _page_login(client, "alice", PASSWORD).content.decode()


def test_every_attempt_is_audited_with_its_outcome_path_and_address(client, alice, caplog):
    caplog.set_level(logging.INFO, logger="mlops.audit")
    _page_login(client, "alice", "wrong", address="198.51.100.4")
    _page_login(client, "alice", PASSWORD, address="198.51.100.4")
    client.logout()
    for _ in range(3):
        _page_login(client, "nobody", "wrong", address="198.51.100.4")
    _page_login(client, "nobody", "wrong", address="198.51.100.4")

    events = list(
        SignInEvent.objects.order_by("id").values_list(
            "username", "user", "outcome", "client_address", "path"
        )
    )

    login = reverse("login")
    assert events == [
        ("alice", None, "failed", "198.51.100.4", login),
        ("alice", alice.pk, "succeeded", "198.51.100.4", login),
        ("nobody", None, "failed", "198.51.100.4", login),
        ("nobody", None, "failed", "198.51.100.4", login),
        ("nobody", None, "failed", "198.51.100.4", login),
        ("nobody", None, "locked_out", "198.51.100.4", login),
    ]
    audit_lines = [record.getMessage() for record in caplog.records if record.name == "mlops.audit"]
    assert len(audit_lines) == 6
    assert (
        audit_lines[-1] == "sign-in locked_out username='nobody' address=198.51.100.4 path=/accounts/login/"
    )


def test_the_token_endpoint_and_the_admin_are_audited_with_their_paths(client, api_client, staff):
    api_client.post(TOKEN, {"username": staff.username, "password": "wrong"})
    _admin_login(client, staff.username, PASSWORD)

    assert list(SignInEvent.objects.order_by("id").values_list("path", "outcome")) == [
        (TOKEN, "failed"),
        (ADMIN_LOGIN, "succeeded"),
    ]


def test_the_audit_trail_is_read_only_in_the_admin(client, admin_user, alice):
    _page_login(client, "alice", "wrong")
    client.force_login(admin_user)
    event = SignInEvent.objects.get()

    listing = client.get("/admin/accounts/signinevent/")
    detail = client.get(f"/admin/accounts/signinevent/{event.pk}/change/")

    assert listing.status_code == 200
    assert "alice" in listing.content.decode()
    assert detail.status_code == 200
    assert client.get("/admin/accounts/signinevent/add/").status_code == 403
    assert client.post(f"/admin/accounts/signinevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403


def test_with_the_cache_down_logins_still_work_and_a_warning_is_logged(
    cache_down, client, api_client, alice, caplog
):
    for _ in range(5):
        assert "didn't match" in _page_login(client, "alice", "wrong").content.decode()

    page = _page_login(client, "alice", PASSWORD)
    api = api_client.post(TOKEN, {"username": "alice", "password": PASSWORD})

    assert page.status_code == 302
    assert api.status_code == 200
    assert "sign-in limits unavailable" in caplog.text
    assert SignInEvent.objects.filter(outcome="succeeded").count() == 2
