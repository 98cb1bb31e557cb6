"""objects_insert stores what bulk_create stores, on SQLite and (in the service run) PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction
from django.utils import timezone

from mlops_site import inserts
from predictions.models import Channel, Prediction, PredictionRequest
from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_user

pytestmark = pytest.mark.django_db

FIELDS = (
    "request_id",
    "row_index",
    "user_id",
    "model_version_id",
    "channel",
    "batch_job_id",
    "inputs",
    "prediction",
    "probabilities",
    "warnings",
    "confidence",
    "created_at",
)


@pytest.fixture
def version():
    return make_model_version(trained=trained_model("iris"), name="iris")


def _requests(version, user, *names: str) -> list[PredictionRequest]:
    return [
        PredictionRequest(
            request_id=name, user=user, channel=Channel.API, model_version=version, n_rows=2, latency_ms=1.5
        )
        for name in names
    ]


def _predictions(request: PredictionRequest, count: int, *, at: dt.datetime) -> list[Prediction]:
    texts = ["plain", 'quote " and \\ backslash', "ünïcode ✓", ""]
    return [
        Prediction(
            request=request,
            row_index=index,
            user=request.user,
            model_version=request.model_version,
            channel=request.channel,
            inputs={"petal length (cm)": 1.5 + index, "note": texts[index % len(texts)], "gap": None},
            prediction="setosa" if index % 2 else 2,
            probabilities=None if index % 3 == 0 else {"setosa": 0.25, "versicolor": 0.75},
            confidence=None if index % 3 == 0 else 0.75,
            warnings=[{"field": "x", "message": "imputed"}] if index == 1 else [],
            created_at=at,
        )
        for index in range(count)
    ]


def _stored(ids: list[int]) -> list[tuple]:
    return list(
        Prediction.objects.filter(pk__in=ids)
        .order_by("request__request_id", "row_index")
        .values_list("request__request_id", *FIELDS[1:])
    )


def test_the_rows_read_back_equal_those_bulk_create_stores(version):
    user = make_user("ana")
    at = timezone.now().replace(microsecond=123456)
    ours, theirs = _requests(version, user, "ours"), _requests(version, user, "theirs")
    before = timezone.now()
    inserts.objects_insert(ours)
    PredictionRequest.objects.bulk_create(theirs)
    mine = inserts.objects_insert(_predictions(ours[0], 7, at=at))
    other = Prediction.objects.bulk_create(_predictions(theirs[0], 7, at=at))

    assert all(p.pk and not p._state.adding and p._state.db == "default" for p in [*mine, *ours])
    # auto_now_add is applied as the ORM applies it.
    assert ours[0].created_at >= before
    assert PredictionRequest.objects.get(pk=ours[0].pk).created_at == ours[0].created_at
    stored_mine = _stored([p.pk for p in mine])
    stored_theirs = _stored([p.pk for p in other])
    assert [row[1:] for row in stored_mine] == [row[1:] for row in stored_theirs]
    assert stored_mine[1][8] == {"setosa": 0.25, "versicolor": 0.75}
    assert stored_mine[0][6]["note"] == "plain"
    # The ids returned are the rows' own, in order.
    assert [Prediction.objects.get(pk=p.pk).row_index for p in mine] == list(range(7))


def test_more_rows_than_one_statement_takes_are_inserted_in_several(version, monkeypatch):
    monkeypatch.setattr(inserts, "MAX_ROWS", 3)
    (request,) = inserts.objects_insert(_requests(version, None, "many"))
    stored = inserts.objects_insert(_predictions(request, 8, at=timezone.now()))

    assert len({p.pk for p in stored}) == 8
    assert list(
        Prediction.objects.filter(request=request).order_by("pk").values_list("row_index", flat=True)
    ) == list(range(8))


def test_nothing_to_insert_runs_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert inserts.objects_insert([]) == []


def test_a_database_that_returns_no_ids_gets_bulk_create(version, monkeypatch):
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    (request,) = inserts.objects_insert(_requests(version, None, "fallback"))

    assert PredictionRequest.objects.filter(request_id="fallback").count() == 1
    if request.pk is not None:  # bulk_create sets it where the database tells it
        assert PredictionRequest.objects.get(pk=request.pk).request_id == "fallback"


def test_a_failing_row_inserts_nothing_of_its_statement(version):
    (request,) = inserts.objects_insert(_requests(version, None, "dup"))
    rows = _predictions(request, 3, at=timezone.now())
    rows[2].row_index = 0  # the same (request, row_index) twice: the unique constraint refuses it
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        inserts.objects_insert(rows)
    assert not Prediction.objects.filter(request=request).exists()


def _family(version, user, name: str, count: int, *, at: dt.datetime):
    (request,) = _requests(version, user, name)
    return request, lambda parent: _predictions(parent, count, at=at)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # outside any transaction, as a web request stores
def test_family_insert_stores_the_request_and_its_rows_as_bulk_create_does(
    version, django_assert_num_queries
):
    user = make_user("ana")
    at = timezone.now().replace(microsecond=123456)
    parent, rows = _family(version, user, "ours", 7, at=at)
    (theirs,) = PredictionRequest.objects.bulk_create(_requests(version, user, "theirs"))
    before = timezone.now()

    with django_assert_num_queries(1):
        mine = inserts.family_insert(parent, rows, link="request")
    other = Prediction.objects.bulk_create(_predictions(theirs, 7, at=at))

    assert parent.pk
    assert not parent._state.adding
    assert PredictionRequest.objects.get(pk=parent.pk).created_at == parent.created_at >= before
    assert all(p.pk and p.request_id == parent.pk and p.request is parent for p in mine)
    assert [row[1:] for row in _stored([p.pk for p in mine])] == [
        row[1:] for row in _stored([p.pk for p in other])
    ]
    # Each returned id is its own row's.
    assert [Prediction.objects.get(pk=p.pk).row_index for p in mine] == list(range(7))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failing_family_insert_stores_neither_the_request_nor_any_row(version):
    from django.db import IntegrityError

    parent, rows = _family(version, None, "half", 3, at=timezone.now())

    def clashing(request):
        built = rows(request)
        built[2].row_index = 0  # the same (request, row_index) twice
        return built

    with pytest.raises(IntegrityError):
        inserts.family_insert(parent, clashing, link="request")
    assert not PredictionRequest.objects.filter(request_id="half").exists()
    assert not Prediction.objects.filter(request__request_id="half").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_family_insert_can_commit_without_waiting_for_the_disk_for_its_own_statement_only(version):
    parent, rows = _family(version, None, "relaxed", 2, at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        before = cursor.fetchone()[0]
        cursor.execute("SET synchronous_commit TO on")
    try:
        inserts.family_insert(parent, rows, link="request", synchronous_commit=False)
        statement = inserts._family_statement(PredictionRequest, Prediction, "request", 2, "default", True)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            after = cursor.fetchone()[0]
            # What the statement's own transaction commits with: the setting its CROSS JOIN makes.
            cursor.execute(
                "SELECT current_setting('synchronous_commit') "
                "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS s"
            )
            during = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SET synchronous_commit TO {before}")

    assert "set_config('synchronous_commit', 'off', true)" in statement
    assert during == "off"
    assert after == "on"
    assert Prediction.objects.filter(request=parent).count() == 2


def test_family_insert_needs_postgresql(version):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite's answer")
    parent, rows = _family(version, None, "sqlite", 1, at=timezone.now())
    with pytest.raises(ValueError, match="PostgreSQL"):
        inserts.family_insert(parent, rows, link="request")
    assert not PredictionRequest.objects.filter(request_id="sqlite").exists()
