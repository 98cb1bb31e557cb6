"""Password reset: one mail with a working link, the same answer for unknown addresses, and the truth when
the mail could not be sent or the site sends no e-mail."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator

import pytest
from django.core import mail
from django.urls import reverse

from accounts import views

pytestmark = pytest.mark.django_db

URL = "/accounts/password_reset/"
SMTP = "django.core.mail.backends.smtp.EmailBackend"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def smtp_at(settings):
    def point(port: int) -> None:
        settings.EMAIL_BACKEND = SMTP
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = port
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_USE_SSL = False

    return point


def test_the_url_names_point_at_the_reset_pages():
    assert reverse("password_reset") == URL
    assert reverse("password_reset_done") == "/accounts/password_reset/done/"


def test_the_reset_page_has_the_site_s_look(client):
    response = client.get(URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="topbar"' in html
    assert "Reset your password" in html
    assert 'type="email"' in html
    assert f'href="{reverse("login")}"' in html


def test_a_known_address_gets_one_mail_whose_link_sets_a_new_password(client, alice, settings):
    settings.SITE_NAME = "Acme MLOps"

    response = client.post(URL, {"email": "alice@example.com"})

    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Reset your password on Acme MLOps"
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert "alice" in message.body
    link = re.search(r"http://testserver(/accounts/reset/\S+/\S+/)", message.body).group(1)

    form_page = client.get(link, follow=True)
    assert "Choose a new password" in form_page.content.decode()
    set_password_url = form_page.redirect_chain[-1][0]
    done = client.post(
        set_password_url, {"new_password1": "a-brand-new-pass-42", "new_password2": "a-brand-new-pass-42"}
    )

    assert done["Location"] == reverse("password_reset_complete")
    alice.refresh_from_db()
    assert alice.check_password("a-brand-new-pass-42")
    again = client.get(link, follow=True)
    assert "This link does not work" in again.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client, alice):
    known = client.post(URL, {"email": "alice@example.com"}, follow=True)
    mail.outbox.clear()

    unknown = client.post(URL, {"email": "nobody@example.com"}, follow=True)

    assert unknown.redirect_chain == known.redirect_chain
    assert unknown.content == known.content
    assert "If an account uses the address you gave" in unknown.content.decode()
    assert mail.outbox == []


def test_a_malformed_address_is_refused_with_the_field_named(client, alice):
    response = client.post(URL, {"email": "not an address"})

    assert response.status_code == 200
    assert "Enter a valid email address." in response.content.decode()
    assert mail.outbox == []


def test_a_refused_connection_is_reported_honestly_and_logged(client, alice, smtp_at, closed_port, caplog):
    smtp_at(closed_port)

    with caplog.at_level(logging.ERROR, logger="accounts.services"):
        response = client.post(URL, {"email": "alice@example.com"})

    html = response.content.decode()
    assert response.status_code == 503
    assert "could not be sent" in html
    assert "ask an administrator" in html
    assert "we've sent" not in html.lower()
    assert 'value="alice@example.com"' in html
    [record] = [r for r in caplog.records if r.name == "accounts.services"]
    assert "password reset e-mail to user" in record.getMessage()
    assert "ConnectionRefusedError" in record.getMessage()


def test_a_mail_server_that_never_answers_fails_within_the_timeout(
    client, alice, smtp_at, silent_server, settings
):
    smtp_at(silent_server)
    settings.EMAIL_TIMEOUT = 1
    started = time.monotonic()

    response = client.post(URL, {"email": "alice@example.com"})

    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert views.EMAIL_NOT_SENT.split(":")[0] in response.content.decode()


def test_an_unknown_address_looks_the_same_while_sending_fails(client, alice, smtp_at, closed_port):
    smtp_at(closed_port)

    response = client.post(URL, {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")


def test_with_e_mail_off_the_page_says_to_ask_an_administrator_and_sends_nothing(client, alice, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"

    page = client.get(URL)
    posted = client.post(URL, {"email": "alice@example.com"})

    assert "send no e-mail" in page.content.decode()
    assert 'type="email"' not in page.content.decode()
    assert posted.status_code == 503
    assert "Ask an administrator" in posted.content.decode()


def test_with_console_mail_the_done_page_says_where_the_mail_went(client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

    response = client.get(reverse("password_reset_done"))

    html = response.content.decode()
    assert "web server's output" in html
    assert "we've sent" not in html


def test_a_broken_reset_link_says_so_and_offers_a_new_one(client, alice):
    response = client.get("/accounts/reset/MQ/not-a-token/")

    html = response.content.decode()
    assert "This link does not work" in html
    assert f'href="{URL}"' in html
