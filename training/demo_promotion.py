"""The demo model's promotion once its training run succeeded: kept apart from demo_services, which
starts runs through training.services, so that training.services can call it without an import cycle."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, Stage
from training.models import DemoModel, TrainingRun

logger = logging.getLogger(__name__)

DEMO_DESCRIPTION = (
    "Demo model, trained on the site's first start from scikit-learn's breast cancer data so there is "
    "something to predict with. Staff may remove it (Remove the demo model on its page)."
)


def demo_model_promote(*, run_id: int) -> ModelVersion | None:
    """Promote the demo's version to production once its run succeeded; None when `run_id` is not the
    demo's or there is nothing (more) to do. Idempotent: a retried task finds it promoted."""
    demo = DemoModel.objects.filter(training_run_id=run_id, promoted_at__isnull=True, removed_at__isnull=True)
    if not demo.exists():
        return None
    with transaction.atomic():
        found = demo.select_for_update().select_related("training_run").first()
        if found is None or found.training_run.status != TrainingRun.Status.SUCCEEDED:
            return None
        version = (
            ModelVersion.objects.filter(training_run_id=run_id).select_related("registered_model").first()
        )
        if version is None:
            return None
        registered = version.registered_model
        if registered.description != DEMO_DESCRIPTION:
            RegisteredModel.objects.filter(pk=registered.pk).update(description=DEMO_DESCRIPTION)
        if version.stage != Stage.PRODUCTION:
            try:
                version = transition_services.model_version_transition(
                    model_version=version,
                    to_stage=Stage.PRODUCTION,
                    user=None,
                    reason="The demo model, promoted on the site's first start.",
                )
            except transition_services.QualityGateError as exc:
                logger.warning("demo model not promoted: %s", "; ".join(exc.messages))
        found.registered_model = registered
        found.promoted_at = timezone.now()
        found.save(update_fields=["registered_model", "promoted_at"])
    logger.info("demo model %s v%s is in production", registered.name, version.version)
    return version
