"""Celery tasks for training runs and registry aliases; each calls a service and decides whether to retry."""

from __future__ import annotations

from celery import Task, shared_task

from mlops_site import leased_tasks
from models_registry import mlflow_gateway, registry_services, training_services

ALIAS_SYNC_MAX_RETRIES = 10


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def training_run_execute_task(self: Task, run_id: int) -> str:
    """Run the training service; a duplicate message finds the run busy (retried later) or finished."""
    return leased_tasks.leased_job_run(
        self,
        label=f"run {run_id}",
        execute=lambda: training_services.training_run_execute(run_id=run_id),
        fail=lambda message: training_services.training_run_fail(run_id=run_id, message=message),
        transient_errors=training_services.TRANSIENT_ERRORS,
    )


@shared_task(ignore_result=True)
def training_runs_stale_requeue_task() -> int:
    """Re-send runs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(training_services.training_runs_stale_requeue())


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=ALIAS_SYNC_MAX_RETRIES)
def model_aliases_sync_task(self: Task, registered_model_id: int) -> dict[str, int | None]:
    """Make MLflow's production and staging aliases match the database; idempotent."""
    try:
        return registry_services.model_aliases_sync(registered_model_id=registered_model_id)
    except mlflow_gateway.RegistryUnavailable as exc:
        raise self.retry(exc=exc, countdown=leased_tasks.backoff_seconds(self.request.retries)) from exc


@shared_task(ignore_result=True)
def model_aliases_sync_all_task() -> int:
    """Queue an alias sync for every registered model: repairs aliases whose sync message was lost."""
    ids = registry_services.registered_model_ids_with_versions()
    for registered_model_id in ids:
        model_aliases_sync_task.delay(registered_model_id)
    return len(ids)


# Celery's autodiscovery imports only <app>.tasks; the webhook tasks live in their own module.
from models_registry.webhook_tasks import webhook_deliveries_sweep_task, webhook_delivery_send_task  # noqa: E402,F401
