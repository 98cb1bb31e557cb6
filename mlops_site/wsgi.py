"""WSGI entry point for gunicorn."""

import os

import django
from django.core.handlers.wsgi import WSGIHandler

from mlops_site import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

# What get_wsgi_application() does, with tracing set up between the two steps: after logging is
# configured, before the handler loads the middleware (tracing inserts its own first; a no-op when off).
django.setup(set_prefix=False)
tracing.setup(default_service_name="mlops-web")
application = WSGIHandler()
