"""Limits on password reset requests: per client and per e-mail address, refused unsent with a 429."""

from __future__ import annotations

import logging
import re
import time

import pytest
from django.core import mail

from accounts.tests.helpers import Clock

pytestmark = pytest.mark.django_db

URL = "/accounts/password_reset/"
REFUSED = "Too many password reset requests for this e-mail address or from your network; no e-mail was sent."


@pytest.fixture(autouse=True)
def clock(settings, monkeypatch) -> Clock:
    settings.PASSWORD_RESET_CLIENT_LIMIT = 10
    settings.PASSWORD_RESET_ADDRESS_LIMIT = 3
    made = Clock(3600)
    monkeypatch.setattr(time, "time", made)
    return made


def _ask(client, email: str, *, address: str = "127.0.0.1", **extra):
    return client.post(URL, {"email": email}, REMOTE_ADDR=address, **extra)


def _errors(response) -> list[str]:
    return re.findall(r'<p class="error"[^>]*>(.*?)</p>', response.content.decode())


def _page_text(response) -> str:
    """The page without its CSRF token, which differs on every answer."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())


def _assert_refused(response, *, minutes: int = 60) -> None:
    assert response.status_code == 429
    assert _errors(response) == [f"{REFUSED} Try again in {minutes} minutes."]
    assert (minutes - 1) * 60 < int(response["Retry-After"]) <= minutes * 60


def test_a_client_over_its_limit_is_refused_with_429_and_no_mail(client, settings, alice):
    settings.PASSWORD_RESET_ADDRESS_LIMIT = 100
    settings.PASSWORD_RESET_CLIENT_LIMIT = 3
    for _ in range(3):
        assert _ask(client, "alice@example.com").status_code == 302
    assert len(mail.outbox) == 3

    response = _ask(client, "alice@example.com")

    _assert_refused(response)
    assert 'value="alice@example.com"' in response.content.decode()
    assert len(mail.outbox) == 3
    assert _ask(client, "alice@example.com", address="203.0.113.9").status_code == 302


def test_the_client_limit_counts_requests_for_every_address(client, settings, alice):
    settings.PASSWORD_RESET_CLIENT_LIMIT = 3
    for number in range(3):
        _ask(client, f"someone-{number}@example.com")

    _assert_refused(_ask(client, "alice@example.com"))
    assert mail.outbox == []


def test_the_address_limit_holds_across_client_addresses(client, alice):
    for number in range(3):
        assert _ask(client, "alice@example.com", address=f"198.51.100.{number}").status_code == 302

    response = _ask(client, "alice@example.com", address="203.0.113.50")

    _assert_refused(response)
    assert len(mail.outbox) == 3
    assert _ask(client, "bob@example.com", address="203.0.113.50").status_code == 302


def test_an_address_is_counted_whatever_its_case_or_spaces(client, alice):
    for email in ("alice@example.com", "ALICE@example.com", " Alice@Example.COM "):
        assert _ask(client, email).status_code == 302

    _assert_refused(_ask(client, "alice@EXAMPLE.com"))
    assert len(mail.outbox) == 3


def test_an_unknown_address_is_counted_and_answered_like_a_known_one(client, alice):
    answers = {}
    for email in ("alice@example.com", "nobody@example.com"):
        allowed = [_ask(client, email) for _ in range(3)]
        refused = _ask(client, email)
        _assert_refused(refused)
        answers[email] = (
            [(response.status_code, response["Location"]) for response in allowed],
            _page_text(refused).replace(email, "ADDRESS"),
        )

    assert answers["alice@example.com"] == answers["nobody@example.com"]
    assert [message.to for message in mail.outbox] == [["alice@example.com"]] * 3


def test_the_limit_ends_with_its_hour(client, alice, clock):
    for _ in range(3):
        _ask(client, "alice@example.com")
    clock.advance(20 * 60)
    _assert_refused(_ask(client, "alice@example.com"), minutes=40)

    clock.advance(40 * 60)
    response = _ask(client, "alice@example.com")

    assert response.status_code == 302
    assert len(mail.outbox) == 4


def test_a_forwarded_header_from_an_untrusted_peer_does_not_escape_the_client_limit(client, settings):
    settings.PASSWORD_RESET_CLIENT_LIMIT = 3
    settings.TRUSTED_PROXIES = []
    for number in range(3):
        _ask(client, f"someone-{number}@example.com", HTTP_X_FORWARDED_FOR=f"192.0.2.{number}")

    _assert_refused(_ask(client, "other@example.com", HTTP_X_FORWARDED_FOR="192.0.2.99"))


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(client, settings):
    settings.PASSWORD_RESET_CLIENT_LIMIT = 3
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    for number in range(3):
        _ask(client, f"someone-{number}@example.com", address="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.1")

    refused = _ask(client, "other@example.com", address="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.1")
    other_client = _ask(client, "other@example.com", address="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.2")

    _assert_refused(refused)
    assert other_client.status_code == 302


def test_a_client_over_its_limit_does_not_use_up_the_limits_of_the_addresses_it_asks_for(
    client, settings, alice
):
    settings.PASSWORD_RESET_CLIENT_LIMIT = 1
    _ask(client, "someone@example.com", address="198.51.100.1")
    for _ in range(5):
        _assert_refused(_ask(client, "alice@example.com", address="198.51.100.1"))

    response = _ask(client, "alice@example.com", address="203.0.113.2")

    assert response.status_code == 302
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]


def test_a_refusal_is_logged_on_the_audit_logger_without_the_address_asked_for(client, caplog):
    caplog.set_level(logging.INFO, logger="mlops.audit")
    for _ in range(4):
        _ask(client, "nobody@example.com", address="198.51.100.4")

    lines = [record.getMessage() for record in caplog.records if record.name == "mlops.audit"]

    assert lines == ["password reset refused limit=email address=198.51.100.4 path=/accounts/password_reset/"]


def test_a_malformed_address_is_not_counted(client, settings, alice):
    settings.PASSWORD_RESET_CLIENT_LIMIT = 1
    for _ in range(3):
        assert _ask(client, "not an address").status_code == 200

    assert _ask(client, "alice@example.com").status_code == 302


def test_with_the_cache_down_reset_mails_are_still_sent_and_a_warning_is_logged(
    cache_down, client, alice, caplog
):
    responses = [_ask(client, "alice@example.com") for _ in range(5)]

    assert [response.status_code for response in responses] == [302] * 5
    assert len(mail.outbox) == 5
    assert "password reset limits unavailable (count), attempt allowed unlimited" in caplog.text
