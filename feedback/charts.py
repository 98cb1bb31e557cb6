"""Plotly figure builders for live quality: plain figure dicts, rendered in the page by plotly.js."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ml import figures as training_figures

TEMPLATE = training_figures.FIGURE_TEMPLATE
METRIC_LABELS = {"accuracy": "Accuracy", "f1_macro": "F1 (macro)", "mae": "MAE", "rmse": "RMSE"}
#: Live metrics per task, in panel order; only accuracy is a proportion with a Wilson interval.
LIVE_METRICS = {"classification": ("accuracy", "f1_macro"), "regression": ("mae", "rmse")}
HOLDOUT_COLOUR = "#98a2b3"
LIVE_COLOUR = "#2457d6"
UNKNOWN_LABEL = "unknown (wrong)"


def _figure_dict(figure: go.Figure) -> dict[str, Any]:
    return json.loads(figure.to_json())


def _empty(text: str) -> dict[str, Any]:
    figure = go.Figure()
    figure.update_layout(
        template=TEMPLATE,
        height=160,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[{"text": text, "showarrow": False, "font": {"size": 14}}],
    )
    return _figure_dict(figure)


def live_quality_figure(*, versions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per version, the holdout value as a grey diamond and the live value as a dot; live accuracy carries
    its 95% Wilson interval as error bars, so three labels never look like a certainty.

    `versions` are entries of feedback.selectors.model_quality (one task per model).
    """
    shown = [v for v in versions if v["live"].get("n")]
    if not shown:
        return _empty("No feedback yet")
    shown = sorted(shown, key=lambda v: v["version"])
    names = LIVE_METRICS.get(shown[0]["task"], ())
    figure = make_subplots(
        rows=1,
        cols=len(names),
        subplot_titles=[
            METRIC_LABELS[name] + (" (lower is better)" if name in ("mae", "rmse") else "") for name in names
        ],
        horizontal_spacing=0.12,
    )
    labels = [f"v{v['version']}" for v in shown]
    counts = [v["live"]["n"] for v in shown]
    for column, name in enumerate(names, start=1):
        first = column == 1
        figure.add_trace(
            go.Scatter(
                x=labels,
                y=[v["holdout"].get(name) for v in shown],
                mode="markers",
                name="Holdout",
                legendgroup="holdout",
                showlegend=first,
                marker={"symbol": "diamond", "size": 11, "color": HOLDOUT_COLOUR},
                hovertemplate=f"{METRIC_LABELS[name]} %{{x}}, holdout: %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=column,
        )
        values = [v["live"].get(name) for v in shown]
        error: dict[str, Any] | None = None
        if name == "accuracy":
            intervals = [v["live"].get("accuracy_interval") or [None, None] for v in shown]
            error = {
                "type": "data",
                "symmetric": False,
                "array": [
                    hi - value if hi is not None else 0
                    for (_, hi), value in zip(intervals, values, strict=True)
                ],
                "arrayminus": [
                    value - lo if lo is not None else 0
                    for (lo, _), value in zip(intervals, values, strict=True)
                ],
                "color": LIVE_COLOUR,
                "thickness": 1.5,
                "width": 6,
            }
        figure.add_trace(
            go.Scatter(
                x=labels,
                y=values,
                mode="markers",
                name="Live (95% interval)" if name == "accuracy" else "Live",
                legendgroup="live",
                showlegend=first,
                marker={"size": 10, "color": LIVE_COLOUR},
                error_y=error,
                customdata=counts,
                hovertemplate=f"{METRIC_LABELS[name]} %{{x}}, live: %{{y:.4g}} (n=%{{customdata}})"
                "<extra></extra>",
            ),
            row=1,
            col=column,
        )
        figure.update_xaxes(type="category", row=1, col=column)
        if name in ("accuracy", "f1_macro"):
            figure.update_yaxes(range=[0, 1.05], row=1, col=column)
    figure.update_layout(
        template=TEMPLATE,
        height=320,
        margin={"t": 50, "b": 40, "l": 40, "r": 20},
        legend={"orientation": "h", "y": -0.12, "x": 0.5, "xanchor": "center", "yanchor": "top"},
    )
    return _figure_dict(figure)


def confusion_figure(*, confusion: Mapping[str, Any]) -> dict[str, Any]:
    """The live confusion matrix: predicted class per row, true class per column, and an "unknown"
    column for predictions marked wrong without the right class."""
    labels = [str(label) for label in confusion.get("labels", [])]
    matrix = confusion.get("matrix") or []
    if not matrix:
        return _empty("No labelled predictions in this window")
    columns = [label or UNKNOWN_LABEL for label in labels]
    rows = [label for label in labels if label]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=columns,
            y=rows,
            text=matrix,
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate="predicted %{y}, true %{x}: %{z}<extra></extra>",
        )
    )
    figure.update_layout(
        template=TEMPLATE,
        title="Confusion matrix (live)",
        xaxis_title="True",
        yaxis_title="Predicted",
        yaxis_autorange="reversed",
        xaxis_type="category",
        yaxis_type="category",
        height=max(300, 40 * len(rows) + 160),
    )
    return _figure_dict(figure)
