"""Tests of drift_reports_compute_task: it runs the job, and running it twice is harmless."""

from __future__ import annotations

import pytest

from monitoring.models import DriftReport
from monitoring.tasks import drift_reports_compute_task
from monitoring.tests.drift_helpers import drift_version


@pytest.mark.django_db
def test_running_the_task_twice_leaves_one_report_per_version_and_window() -> None:
    version = drift_version()
    drift_reports_compute_task.apply()
    drift_reports_compute_task.apply()
    assert list(DriftReport.objects.values_list("model_version_id", flat=True)) == [version.pk]


def test_the_beat_runs_the_drift_job_every_hour(settings) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["drift-reports-compute"]
    assert entry["task"] == drift_reports_compute_task.name
    assert entry["schedule"].minute == {5}
    assert len(entry["schedule"].hour) == 24
