"""Running feedback imports: every row checked and reported by row, valid rows stored once, counts kept."""

from __future__ import annotations

import pytest

from feedback import reconcile
from feedback.imports import chunks as import_chunks
from feedback.imports import services as import_services
from feedback.models import Feedback, FeedbackChange, QualityHourly
from feedback.tests.import_helpers import (
    csv_bytes,
    errors_rows,
    import_run,
    import_start,
    imported,
    other_label,
    predictions_of,
)
from mlops_site import storage
from predictions.tests.batch_helpers import cancer_rows, job_run, job_start
from predictions.tests.batch_helpers import csv_bytes as batch_csv
from tests.factories import make_user

pytestmark = pytest.mark.django_db

IDS = ["prediction_id", "true_label"]


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """Imports stay queued: the tests run them by hand."""
    sent: list[int] = []
    monkeypatch.setattr(import_services, "_enqueue", sent.append)
    return sent


def problems(job) -> list[tuple[int, str, str]]:
    return [(int(r["row"]), r["field"], r["code"]) for r in errors_rows(job)]


def test_a_file_of_ids_stores_every_outcome_and_counts_them(cancer_v1, alice, staff):
    predictions = predictions_of(alice, 5)
    rows = [[p.pk, p.prediction] for p in predictions]

    job = imported(staff, csv_bytes(IDS, rows))

    assert (job.rows_total, job.rows_done, job.rows_failed) == (5, 5, 0)
    assert (job.rows_created, job.rows_updated, job.rows_unchanged) == (5, 0, 0)
    assert job.errors_key == ""
    assert job.progress == 100
    assert Feedback.objects.filter(source="file", labelled_by=staff).count() == 5
    assert sum(QualityHourly.objects.values_list("n", flat=True)) == 5
    assert reconcile.quality_reconcile().differences == []


def test_every_bad_row_is_reported_by_row_and_only_the_valid_rows_are_stored(cancer_v1, alice, staff):
    a, b, c, d = predictions_of(alice, 4)
    rows = [
        [a.pk, a.prediction],  # 1: valid
        [999_999, "benign"],  # 2: no such prediction
        ["abc", "benign"],  # 3: not an id
        [b.pk, "platypus"],  # 4: not a class
        [c.pk, "nan"],  # 5: NaN is not a class either
        [a.pk, other_label(a, cancer_v1.classes)],  # 6: a named again
        [d.pk, ""],  # 7: no outcome
        [d.pk, other_label(d, cancer_v1.classes), "extra"],  # 8: a field too many
    ]

    job = imported(staff, csv_bytes(IDS, rows))

    assert (job.rows_done, job.rows_failed, job.rows_created) == (8, 7, 1)
    assert problems(job) == [
        (2, "prediction_id", "not_found"),
        (3, "prediction_id", "invalid"),
        (4, "true_label", "unknown_class"),
        (5, "true_label", "unknown_class"),
        (6, "prediction_id", "duplicate"),
        (7, "true_label", "invalid"),
        (8, "", "wrong_field_count"),
    ]
    messages = {int(r["row"]): r["message"] for r in errors_rows(job)}
    assert messages[2] == "There is no prediction 999999 you may label."
    assert messages[6] == f"Prediction {a.pk} is also named on row 1; give each prediction one outcome."
    assert messages[8] == "Row 8 has 3 fields; the header has 2. Quote values that hold commas."
    assert list(Feedback.objects.values_list("prediction_id", "true_label")) == [(a.pk, str(a.prediction))]
    assert reconcile.quality_reconcile().differences == []


def test_regression_values_must_be_finite_numbers(diabetes_v1, alice, staff):
    a, b, c, d = predictions_of(alice, 4, name="diabetes")
    rows = [[a.pk, "", "151.5"], [b.pk, "", "abc"], [c.pk, "", "NaN"], [d.pk, "high", ""]]

    job = imported(staff, csv_bytes(["prediction_id", "true_label", "true_value"], rows))

    assert (job.rows_done, job.rows_failed, job.rows_created) == (4, 3, 1)
    assert problems(job) == [
        (2, "true_value", "invalid"),
        (3, "true_value", "invalid"),
        (4, "true_label", "invalid"),
        (4, "true_value", "invalid"),
    ]
    messages = [r["message"] for r in errors_rows(job)]
    assert messages[0] == "'true_value' must be a number; got 'abc'."
    assert messages[1] == "'true_value' must be a finite number; got 'NaN'."
    assert Feedback.objects.get().true_value == 151.5


def test_a_file_of_keys_names_predictions_of_its_model_only(cancer_v1, iris_v1, alice, staff):
    cancer = predictions_of(alice, 2, keys=["k-1", "k-2"])
    predictions_of(alice, 1, name="iris", keys=["iris-1"])
    rows = [["k-1", cancer[0].prediction], ["iris-1", "setosa"], ["nobody", "benign"], ["k-2", "benign"]]

    job = imported(staff, csv_bytes(["key", "true_label"], rows), model="cancer")

    assert (job.rows_failed, job.rows_created) == (2, 2)
    assert problems(job) == [(2, "key", "not_found"), (3, "key", "not_found")]
    assert (
        errors_rows(job)[0]["message"]
        == "Model 'cancer' has no prediction with key 'iris-1' that you may label."
    )
    assert set(Feedback.objects.values_list("prediction_id", flat=True)) == {p.pk for p in cancer}


def test_a_file_of_ids_for_a_model_refuses_predictions_of_other_models(cancer_v1, iris_v1, alice, staff):
    (cancer,) = predictions_of(alice, 1)
    (iris,) = predictions_of(alice, 1, name="iris")

    job = imported(staff, csv_bytes(IDS, [[cancer.pk, "benign"], [iris.pk, "setosa"]]), model="cancer")

    assert problems(job) == [(2, "prediction_id", "other_model")]
    assert errors_rows(job)[0]["message"] == (
        f"Prediction {iris.pk} was made by model 'iris', not 'cancer' that the file is for."
    )
    assert list(Feedback.objects.values_list("prediction_id", flat=True)) == [cancer.pk]


def test_a_file_of_batch_rows_names_the_rows_of_a_batch_job(cancer_v1, alice, staff, monkeypatch):
    from predictions.batch import job_specs as batch_job_specs

    monkeypatch.setattr(batch_job_specs, "job_enqueue", lambda job_id: None)
    batch = job_run(job_start(alice, batch_csv(cancer_rows(3))))
    rows = [
        [batch.uuid, 1, "benign"],
        [batch.uuid, 3, "malignant"],
        [batch.uuid, 4, "benign"],
        ["nope", 1, "x"],
    ]

    job = imported(staff, csv_bytes(["batch_job", "row", "true_label"], rows))

    assert (job.rows_created, job.rows_failed) == (2, 2)
    assert problems(job) == [(3, "row", "not_found"), (4, "batch_job", "invalid")]
    stored = Feedback.objects.order_by("prediction__row_index").values_list(
        "prediction__row_index", "true_label"
    )
    assert list(stored) == [(0, "benign"), (2, "malignant")]


def test_duplicates_are_refused_across_chunks_whatever_the_spelling(cancer_v1, alice, staff, settings):
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = 2
    a, b, c = predictions_of(alice, 3)
    rows = [
        [a.pk, "platypus"],  # 1: refused, but it names a
        [b.pk, "benign"],  # 2
        [c.pk, "benign"],  # 3: chunk 2
        [f" 0{b.pk}", "malignant"],  # 4: b again, spelled otherwise
        [a.pk, "benign"],  # 5: chunk 3, a again
    ]

    job = imported(staff, csv_bytes(IDS, rows))

    assert (job.chunks_done, job.rows_done, job.rows_failed, job.rows_created) == (3, 5, 3, 2)
    assert problems(job) == [
        (1, "true_label", "unknown_class"),
        (4, "prediction_id", "duplicate"),
        (5, "prediction_id", "duplicate"),
    ]
    assert [r["message"] for r in errors_rows(job)][1:] == [
        f"Prediction 0{b.pk} is also named on row 2; give each prediction one outcome.",
        f"Prediction {a.pk} is also named on row 1; give each prediction one outcome.",
    ]
    assert set(Feedback.objects.values_list("prediction_id", "true_label")) == {
        (b.pk, "benign"),
        (c.pk, "benign"),
    }


def test_duplicate_keys_are_found_exactly_across_chunks(cancer_v1, alice, staff, settings):
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = 1
    predictions_of(alice, 2, keys=["K", "k"])

    job = imported(
        staff,
        csv_bytes(["key", "true_label"], [["K", "benign"], ["k", "benign"], ["K", "benign"]]),
        model="cancer",
    )

    assert problems(job) == [(3, "key", "duplicate")]
    assert (
        errors_rows(job)[0]["message"] == "Key 'K' is also named on row 1; give each prediction one outcome."
    )
    assert job.rows_created == 2


def test_blank_lines_are_not_rows_and_a_quoted_line_break_stays_in_its_row(cancer_v1, alice, staff):
    a, b = predictions_of(alice, 2)
    data = (
        f'prediction_id,true_label,comment\n\n{a.pk},benign,"two\nlines"\n   \n{b.pk},platypus,\n'
    ).encode()

    job = imported(staff, data)

    assert (job.rows_total, job.rows_done) == (2, 2)
    assert problems(job) == [(2, "true_label", "unknown_class")]
    assert Feedback.objects.get().comment == "two\nlines"


def test_importing_again_counts_unchanged_and_updated_outcomes_and_keeps_their_history(
    cancer_v1, alice, staff
):
    a, b = predictions_of(alice, 2)
    first = [[a.pk, a.prediction], [b.pk, b.prediction]]
    imported(staff, csv_bytes(IDS, first))

    job = imported(staff, csv_bytes(IDS, [[a.pk, a.prediction], [b.pk, other_label(b, cancer_v1.classes)]]))

    assert (job.rows_created, job.rows_updated, job.rows_unchanged) == (0, 1, 1)
    change = FeedbackChange.objects.get()
    assert (change.feedback.prediction_id, change.source) == (b.pk, "file")
    assert sum(QualityHourly.objects.values_list("n", flat=True)) == 2
    assert reconcile.quality_reconcile().differences == []


def test_an_empty_comment_cell_keeps_the_comment_there_is(cancer_v1, alice, staff):
    (a,) = predictions_of(alice, 1)
    header = ["prediction_id", "true_label", "comment"]
    imported(staff, csv_bytes(header, [[a.pk, a.prediction, "checked by hand"]]))

    job = imported(staff, csv_bytes(header, [[a.pk, a.prediction, "  "]]))

    assert job.rows_unchanged == 1
    assert Feedback.objects.get().comment == "checked by hand"


def test_correct_alone_in_a_file_with_a_label_column_says_right_or_wrong(cancer_v1, alice, staff):
    a, b = predictions_of(alice, 2)
    rows = [[a.pk, "", "yes"], [b.pk, "", "wrong"]]

    imported(staff, csv_bytes(["prediction_id", "true_label", "correct"], rows))

    stored = dict(Feedback.objects.values_list("prediction_id", "correct"))
    assert stored == {a.pk: True, b.pk: False}
    assert Feedback.objects.get(prediction_id=b.pk).true_label == other_label(b, cancer_v1.classes)


def test_digits_that_are_not_decimal_are_refused_by_row(cancer_v1, alice, staff):
    (a,) = predictions_of(alice, 1)

    job = imported(staff, csv_bytes(IDS, [["²", "benign"], [a.pk, "benign"]]))

    assert problems(job) == [(1, "prediction_id", "invalid")]
    assert job.rows_created == 1


def test_an_uploader_who_is_no_longer_staff_may_label_only_their_own_predictions(cancer_v1, alice, bob):
    (mine,) = predictions_of(bob, 1)
    (theirs,) = predictions_of(alice, 1)
    bob.is_staff = True
    bob.save()
    job = import_start(bob, csv_bytes(IDS, [[mine.pk, "benign"], [theirs.pk, "benign"]]))
    bob.is_staff = False
    bob.save()

    job = import_run(job)

    assert problems(job) == [(2, "prediction_id", "not_found")]
    assert list(Feedback.objects.values_list("prediction_id", flat=True)) == [mine.pk]


def test_an_import_whose_uploader_was_deleted_fails_without_storing(cancer_v1, alice):
    (a,) = predictions_of(alice, 1)
    gone = make_user("gone", staff=True)
    job = import_start(gone, csv_bytes(IDS, [[a.pk, "benign"]]))
    gone.delete()

    job = import_run(job)

    assert job.status == "failed"
    assert job.error_message == "The uploader's account was deleted; the rest of the file was not imported."
    assert not Feedback.objects.exists()


def test_a_missing_input_file_fails_the_import(cancer_v1, staff):
    job = import_start(staff, csv_bytes(IDS, [[1, "benign"]]))
    storage.delete(job.input_key)

    job = import_run(job)

    assert (job.status, job.error_message) == ("failed", "The uploaded file is missing from object storage.")


def test_the_errors_file_joins_the_chunks_parts_in_row_order_and_the_parts_are_deleted(
    cancer_v1, alice, staff, settings
):
    settings.FEEDBACK_IMPORT_CHUNK_ROWS = 2
    (a,) = predictions_of(alice, 1)
    rows = [[999_001, "benign"], [a.pk, "benign"], ["x", "benign"], [999_004, "benign"], ["", "benign"]]

    job = imported(staff, csv_bytes(IDS, rows))

    assert [int(r["row"]) for r in errors_rows(job)] == [1, 3, 4, 5]
    assert storage.read_bytes(job.errors_key).startswith(b"row,field,code,message\n")
    assert not any(storage.exists(import_chunks.part_key(job, i)) for i in range(3))
    assert job.timings.keys() >= {"scan", "read", "check", "store", "write", "wait", "finish"}
