"""The Django project: settings, URLs, the Celery app and the object-storage gateway."""

from mlops_site.celery import app as celery_app

__all__ = ("celery_app",)
