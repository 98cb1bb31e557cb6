"""The registry pages: who may see and act, versions side by side, transitions, rollback and downloads."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from mlops_site import storage
from models_registry import services as registry_services
from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, StageTransition
from models_registry.tests.registry_helpers import make_model, make_version
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload, run_train, version_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def churn(staff):
    """v1 was in production, v2 replaced it, v3 is new and misses the accuracy gate."""
    registered = make_model("churn", created_by=staff)
    first = make_version(registered, 1, metrics={"accuracy": 0.81, "roc_auc": 0.88})
    second = make_version(registered, 2, metrics={"accuracy": 0.86, "roc_auc": 0.91})
    make_version(registered, 3, metrics={"accuracy": 0.74, "roc_auc": 0.93}, created_by=staff)
    for version in (first, second):
        transition_services.model_version_transition(model_version=version, to_stage="production", user=staff)
    registry_services.registered_model_thresholds_set(
        registered_model=registered, min_metrics={"accuracy": 0.8}
    )
    StageTransition.objects.update(created_at=timezone.now() - dt.timedelta(days=1))
    return registered


@pytest.fixture
def trained(staff):
    """A real version trained on a small slice of the breast cancer data."""
    dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)
    run = run_train(dataset, model_name="cancer", user=staff)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    return version_of(run)


def view_urls(name="churn", version=2):
    return [
        reverse("registry:model-list"),
        reverse("registry:model-detail", args=[name]),
        reverse("registry:version-detail", args=[name, version]),
    ]


def staff_urls(run_id=1, name="churn", version=2):
    return [
        reverse("training:list"),
        reverse("training:detail", args=[run_id]),
        reverse("training:status", args=[run_id]),
        reverse("registry:version-download", args=[name, version, "skops"]),
    ]


def transition(client, name, version, to_stage, **data):
    url = reverse("registry:version-transition", args=[name, version])
    return client.post(url, {"to_stage": to_stage, **data})


# ------------------------------------------------------------------------------
# Access
# ------------------------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_the_login_page(client, churn):
    posts = [
        reverse("registry:version-transition", args=["churn", 3]),
        reverse("registry:model-rollback", args=["churn"]),
        reverse("training:create"),
    ]
    for url in [*view_urls(), *staff_urls()]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login")), url
    for url in posts:
        response = client.post(url, {"to_stage": "staging"})
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login")), url
    assert StageTransition.objects.filter(model_version__version=3).count() == 0


def test_users_without_staff_status_may_view_models_but_not_act_or_train(client, alice, churn):
    client.force_login(alice)

    for url in view_urls():
        assert client.get(url).status_code == 200, url
    for url in staff_urls():
        assert client.get(url).status_code == 403, url
    assert transition(client, "churn", 3, "staging").status_code == 403
    assert transition(client, "churn", 3, "production", confirm="on").status_code == 403
    confirm_page = reverse("registry:version-transition", args=["churn", 3]) + "?to_stage=production"
    assert client.get(confirm_page).status_code == 403
    assert client.get(reverse("registry:model-rollback", args=["churn"])).status_code == 403
    assert (
        client.post(reverse("registry:model-rollback", args=["churn"]), {"confirm": "on"}).status_code == 403
    )
    assert client.post(reverse("training:create"), {}).status_code == 403
    assert ModelVersion.objects.get(version=3).stage == "none"
    assert dict(ModelVersion.objects.values_list("version", "stage"))[2] == "production"


def test_ordinary_users_see_no_action_buttons(client, alice, churn):
    client.force_login(alice)

    html = client.get(reverse("registry:model-detail", args=["churn"])).content.decode()

    assert "data-action=" not in html
    assert "Roll back" not in html
    assert "Train a new version" not in html
    assert "Delete model" not in html


def test_an_unknown_model_or_version_is_a_404(client, alice, churn):
    client.force_login(alice)

    assert client.get(reverse("registry:model-detail", args=["nope"])).status_code == 404
    assert client.get(reverse("registry:version-detail", args=["churn", 9])).status_code == 404


# ------------------------------------------------------------------------------
# What the pages show
# ------------------------------------------------------------------------------
def test_the_list_shows_each_model_with_its_production_and_latest_version(client, alice, churn):
    client.force_login(alice)

    html = client.get(reverse("registry:model-list")).content.decode()

    assert 'href="/models/churn/"' in html
    assert 'class="badge stage-production" href="/models/churn/versions/2/">v2</a>' in html
    assert 'href="/models/churn/versions/3/">v3</a>' in html


def test_a_model_without_versions_is_listed_for_staff_only(client, alice, staff, churn):
    make_model("empty-model")

    client.force_login(alice)
    for_users = client.get(reverse("registry:model-list")).content.decode()
    client.force_login(staff)
    for_staff = client.get(reverse("registry:model-list")).content.decode()

    assert 'href="/models/empty-model/"' not in for_users
    assert 'href="/models/churn/"' in for_users
    assert 'href="/models/empty-model/"' in for_staff


def test_the_model_page_shows_versions_side_by_side_with_metrics_and_stage(client, staff, churn):
    client.force_login(staff)

    response = client.get(reverse("registry:model-detail", args=["churn"]))

    html = response.content.decode()
    rows = re.findall(r'<tr class="[^"]*" data-version="(\d+)">', html)
    assert rows == ["3", "2", "1"]
    assert '<th class="num metric">Accuracy</th><th class="num metric">ROC AUC</th>' in html
    assert '<td class="num">0.8600</td>' in html
    assert '<span class="badge stage-production">Production</span>' in html
    assert "Accuracy at least <strong>0.8</strong>" in html
    # v3 misses the gate; the archived v1 can come back through a rollback from v2.
    assert 'title="accuracy is 0.74, below the minimum 0.8">fails</span>' in html
    assert "Roll back to v1" in html


def test_the_comparison_chart_holds_every_versions_metrics_and_loads_plotly_once(client, alice, churn):
    client.force_login(alice)

    response = client.get(reverse("registry:model-detail", args=["churn"]))

    html = response.content.decode()
    figure = json.loads(
        re.search(r'<script id="comparison-figure" type="application/json">(.*?)</script>', html).group(1)
    )
    bars = [trace for trace in figure["data"] if trace["type"] == "bar" and trace.get("showlegend") is False]
    assert [(trace["x"], trace["y"]) for trace in bars] == [
        (["v1", "v2", "v3"], [0.81, 0.86, 0.74]),
        (["v1", "v2", "v3"], [0.88, 0.91, 0.93]),
    ]
    titles = [annotation["text"] for annotation in figure["layout"]["annotations"]]
    assert {"Accuracy", "ROC AUC"} <= set(titles)
    assert any(shape.get("y0") == 0.8 for shape in figure["layout"]["shapes"])
    assert html.count("plotly/plotly.min.js") == 1
    assert "cdn" not in html.lower()
    assert 'data-figure="comparison-figure"' in html


def test_the_version_page_shows_artifacts_lineage_and_holdout_charts(client, staff, trained):
    client.force_login(staff)

    response = client.get(reverse("registry:version-detail", args=["cancer", trained.version]))

    html = response.content.decode()
    assert f'<code class="skops-sha256">{trained.skops_sha256}</code>' in html
    assert 'href="/datasets/cancer/versions/1/">cancer v1</a>' in html
    assert f'href="/training/{trained.training_run_id}/">run {trained.training_run_id}</a>' in html
    assert trained.mlflow_run_id in html
    assert 'id="figure-confusion_matrix"' in html
    assert 'id="figure-feature_importances"' in html
    assert html.count("plotly/plotly.min.js") == 1
    assert f'href="/models/cancer/versions/{trained.version}/files/skops"' in html


def test_staff_download_the_skops_file_with_its_checksum(client, staff, trained):
    client.force_login(staff)

    response = client.get(reverse("registry:version-download", args=["cancer", trained.version, "skops"]))

    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == storage.read_bytes(trained.skops_key)
    assert response["X-Checksum-SHA256"] == trained.skops_sha256
    assert 'filename="cancer-v1.skops"' in response["Content-Disposition"]
    assert client.get(reverse("registry:version-download", args=["cancer", 1, "pickle"])).status_code == 404


# ------------------------------------------------------------------------------
# Transitions
# ------------------------------------------------------------------------------
def test_staff_promote_a_version_to_staging_and_the_transition_is_recorded(client, staff, churn):
    client.force_login(staff)

    response = transition(client, "churn", 3, "staging", reason="try it")

    assert response.status_code == 302
    assert response.url == reverse("registry:model-detail", args=["churn"])
    [recorded] = StageTransition.objects.filter(model_version__version=3)
    assert (recorded.from_stage, recorded.to_stage, recorded.user, recorded.reason) == (
        "none",
        "staging",
        staff,
        "try it",
    )
    page = client.get(response.url).content.decode()
    assert "churn v3 promoted to staging." in page


def test_a_promotion_to_production_first_shows_what_changes_and_applies_only_when_confirmed(
    client, staff, churn
):
    registry_services.registered_model_thresholds_set(registered_model=churn, min_metrics={})
    client.force_login(staff)

    asked = transition(client, "churn", 3, "production", next="version")

    assert asked.status_code == 200
    html = asked.content.decode()
    assert "churn: Promote v3 to production?" in html
    assert re.search(r"<dd data-current>.*v2</a></dd>", html)
    assert re.search(r"<dd data-after>.*v3</a> \(v2 is archived\)</dd>", html)
    assert '<span class="badge status-succeeded">passes</span>' in html
    assert '<input type="hidden" name="confirm" value="on">' in html
    assert '<input type="hidden" name="next" value="version">' in html
    assert ModelVersion.objects.get(version=3).stage == "none"

    confirmed = transition(client, "churn", 3, "production", next="version", confirm="on", reason="better")

    assert confirmed.status_code == 302
    assert confirmed.url == reverse("registry:version-detail", args=["churn", 3])
    stages = dict(ModelVersion.objects.values_list("version", "stage"))
    assert stages == {1: "archived", 2: "archived", 3: "production"}
    assert StageTransition.objects.get(model_version__version=3).reason == "better"


def test_the_confirmation_page_can_be_opened_by_a_link(client, staff, churn):
    client.force_login(staff)
    url = reverse("registry:version-transition", args=["churn", 2]) + "?to_stage=archived"

    response = client.get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert "churn: Archive v2?" in html
    assert "none: requests for churn's production version are refused" in html
    assert ModelVersion.objects.get(version=2).stage == "production"


def test_archiving_the_production_version_asks_first_but_archiving_another_does_not(client, staff, churn):
    client.force_login(staff)

    other = transition(client, "churn", 3, "archived")
    production = transition(client, "churn", 2, "archived")

    assert other.status_code == 302
    assert production.status_code == 200
    assert dict(ModelVersion.objects.values_list("version", "stage")) == {
        1: "archived",
        2: "production",
        3: "archived",
    }
    transition(client, "churn", 2, "archived", confirm="on")
    assert ModelVersion.objects.get(version=2).stage == "archived"


def test_a_version_below_the_gate_is_shown_with_the_reasons_and_a_force_form(client, staff, churn):
    client.force_login(staff)

    response = transition(client, "churn", 3, "production")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<span class="badge status-failed">fails</span>' in html
    assert "<li>accuracy is 0.74, below the minimum 0.8</li>" in html
    assert '<input type="hidden" name="force" value="on">' in html
    assert "Force: Promote v3 to production" in html
    assert ModelVersion.objects.get(version=3).stage == "none"


def test_a_confirmed_promotion_the_gate_refuses_comes_back_with_a_409(client, staff, churn):
    client.force_login(staff)

    response = transition(client, "churn", 3, "production", confirm="on")

    assert response.status_code == 409
    html = response.content.decode()
    assert "The quality gate refuses this version" in html
    assert 'name="force" value="on"' in html
    assert ModelVersion.objects.get(version=3).stage == "none"


def test_staff_force_a_refused_promotion_with_a_written_reason(client, staff, churn):
    client.force_login(staff)

    without_reason = transition(client, "churn", 3, "production", confirm="on", force="on", reason=" ")
    assert without_reason.status_code == 400
    assert (
        "Forcing a promotion past the quality gate needs a written reason." in without_reason.content.decode()
    )
    assert ModelVersion.objects.get(version=3).stage == "none"

    response = transition(
        client, "churn", 3, "production", confirm="on", force="on", reason="Hotfix for the outage"
    )

    assert response.status_code == 302
    assert ModelVersion.objects.get(version=3).stage == "production"
    forced = StageTransition.objects.get(model_version__version=3)
    assert forced.forced
    assert forced.reason.startswith("Hotfix for the outage")
    page = client.get(response.url).content.decode()
    assert '<span class="badge forced">forced</span>' in page


def test_a_refused_transition_is_shown_as_a_message(client, staff, churn):
    client.force_login(staff)

    response = transition(client, "churn", 2, "production", next="version")

    assert response.url == reverse("registry:version-detail", args=["churn", 2])
    page = client.get(response.url).content.decode()
    assert "churn v2 is already in production." in page


def test_an_unknown_stage_is_refused_with_a_message(client, staff, churn):
    client.force_login(staff)

    response = transition(client, "churn", 3, "deleted")
    linked = client.get(reverse("registry:version-transition", args=["churn", 3]) + "?to_stage=deleted")

    page = client.get(response.url).content.decode()
    assert "Select a valid choice. deleted is not one of the available choices." in page
    assert linked.status_code == 302
    assert StageTransition.objects.filter(model_version__version=3).count() == 0


def test_staff_roll_back_after_a_confirmation_page(client, staff, churn):
    client.force_login(staff)
    url = reverse("registry:model-rollback", args=["churn"])

    asked = client.post(url)

    html = asked.content.decode()
    assert asked.status_code == 200
    assert "churn: Roll back to v1?" in html
    assert re.search(r"<dd data-current>.*v2</a></dd>", html)
    assert '<span class="badge status-succeeded">passes</span>' in html
    assert ModelVersion.objects.get(version=2).stage == "production"

    response = client.post(url, {"reason": "v2 misbehaves", "confirm": "on"})

    stages = dict(ModelVersion.objects.values_list("version", "stage"))
    assert stages == {1: "production", 2: "archived", 3: "none"}
    page = client.get(response.url).content.decode()
    assert "churn v1 is in production again." in page
    assert "v2 misbehaves" in page


def test_after_a_rollback_the_model_page_offers_to_return_the_newer_version_not_to_roll_back(
    client, staff, churn
):
    transition_services.model_version_rollback(registered_model=churn, user=staff)
    client.force_login(staff)

    html = client.get(reverse("registry:model-detail", args=["churn"])).content.decode()
    asked = client.get(reverse("registry:model-rollback", args=["churn"])).content.decode()

    assert "Return v2 to production" in html
    assert "Roll back to v2" not in html
    assert "churn: Return v2 to production?" in asked


def test_a_rollback_to_a_version_below_the_gate_needs_a_forced_reason(client, staff, churn):
    registry_services.registered_model_thresholds_set(registered_model=churn, min_metrics={"accuracy": 0.85})
    client.force_login(staff)
    url = reverse("registry:model-rollback", args=["churn"])

    asked = client.get(url).content.decode()
    refused = client.post(url, {"confirm": "on"})
    without_reason = client.post(url, {"confirm": "on", "force": "on"})

    assert "<li>accuracy is 0.81, below the minimum 0.85</li>" in asked
    assert "Force: Roll back to v1" in asked
    assert refused.status_code == 409
    assert without_reason.status_code == 400
    assert (
        "Forcing a rollback past the quality gate needs a written reason." in without_reason.content.decode()
    )
    assert ModelVersion.objects.get(version=1).stage == "archived"

    forced = client.post(url, {"confirm": "on", "force": "on", "reason": "v2 corrupts outputs"})

    assert forced.status_code == 302
    assert ModelVersion.objects.get(version=1).stage == "production"
    recorded = StageTransition.objects.filter(model_version__version=1).order_by("-id").first()
    assert (recorded.action, recorded.forced) == ("rollback", True)
    assert recorded.reason.startswith("v2 corrupts outputs")
    assert "accuracy is 0.81, below the minimum 0.85" in recorded.reason


def test_a_rollback_without_history_is_refused_with_a_message(client, staff):
    make_version(make_model("fresh"), 1)
    client.force_login(staff)

    response = client.post(reverse("registry:model-rollback", args=["fresh"]), {"confirm": "on"})

    page = client.get(response.url).content.decode()
    assert "Model &#x27;fresh&#x27; has no earlier production version to roll back to." in page
    assert "No earlier production version to roll back to." in page


# ------------------------------------------------------------------------------
# Deleting a model without versions, and training a new version
# ------------------------------------------------------------------------------
def test_staff_delete_a_model_without_versions_after_a_confirmation(client, staff):
    make_model("leftover", created_by=staff)
    client.force_login(staff)
    url = reverse("registry:model-delete", args=["leftover"])

    detail = client.get(reverse("registry:model-detail", args=["leftover"])).content.decode()
    asked = client.get(url)

    assert f'href="{url}" data-delete>Delete model</a>' in detail
    assert asked.status_code == 200
    assert "leftover has no versions." in asked.content.decode()
    assert RegisteredModel.objects.filter(name="leftover").exists()

    response = client.post(url)

    assert response.url == reverse("registry:model-list")
    assert not RegisteredModel.objects.filter(name="leftover").exists()
    assert "Model leftover deleted." in client.get(response.url).content.decode()


def test_a_model_with_versions_cannot_be_deleted_and_the_page_says_why(client, staff, churn):
    client.force_login(staff)
    url = reverse("registry:model-delete", args=["churn"])

    detail = client.get(reverse("registry:model-detail", args=["churn"])).content.decode()
    asked = client.get(url)
    posted = client.post(url)

    assert "data-delete" not in detail
    assert asked.status_code == 409
    assert "churn has 3 versions and cannot be deleted" in asked.content.decode()
    assert 'type="submit"' not in asked.content.decode().split('id="cannot-delete"')[1]
    assert posted.status_code == 409
    assert "has 3 versions and cannot be deleted" in posted.content.decode()
    assert RegisteredModel.objects.filter(name="churn").exists()


def test_ordinary_users_may_not_delete_a_model(client, alice):
    make_model("leftover")
    client.force_login(alice)
    url = reverse("registry:model-delete", args=["leftover"])

    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    assert client.post(reverse("registry:model-delete", args=["nope"])).status_code == 403
    assert RegisteredModel.objects.filter(name="leftover").exists()


def test_deleting_an_unknown_model_is_a_404(client, staff):
    client.force_login(staff)

    assert client.post(reverse("registry:model-delete", args=["nope"])).status_code == 404


def test_train_a_new_version_links_to_the_form_with_the_model_and_its_production_dataset(
    client, staff, trained
):
    client.force_login(staff)

    html = client.get(reverse("registry:model-detail", args=["cancer"])).content.decode()

    url = f"/training/?model=cancer&amp;dataset_version={trained.dataset_version_id}"
    assert f'href="{url}" data-train>Train a new version</a>' in html
    assert 'href="/models/cancer/triton" data-triton>Triton serving</a>' in html


def test_train_a_new_version_prefers_the_production_versions_dataset(client, staff, churn):
    first, second = (
        dataset_upload(cancer_frame(rows), name=f"d{rows}", target="diagnosis", user=staff)
        for rows in (40, 41)
    )
    ModelVersion.objects.filter(version=2).update(dataset_version=first)
    ModelVersion.objects.filter(version=3).update(dataset_version=second)
    client.force_login(staff)

    with_production = client.get(reverse("registry:model-detail", args=["churn"])).content.decode()
    ModelVersion.objects.filter(version=2).update(dataset_version=None)
    newest = client.get(reverse("registry:model-detail", args=["churn"])).content.decode()

    assert f"/training/?model=churn&amp;dataset_version={first.pk}" in with_production
    assert f"/training/?model=churn&amp;dataset_version={second.pk}" in newest


def test_the_model_page_queries_do_not_grow_with_the_number_of_versions(
    client, staff, churn, django_assert_max_num_queries
):
    for number in range(4, 12):
        make_version(churn, number, created_by=staff)
    client.force_login(staff)

    # Three of them read the retraining panel: the policy, the latest retraining, the newest events.
    with django_assert_max_num_queries(13):
        assert client.get(reverse("registry:model-detail", args=["churn"])).status_code == 200
