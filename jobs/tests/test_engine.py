"""Tests of the leased-job engine on training-run rows: claim, fence, renew, release, fail, stale requeue."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import OperationalError
from django.db.models import Q
from django.utils import timezone

from datasets.models import Dataset, DatasetVersion
from jobs import engine
from models_registry.models import RegisteredModel
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

LEASE = 60


@pytest.fixture
def sent() -> list[int]:
    return []


@pytest.fixture
def abandoned() -> list[int]:
    return []


@pytest.fixture
def spec(sent, abandoned) -> engine.JobSpec[TrainingRun]:
    """A spec of the engine's own, on the training-run table: no training code runs in these tests."""
    return engine.JobSpec(
        model=TrainingRun,
        label="training run",
        noun="run",
        enqueue=sent.append,
        lease_seconds=LEASE,
        renew_seconds=30,
        max_attempts=3,
        stale_queued_minutes=15,
        select_related=("registered_model",),
        claimed_fields={"progress_message": "Starting"},
        failed_fields={"progress_message": "Failed"},
        abandon=lambda job: abandoned.append(job.pk),
    )


def job_make(**fields) -> TrainingRun:
    dataset, _ = Dataset.objects.get_or_create(name="cancer", defaults={"target_column": "diagnosis"})
    version, _ = DatasetVersion.objects.get_or_create(
        dataset=dataset,
        version=1,
        defaults={
            "sha256": "0" * 64,
            "object_key": "datasets/0.csv",
            "size_bytes": 1,
            "schema": {"columns": [], "target_column": "diagnosis"},
            "profile": {},
            "row_count": 1,
            "column_count": 1,
        },
    )
    registered, _ = RegisteredModel.objects.get_or_create(name="cancer")
    job = TrainingRun.objects.create(
        dataset_version=version, registered_model=registered, target_column="diagnosis", algorithm="ridge"
    )
    if fields:
        TrainingRun.objects.filter(pk=job.pk).update(**fields)
        job.refresh_from_db()
    return job


@pytest.fixture
def job() -> TrainingRun:
    return job_make()


def in_seconds(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def claimed(spec, job) -> engine.Attempt[TrainingRun]:
    attempt = engine.job_claim(spec, job_id=job.pk)
    assert isinstance(attempt, engine.Attempt), attempt
    return attempt


def test_a_queued_job_is_claimed_by_the_first_attempt_under_a_lease(spec, job):
    before = timezone.now()

    attempt = claimed(spec, job)

    job.refresh_from_db()
    assert (job.status, job.attempts, attempt.token) == ("running", 1, 1)
    assert before + timedelta(seconds=LEASE) <= job.lease_expires_at <= in_seconds(LEASE)
    assert before <= job.started_at <= timezone.now()
    assert job.progress_message == "Starting"
    assert attempt.job.registered_model.name == "cancer"


def test_a_job_held_by_a_live_attempt_is_busy_until_its_lease_runs_out(spec, job):
    lease = in_seconds(60)
    TrainingRun.objects.filter(pk=job.pk).update(status="running", attempts=1, lease_expires_at=lease)
    work = mock.Mock()

    outcome = engine.job_run(spec, job_id=job.pk, work=work)

    work.assert_not_called()
    assert outcome.status == "busy"
    assert 60 <= outcome.retry_in <= 70
    job.refresh_from_db()
    assert (job.status, job.attempts, job.lease_expires_at) == ("running", 1, lease)


def test_a_job_whose_lease_ran_out_is_claimed_by_the_next_attempt(spec, job):
    started = timezone.now() - timedelta(minutes=5)
    TrainingRun.objects.filter(pk=job.pk).update(
        status="running", attempts=1, lease_expires_at=in_seconds(-1), started_at=started
    )

    attempt = claimed(spec, job)

    job.refresh_from_db()
    assert (job.attempts, attempt.token) == (2, 2)
    assert job.lease_expires_at > timezone.now()
    assert job.started_at == started


def test_a_running_job_without_a_lease_can_be_claimed(spec, job):
    TrainingRun.objects.filter(pk=job.pk).update(status="running", attempts=1, lease_expires_at=None)

    assert claimed(spec, job).token == 2


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_finished_job_is_skipped(spec, job, status):
    TrainingRun.objects.filter(pk=job.pk).update(status=status, attempts=1)

    outcome = engine.job_claim(spec, job_id=job.pk)

    assert outcome == engine.JobOutcome("skipped", message=f"Training run {job.pk} already {status}.")
    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)


def test_a_missing_job_is_skipped(spec):
    assert engine.job_claim(spec, job_id=999_999) == engine.JobOutcome(
        "skipped", message="There is no training run 999999."
    )


def test_running_a_job_twice_does_its_work_once(spec, job):
    work = mock.Mock(side_effect=lambda attempt: attempt.succeed(progress=100))

    first = engine.job_run(spec, job_id=job.pk, work=work)
    finished_at = TrainingRun.objects.get(pk=job.pk).finished_at
    second = engine.job_run(spec, job_id=job.pk, work=work)

    assert (first.status, second.status) == ("succeeded", "skipped")
    work.assert_called_once()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.finished_at) == ("succeeded", 1, 100, finished_at)
    assert job.lease_expires_at is None


def test_an_attempt_whose_job_was_claimed_again_is_fenced_out_of_every_write(spec, job):
    first = claimed(spec, job)
    TrainingRun.objects.filter(pk=job.pk).update(lease_expires_at=in_seconds(-1))
    second = claimed(spec, job)

    with pytest.raises(engine.LeaseLost, match=f"training run {job.pk}: attempt 1 lost its lease"):
        first.write(progress=50)
    with pytest.raises(engine.LeaseLost):
        first.renew(force=True)
    with pytest.raises(engine.LeaseLost):
        first.succeed()
    assert first.fail("too late") == engine.JobOutcome("lost", message="Another attempt took over the run.")
    first.release("too late")

    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.error_message) == ("running", 2, 0, "")
    assert job.lease_expires_at > timezone.now()
    second.write(progress=50)
    assert TrainingRun.objects.get(pk=job.pk).progress == 50


def test_the_work_stops_without_touching_the_job_when_its_lease_is_lost(spec, job, abandoned):
    undo = mock.Mock()

    def taken_over(attempt):
        TrainingRun.objects.filter(pk=job.pk).update(attempts=2)
        attempt.write(progress=10)

    outcome = engine.job_run(spec, job_id=job.pk, work=taken_over, undo=undo)

    assert outcome == engine.JobOutcome("lost", message="Another attempt took over the run.")
    undo.assert_not_called()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.error_message) == ("running", 2, 0, "")


def test_a_condition_of_the_job_s_own_joins_the_fence(spec, job):
    attempt = claimed(spec, job)

    with pytest.raises(engine.LeaseLost):
        attempt.write(only_if=Q(progress=5), progress=10)
    attempt.write(only_if=Q(progress=0), progress=10)

    assert TrainingRun.objects.get(pk=job.pk).progress == 10


def test_renewing_writes_at_most_once_per_renew_seconds_unless_forced(spec, job):
    attempt = claimed(spec, job)
    short = in_seconds(5)
    TrainingRun.objects.filter(pk=job.pk).update(lease_expires_at=short)

    attempt.renew()
    assert TrainingRun.objects.get(pk=job.pk).lease_expires_at == short

    attempt.renew(force=True)
    assert TrainingRun.objects.get(pk=job.pk).lease_expires_at > in_seconds(LEASE - 5)

    spec.renew_seconds = 0
    TrainingRun.objects.filter(pk=job.pk).update(lease_expires_at=short)
    attempt.renew()
    assert TrainingRun.objects.get(pk=job.pk).lease_expires_at > in_seconds(LEASE - 5)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_renews_the_lease_while_a_long_step_runs(spec, job):
    spec.lease_seconds, spec.renew_seconds = 1, 0.1
    attempt = claimed(spec, job)
    claimed_until = TrainingRun.objects.get(pk=job.pk).lease_expires_at

    with attempt.heartbeat():
        time.sleep(1.5)
        # Longer than the lease: only the heartbeat keeps another attempt from taking the job now.
        assert engine.job_claim(spec, job_id=job.pk).status == "busy"
        renewed_until = TrainingRun.objects.get(pk=job.pk).lease_expires_at

    assert renewed_until > claimed_until + timedelta(seconds=1)
    attempt.check()


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_marks_the_attempt_lost_when_another_took_the_job(spec, job):
    spec.renew_seconds = 0.05
    attempt = claimed(spec, job)

    with attempt.heartbeat():
        TrainingRun.objects.filter(pk=job.pk).update(attempts=2)
        time.sleep(0.5)

    with pytest.raises(engine.LeaseLost):
        attempt.check()
    with pytest.raises(engine.LeaseLost):
        attempt.renew()


def test_releasing_hands_the_job_back_and_takes_the_claim_back(spec, job):
    attempt = claimed(spec, job)

    attempt.release("Waiting to retry: storage is down")

    job.refresh_from_db()
    assert (job.status, job.attempts) == ("running", 0)
    assert job.lease_expires_at <= timezone.now()
    assert claimed(spec, job).token == 1


def test_a_transient_error_undoes_the_attempt_releases_the_job_and_is_raised(spec, job):
    undo = mock.Mock()

    def down(attempt):
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError):
        engine.job_run(spec, job_id=job.pk, work=down, undo=undo)

    undo.assert_called_once()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_message) == ("running", 0, "")
    assert job.lease_expires_at <= timezone.now()


def test_an_error_with_a_known_reason_fails_the_job_with_that_reason(spec, job, abandoned):
    undo = mock.Mock()

    def bad_input(attempt):
        raise ValueError("the target has one class")

    outcome = engine.job_run(
        spec, job_id=job.pk, work=bad_input, reason=lambda exc: f"Bad input: {exc}", undo=undo
    )

    assert outcome == engine.JobOutcome("failed", message="Bad input: the target has one class")
    undo.assert_called_once()
    job.refresh_from_db()
    assert (job.status, job.error_message, job.progress_message) == (
        "failed",
        "Bad input: the target has one class",
        "Failed",
    )
    assert job.finished_at is not None
    assert job.lease_expires_at is None
    assert abandoned == []


def test_an_unexpected_error_fails_the_job_naming_the_error(spec, job):
    def broken(attempt):
        raise KeyError("columns")

    outcome = engine.job_run(spec, job_id=job.pk, work=broken)

    assert outcome.status == "failed"
    assert TrainingRun.objects.get(pk=job.pk).error_message == "Unexpected error (KeyError): 'columns'"


def test_the_reason_of_a_failure_is_cut_to_the_stored_length(spec, job):
    attempt = claimed(spec, job)

    attempt.fail("x" * 5000)

    assert len(TrainingRun.objects.get(pk=job.pk).error_message) == engine.ERROR_MESSAGE_MAX_LENGTH


def test_a_job_claimed_more_than_max_attempts_times_is_failed_before_its_work(spec, job, abandoned):
    TrainingRun.objects.filter(pk=job.pk).update(
        status="running", attempts=spec.max_attempts, lease_expires_at=in_seconds(-1)
    )
    work = mock.Mock()

    outcome = engine.job_run(spec, job_id=job.pk, work=work)

    work.assert_not_called()
    assert outcome.status == "failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == (
        "The run was interrupted 3 times (the worker stopped or ran out of memory) and was given up."
    )
    assert abandoned == [job.pk]


@pytest.mark.parametrize(("status", "lease"), [("queued", None), ("running", -1), ("running", None)])
def test_failing_a_job_no_live_attempt_holds_marks_it_and_abandons_it(spec, abandoned, status, lease):
    job = job_make(status=status, lease_expires_at=None if lease is None else in_seconds(lease))

    assert engine.job_fail(spec, job_id=job.pk, message="Gave up after 7 attempts") is True

    job.refresh_from_db()
    assert (job.status, job.error_message, job.progress_message) == (
        "failed",
        "Gave up after 7 attempts",
        "Failed",
    )
    assert abandoned == [job.pk]


def test_marking_failed_leaves_a_job_held_by_a_live_attempt_alone(spec, job, abandoned):
    TrainingRun.objects.filter(pk=job.pk).update(
        status="running", attempts=1, lease_expires_at=in_seconds(30)
    )

    assert engine.job_fail(spec, job_id=job.pk, message="gave up") is False

    job.refresh_from_db()
    assert job.status == "running"
    assert abandoned == []


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_marking_failed_leaves_a_finished_job_alone(spec, job, status):
    TrainingRun.objects.filter(pk=job.pk).update(status=status, error_message="")

    assert engine.job_fail(spec, job_id=job.pk, message="gave up") is False
    assert TrainingRun.objects.get(pk=job.pk).status == status


def test_stale_jobs_are_sent_again_and_live_ones_left_alone(spec, sent):
    old = timezone.now() - timedelta(minutes=spec.stale_queued_minutes + 1)
    queued_long = job_make(created_at=old)
    queued_now = job_make()
    dead = job_make(status="running", attempts=1, lease_expires_at=timezone.now())
    released = job_make(status="running", attempts=0, lease_expires_at=timezone.now())
    alive = job_make(status="running", attempts=1, lease_expires_at=in_seconds(60))
    done = job_make(status="succeeded", created_at=old)

    requeued = engine.jobs_stale_requeue(spec)

    assert sorted(requeued) == sorted([queued_long.pk, dead.pk, released.pk]) == sorted(sent)
    assert not {queued_now.pk, alive.pk, done.pk} & set(requeued)


def test_the_stale_sweep_gives_up_a_job_whose_worker_died_max_attempts_times(spec, sent, abandoned):
    dying = job_make(status="running", attempts=spec.max_attempts - 1, lease_expires_at=timezone.now())
    dead = job_make(status="running", attempts=spec.max_attempts, lease_expires_at=timezone.now())

    assert engine.jobs_stale_requeue(spec) == [dying.pk]

    assert sent == [dying.pk]
    dead.refresh_from_db()
    assert dead.status == "failed"
    assert "interrupted 3 times" in dead.error_message
    assert abandoned == [dead.pk]


def test_sweeping_twice_sends_a_job_twice_but_only_one_attempt_claims_it(spec, sent):
    job = job_make(status="running", attempts=1, lease_expires_at=timezone.now())

    engine.jobs_stale_requeue(spec)
    engine.jobs_stale_requeue(spec)
    outcomes = [engine.job_claim(spec, job_id=job_id) for job_id in sent]

    assert sent == [job.pk, job.pk]
    assert isinstance(outcomes[0], engine.Attempt)
    assert outcomes[1].status == "busy"
    assert TrainingRun.objects.get(pk=job.pk).attempts == 2


def test_a_job_claimed_on_a_condition_of_its_own_runs_through_the_same_attempt(spec):
    job = job_make(status="running", attempts=1, lease_expires_at=timezone.now() + timedelta(seconds=LEASE))
    seen: list[int] = []

    def claim():
        # Say: the job is ready to finish, whoever holds its lease.
        claimed = TrainingRun.objects.filter(pk=job.pk, status="running").update(attempts=2)
        if not claimed:
            return engine.JobOutcome("skipped")
        return engine.Attempt(spec, TrainingRun.objects.get(pk=job.pk))

    outcome = engine.job_run(
        spec, job_id=job.pk, work=lambda attempt: seen.append(attempt.token), claim=claim
    )

    assert (outcome.status, seen) == ("succeeded", [2])
    assert (
        engine.job_run(
            spec, job_id=job.pk, work=lambda attempt: None, claim=lambda: engine.JobOutcome("skipped")
        ).status
        == "skipped"
    )


def test_the_work_may_say_how_its_attempt_ended(spec):
    job = job_make()

    outcome = engine.job_run(
        spec, job_id=job.pk, work=lambda attempt: engine.JobOutcome("waiting", message="later")
    )

    assert (outcome.status, outcome.message) == ("waiting", "later")


def test_ending_a_dead_attempts_lease_ends_the_leases_of_what_it_held_besides_the_job(spec):
    ended: list[int] = []
    spec.lease_ended = ended.append
    held = job_make(status="running", attempts=1, lease_expires_at=timezone.now() + timedelta(seconds=LEASE))
    finished = job_make(status="succeeded")

    assert engine.job_lease_end(spec, job_id=held.pk)
    assert not engine.job_lease_end(spec, job_id=finished.pk)

    assert ended == [held.pk]
