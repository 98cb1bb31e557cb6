"""A webhook's generated secret is shown once after saving, and staff can rotate it (shown once too)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from models_registry import webhook_services
from models_registry.models import Webhook, WebhookDelivery
from models_registry.tests.registry_helpers import make_model
from models_registry.tests.test_registry_admin import inline_management
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def churn(admin_user):
    return make_model("churn")


@pytest.fixture
def webhook(churn):
    return Webhook.objects.create(
        registered_model=churn,
        url="https://hooks.example.com/a",
        secret="original-secret-value",
        events=["version_promoted"],
    )


def shown_secrets(response) -> list[str]:
    return re.findall(r'<code class="secret"[^>]*>([^<]+)</code>', response.content.decode())


def test_a_secret_generated_for_a_new_webhook_is_shown_once_after_saving(client, admin_user, churn):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:models_registry_webhook_add"),
        {
            "registered_model": churn.pk,
            "url": "https://hooks.example.com/a",
            "events": ["version_promoted"],
            "is_active": "on",
        },
    )

    webhook = Webhook.objects.get()
    assert response.status_code == 200
    assert shown_secrets(response) == [webhook.secret]
    assert len(webhook.secret) >= 32
    html = response.content.decode()
    assert "it is not shown again" in html
    assert "X-MLOps-Signature" in html
    assert "no-store" in response["Cache-Control"]
    continue_url = re.search(r'<a class="button" href="([^"]+)">Continue</a>', html).group(1)
    assert continue_url == reverse("admin:models_registry_webhook_changelist")
    assert webhook.secret not in client.get(continue_url).content.decode()
    assert (
        webhook.secret
        not in client.get(reverse("admin:models_registry_webhook_change", args=[webhook.pk])).content.decode()
    )


def test_a_secret_typed_in_is_not_shown_back(client, admin_user, churn):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:models_registry_webhook_add"),
        {
            "registered_model": churn.pk,
            "url": "https://hooks.example.com/a",
            "events": ["version_promoted"],
            "secret": "a-long-enough-shared-secret",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    assert Webhook.objects.get().secret == "a-long-enough-shared-secret"


def test_a_secret_generated_for_a_webhook_added_inline_is_shown_once(client, admin_user, churn):
    client.force_login(admin_user)
    url = reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])

    response = client.post(
        url,
        {
            "description": "",
            "min_metrics": "{}",
            **inline_management("versions"),
            **inline_management("webhooks", total=1),
            "webhooks-0-url": "https://hooks.example.com/registry",
            "webhooks-0-events": ["version_promoted"],
            "webhooks-0-secret": "",
            "webhooks-0-is_active": "on",
        },
    )

    webhook = Webhook.objects.get()
    assert response.status_code == 200, response.content.decode()[-2000:]
    assert shown_secrets(response) == [webhook.secret]
    assert webhook.secret not in client.get(url).content.decode()


def test_staff_rotate_a_secret_after_a_confirmation_and_see_the_new_one_once(client, admin_user, webhook):
    WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={})
    client.force_login(admin_user)
    change = reverse("admin:models_registry_webhook_change", args=[webhook.pk])
    url = reverse("admin:models_registry_webhook_rotate_secret", args=[webhook.pk])

    page = client.get(change).content.decode()
    asked = client.get(url)

    assert f'href="{url}" class="rotate-secret">Rotate the secret</a>' in page
    assert asked.status_code == 200
    assert "including the 1 waiting to be sent or retried" in asked.content.decode()
    webhook.refresh_from_db()
    assert webhook.secret == "original-secret-value"

    rotated = client.post(url)

    webhook.refresh_from_db()
    assert rotated.status_code == 200
    assert webhook.secret != "original-secret-value"
    assert shown_secrets(rotated) == [webhook.secret]
    assert "no-store" in rotated["Cache-Control"]
    assert webhook.secret not in client.get(change).content.decode()


def test_the_rotate_link_is_on_the_models_inline_too(client, admin_user, churn, webhook):
    client.force_login(admin_user)

    page = client.get(
        reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    ).content.decode()

    assert reverse("admin:models_registry_webhook_rotate_secret", args=[webhook.pk]) in page


def test_rotating_needs_the_change_permission(client, webhook):
    from django.contrib.auth.models import Permission

    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhook"))
    client.force_login(viewer)
    url = reverse("admin:models_registry_webhook_rotate_secret", args=[webhook.pk])

    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    webhook.refresh_from_db()
    assert webhook.secret == "original-secret-value"


def test_users_without_staff_status_are_sent_to_the_admin_login(client, alice, webhook):
    client.force_login(alice)

    response = client.post(reverse("admin:models_registry_webhook_rotate_secret", args=[webhook.pk]))

    assert response.status_code == 302
    assert "/login/" in response.url
    webhook.refresh_from_db()
    assert webhook.secret == "original-secret-value"


def test_rotating_an_unknown_webhook_goes_back_to_the_list(client, admin_user):
    client.force_login(admin_user)

    response = client.post(reverse("admin:models_registry_webhook_rotate_secret", args=[999]))

    assert response.status_code == 302


def test_each_rotation_stores_a_new_random_secret(webhook):
    secret = webhook_services.webhook_secret_rotate(webhook=webhook)

    webhook.refresh_from_db()
    assert webhook.secret == secret != "original-secret-value"
    assert len(secret) >= 40
    assert webhook_services.webhook_secret_rotate(webhook=webhook) != secret
