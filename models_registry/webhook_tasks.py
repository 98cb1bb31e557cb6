"""Celery tasks that deliver registry webhooks; each only calls a webhook service."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from models_registry import webhook_services

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def webhook_delivery_send_task(self: Task, delivery_id: int) -> str:
    """One attempt; a failed attempt schedules the next one after its back-off.

    The service decides whether an attempt is due, so duplicate or early messages are dropped there
    rather than sent twice; the sweeper below picks up deliveries whose retry message got lost.
    """
    outcome = webhook_services.webhook_delivery_send(delivery_id=delivery_id)
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(ignore_result=True)
def webhook_deliveries_sweep_task() -> int:
    """Re-enqueue pending deliveries that are overdue; safe to run any time, any number of times."""
    overdue = webhook_services.webhook_deliveries_overdue()
    for delivery_id in overdue:
        webhook_delivery_send_task.delay(delivery_id)
    if overdue:
        logger.info("re-enqueued %d overdue webhook deliveries", len(overdue))
    return len(overdue)
