"""Tests of a batch job's chunks as leased jobs of their own: any worker stores a chunk once, and the job
is finished exactly once, by the worker that stores its last chunk."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from jobs import engine
from predictions import tasks
from predictions.batch import chunk_runs as batch_chunk_runs
from predictions.batch import chunks as batch_chunks
from predictions.batch import finish as batch_finish
from predictions.batch import job_specs as batch_job_specs
from predictions.batch import outputs as batch_outputs
from predictions.batch import services as batch_services
from predictions.batch.attempt import ChunkAttempt
from predictions.models import BatchPredictionChunk, BatchPredictionJob, Prediction
from predictions.tests.batch_helpers import Killed, cancer_rows, csv_bytes, job_start, stored_csv


@pytest.fixture
def no_worker(monkeypatch):
    sent: dict[str, list[int]] = {"jobs": [], "chunks": []}
    monkeypatch.setattr(batch_job_specs, "job_enqueue", sent["jobs"].append)
    monkeypatch.setattr(batch_job_specs, "chunk_enqueue", sent["chunks"].append)
    return sent


def held_elsewhere(monkeypatch, *indexes: int) -> None:
    """Another worker claims these chunks (and holds them) just before the job's attempt would."""
    original = engine.job_claim

    def claim(spec, *, job_id, **claim):
        chunk = BatchPredictionChunk.objects.filter(pk=job_id).first()
        if spec is batch_job_specs.CHUNKS_IN_JOB and chunk is not None and chunk.index in indexes:
            BatchPredictionChunk.objects.filter(pk=job_id).update(
                status="running", attempts=1, lease_expires_at=timezone.now() + dt.timedelta(seconds=60)
            )
        return original(spec, job_id=job_id, **claim)

    monkeypatch.setattr(engine, "job_claim", claim)


def waiting_job(
    alice, monkeypatch, *, rows: int = 25, held: tuple[int, ...] = (0,), **options
) -> BatchPredictionJob:
    """A job whose attempt stored every chunk but `held`, which another worker holds: it waits for them."""
    job = job_start(alice, csv_bytes(cancer_rows(rows)), **options)
    original = engine.job_claim
    held_elsewhere(monkeypatch, *held)
    outcome = batch_services.batch_prediction_run(job_id=job.pk)
    monkeypatch.setattr(engine, "job_claim", original)
    assert outcome.status == "waiting"
    job.refresh_from_db()
    return job


def the_other_worker_dies(job: BatchPredictionJob) -> None:
    job.chunks.filter(status="running").update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))


def test_the_job_cuts_its_file_into_chunks_and_sends_each_to_its_task(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(25)))

    batch_services.batch_prediction_run(job_id=job.pk)

    job.refresh_from_db()
    chunks = list(job.chunks.order_by("index"))
    assert [c.index for c in chunks] == [0, 1, 2]
    # Sent on commit: none here, inside the test's transaction; see test_batch_worker for the real sends.
    assert job.chunks_total == 3
    assert [(c.rows_done, c.status, c.claimed_by_job) for c in chunks] == [
        (10, "succeeded", True),
        (10, "succeeded", True),
        (5, "succeeded", True),
    ]
    assert not any(key.endswith(".arrow") for key in _keys(job))


def test_a_job_whose_last_chunk_another_worker_holds_waits_with_its_claim_handed_back(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch)

    assert (job.status, job.waiting_for_chunks, job.attempts) == ("running", True, 0)
    assert (job.chunks_done, job.rows_done, job.progress) == (2, 15, 60)
    assert job.lease_expires_at > timezone.now()
    assert not job.result_key


def test_the_worker_storing_the_last_chunk_finishes_the_job(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    the_other_worker_dies(job)
    last = job.chunks.get(index=0)

    assert tasks.batch_chunk_run_task.apply(args=[last.pk]).get() == "succeeded"

    job.refresh_from_db()
    assert (job.status, job.waiting_for_chunks, job.rows_done, job.rows_total) == ("succeeded", False, 25, 25)
    assert [r["row"] for r in stored_csv(job.result_key)] == [str(i) for i in range(1, 26)]
    stored = Prediction.objects.filter(batch_job=job)
    assert sorted(stored.values_list("row_index", flat=True)) == list(range(25))
    last.refresh_from_db()
    assert (last.status, last.attempts, last.claimed_by_job) == ("succeeded", 2, False)
    assert set(job.timings) >= {"load", "read", "validate", "predict", "store", "finish"}
    # The parts are gone, the input parts with them.
    assert not any("/parts/" in key for key in _keys(job))


def test_a_chunk_message_for_a_stored_chunk_or_a_chunk_held_elsewhere_changes_nothing(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch)
    stored = job.chunks.get(index=2)

    assert batch_chunk_runs.batch_chunk_run(chunk_id=stored.pk).status == "skipped"
    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk).status == "busy"

    job.refresh_from_db()
    assert (job.chunks_done, job.rows_done, job.status) == (2, 15, "running")
    assert Prediction.objects.filter(batch_job=job).count() == 15


def test_of_two_finishers_only_one_assembles_the_files(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    the_other_worker_dies(job)
    batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk)
    job.refresh_from_db()
    assert job.status == "succeeded"
    assembled = []
    monkeypatch.setattr(batch_outputs, "files_assemble", lambda *a, **k: assembled.append(1) or [])

    # The finish claim is one conditional UPDATE: a second finisher, or the job's own message, finds the
    # job finished.
    assert batch_finish.batch_prediction_finish(job_id=job.pk).status == "skipped"
    assert batch_services.batch_prediction_run(job_id=job.pk).status == "skipped"
    assert assembled == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_to_finish_the_same_job_assemble_it_once(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    # The last chunk is stored, and two workers (say its own and the stale sweep's) both see the job
    # ready to finish.
    the_other_worker_dies(job)
    monkeypatch.setattr(batch_finish, "finish_due", lambda job_id: False)
    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk).status == "succeeded"
    assembled: list[str] = []
    original = batch_outputs.files_assemble
    barrier = threading.Barrier(2)

    def assemble(attempt, **kwargs):
        assembled.append(threading.current_thread().name)
        return original(attempt, **kwargs)

    monkeypatch.setattr(batch_outputs, "files_assemble", assemble)
    monkeypatch.setattr(batch_chunks, "model_load", _loaded(batch_chunks.model_load))
    outcomes: list[str] = []

    def finisher() -> None:
        try:
            barrier.wait()
            outcomes.append(batch_finish.batch_prediction_finish(job_id=job.pk).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=finisher, name=f"finisher-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert len(assembled) == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 1)


def test_a_chunk_that_cannot_be_predicted_fails_its_waiting_job(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    the_other_worker_dies(job)

    def broken(*args, **kwargs):
        raise batch_chunks.BatchRunError("Rows 1 to 10: the model could not score them: boom")

    monkeypatch.setattr(batch_chunks, "chunk_compute", broken)
    outcome = batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk)

    assert outcome.status == "failed"
    job.refresh_from_db()
    assert (job.status, job.waiting_for_chunks) == ("failed", False)
    assert "could not score them" in job.error_message


def test_a_chunk_of_a_failed_job_is_not_predicted(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    the_other_worker_dies(job)
    BatchPredictionJob.objects.filter(pk=job.pk).update(status="failed", lease_expires_at=None)

    outcome = batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk)

    assert outcome.status == "failed"
    assert Prediction.objects.filter(batch_job=job).count() == 15


def test_when_the_jobs_worker_process_dies_the_lease_of_its_chunk_ends_too(alice, cancer_v1, no_worker):
    job = job_start(alice, csv_bytes(cancer_rows(25)))
    lease = timezone.now() + dt.timedelta(seconds=60)
    BatchPredictionJob.objects.filter(pk=job.pk).update(status="running", attempts=1, lease_expires_at=lease)
    mine = BatchPredictionChunk.objects.create(
        job=job, index=0, status="running", attempts=1, lease_expires_at=lease, claimed_by_job=True
    )
    other = BatchPredictionChunk.objects.create(
        job=job, index=1, status="running", attempts=1, lease_expires_at=lease
    )

    assert engine.job_lease_end(batch_job_specs.JOBS, job_id=job.pk)

    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.lease_expires_at <= timezone.now()
    # A chunk task's lease is its own worker's business.
    assert other.lease_expires_at == lease


def test_the_stale_sweep_sends_again_the_chunks_whose_worker_died(alice, cancer_v1, no_worker, monkeypatch):
    job = waiting_job(alice, monkeypatch)
    the_other_worker_dies(job)

    assert batch_services.batch_prediction_jobs_stale_requeue() == []

    assert no_worker["chunks"] == [job.chunks.get(index=0).pk]


def _loaded(model_load):
    """model_load, once per version for the test's threads (the cache is not what is tested here)."""
    cache: dict[int, object] = {}
    lock = threading.Lock()

    def load(version):
        with lock:
            if version.pk not in cache:
                cache[version.pk] = model_load(version)
            return cache[version.pk]

    return load


def _keys(job: BatchPredictionJob) -> set[str]:
    from predictions.tests.batch_helpers import storage_keys

    return {key for key in storage_keys() if str(job.uuid) in key}


def test_when_a_chunk_task_gives_up_the_chunk_and_its_waiting_job_are_failed(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch)
    chunk = job.chunks.get(index=0)
    # Not while another worker's attempt holds the chunk.
    assert not batch_services.batch_chunk_fail(chunk_id=chunk.pk, message="Gave up after 7 attempts")
    the_other_worker_dies(job)

    assert batch_services.batch_chunk_fail(chunk_id=chunk.pk, message="Gave up after 7 attempts")

    chunk.refresh_from_db()
    job.refresh_from_db()
    assert (chunk.status, job.status, job.error_message) == ("failed", "failed", "Gave up after 7 attempts")


def computed_ahead(monkeypatch) -> list[int]:
    """The indexes of the chunks walks compute ahead, in order."""
    indexes: list[int] = []
    original = batch_chunks.chunk_compute_ahead

    def compute(model, *, job, index):
        indexes.append(index)
        return original(model, job=job, index=index)

    monkeypatch.setattr(batch_chunks, "chunk_compute_ahead", compute)
    return indexes


def test_a_chunk_task_goes_on_with_the_free_chunks_after_its_own_and_the_last_one_finishes_the_job(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch, rows=45, held=(0, 1, 2))
    the_other_worker_dies(job)
    ahead = computed_ahead(monkeypatch)

    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk).status == "succeeded"

    assert ahead == [1, 2]
    job.refresh_from_db()
    assert (job.status, job.rows_done) == ("succeeded", 45)
    assert set(job.chunks.values_list("status", "claimed_by_job")) == {
        ("succeeded", False),
        ("succeeded", True),
    }
    stored = Prediction.objects.filter(batch_job=job).values_list("row_index", flat=True)
    assert sorted(stored) == list(range(45))
    # The messages of the chunks taken along find them stored.
    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=2).pk).status == "skipped"


def test_a_walk_steps_past_a_chunk_another_worker_holds_without_computing_it(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch, rows=45, held=(0, 1, 2, 3))
    the_other_worker_dies(job)
    job.chunks.filter(index=2).update(lease_expires_at=timezone.now() + dt.timedelta(seconds=60))
    ahead = computed_ahead(monkeypatch)

    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk).status == "succeeded"

    assert ahead == [1, 3]
    held = job.chunks.get(index=2)
    assert (held.status, held.attempts) == ("running", 1)
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.rows_done) == ("running", 4, 35)


@pytest.mark.parametrize(("store_predictions", "claimed"), [(True, [1, 2]), (False, [1, 2, 3])])
def test_a_walk_that_stops_at_a_failed_chunk_hands_back_the_chunks_it_had_claimed_next(
    alice, cancer_v1, no_worker, monkeypatch, store_predictions, claimed
):
    # With the result file only, a walk computes two chunks while it stores one.
    job = waiting_job(alice, monkeypatch, rows=55, held=(0, 1, 2, 3), store_predictions=store_predictions)
    the_other_worker_dies(job)
    walked: list[int] = []
    original_claim = engine.job_claim

    def claim(spec, *, job_id, **fields):
        if fields:  # the walk's claims name the chunk that walks
            walked.append(BatchPredictionChunk.objects.get(pk=job_id).index)
        return original_claim(spec, job_id=job_id, **fields)

    monkeypatch.setattr(engine, "job_claim", claim)
    original = batch_chunks.chunk_compute

    def broken_at_row_11(attempt, model, *, job, chunk):
        if chunk.index == 1:
            raise batch_chunks.BatchRunError("Rows 11 to 20: the model could not score them: boom")
        return original(attempt, model, job=job, chunk=chunk)

    monkeypatch.setattr(batch_chunks, "chunk_compute", broken_at_row_11)

    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=0).pk).status == "succeeded"

    job.refresh_from_db()
    assert (job.status, job.waiting_for_chunks) == ("failed", False)
    assert "Rows 11 to 20" in job.error_message
    statuses = dict(job.chunks.values_list("index", "status"))
    assert (statuses[0], statuses[1], statuses[4]) == ("succeeded", "failed", "succeeded")
    # The chunks claimed and computed next, handed back: their leases are over and their claims uncounted
    # (the one left is the claim the other worker made before it died).
    assert walked == claimed
    free = job.chunks.filter(engine.claimable(timezone.now()), index__in=[2, 3])
    assert {c.index: c.attempts for c in free} == {2: 1, 3: 1}


def test_when_a_walking_task_dies_the_chunks_it_went_on_to_claim_are_freed_and_sent_again(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch, rows=45, held=(0, 1, 2, 3))
    the_other_worker_dies(job)
    own = job.chunks.get(index=0)
    original = batch_chunk_runs._chunk_run
    state = {"runs": 0}

    def dies_at_the_second_walked_chunk(spec, **run):
        state["runs"] += 1
        if state["runs"] == 3:  # its own chunk, chunk 1, then chunk 2 (with chunk 3 claimed ahead)
            raise Killed("worker process")
        return original(spec, **run)

    monkeypatch.setattr(batch_chunk_runs, "_chunk_run", dies_at_the_second_walked_chunk)
    # A killed process runs none of its cleanup: the walk cannot hand its chunks back itself.
    monkeypatch.setattr(ChunkAttempt, "release", lambda attempt, message: None)
    with pytest.raises(Killed):
        batch_chunk_runs.batch_chunk_run(chunk_id=own.pk)
    monkeypatch.undo()
    no_worker = {"chunks": []}
    monkeypatch.setattr(batch_job_specs, "chunk_enqueue", no_worker["chunks"].append)
    held = {c.index: c for c in job.chunks.filter(index__in=[2, 3])}
    assert {(c.status, c.walked_from) for c in held.values()} == {("running", own.pk)}
    assert all(c.lease_expires_at > timezone.now() for c in held.values())

    # What the worker's main process does when a pool child dies (jobs.policy.LeasedJobRequest).
    engine.job_lease_end(batch_job_specs.CHUNKS, job_id=own.pk)

    assert sorted(no_worker["chunks"]) == sorted(c.pk for c in held.values())
    # Their tasks, sent again: the first stores its chunk and goes on with the other.
    assert [batch_chunk_runs.batch_chunk_run(chunk_id=held[i].pk).status for i in (2, 3)] == [
        "succeeded",
        "skipped",
    ]
    job.refresh_from_db()
    assert (job.status, job.rows_done) == ("succeeded", 45)
    assert Prediction.objects.filter(batch_job=job).count() == 45


def test_a_chunk_claimed_again_by_its_own_task_forgets_the_walk_that_held_it(
    alice, cancer_v1, no_worker, monkeypatch
):
    job = waiting_job(alice, monkeypatch, rows=25, held=(0, 1))
    job.chunks.filter(index=1).update(walked_from=job.chunks.get(index=0).pk)
    the_other_worker_dies(job)
    seen = {}
    original = batch_chunk_runs._chunk_work

    def work(attempt, *args):
        seen[attempt.job.index] = BatchPredictionChunk.objects.get(pk=attempt.job.pk).walked_from
        return original(attempt, *args)

    monkeypatch.setattr(batch_chunk_runs, "_chunk_work", work)

    assert batch_chunk_runs.batch_chunk_run(chunk_id=job.chunks.get(index=1).pk).status == "succeeded"

    assert seen[1] is None
