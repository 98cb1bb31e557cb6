"""Template filters of the live-quality sections: figures, percentages and label delays.

The registry's pages show feedback's figures through these filters, so the registry imports only
feedback's selectors; nothing here reads the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django import template
from django.conf import settings

from feedback import charts
from feedback.checks import label_text

register = template.Library()


@register.filter
def live_quality_figure(versions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return charts.live_quality_figure(versions=versions)


@register.filter
def live_confusion_figure(live: Mapping[str, Any]) -> dict[str, Any]:
    return charts.confusion_figure(confusion=live.get("confusion") or {})


@register.filter
def class_text(label: Any) -> str:
    """A class as feedback names it: 1.0 → "1", as the service compares labels."""
    return label_text(label)


@register.filter
def percent(value: Any, digits: int = 1) -> str:
    """0.8333 → "83.3%"; None → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def duration(seconds: Any) -> str:
    """A label delay for people: "40 s", "12 min", "3.5 h", "2.1 days"; None → "—"."""
    if seconds is None or seconds == "":
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@register.simple_tag
def feedback_last_n() -> int:
    """How many labelled predictions the "last" window holds by default."""
    return settings.FEEDBACK_LAST_N
