"""Tests of batch_prediction_run: results in order, the errors file, checkpoints, retries and leases."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from sklearn.datasets import load_breast_cancer

from feedback.reconcile import quality_reconcile
from ml import drift
from mlops_site import storage
from models_registry.models import ModelVersion
from monitoring.models import FeatureHourly
from predictions.batch import attempt as batch_attempt
from predictions.batch import chunks as batch_chunks
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import outputs as batch_outputs
from predictions.batch import rows as batch_rows
from predictions.batch import services as batch_services
from predictions.batch.attempt import ChunkAttempt
from predictions.models import (
    BatchPredictionChunk,
    BatchPredictionJob,
    Prediction,
    PredictionHourly,
    PredictionRequest,
)
from predictions.tests.batch_helpers import (
    Killed,
    cancer_rows,
    csv_bytes,
    expected_predictions,
    job_run,
    job_start,
    storage_keys,
    stored_csv,
)
from predictions.tests.helpers import make_model_version, trained_model

FEATURES = [c["name"] for c in trained_model("cancer").feature_schema]


def crash_once(monkeypatch, module, name: str, *, when) -> dict[str, int]:
    """Make module.<name> raise Killed the first time `when(*args, **kwargs)` holds."""
    original = getattr(module, name)
    state = {"crashed": 0}

    def wrapper(*args, **kwargs):
        if not state["crashed"] and when(*args, **kwargs):
            state["crashed"] += 1
            raise Killed(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return state


def lease_expire(job: BatchPredictionJob) -> None:
    """The job's lease runs out, and those of its chunks (their worker died with it)."""
    expired = timezone.now() - dt.timedelta(seconds=1)
    BatchPredictionJob.objects.filter(pk=job.pk).update(lease_expires_at=expired)
    BatchPredictionChunk.objects.filter(job=job, status="running").update(lease_expires_at=expired)


def result_without_ids(job: BatchPredictionJob) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "prediction_id"} for row in stored_csv(job.result_key)]


def test_the_result_repeats_every_row_in_order_with_predictions_and_probabilities(alice, cancer_v1):
    rows = cancer_rows(25)
    job = job_run(job_start(alice, csv_bytes(rows)))

    assert job.status == "succeeded"
    assert (job.rows_total, job.rows_done, job.rows_failed, job.chunks_done) == (25, 25, 0, 3)
    result = stored_csv(job.result_key)
    classes = trained_model("cancer").classes
    assert list(result[0]) == [
        "id",
        *FEATURES,
        "prediction",
        *(f"probability_{c}" for c in classes),
        "prediction_id",
        "row",
        "warnings",
    ]
    # Input values come back exactly as written, in the file's order.
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert [r[FEATURES[0]] for r in result] == [r[FEATURES[0]] for r in rows]
    assert [r["row"] for r in result] == [str(i) for i in range(1, 26)]
    labels, probabilities = expected_predictions(job, rows)
    assert [r["prediction"] for r in result] == labels
    for row, expected in zip(result, probabilities, strict=True):
        assert [float(row[f"probability_{c}"]) for c in classes] == pytest.approx(expected)


def test_every_predicted_row_is_stored_once_with_its_job_row_and_version(alice, cancer_v1):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(12))))

    stored = list(Prediction.objects.filter(batch_job=job).order_by("row_index"))
    assert [p.row_index for p in stored] == list(range(12))
    assert {(p.channel, p.user_id, p.model_version_id, p.request_id) for p in stored} == {
        ("batch", alice.pk, cancer_v1.pk, job.prediction_request_id)
    }
    result = stored_csv(job.result_key)
    assert [int(r["prediction_id"]) for r in result] == [p.pk for p in stored]
    assert [r["prediction"] for r in result] == [p.prediction for p in stored]
    classes = trained_model("cancer").classes
    first = stored[0]
    assert set(first.probabilities) == set(classes)
    assert first.probabilities[classes[0]] == pytest.approx(float(result[0][f"probability_{classes[0]}"]))
    assert first.inputs == {}
    # The label queue's confidence: the top probability, as stored.
    assert [p.confidence for p in stored] == pytest.approx([max(p.probabilities.values()) for p in stored])
    request = PredictionRequest.objects.get(pk=job.prediction_request_id)
    assert (request.channel, request.n_rows) == ("batch", 12)
    assert request.latency_ms > 0
    # Feedback coverage counts batch rows too, per version and hour.
    assert sum(PredictionHourly.objects.filter(model_version=cancer_v1).values_list("n", flat=True)) == 12


def test_a_result_file_only_job_predicts_and_counts_every_row_but_stores_none(alice, cancer_v1):
    training = load_breast_cancer(as_frame=True).frame[FEATURES]
    profile = drift.reference_profile_build(
        X_train=training,
        feature_schema=cancer_v1.feature_schema,
        task="classification",
        classes=None,
        holdout_predictions=None,
        holdout_probabilities=None,
        y_holdout=None,
    )
    ModelVersion.objects.filter(pk=cancer_v1.pk).update(reference_profile=profile)
    binned = FeatureHourly.objects.filter(source="input", feature=FEATURES[1])
    rows = cancer_rows(14)
    rows[3][FEATURES[0]] = "abc"
    stored_job = job_run(job_start(alice, csv_bytes(rows)))
    hourly_before = sum(PredictionHourly.objects.values_list("n", flat=True))
    drift_before = sum(binned.values_list("n", flat=True))
    assert drift_before == 13

    job = job_run(job_start(alice, csv_bytes(rows), store_predictions=False))

    assert (job.status, job.store_predictions, job.rows_done, job.rows_failed) == ("succeeded", False, 14, 1)
    assert not Prediction.objects.filter(batch_job=job).exists()
    result, reference = stored_csv(job.result_key), stored_csv(stored_job.result_key)
    assert [r["prediction_id"] for r in result] == [""] * 14
    ignored = {"prediction_id"}
    assert [{k: v for k, v in r.items() if k not in ignored} for r in result] == [
        {k: v for k, v in r.items() if k not in ignored} for r in reference
    ]
    assert stored_csv(job.errors_key) == stored_csv(stored_job.errors_key)
    # Volumes and drift still take the rows in; the request counts them.
    assert sum(PredictionHourly.objects.values_list("n", flat=True)) == hourly_before + 13
    assert sum(binned.values_list("n", flat=True)) == drift_before + 13
    assert PredictionRequest.objects.get(pk=job.prediction_request_id).n_rows == 13
    # The rollup check rebuilds those volumes from the job's chunks, the rows being nowhere else.
    assert None not in job.chunks.values_list("predicted_at", flat=True)
    assert quality_reconcile().differences == []


def test_ids_counted_back_from_the_last_insert_match_the_stored_rows_and_a_wrong_count_reads_them(
    alice, cancer_v1
):
    rows = cancer_rows(9)
    rows[0][FEATURES[0]] = "abc"  # refused: the first row of the file has no id
    rows[4][FEATURES[0]] = "abc"
    job = job_run(job_start(alice, csv_bytes(rows)))
    stored = np.ones(9, dtype=bool)
    stored[[0, 4]] = False
    indexes = np.arange(9)
    read = batch_rows.ids_read(job, row_indexes=indexes)
    by_row = dict(Prediction.objects.filter(batch_job=job).values_list("row_index", "id"))
    assert read.tolist() == [by_row.get(i, 0) for i in indexes]
    assert read[8] == read.max()

    assert batch_rows.ids_read(job, row_indexes=indexes, stored=stored, last_id=int(read[8])).tolist() == (
        read.tolist()
    )
    # A last id that is not the chunk's (another statement's rows, or ids with gaps): the ids are read.
    for wrong in (int(read[8]) + 1, int(read[8]) - 1):
        assert batch_rows.ids_read(job, row_indexes=indexes, stored=stored, last_id=wrong).tolist() == (
            read.tolist()
        )


def test_on_sqlite_the_chunk_ids_come_from_the_insert_and_on_postgresql_they_are_read_back(
    alice, cancer_v1, monkeypatch
):
    read: list[int] = []
    original = batch_rows.ids_read

    def counting(job, *, row_indexes, stored=None, last_id=None):
        ids = original(job, row_indexes=row_indexes, stored=stored, last_id=last_id)
        read.append(last_id)
        return ids

    monkeypatch.setattr(batch_rows, "ids_read", counting)
    job = job_run(job_start(alice, csv_bytes(cancer_rows(25))))

    stored = list(Prediction.objects.filter(batch_job=job).order_by("row_index").values_list("id", flat=True))
    assert [int(r["prediction_id"]) for r in stored_csv(job.result_key)] == stored
    assert len(read) == job.chunks_total
    # SQLite's INSERT … SELECT numbers the rows; PostgreSQL's COPY gives no last id.
    assert all((last_id is not None) == (connection.vendor == "sqlite") for last_id in read)


def test_rows_that_fail_validation_are_reported_by_row_number_and_the_rest_predicted(alice, cancer_v1):
    rows = cancer_rows(14)
    rows[2][FEATURES[0]] = "abc"
    rows[11][FEATURES[1]] = "inf"
    rows[11][FEATURES[2]] = "nan"
    rows[5][FEATURES[3]] = ""  # missing: imputed, with a warning
    job = job_run(job_start(alice, csv_bytes(rows)))

    assert (job.status, job.rows_done, job.rows_failed) == ("succeeded", 14, 2)
    errors = stored_csv(job.errors_key)
    assert [(e["row"], e["field"], e["code"]) for e in errors] == [
        ("3", FEATURES[0], "wrong_type"),
        ("12", FEATURES[1], "not_finite"),
        ("12", FEATURES[2], "not_finite"),
    ]
    assert errors[0]["message"] == f"'{FEATURES[0]}' must be a number; got 'abc'."
    assert errors[0]["value"] == "abc"
    result = stored_csv(job.result_key)
    assert len(result) == 14
    failed = [r for r in result if not r["prediction"]]
    assert [r["row"] for r in failed] == ["3", "12"]
    assert all(r["prediction_id"] == "" for r in failed)
    assert result[5]["warnings"] == f"{FEATURES[3]}: missing_value"
    assert Prediction.objects.filter(batch_job=job).count() == 12
    missing = Prediction.objects.get(batch_job=job, row_index=5)
    assert [w["code"] for w in missing.warnings] == ["missing_value"]
    valid = [r for i, r in enumerate(rows) if i not in (2, 11)]
    labels, _ = expected_predictions(job, [{**r, FEATURES[3]: r[FEATURES[3]] or "nan"} for r in valid])
    assert [r["prediction"] for r in result if r["prediction"]] == labels


def test_rows_with_the_wrong_number_of_fields_are_reported_and_do_not_shift_row_numbers(alice, cancer_v1):
    data = csv_bytes(cancer_rows(12)).decode().split("\n")
    # Line 4 (row 3) loses its last field, line 9 (row 8) gains one; a blank line sits between.
    data[3] = data[3].rsplit(",", 1)[0]
    data[8] = data[8] + ",extra"
    data.insert(6, "")
    job = job_run(job_start(alice, "\n".join(data).encode()))

    assert (job.rows_done, job.rows_failed) == (12, 2)
    errors = stored_csv(job.errors_key)
    assert [(e["row"], e["code"]) for e in errors] == [("3", "wrong_field_count"), ("8", "wrong_field_count")]
    assert errors[0]["message"].startswith(
        f"Row 3 has {len(FEATURES)} fields; the header has {len(FEATURES) + 1}."
    )
    result = stored_csv(job.result_key)
    assert [r["row"] for r in result] == ["1", "2", "4", "5", "6", "7", "9", "10", "11", "12"]
    assert [r["id"] for r in result] == [f"p-{int(r['row']) - 1}" for r in result]
    assert sorted(Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)) == [
        int(r["row"]) - 1 for r in result
    ]


def test_quoted_values_with_commas_and_line_breaks_come_back_intact(alice, cancer_v1):
    rows = cancer_rows(3)
    rows[1]["id"] = 'Doe, "Jane"\nsecond line'
    job = job_run(job_start(alice, csv_bytes(rows, newline="\r\n")))

    result = stored_csv(job.result_key)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert [r["row"] for r in result] == ["1", "2", "3"]


def test_a_regression_model_gets_a_prediction_column_and_no_probabilities(alice, db):
    diabetes = trained_model("diabetes")
    make_model_version(trained=diabetes, name="diabetes")
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.head(8)
    rows = [{k: repr(float(v)) for k, v in row.items() if k != "target"} for row in frame.to_dict("records")]
    job = job_run(job_start(alice, csv_bytes(rows), name="diabetes"))

    result = stored_csv(job.result_key)
    assert list(result[0])[-4:] == ["prediction", "prediction_id", "row", "warnings"]
    labels, probabilities = expected_predictions(job, rows)
    assert probabilities is None
    assert [float(r["prediction"]) for r in result] == pytest.approx(labels)
    stored = Prediction.objects.filter(batch_job=job).order_by("row_index")
    assert [p.probabilities for p in stored] == [None] * 8
    assert [p.confidence for p in stored] == [None] * 8
    assert [p.prediction for p in stored] == pytest.approx(labels)


def test_categories_and_unknown_categories_are_read_as_training_read_them(alice, mixed_v1):
    rows = [
        {"age": "41", "income": "61000.5", "city": "Paris"},
        {"age": "35", "income": "52000", "city": "Lisbon"},
        {"age": "", "income": "48000", "city": "NA"},
    ]
    job = job_run(job_start(alice, csv_bytes(rows), name="mixed"))

    assert job.rows_failed == 0
    result = stored_csv(job.result_key)
    assert [r["warnings"] for r in result] == [
        "",
        "city: unknown_category",
        "age: missing_value; city: missing_value",
    ]
    stored = list(Prediction.objects.filter(batch_job=job).order_by("row_index"))
    assert stored[1].warnings[0]["message"] == (
        "'city' = 'Lisbon' was not seen in training; the model treats it as none of the known categories."
    )
    from predictions import model_cache

    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(job.model_version))
    labels, _ = predictor.predict(
        [
            {"age": 41.0, "income": 61000.5, "city": "Paris"},
            {"age": 35.0, "income": 52000.0, "city": "Lisbon"},
            {"age": None, "income": 48000.0, "city": None},
        ]
    )
    assert [p.prediction for p in stored] == labels


def test_values_with_quotes_and_backslashes_are_stored_and_repeated_exactly(alice, mixed_v1):
    city = 'Lyon "centre" \\ east'
    job = job_run(
        job_start(alice, csv_bytes([{"age": "41", "income": "61000.5", "city": city}]), name="mixed")
    )

    (stored,) = Prediction.objects.filter(batch_job=job)
    assert stored.warnings[0]["message"].startswith(f"'city' = '{city}' was not seen in training")
    assert stored_csv(job.result_key)[0]["city"] == city


def test_a_file_without_one_valid_row_still_gets_a_result_and_an_errors_file(alice, cancer_v1):
    rows = cancer_rows(3)
    for row in rows:
        row[FEATURES[0]] = "n/a?"
    job = job_run(job_start(alice, csv_bytes(rows)))

    assert (job.status, job.rows_done, job.rows_failed) == ("succeeded", 3, 3)
    assert [r["prediction"] for r in stored_csv(job.result_key)] == ["", "", ""]
    assert len(stored_csv(job.errors_key)) == 3
    assert not Prediction.objects.filter(batch_job=job).exists()


def test_the_parts_are_removed_once_the_files_are_assembled(alice, cancer_v1):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(25))))

    assert storage_keys(f"batch/{job.uuid}") == {job.input_key, job.result_key, job.errors_key}
    assert stored_csv(job.errors_key) == []


def test_the_version_resolved_at_submission_predicts_even_after_a_promotion(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(4)))
    cancer_v1.stage = "archived"
    cancer_v1.save()
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2)

    job_run(job)

    assert set(Prediction.objects.filter(batch_job=job).values_list("model_version__version", flat=True)) == {
        1
    }


# ------------------------------------------------------------------------------
# Crashes, retries, leases
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "step", "when"),
    [
        # Killed before chunk 1 was read into the model (the job works from its last chunk backwards).
        (batch_chunks, "chunk_compute", lambda attempt, model, *, job, chunk: chunk.index == 1),
        # Killed inside chunk 1's transaction, after its rows were inserted: the transaction never commits.
        (batch_rows, "ids_read", lambda job, *, row_indexes, **_: row_indexes[0] == 10),
        # Killed while writing chunk 1's result part, inside its transaction.
        (batch_outputs, "object_replace", lambda key, content: key.endswith("result-000001.csv")),
        # Killed while assembling the files, after every chunk committed.
        (batch_outputs, "concatenate", lambda attempt, *, key, header, parts: True),
    ],
)
def test_a_job_killed_midway_redoes_only_the_chunk_it_was_killed_in(
    alice, cancer_v1, monkeypatch, module, step, when
):
    rows = cancer_rows(27)
    rows[13][FEATURES[0]] = "oops"
    data = csv_bytes(rows)
    reference = job_run(job_start(alice, data))
    crash = crash_once(monkeypatch, module, step, when=when)
    job = job_start(alice, data)

    with pytest.raises(Killed):
        batch_services.batch_prediction_run(job_id=job.pk)
    assert crash["crashed"] == 1
    job.refresh_from_db()
    assert job.status == "running"
    done_before = job.chunks_done
    lease_expire(job)
    job = job_run(job)

    assert (job.status, job.attempts) == ("succeeded", 2)
    assert job.chunks_done == 3
    assert done_before in (1, 3)
    # Only the chunk the worker died in was claimed twice.
    redone = 0 if done_before == 3 else 1
    assert sorted(job.chunks.values_list("attempts", flat=True)) == sorted([1, 1, 1 + redone])
    assert (job.rows_done, job.rows_failed) == (27, 1)
    stored = Prediction.objects.filter(batch_job=job)
    assert stored.count() == 26
    assert len(set(stored.values_list("row_index", flat=True))) == 26
    assert result_without_ids(job) == result_without_ids(reference)
    assert stored_csv(job.errors_key) == stored_csv(reference.errors_key)
    assert sorted(
        int(r["prediction_id"]) for r in stored_csv(job.result_key) if r["prediction_id"]
    ) == sorted(stored.values_list("pk", flat=True))


def test_a_transient_storage_error_hands_the_job_back_for_a_retry_that_resumes(alice, cancer_v1, monkeypatch):
    original = batch_outputs.object_replace
    calls = {"n": 0}

    def flaky(key, content):
        # Chunk 0 is the job's last: it works from the last chunk backwards.
        if key.endswith("result-000000.csv") and not calls["n"]:
            calls["n"] += 1
            raise storage.StorageError("storage write of part failed: timeout")
        return original(key, content)

    monkeypatch.setattr(batch_outputs, "object_replace", flaky)
    job = job_start(alice, csv_bytes(cancer_rows(25)))

    with pytest.raises(storage.StorageError):
        batch_services.batch_prediction_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.attempts) == ("running", 2, 0)
    assert job.lease_expires_at <= timezone.now()

    chunk = job.chunks.get(index=0)
    assert (chunk.status, chunk.attempts) == ("running", 0)
    job = job_run(job)
    assert (job.status, job.rows_done, job.attempts) == ("succeeded", 25, 1)
    assert Prediction.objects.filter(batch_job=job).count() == 25


def test_running_a_finished_job_again_changes_nothing(alice, cancer_v1):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(12))))
    result = storage.read_bytes(job.result_key)

    outcome = batch_services.batch_prediction_run(job_id=job.pk)

    assert outcome.status == "skipped"
    assert Prediction.objects.filter(batch_job=job).count() == 12
    assert storage.read_bytes(job.result_key) == result
    job.refresh_from_db()
    assert job.attempts == 1


def test_a_job_held_by_a_live_lease_is_not_run_a_second_time(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(5)))
    lease = timezone.now() + dt.timedelta(seconds=60)
    BatchPredictionJob.objects.filter(pk=job.pk).update(status="running", attempts=1, lease_expires_at=lease)

    outcome = batch_services.batch_prediction_run(job_id=job.pk)

    assert outcome.status == "busy"
    assert 60 <= outcome.retry_in <= 66
    job.refresh_from_db()
    assert (job.status, job.attempts, job.rows_done) == ("running", 1, 0)
    assert not Prediction.objects.filter(batch_job=job).exists()


def test_an_attempt_whose_chunk_was_taken_stores_nothing_of_it_and_leaves_it_to_the_other(
    alice, cancer_v1, monkeypatch
):
    original = ChunkAttempt.check

    def taken_over(attempt):
        if attempt.job.index == 1:
            # Between computing and storing the chunk, another worker claimed it (this attempt's lease had
            # run out) and holds it.
            BatchPredictionChunk.objects.filter(pk=attempt.job.pk).update(
                attempts=attempt.token + 1, lease_expires_at=timezone.now() + dt.timedelta(seconds=60)
            )
        return original(attempt)

    monkeypatch.setattr(ChunkAttempt, "check", taken_over)
    job = job_start(alice, csv_bytes(cancer_rows(25)))

    outcome = batch_services.batch_prediction_run(job_id=job.pk)

    # The job stored chunks 2 and 0, then waits for the other worker's chunk 1, its claim handed back.
    assert outcome.status == "waiting"
    job.refresh_from_db()
    assert (job.status, job.waiting_for_chunks, job.attempts) == ("running", True, 0)
    assert (job.chunks_done, job.rows_done) == (2, 15)
    assert sorted(Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)) == [
        *range(10),
        *range(20, 25),
    ]


def test_a_job_interrupted_too_often_is_given_up(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(5)))
    BatchPredictionJob.objects.filter(pk=job.pk).update(
        status="running", attempts=batch_job_specs.MAX_ATTEMPTS, lease_expires_at=timezone.now()
    )

    job = job_run(job)

    assert job.status == "failed"
    assert "interrupted 3 times" in job.error_message


def test_a_missing_input_file_fails_the_job_with_the_reason(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(5)))
    storage.delete(job.input_key)

    job = job_run(job)

    assert job.status == "failed"
    assert job.error_message == "The uploaded file is missing from object storage."
    assert job.finished_at is not None


def test_a_model_that_cannot_be_loaded_fails_the_job(alice, cancer_v1):
    job = job_start(alice, csv_bytes(cancer_rows(5)))
    storage.delete(cancer_v1.onnx_key)
    storage.delete(cancer_v1.skops_key)

    job = job_run(job)

    assert job.status == "failed"
    assert "missing from storage" in job.error_message


def test_an_unexpected_error_fails_the_job_with_its_message(alice, cancer_v1, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(batch_chunks, "table_validate", broken)
    job = job_run(job_start(alice, csv_bytes(cancer_rows(5))))

    assert job.status == "failed"
    assert job.error_message == "Unexpected error (ZeroDivisionError): division by zero"


def test_the_timings_cover_every_step(alice, cancer_v1):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(25))))

    assert set(job.timings) == set(batch_attempt.TIMED_STEPS)
    assert all(isinstance(v, float) and v >= 0 and math.isfinite(v) for v in job.timings.values())
    assert json.loads(json.dumps(job.timings)) == job.timings


def test_sqlite_without_json_operators_stores_the_same_rows_one_statement_per_row(
    alice, cancer_v1, monkeypatch
):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the fallback is for SQLite older than 3.38")
    rows = cancer_rows(12)
    rows[3][FEATURES[0]] = ""
    reference = job_run(job_start(alice, csv_bytes(rows)))
    monkeypatch.setattr(batch_rows, "sqlite_json_arrows", lambda: False)

    job = job_run(job_start(alice, csv_bytes(rows)))

    def stored(of):
        return list(
            Prediction.objects.filter(batch_job=of)
            .order_by("row_index")
            .values_list("row_index", "prediction", "probabilities", "warnings", "inputs")
        )

    assert stored(job) == stored(reference)
    assert len(stored(job)) == 12


def test_a_chunk_that_fails_while_computed_ahead_fails_as_its_own_and_the_job_with_it(
    alice, cancer_v1, monkeypatch
):
    """The job's attempt computes each chunk on a thread before claiming it: an error there is the chunk's
    when it is claimed, and nothing of that chunk is stored."""
    original = batch_chunks.chunk_read
    ahead = []

    def rows_lost(job, index):
        ahead.append(index)
        if index == 1:
            storage.delete(batch_outputs.input_part_key(job, index))
        return original(job, index)

    monkeypatch.setattr(batch_chunks, "chunk_read", rows_lost)
    job = job_start(alice, csv_bytes(cancer_rows(25)))

    outcome = batch_services.batch_prediction_run(job_id=job.pk)

    assert outcome.status == "failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "The rows of chunk 1 are missing from object storage."
    assert BatchPredictionChunk.objects.get(job=job, index=1).status == "failed"
    # Chunk 2 went first (the job's attempt works backwards); chunk 0 was never stored.
    assert ahead[:2] == [2, 1]
    assert sorted(Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)) == [
        *range(20, 25)
    ]
