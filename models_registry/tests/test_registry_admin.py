"""Django admin for the registry: actions call the services, refusals come back as messages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, StageTransition, Webhook
from models_registry.tests.registry_helpers import make_model, make_version
from tests.admin_helpers import messages_of, run_action

pytestmark = pytest.mark.django_db


@pytest.fixture
def churn(admin_user):
    registered = make_model("churn", min_metrics={"accuracy": {"min": 0.8}})
    make_version(registered, 1, metrics={"accuracy": 0.9})
    make_version(registered, 2, metrics={"accuracy": 0.7})
    return registered


def test_the_version_actions_promote_and_archive_through_the_service(client, admin_user, churn):
    client.force_login(admin_user)
    v1 = churn.versions.get(version=1)

    staged = run_action(client, "models_registry_modelversion", "transition_to_staging", [v1.pk])
    asked = run_action(client, "models_registry_modelversion", "transition_to_production", [v1.pk])

    assert messages_of(staged) == ["churn v1: promote to staging."]
    assert "Promote v1 to production" in asked.content.decode()
    v1.refresh_from_db()
    assert v1.stage == "staging"

    produced = run_action(
        client, "models_registry_modelversion", "transition_to_production", [v1.pk], apply="1"
    )

    assert messages_of(produced) == ["churn v1: promote to production."]
    v1.refresh_from_db()
    assert v1.stage == "production"
    recorded = list(StageTransition.objects.order_by("id").values_list("to_stage", "user__username"))
    assert recorded == [("staging", "root-admin"), ("production", "root-admin")]

    asked = run_action(client, "models_registry_modelversion", "transition_to_archived", [v1.pk])
    assert "none (no production version)" in asked.content.decode()
    archived = run_action(
        client, "models_registry_modelversion", "transition_to_archived", [v1.pk], apply="1"
    )

    assert messages_of(archived) == ["churn v1: archive."]
    v1.refresh_from_db()
    assert v1.stage == "archived"


def test_archiving_versions_outside_production_needs_no_confirmation(client, admin_user, churn):
    client.force_login(admin_user)
    v2 = churn.versions.get(version=2)

    response = run_action(client, "models_registry_modelversion", "transition_to_archived", [v2.pk])

    assert messages_of(response) == ["churn v2: archive."]


def test_a_promotion_refused_by_the_quality_gate_is_shown_as_an_error(client, admin_user, churn):
    client.force_login(admin_user)
    v2 = churn.versions.get(version=2)

    asked = run_action(client, "models_registry_modelversion", "transition_to_production", [v2.pk])
    response = run_action(
        client, "models_registry_modelversion", "transition_to_production", [v2.pk], apply="1"
    )

    assert "<strong>fails:</strong> accuracy is 0.7, below the minimum 0.8" in asked.content.decode()
    [message] = messages_of(response)
    assert message.startswith(
        "churn v2: refused by the quality gate (accuracy is 0.7, below the minimum 0.8)."
    )
    assert [m.level_tag for m in response.context["messages"]] == ["error"]
    v2.refresh_from_db()
    assert v2.stage == "none"


def test_one_action_on_several_versions_reports_each(client, admin_user, churn):
    client.force_login(admin_user)
    ids = list(churn.versions.values_list("pk", flat=True))

    response = run_action(client, "models_registry_modelversion", "transition_to_production", ids, apply="1")

    assert messages_of(response)[0] == "churn v1: promote to production."
    assert messages_of(response)[1].startswith("churn v2: refused by the quality gate")
    assert dict(ModelVersion.objects.values_list("version", "stage")) == {1: "production", 2: "none"}


def test_the_rollback_action_restores_the_previous_production_version(client, admin_user, churn):
    client.force_login(admin_user)
    v1, v2 = churn.versions.order_by("version")
    transition_services.model_version_transition(model_version=v1, to_stage="production", user=admin_user)
    transition_services.model_version_transition(
        model_version=v2, to_stage="production", user=admin_user, force=True, reason="testing"
    )

    asked = run_action(client, "models_registry_modelversion", "roll_back", [v2.pk])

    html = asked.content.decode()
    assert "<td>Roll back to v1</td>" in html
    assert "<td>passes</td>" in html
    assert dict(ModelVersion.objects.values_list("version", "stage")) == {1: "archived", 2: "production"}

    response = run_action(
        client, "models_registry_modelversion", "roll_back", [v2.pk], apply="1", reason="v2 is slow"
    )

    assert messages_of(response) == ["churn v1 is in production again."]
    assert dict(ModelVersion.objects.values_list("version", "stage")) == {1: "production", 2: "archived"}
    assert v1.transitions.order_by("id").last().reason == "v2 is slow"


def test_the_rollback_action_applies_the_gate_and_forces_with_a_reason(client, admin_user, churn):
    client.force_login(admin_user)
    v1, v2 = churn.versions.order_by("version")
    transition_services.model_version_transition(
        model_version=v2, to_stage="production", user=admin_user, force=True, reason="testing"
    )
    transition_services.model_version_transition(model_version=v1, to_stage="production", user=admin_user)

    refused = run_action(client, "models_registry_modelversion", "roll_back", [v1.pk], apply="1")
    no_reason = run_action(
        client, "models_registry_modelversion", "roll_back", [v1.pk], apply="1", force="on"
    )
    forced = run_action(
        client, "models_registry_modelversion", "roll_back", [v1.pk], apply="1", force="on", reason="v1 leaks"
    )

    assert messages_of(refused)[0].startswith("churn: refused by the quality gate (accuracy is 0.7")
    assert messages_of(no_reason) == [
        "churn: Forcing a rollback past the quality gate needs a written reason."
    ]
    assert messages_of(forced) == ["churn v2 is in production again."]
    assert v2.transitions.order_by("id").last().forced


def test_a_rollback_without_history_is_refused_with_a_message(client, admin_user, churn):
    client.force_login(admin_user)
    ids = [churn.versions.first().pk]

    asked = run_action(client, "models_registry_modelversion", "roll_back", ids)
    response = run_action(client, "models_registry_modelversion", "roll_back", ids, apply="1")

    assert "<strong>refused:</strong> Model &#x27;churn&#x27; has no earlier production version" in (
        asked.content.decode()
    )
    assert messages_of(response) == [
        "churn: Model 'churn' has no earlier production version to roll back to."
    ]


def test_versions_are_read_only_in_admin_and_cannot_be_deleted(client, admin_user, churn):
    client.force_login(admin_user)
    v1 = churn.versions.get(version=1)
    delete_url = reverse("admin:models_registry_modelversion_delete", args=[v1.pk])

    page = client.get(reverse("admin:models_registry_modelversion_change", args=[v1.pk]))

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert "deletelink" not in page.content.decode()
    assert client.get(reverse("admin:models_registry_modelversion_add")).status_code == 403
    assert (
        client.post(
            reverse("admin:models_registry_modelversion_change", args=[v1.pk]), {"stage": "production"}
        ).status_code
        == 403
    )
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    changelist = client.get(reverse("admin:models_registry_modelversion_changelist")).content.decode()
    assert "delete_selected" not in changelist
    v1.refresh_from_db()
    assert v1.stage == "none"
    assert churn.versions.count() == 2


def test_a_registered_model_is_created_with_thresholds_through_the_service(client, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:models_registry_registeredmodel_add"),
        {
            "name": "fraud",
            "description": "Card fraud",
            "task": "classification",
            "target_column": "is_fraud",
            "min_metrics": '{"roc_auc": 0.9, "log_loss": 0.4}',
            **inline_management("versions"),
            **inline_management("webhooks"),
        },
    )

    assert response.status_code == 302, response.content.decode()[-2000:]
    created = RegisteredModel.objects.get(name="fraud")
    assert created.min_metrics == {"roc_auc": {"min": 0.9}, "log_loss": {"max": 0.4}}
    assert created.created_by == admin_user


def test_bad_thresholds_are_shown_on_the_form(client, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:models_registry_registeredmodel_add"),
        {
            "name": "fraud",
            "task": "classification",
            "min_metrics": '{"rmse": 3}',
            **inline_management("versions"),
            **inline_management("webhooks"),
        },
    )

    assert response.status_code == 200
    assert "Unknown metric &#x27;rmse&#x27; for classification" in response.content.decode()
    assert not RegisteredModel.objects.exists()


def inline_management(prefix: str, total: int = 0, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_a_webhook_is_added_inline_and_its_secret_is_never_shown_again(client, admin_user, churn):
    client.force_login(admin_user)
    url = reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    versions = list(churn.versions.order_by("-version"))

    response = client.post(
        url,
        {
            "description": "",
            "min_metrics": '{"accuracy": 0.8}',
            **inline_management("versions", total=len(versions), initial=len(versions)),
            **{f"versions-{i}-id": str(v.pk) for i, v in enumerate(versions)},
            **{f"versions-{i}-registered_model": str(churn.pk) for i, v in enumerate(versions)},
            **inline_management("webhooks", total=1),
            "webhooks-0-url": "https://hooks.example.com/registry",
            "webhooks-0-events": ["version_promoted", "version_rolled_back"],
            "webhooks-0-secret": "a-long-enough-shared-secret",
            "webhooks-0-is_active": "on",
        },
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    webhook = Webhook.objects.get()
    assert webhook.events == ["version_promoted", "version_rolled_back"]
    assert webhook.secret == "a-long-enough-shared-secret"
    page = client.get(reverse("admin:models_registry_webhook_change", args=[webhook.pk])).content.decode()
    assert "a-long-enough-shared-secret" not in page
    assert "a-long-enough-shared-secret" not in client.get(url).content.decode()


def test_a_webhook_url_must_be_http_or_https(client, admin_user, churn):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:models_registry_webhook_add"),
        {
            "registered_model": churn.pk,
            "url": "ftp://hooks.example.com/a",
            "events": ["version_promoted"],
            "secret": "",
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert "Enter a valid URL." in response.content.decode()
    assert not Webhook.objects.exists()


def test_an_empty_secret_keeps_the_stored_one_and_a_short_one_is_refused(client, admin_user, churn):
    webhook = Webhook.objects.create(
        registered_model=churn,
        url="https://hooks.example.com/a",
        secret="original-secret-value",
        events=["version_promoted"],
    )
    client.force_login(admin_user)
    url = reverse("admin:models_registry_webhook_change", args=[webhook.pk])
    data = {
        "registered_model": churn.pk,
        "url": webhook.url,
        "events": ["version_archived"],
        "is_active": "on",
    }

    short = client.post(url, {**data, "secret": "short"})
    kept = client.post(url, {**data, "secret": ""})

    assert short.status_code == 200
    assert "Use at least 16 characters." in short.content.decode()
    assert kept.status_code == 302
    webhook.refresh_from_db()
    assert webhook.secret == "original-secret-value"
    assert webhook.events == ["version_archived"]


def test_deliveries_and_their_attempts_are_visible_read_only(client, admin_user, churn):
    from models_registry.models import WebhookAttempt, WebhookDelivery

    webhook = Webhook.objects.create(
        registered_model=churn,
        url="https://hooks.example.com/a",
        secret="x" * 20,
        events=["version_promoted"],
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event="version_promoted",
        payload={"data": {"version": 1}},
        status="failed",
        attempts=1,
        last_status_code=500,
        last_error="HTTP 500 Internal Server Error",
    )
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, status_code=500, error="HTTP 500 Internal Server Error", duration_ms=12
    )
    client.force_login(admin_user)

    webhook_page = client.get(
        reverse("admin:models_registry_webhook_change", args=[webhook.pk])
    ).content.decode()
    delivery_page = client.get(reverse("admin:models_registry_webhookdelivery_change", args=[delivery.pk]))

    assert "HTTP 500 Internal Server Error" in webhook_page
    assert reverse("admin:models_registry_webhookdelivery_change", args=[delivery.pk]) in webhook_page
    html = delivery_page.content.decode()
    assert delivery_page.status_code == 200
    assert 'name="_save"' not in html
    assert "HTTP 500 Internal Server Error" in html
    assert "&quot;version&quot;: 1" in html


def test_a_model_with_versions_cannot_be_deleted_in_admin_and_its_page_says_why(client, admin_user, churn):
    client.force_login(admin_user)
    delete_url = reverse("admin:models_registry_registeredmodel_delete", args=[churn.pk])

    page = client.get(
        reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    ).content.decode()
    asked = client.get(delete_url)
    posted = client.post(delete_url, {"apply": "1"}, follow=True)

    assert "deletelink" not in page
    assert "Model &#x27;churn&#x27; has 2 versions and cannot be deleted" in page
    assert asked.status_code == 409
    assert "<strong>refused:</strong> Model &#x27;churn&#x27; has 2 versions" in asked.content.decode()
    assert messages_of(posted)[0].startswith("Model 'churn' has 2 versions and cannot be deleted")
    assert RegisteredModel.objects.filter(pk=churn.pk).exists()


def test_staff_delete_a_model_without_versions_from_its_admin_page_after_confirming(client, admin_user):
    leftover = make_model("leftover")
    client.force_login(admin_user)
    delete_url = reverse("admin:models_registry_registeredmodel_delete", args=[leftover.pk])

    page = client.get(
        reverse("admin:models_registry_registeredmodel_change", args=[leftover.pk])
    ).content.decode()
    asked = client.get(delete_url)

    assert "deletelink" in page
    assert asked.status_code == 200
    assert 'value="Yes, delete leftover"' in asked.content.decode()
    assert RegisteredModel.objects.filter(pk=leftover.pk).exists()

    response = client.post(delete_url, {"apply": "1"}, follow=True)

    assert messages_of(response) == ["Model leftover deleted."]
    assert not RegisteredModel.objects.filter(pk=leftover.pk).exists()
    from django.contrib.admin.models import DELETION, LogEntry

    assert LogEntry.objects.get(action_flag=DELETION).object_repr == "leftover"


def test_the_bulk_action_deletes_models_without_versions_and_says_why_it_keeps_the_others(
    client, admin_user, churn
):
    leftover = make_model("leftover")
    client.force_login(admin_user)
    ids = [churn.pk, leftover.pk]

    changelist = client.get(reverse("admin:models_registry_registeredmodel_changelist")).content.decode()
    asked = run_action(client, "models_registry_registeredmodel", "delete_without_versions", ids)
    response = run_action(
        client, "models_registry_registeredmodel", "delete_without_versions", ids, apply="1"
    )

    assert 'value="delete_selected"' not in changelist
    html = asked.content.decode()
    assert "<td>leftover</td>\n      <td>deleted</td>" in html
    assert "<strong>refused:</strong> Model &#x27;churn&#x27; has 2 versions" in html
    assert messages_of(response)[0].startswith("Model 'churn' has 2 versions and cannot be deleted")
    assert messages_of(response)[1] == "Model leftover deleted."
    assert list(RegisteredModel.objects.values_list("name", flat=True)) == ["churn"]


def test_staff_without_the_delete_permission_cannot_delete_a_model(client, churn):
    from django.contrib.auth.models import Permission

    from tests.factories import make_user

    clerk = make_user("clerk", staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_registeredmodel", "change_registeredmodel"])
    )
    leftover = make_model("leftover")
    client.force_login(clerk)

    response = client.post(
        reverse("admin:models_registry_registeredmodel_delete", args=[leftover.pk]), {"apply": "1"}
    )

    assert response.status_code == 403
    assert RegisteredModel.objects.filter(pk=leftover.pk).exists()


def test_the_gate_field_shows_the_format_its_help_describes(client, admin_user, churn):
    client.force_login(admin_user)

    page = client.get(
        reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    ).content.decode()

    assert "{&quot;accuracy&quot;: 0.8}</textarea>" in page
    assert 'for example {"accuracy": 0.8, "log_loss": 0.5}' in page
    assert "log_loss (maximum)" in page
    assert "rmse (maximum)" in page
    assert "r2 (minimum)" in page


def test_saving_the_shown_gate_unchanged_keeps_the_stored_thresholds(client, admin_user, churn):
    client.force_login(admin_user)
    url = reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    versions = list(churn.versions.order_by("-version"))

    response = client.post(
        url,
        {
            "description": "",
            "min_metrics": '{"accuracy": 0.85}',
            **inline_management("versions", total=len(versions), initial=len(versions)),
            **{f"versions-{i}-id": str(v.pk) for i, v in enumerate(versions)},
            **{f"versions-{i}-registered_model": str(churn.pk) for i, v in enumerate(versions)},
            **inline_management("webhooks"),
        },
    )

    assert response.status_code == 302, response.content.decode()[-2000:]
    churn.refresh_from_db()
    assert churn.min_metrics == {"accuracy": {"min": 0.85}}


def test_the_triton_actions_opt_models_in_and_out_through_the_service_which_queues_the_sync(
    client, admin_user, churn, settings, django_capture_on_commit_callbacks
):
    from unittest import mock

    from models_registry import tasks

    settings.TRITON_URL = "http://triton.invalid:8000"
    other = make_model("other")
    client.force_login(admin_user)
    with mock.patch.object(tasks.triton_sync_task, "delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            response = run_action(
                client, "models_registry_registeredmodel", "triton_serve", [churn.pk, other.pk]
            )
        assert messages_of(response) == [
            "Triton serves the production version of churn, other once synced (see each model's Triton page)."
        ]
        assert set(RegisteredModel.objects.values_list("name", "serve_with_triton")) == {
            ("churn", True),
            ("other", True),
        }
        assert sorted(c.args[0] for c in delay.call_args_list) == sorted([churn.pk, other.pk])
        with django_capture_on_commit_callbacks(execute=True):
            run_action(client, "models_registry_registeredmodel", "triton_stop", [other.pk])
    assert not RegisteredModel.objects.get(pk=other.pk).serve_with_triton
    assert delay.call_count == 3
    # The change page shows the state read-only: only the actions (the service) change it.
    page = client.get(
        reverse("admin:models_registry_registeredmodel_change", args=[churn.pk])
    ).content.decode()
    assert "Triton version" in page or "triton version" in page.lower()
    assert 'name="serve_with_triton"' not in page
