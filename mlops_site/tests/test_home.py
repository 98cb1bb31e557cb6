"""The home page: models to predict with, one's own recent predictions and those awaiting feedback; staff
cards for models, training, datasets and the label queue; a fixed number of queries."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from feedback import services as feedback_services
from feedback.models import Source
from mlops_site import home
from models_registry.models import RegisteredModel
from predictions.tests.helpers import make_model_version, make_predictions, trained_model
from training import services as training_services
from training.tests.helpers import dataset_upload, iris_frame

pytestmark = pytest.mark.django_db

HOME = "/"


@pytest.fixture
def cancer_v1(db):
    return make_model_version(trained=trained_model("cancer"), name="cancer", version=1)


def prediction_ids(html: str, section: str) -> set[int]:
    """The predictions a section of the page links to."""
    part = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
    return {int(pk) for pk in re.findall(r'href="/predictions/(\d+)/', part)}


def label(prediction_id: int, user) -> None:
    feedback_services.feedback_give(
        prediction_id=prediction_id, user=user, source=Source.PAGE, data={"correct": True}
    )


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get(HOME)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_the_home_page_answers_only_get(client, alice):
    client.force_login(alice)

    assert client.post(HOME).status_code == 405


def test_an_ordinary_user_sees_the_models_to_predict_with_and_the_api_cards(client, alice, cancer_v1):
    make_model_version(trained=trained_model("cancer"), name="cancer-draft", version=1, stage="staging")
    client.force_login(alice)

    html = client.get(HOME).content.decode()

    assert f'href="{reverse("predictions:predict", args=["cancer"])}"' in html
    assert 'data-model="cancer-draft"' not in html
    assert reverse("accounts:token") in html
    assert reverse("swagger-ui") in html
    assert 'id="staff"' not in html
    assert reverse("admin:index") not in html


def test_without_a_production_model_the_page_says_how_one_appears(client, alice, staff):
    client.force_login(alice)
    ordinary = client.get(HOME).content.decode()
    client.force_login(staff)
    for_staff = client.get(HOME).content.decode()

    assert "Models appear here once staff promote a version to production." in ordinary
    assert "You have made no prediction yet." in ordinary
    assert f'href="{reverse("training:list")}"' in for_staff


def test_an_ordinary_users_home_shows_only_their_own_predictions(client, alice, bob, cancer_v1):
    mine = make_predictions(user=alice, count=2)
    theirs = make_predictions(user=bob, count=3)
    client.force_login(alice)

    html = client.get(HOME).content.decode()

    assert prediction_ids(html, "recent-predictions") == {p.pk for p in mine}
    assert prediction_ids(html, "awaiting-feedback") == {p.pk for p in mine}
    assert not {p.pk for p in theirs} & (
        prediction_ids(html, "recent-predictions") | prediction_ids(html, "awaiting-feedback")
    )
    assert "<strong>2</strong> of your predictions have no outcome yet." in html


def test_staff_also_see_only_their_own_predictions_on_their_home(client, alice, staff, cancer_v1):
    make_predictions(user=alice, count=2)
    own = make_predictions(user=staff, count=1)
    client.force_login(staff)

    html = client.get(HOME).content.decode()

    assert prediction_ids(html, "recent-predictions") == {own[0].pk}
    assert "<strong>1</strong> of your predictions has no outcome yet." in html


def test_recent_predictions_are_the_newest_few_with_their_outcome(client, alice, cancer_v1):
    made = make_predictions(user=alice, count=home.RECENT_PREDICTIONS + 2)
    label(made[-1].pk, alice)
    client.force_login(alice)

    response = client.get(HOME)

    assert [p.pk for p in response.context["home"].recent] == sorted((p.pk for p in made), reverse=True)[
        : home.RECENT_PREDICTIONS
    ]
    assert 'class="outcome is-right" data-outcome>Right<' in response.content.decode()
    assert f'href="{reverse("predictions:list")}"' in response.content.decode()


def test_what_awaits_feedback_is_counted_listed_and_linked_to_the_filtered_history(client, alice, cancer_v1):
    made = make_predictions(user=alice, count=home.AWAITING_SHOWN + 3)
    label(made[0].pk, alice)
    client.force_login(alice)

    response = client.get(HOME)

    page = response.context["home"]
    html = response.content.decode()
    assert page.awaiting_count == len(made) - 1
    assert len(page.awaiting) == home.AWAITING_SHOWN
    assert made[0].pk not in prediction_ids(html, "awaiting-feedback")
    assert f'href="{reverse("predictions:list")}?feedback=unlabelled"' in html
    newest = page.awaiting[0]
    assert f'action="{reverse("feedback:give", args=[newest.pk])}"' in html
    assert '<input type="hidden" name="next" value="/">' in html


def test_feedback_given_from_the_home_page_comes_back_to_it_with_one_less_waiting(client, alice, cancer_v1):
    first, second = make_predictions(user=alice, count=2)
    client.force_login(alice)

    response = client.post(
        reverse("feedback:give", args=[second.pk]), {"verdict": "right", "next": HOME}, follow=True
    )

    assert response.redirect_chain == [(HOME, 302)]
    assert response.context["home"].awaiting_count == 1
    assert prediction_ids(response.content.decode(), "awaiting-feedback") == {first.pk}
    assert "Feedback saved." in response.content.decode()


def test_with_every_prediction_labelled_nothing_is_waiting(client, alice, cancer_v1):
    (made,) = make_predictions(user=alice, count=1)
    label(made.pk, alice)
    client.force_login(alice)

    html = client.get(HOME).content.decode()

    assert "Nothing is waiting: every prediction of yours has its outcome." in html


def test_staff_see_cards_for_models_training_datasets_and_the_label_queue(client, staff, alice, cancer_v1):
    make_predictions(user=alice, count=3)
    labelled = make_predictions(user=staff, count=1)[0]
    label(labelled.pk, staff)
    iris = dataset_upload(iris_frame(), name="iris", target="species", user=staff)
    run = training_services.training_run_create(
        dataset_version=iris, model_name="iris", algorithm="random_forest", params={}, created_by=staff
    )
    client.force_login(staff)

    response = client.get(HOME)

    html = response.content.decode()
    models = RegisteredModel.objects.count()
    assert f'href="{reverse("registry:model-list")}"' in html
    assert f"{models} registered model{'s' if models != 1 else ''}, 1 in production." in html
    assert f'href="{reverse("training:detail", args=[run.pk])}"' in html
    assert "1 run queued or running." in html
    assert f'href="{reverse("datasets:list")}"' in html
    assert "1 dataset." in html
    # Alice's three predictions wait for a label; staff's own labelled one does not.
    assert f'href="{reverse("feedback:label-queue", args=["cancer"])}"' in html
    assert re.search(r'data-queue="cancer">cancer v1</a>: 3 unlabelled', html)
    assert reverse("admin:index") in html


def test_the_label_queue_card_lists_every_production_model_even_with_nothing_to_label(
    client, staff, cancer_v1
):
    make_model_version(trained=trained_model("iris"), name="iris", version=1)
    client.force_login(staff)

    queues = client.get(HOME).context["home"].staff.label_queues

    assert [(q.version.registered_model.name, q.unlabelled) for q in queues] == [("cancer", 0), ("iris", 0)]


def test_ordinary_users_get_no_staff_cards(client, alice, cancer_v1):
    client.force_login(alice)

    response = client.get(HOME)

    assert response.context["home"].staff is None
    html = response.content.decode()
    assert 'id="card-label-queue"' not in html
    assert f'href="{reverse("datasets:list")}"' not in html


@pytest.mark.parametrize(
    ("user_fixture", "queries"),
    [
        # session, user; production versions, recent, awaiting (list and count)
        ("alice", 6),
        # the same, then models, runs (list and active count), datasets and the label queue counts
        ("staff", 11),
    ],
)
def test_the_home_page_needs_the_same_queries_for_any_amount_of_data(
    request, client, cancer_v1, user_fixture, queries, django_assert_num_queries
):
    user = request.getfixturevalue(user_fixture)
    make_model_version(trained=trained_model("iris"), name="iris", version=1)
    make_predictions(user=user, count=12)
    make_predictions(user=user, count=12, name="iris")
    for name in ("iris-a", "iris-b"):
        version = dataset_upload(iris_frame(), name=name, target="species")
        training_services.training_run_create(
            dataset_version=version, model_name=name, algorithm="random_forest", params={}, created_by=None
        )
    client.force_login(user)

    with django_assert_num_queries(queries):
        response = client.get(HOME)

    assert response.status_code == 200
    assert response.context["home"].awaiting_count == 24
