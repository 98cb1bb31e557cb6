"""A static files finder that serves plotly.js from the installed plotly package as plotly/plotly.min.js."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core import checks
from django.core.files.storage import FileSystemStorage

STATIC_PATH = "plotly/plotly.min.js"
PREFIX, FILENAME = STATIC_PATH.split("/")


def plotly_js_path() -> Path:
    """The bundle shipped inside the Python package, so the JS always matches the figures' version."""
    return Path(plotly.__file__).parent / "package_data" / FILENAME


class PlotlyJsFinder(BaseFinder):
    """Exposes exactly one file: the rest of plotly's package_data (datasets, widgets) stays private."""

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        if not plotly_js_path().is_file():
            return [
                checks.Error(
                    f"plotly.min.js is missing from the plotly package ({plotly_js_path()}).",
                    hint="Reinstall plotly from requirements.txt.",
                    id="models_registry.E001",
                )
            ]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> str | list[str]:
        # Like Django's own finders: an empty list for "not here", whatever find_all says.
        if path != STATIC_PATH or not plotly_js_path().is_file():
            return []
        found = str(plotly_js_path())
        return [found] if find_all else found

    def list(self, ignore_patterns: list[str] | None) -> Iterator[tuple[str, FileSystemStorage]]:
        storage = FileSystemStorage(location=str(plotly_js_path().parent))
        # collectstatic writes the file under the storage's prefix, as for prefixed STATICFILES_DIRS.
        storage.prefix = PREFIX
        yield FILENAME, storage
