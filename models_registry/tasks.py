"""Celery tasks of the registry: MLflow alias sync, Triton sync and webhook delivery; each only calls a
service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from jobs import policy as leased_tasks
from mlops_site import storage
from models_registry import mlflow_gateway, services, webhook_services
from models_registry.triton import deployment as triton_deployment

logger = logging.getLogger(__name__)

ALIAS_SYNC_MAX_RETRIES = 10
#: A Triton that stays down is retried by the every-minute sweep after these.
TRITON_SYNC_MAX_RETRIES = 5


@shared_task(
    name="models_registry.tasks.model_aliases_sync_task",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=ALIAS_SYNC_MAX_RETRIES,
)
def model_aliases_sync_task(self: Task, registered_model_id: int) -> dict[str, int | None]:
    """Make MLflow's production and staging aliases match the database; idempotent."""
    try:
        return services.model_aliases_sync(registered_model_id=registered_model_id)
    except mlflow_gateway.RegistryUnavailable as exc:
        raise self.retry(exc=exc, countdown=leased_tasks.backoff_seconds(self.request.retries)) from exc


@shared_task(name="models_registry.tasks.model_aliases_sync_all_task", ignore_result=True)
def model_aliases_sync_all_task() -> int:
    """Queue an alias sync for every registered model: repairs aliases whose sync message was lost."""
    ids = services.registered_model_ids_with_versions()
    for registered_model_id in ids:
        model_aliases_sync_task.delay(registered_model_id)
    return len(ids)


@shared_task(
    name="models_registry.tasks.triton_sync_task",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=TRITON_SYNC_MAX_RETRIES,
)
def triton_sync_task(self: Task, registered_model_id: int) -> str:
    """Load the model's production version into Triton, or unload it; idempotent."""
    try:
        return triton_deployment.triton_sync(registered_model_id=registered_model_id).action
    except (triton_deployment.TritonUnreachable, triton_deployment.TritonError, storage.StorageError) as exc:
        # Triton down or answering 5xx, or the model file unreadable for now.
        raise self.retry(exc=exc, countdown=leased_tasks.backoff_seconds(self.request.retries)) from exc


@shared_task(name="models_registry.tasks.triton_sync_all_task", ignore_result=True)
def triton_sync_all_task() -> int:
    """Queue a Triton sync for every model opted in or still loaded: repairs a restarted Triton and lost
    sync messages. Nothing while TRITON_URL is empty."""
    ids = triton_deployment.triton_model_ids() if settings.TRITON_URL else []
    for registered_model_id in ids:
        triton_sync_task.delay(registered_model_id)
    return len(ids)


@shared_task(
    name="models_registry.tasks.webhook_delivery_send_task",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=None,
)
def webhook_delivery_send_task(self: Task, delivery_id: int) -> str:
    """One attempt; a failed attempt schedules the next one after its back-off.

    The service decides whether an attempt is due, so duplicate or early messages are dropped there
    rather than sent twice; the sweeper below picks up deliveries whose retry message got lost.
    """
    outcome = webhook_services.webhook_delivery_send(delivery_id=delivery_id)
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="models_registry.tasks.webhook_deliveries_sweep_task", ignore_result=True)
def webhook_deliveries_sweep_task() -> int:
    """Re-enqueue pending deliveries that are overdue; safe to run any time, any number of times."""
    overdue = webhook_services.webhook_deliveries_overdue()
    for delivery_id in overdue:
        webhook_delivery_send_task.delay(delivery_id)
    if overdue:
        logger.info("re-enqueued %d overdue webhook deliveries", len(overdue))
    return len(overdue)
