"""The closed loop's event log: every decision recorded once and announced to the model's webhooks."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
from django.db import transaction

from models_registry import webhook_services
from models_registry.models import RegisteredModel, WebhookEvent
from monitoring import prometheus
from training.models import Retraining, RetrainingEvent

Kind = RetrainingEvent.Kind

WEBHOOK_EVENTS = {
    Kind.TRIGGERED: WebhookEvent.RETRAINING_TRIGGERED,
    Kind.REFUSED: WebhookEvent.RETRAINING_TRIGGERED,
    Kind.DATASET_DERIVED: WebhookEvent.DATASET_DERIVED,
    Kind.TRAINED: WebhookEvent.CHALLENGER_TRAINED,
    Kind.COMPARED: WebhookEvent.CHALLENGER_COMPARED,
    Kind.AWAITING_APPROVAL: WebhookEvent.CHALLENGER_COMPARED,
    Kind.PROMOTED: WebhookEvent.CHALLENGER_PROMOTED,
    Kind.HELD_BACK: WebhookEvent.CHALLENGER_HELD_BACK,
    Kind.ROLLED_BACK: WebhookEvent.CHAMPION_ROLLED_BACK,
    Kind.FAILED: WebhookEvent.RETRAINING_FAILED,
}


def retraining_event_record(
    *,
    registered_model: RegisteredModel,
    retraining: Retraining | None,
    kind: str,
    message: str,
    figures: dict[str, Any] | None = None,
) -> RetrainingEvent:
    """Log one decision and announce it to the model's webhooks; once per retraining and kind."""
    with transaction.atomic():
        if retraining is not None:
            existing = RetrainingEvent.objects.filter(retraining=retraining, kind=kind).first()
            if existing is not None:
                return existing
        event = RetrainingEvent.objects.create(
            registered_model=registered_model,
            retraining=retraining,
            kind=kind,
            message=message,
            figures=plain(figures or {}),
        )
        webhook_services.webhook_event_emit(
            registered_model=registered_model,
            event=WEBHOOK_EVENTS[kind],
            payload={
                "kind": kind,
                "retraining": retraining.pk if retraining is not None else None,
                "message": message,
                "figures": event.figures,
            },
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"mlops-retraining-event:{event.pk}"),
        )
        prometheus.retraining_decision_count(model=registered_model.name, decision=kind)
    return event


def plain(value: Any) -> Any:
    """JSON-safe: numpy numbers become Python ones and NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
