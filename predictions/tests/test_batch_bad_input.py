"""Hostile batch files through the real batch service: huge numbers and texts, NaN outputs, formulas."""

from __future__ import annotations

import numpy as np

from predictions import model_cache
from predictions.models import Prediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start, stored_csv
from predictions.tests.helpers import trained_model

FEATURES = [c["name"] for c in trained_model("cancer").feature_schema]


def test_numbers_beyond_float32_fail_their_rows_and_no_nan_is_stored(alice, cancer_v1):
    rows = cancer_rows(14)
    rows[1][FEATURES[0]] = "1e39"
    rows[4][FEATURES[1]] = "-1e39"
    rows[12][FEATURES[2]] = "1e308"
    rows[7][FEATURES[3]] = "3.4e38"  # within float32: predicted

    job = job_run(job_start(alice, csv_bytes(rows)))

    assert (job.status, job.rows_done, job.rows_failed) == ("succeeded", 14, 3)
    errors = stored_csv(job.errors_key)
    assert [(e["row"], e["field"], e["code"]) for e in errors] == [
        ("2", FEATURES[0], "too_large_number"),
        ("5", FEATURES[1], "too_large_number"),
        ("13", FEATURES[2], "too_large_number"),
    ]
    assert errors[0]["message"] == (
        f"'{FEATURES[0]}' = 1e39 is beyond the largest number the model can represent "
        "(±3.402823e+38, float32)."
    )
    stored = Prediction.objects.filter(batch_job=job)
    assert stored.count() == 11
    for prediction in stored:
        assert all(np.isfinite(list(prediction.probabilities.values())))


def test_a_category_longer_than_the_limit_fails_its_row_with_the_value_cut_short(alice, mixed_v1, settings):
    settings.PREDICTION_MAX_TEXT_CHARS = 100
    rows = [
        {"age": "41", "income": "61000.5", "city": "Paris"},
        {"age": "35", "income": "52000", "city": "x" * 100_000},
        {"age": "30", "income": "50000", "city": "y" * 100},
    ]

    job = job_run(job_start(alice, csv_bytes(rows), name="mixed"))

    assert (job.status, job.rows_failed) == ("succeeded", 1)
    (error,) = stored_csv(job.errors_key)
    assert (error["row"], error["field"], error["code"]) == ("2", "city", "too_long_text")
    assert error["message"] == "'city' is 100000 characters long; at most 100 characters are accepted."
    assert len(error["value"]) == 40
    assert sorted(Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)) == [0, 2]


def test_rows_a_model_gives_nan_probabilities_for_fail_and_are_never_stored(alice, cancer_v1, monkeypatch):
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(cancer_v1))
    real = predictor.predict_columns
    marker = 17.25

    def nan_for_marked_rows(columns):
        labels, probabilities = real(columns)
        for position in np.flatnonzero(columns[FEATURES[0]] == marker):
            probabilities[position] = [float("nan")] * len(probabilities[position])
        return labels, probabilities

    monkeypatch.setattr(predictor, "predict_columns", nan_for_marked_rows)
    rows = cancer_rows(14)
    rows[3][FEATURES[0]] = rows[11][FEATURES[0]] = str(marker)

    job = job_run(job_start(alice, csv_bytes(rows)))

    assert (job.status, job.rows_failed) == ("succeeded", 2)
    errors = stored_csv(job.errors_key)
    assert [(e["row"], e["code"]) for e in errors] == [
        ("4", "not_finite_output"),
        ("12", "not_finite_output"),
    ]
    assert sorted(Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)) == [
        i for i in range(14) if i not in (3, 11)
    ]
    result = stored_csv(job.result_key)
    assert [r["row"] for r in result if not r["prediction"]] == ["4", "12"]
    probabilities = [v for r in result for k, v in r.items() if k.startswith("probability_") and v]
    assert len(probabilities) == 12 * 2
    assert all(np.isfinite(float(v)) for v in probabilities)


def test_cells_that_would_run_as_spreadsheet_formulas_are_quoted_in_result_and_errors_files(alice, mixed_v1):
    rows = [
        {"note": '=HYPERLINK("http://evil","x")', "age": "41", "income": "61000.5", "city": "@SUM(A1)"},
        {"note": "+cmd", "age": "-5", "income": "-1.5e3", "city": "\tParis"},
        {"note": "plain", "age": "=1+1", "income": "52000", "city": "Rome"},
    ]

    job = job_run(job_start(alice, csv_bytes(rows), name="mixed"))

    result = stored_csv(job.result_key)
    assert [r["note"] for r in result] == ['\'=HYPERLINK("http://evil","x")', "'+cmd", "plain"]
    assert [r["city"] for r in result] == ["'@SUM(A1)", "'\tParis", "Rome"]
    assert [(r["age"], r["income"]) for r in result[:2]] == [("41", "61000.5"), ("-5", "-1.5e3")]
    (error,) = stored_csv(job.errors_key)
    assert (error["row"], error["field"], error["value"]) == ("3", "age", "'=1+1")
    assert error["message"] == "'age' must be a number; got '=1+1'."
    stored = Prediction.objects.get(batch_job=job, row_index=0)
    assert stored.warnings[0]["message"].startswith("'city' = '@SUM(A1)'")
