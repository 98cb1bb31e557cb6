"""Serves plotly's bundled JavaScript as the static file `plotly/plotly.min.js`: no CDN at run time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
FILE_NAME = "plotly.min.js"
PREFIX = "plotly"


class PlotlyFinder(BaseFinder):
    """Exposes only plotly.min.js from the plotly package, not the rest of its package data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        self.storage.prefix = PREFIX

    def check(self, **kwargs: Any) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> str | list[str]:
        if path == f"{PREFIX}/{FILE_NAME}":
            found = str(PLOTLY_DIR / FILE_NAME)
            return [found] if find_all else found
        # Django's own finders answer "not found" with an empty list whatever find_all says.
        return []

    def list(self, ignore_patterns: list[str] | None) -> Iterator[tuple[str, FileSystemStorage]]:
        yield FILE_NAME, self.storage
