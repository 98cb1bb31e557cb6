"""App configuration: clears this process's version resolutions whenever a ModelVersion is saved."""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    verbose_name = "Predictions"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from predictions import model_cache

        post_save.connect(
            model_cache.version_saved,
            sender="models_registry.ModelVersion",
            dispatch_uid="predictions.version_saved",
        )
