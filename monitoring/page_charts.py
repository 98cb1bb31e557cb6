"""Plotly figures of the monitoring pages, as plain figure dicts (rendered in the page by plotly.js).

Built as dicts rather than through plotly.graph_objects: validating a Figure costs milliseconds each, and
the overview draws one sparkline per model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

METRIC_LABELS = {"accuracy": "Accuracy", "f1_macro": "F1 (macro)", "mae": "MAE", "rmse": "RMSE"}
COLOURS = ("#2457d6", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777")
THRESHOLD_COLOUR = "#dc2626"
FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _times(moments: Sequence[dt.datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": 300,
        "margin": {"l": 56, "r": 16, "t": 36, "b": 40},
        "font": FONT,
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {"gridcolor": "#eef1f6"},
        "yaxis": {"gridcolor": "#eef1f6", "rangemode": "tozero"},
    }
    layout.update(extra)
    return layout


def _empty(text: str, *, height: int = 160) -> dict[str, Any]:
    return {
        "data": [],
        "layout": {
            "height": height,
            "font": FONT,
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [{"text": text, "showarrow": False, "font": {"size": 14}}],
        },
    }


def sparkline_figure(*, hours: Sequence[dt.datetime], counts: Sequence[int]) -> dict[str, Any]:
    """Predictions per hour as a small filled line without axes, for a table cell."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "x": _times(hours),
                "y": list(counts),
                "line": {"width": 1, "color": COLOURS[0]},
                "fill": "tozeroy",
                "hovertemplate": "%{x|%b %d %H:00}: %{y} predictions<extra></extra>",
            }
        ],
        "layout": {
            "height": 36,
            "width": 160,
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False, "rangemode": "tozero"},
            "showlegend": False,
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
        },
    }


def volume_figure(*, buckets: Sequence[dt.datetime], series: Sequence[Any]) -> dict[str, Any]:
    """Predictions per bucket, stacked by version (`series`: model_page_selectors.VersionSeries)."""
    if not any(any(s.predicted) for s in series):
        return _empty("No predictions in this period")
    x = _times(buckets)
    data = [
        {
            "type": "bar",
            "name": f"v{s.version.version} ({s.version.stage})",
            "x": x,
            "y": s.predicted,
            "marker": {"color": COLOURS[i % len(COLOURS)]},
        }
        for i, s in enumerate(series)
    ]
    return {"data": data, "layout": _layout(barmode="stack", title={"text": "Predictions"})}


def score_figure(
    *,
    buckets: Sequence[dt.datetime],
    series: Sequence[Any],
    metric: str,
    threshold: float | None,
) -> dict[str, Any]:
    """The live metric per bucket and version, with the retraining policy's threshold as a red line."""
    if not any(any(v is not None for v in s.scores) for s in series):
        return _empty("No feedback in this period")
    x = _times(buckets)
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "connectgaps": False,
            "name": f"v{s.version.version} ({s.version.stage})",
            "x": x,
            "y": s.scores,
            "customdata": s.labelled,
            "hovertemplate": "%{y:.3f} (%{customdata} labelled)",
            "line": {"color": COLOURS[i % len(COLOURS)]},
        }
        for i, s in enumerate(series)
    ]
    label = metric_label(metric)
    if threshold is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"Threshold ({threshold:g})",
                "x": [x[0], x[-1]],
                "y": [threshold, threshold],
                "line": {"color": THRESHOLD_COLOUR, "dash": "dash"},
                "hoverinfo": "skip",
            }
        )
    lower = metric in ("mae", "rmse")
    title = f"Live {label}" + (" (lower is better)" if lower else "")
    return {"data": data, "layout": _layout(title={"text": title})}


_PERCENTILE_DASH = {50: "solid", 95: "dash", 99: "dot"}


def latency_figure(*, buckets: Sequence[dt.datetime], series: Sequence[Any]) -> dict[str, Any]:
    """Request latency percentiles per bucket, a colour per version and a dash per percentile, on a log
    axis (a p99 ten times the p50 is common)."""
    drawn = [(i, s) for i, s in enumerate(series) if s.latency is not None]
    if not drawn:
        return _empty("No requests in this period")
    x = _times(buckets)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "connectgaps": False,
            "name": f"v{s.version.version} p{q}",
            "legendgroup": f"v{s.version.version}",
            "x": x,
            "y": values,
            "hovertemplate": "%{y:.3g} ms",
            "line": {"color": COLOURS[i % len(COLOURS)], "dash": _PERCENTILE_DASH.get(q, "solid")},
            "marker": {"size": 4},
        }
        for i, s in drawn
        for q, values in s.latency.per_bucket.items()
    ]
    layout = _layout(title={"text": "Request latency (validation and model call)"})
    layout["yaxis"] = {"gridcolor": "#eef1f6", "type": "log", "title": {"text": "ms"}}
    return {"data": data, "layout": layout}


def coverage_figure(*, buckets: Sequence[dt.datetime], coverage: Sequence[float | None]) -> dict[str, Any]:
    """The share of the bucket's predictions that have an outcome (so far)."""
    if not any(c is not None for c in coverage):
        return _empty("No predictions in this period")
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Labelled share",
                "x": _times(buckets),
                "y": list(coverage),
                "line": {"color": COLOURS[2]},
                "hovertemplate": "%{y:.1%}<extra></extra>",
            }
        ],
        "layout": _layout(
            title={"text": "Feedback coverage"},
            yaxis={"gridcolor": "#eef1f6", "tickformat": ".0%", "rangemode": "tozero"},
            showlegend=False,
        ),
    }


def delay_figure(*, bins: Sequence[tuple[str, int]], median_seconds: float | None) -> dict[str, Any]:
    """How long outcomes took to arrive, as counts per delay bin."""
    if not any(n for _, n in bins):
        return _empty("No outcomes in this period")
    shown = [(label, n) for label, n in bins]
    while shown and not shown[-1][1]:
        shown.pop()
    title = "Label delay"
    if median_seconds is not None:
        title += f" (median {_duration(median_seconds)})"
    return {
        "data": [
            {
                "type": "bar",
                "x": [label for label, _ in shown],
                "y": [n for _, n in shown],
                "marker": {"color": COLOURS[3]},
                "hovertemplate": "%{x}: %{y} outcomes<extra></extra>",
            }
        ],
        "layout": _layout(title={"text": title}, showlegend=False, hovermode="closest"),
    }


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def distribution_figure(distribution: dict[str, Any] | None) -> dict[str, Any]:
    """A feature's shares per reference bin, in the training data and in the report's window, side by side."""
    if not distribution or not distribution["current_rows"]:
        return _empty("No predictions in the report's window")
    bars = []
    for side, name, colour in (
        ("reference", f"training ({distribution['reference_rows']:,} rows)", COLOURS[0]),
        ("current", f"recent ({distribution['current_rows']:,} rows)", COLOURS[1]),
    ):
        bars.append(
            {
                "type": "bar",
                "name": name,
                "x": distribution["bins"],
                "y": distribution[side],
                "marker": {"color": colour},
                "hovertemplate": "%{x}: %{y:.1%}<extra>" + name + "</extra>",
            }
        )
    title = f"{distribution['feature']}: share of rows per bin of the training data"
    return {
        "data": bars,
        "layout": _layout(
            title={"text": title},
            barmode="group",
            hovermode="closest",
            yaxis={"gridcolor": "#eef1f6", "rangemode": "tozero", "tickformat": ".0%"},
            xaxis={"gridcolor": "#eef1f6", "type": "category"},
        ),
    }
