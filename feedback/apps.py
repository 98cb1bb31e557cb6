from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    verbose_name = "Feedback"

    def ready(self) -> None:
        # Registers the __any_of lookup that feedback's queries use.
        from mlops_site import lookups  # noqa: F401
