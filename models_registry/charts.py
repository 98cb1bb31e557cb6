"""Plotly figure builders for the registry pages: plain figure dicts, rendered in the page by plotly.js."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ml import figures as training_figures

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "f1_macro": "F1 (macro)",
    "roc_auc": "ROC AUC",
    "log_loss": "Log loss",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
}
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
STAGE_COLOURS = {
    "production": "#067647",
    "staging": "#2457d6",
    "archived": "#98a2b3",
    "none": "#7a5af8",
}
COLUMNS = 3
TOP_FEATURES = 20
TEMPLATE = training_figures.FIGURE_TEMPLATE


class VersionLike(Protocol):
    version: int
    stage: str
    metrics: dict[str, float]


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def metric_names(versions: Sequence[VersionLike]) -> list[str]:
    """Metrics any version has, in the catalogue's order first, then any others alphabetically."""
    present = {name for version in versions for name in (version.metrics or {})}
    known = [name for name in METRIC_LABELS if name in present]
    return known + sorted(present - set(known))


def _figure_dict(figure: go.Figure) -> dict[str, Any]:
    return json.loads(figure.to_json())


def versions_metrics_figure(
    *, versions: Sequence[VersionLike], thresholds: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, Any]:
    """One small bar panel per metric, one bar per version coloured by stage.

    Panels keep each metric on its own scale (log loss and RMSE are not 0 to 1). `thresholds` maps a metric
    to {"min": x} or {"max": x}; the quality gate's limit is drawn as a dashed line in that panel.
    """
    ordered = sorted(versions, key=lambda v: v.version)
    names = metric_names(ordered)
    thresholds = thresholds or {}
    if not ordered or not names:
        figure = go.Figure()
        figure.update_layout(
            template=TEMPLATE,
            height=160,
            xaxis_visible=False,
            yaxis_visible=False,
            annotations=[{"text": "No metrics to compare yet", "showarrow": False, "font": {"size": 14}}],
        )
        return _figure_dict(figure)

    rows = math.ceil(len(names) / COLUMNS)
    columns = min(COLUMNS, len(names))
    titles = [
        metric_label(name) + (" (lower is better)" if name in LOWER_IS_BETTER else "") for name in names
    ]
    figure = make_subplots(
        rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.5 / rows
    )
    labels = [f"v{version.version}" for version in ordered]
    for index, name in enumerate(names):
        row, column = divmod(index, COLUMNS)
        values = [(version.metrics or {}).get(name) for version in ordered]
        figure.add_trace(
            go.Bar(
                x=labels,
                y=values,
                marker_color=[STAGE_COLOURS.get(version.stage, STAGE_COLOURS["none"]) for version in ordered],
                text=["—" if value is None else f"{value:.3g}" for value in values],
                textposition="auto",
                customdata=[version.stage for version in ordered],
                hovertemplate=f"{metric_label(name)} %{{x}} (%{{customdata}}): %{{y:.4g}}<extra></extra>",
                showlegend=False,
            ),
            row=row + 1,
            col=column + 1,
        )
        limit = thresholds.get(name) or {}
        for kind in ("min", "max"):
            if kind in limit:
                figure.add_hline(
                    y=limit[kind],
                    line_dash="dash",
                    line_color="#b42318",
                    annotation_text=f"gate: {kind} {limit[kind]:g}",
                    annotation_position="top left",
                    annotation_font_size=10,
                    annotation_font_color="#b42318",
                    row=row + 1,
                    col=column + 1,
                )
        # Headroom above the tallest bar or gate line, so the gate's label never sits on a bar.
        heights = [value for value in values if value is not None] + list(limit.values())
        if heights and min(heights) >= 0:
            figure.update_yaxes(range=[0, max(heights) * 1.18 or 1], row=row + 1, col=column + 1)
        figure.update_xaxes(type="category", row=row + 1, col=column + 1)
    # One legend entry per stage that occurs, explaining the bar colours.
    for stage in dict.fromkeys(version.stage for version in ordered):
        figure.add_trace(
            go.Bar(
                x=[None], y=[None], name=stage, marker_color=STAGE_COLOURS.get(stage, STAGE_COLOURS["none"])
            ),
            row=1,
            col=1,
        )
    figure.update_layout(
        template=TEMPLATE,
        height=260 * rows + 40,
        margin={"t": 60, "b": 30, "l": 40, "r": 20},
        legend={"orientation": "h", "y": 1.0 + 0.25 / rows, "x": 1, "xanchor": "right", "title": "Stage"},
        bargap=0.35,
    )
    return _figure_dict(figure)


def version_figures(*, artifacts: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Figures of one version's holdout artifacts (confusion matrix or residuals, feature importances).

    Rebuilt from the stored data rather than stored figures, so every version looks alike. Uploaded
    models have no artifacts and get no figures.
    """
    artifacts = artifacts or {}
    figures: dict[str, dict[str, Any]] = {}
    if artifacts.get("confusion_matrix"):
        figures["confusion_matrix"] = training_figures.confusion_matrix_figure(artifacts["confusion_matrix"])
    if artifacts.get("residuals"):
        figures["residuals"] = training_figures.residuals_figure(artifacts["residuals"])
    importances = artifacts.get("feature_importances") or {}
    if importances.get("features"):
        figures["feature_importances"] = feature_importances_figure(importances=importances)
    return figures


def feature_importances_figure(*, importances: Mapping[str, Any], top: int = TOP_FEATURES) -> dict[str, Any]:
    """The most important `top` columns, tall enough for every label to show."""
    features = list(importances["features"])
    shown = features[:top]
    figure = training_figures.feature_importances_figure({**importances, "features": shown})
    layout = figure.setdefault("layout", {})
    if len(shown) < len(features):
        title = layout.get("title", {})
        title["text"] = f"{title.get('text', 'Feature importance')}, top {len(shown)} of {len(features)}"
        layout["title"] = title
    layout["height"] = max(300, 22 * len(shown) + 140)
    layout["margin"] = {**layout.get("margin", {}), "l": 10}
    layout.setdefault("yaxis", {})["automargin"] = True
    return figure


CHAMPION_COLOUR = STAGE_COLOURS["production"]
CHALLENGER_COLOUR = STAGE_COLOURS["staging"]


def _error_bars(days: Sequence[Mapping[str, Any]], side: str) -> dict[str, Any]:
    """Asymmetric error bars from each day's interval; a day without one gets none."""
    above = [None if d[f"{side}_high"] is None else d[f"{side}_high"] - d[side] for d in days]
    below = [None if d[f"{side}_low"] is None else d[side] - d[f"{side}_low"] for d in days]
    return {"type": "data", "symmetric": False, "array": above, "arrayminus": below, "thickness": 1.2}


def challenger_comparison_figure(
    *, days: Sequence[Mapping[str, Any]], task: str, champion_label: str, challenger_label: str
) -> dict[str, Any]:
    """Champion and challenger per day on the rows both scored: each one's score with its 95% interval
    (accuracy, or mean absolute error for regression), and the day's shared rows as bars behind them."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    score = "MAE (lower is better)" if task == "regression" else "Accuracy"
    labels = [d["day"] for d in days]
    figure.add_trace(
        go.Bar(
            x=labels,
            y=[d["n"] for d in days],
            name="Shared rows",
            marker_color="#d0d5dd",
            opacity=0.6,
            hovertemplate="%{x}: %{y} shared rows<extra></extra>",
        ),
        secondary_y=True,
    )
    for side, label, colour in (
        ("champion", champion_label, CHAMPION_COLOUR),
        ("challenger", challenger_label, CHALLENGER_COLOUR),
    ):
        figure.add_trace(
            go.Scatter(
                x=labels,
                y=[d[side] for d in days],
                name=label,
                mode="lines+markers",
                line={"color": colour},
                error_y={**_error_bars(days, side), "color": colour},
                hovertemplate=f"{label} %{{x}}: %{{y:.4g}}<extra></extra>",
            ),
            secondary_y=False,
        )
    figure.update_layout(
        template=TEMPLATE,
        height=340,
        margin={"t": 30, "b": 40, "l": 50, "r": 50},
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        bargap=0.4,
    )
    figure.update_xaxes(type="category")
    figure.update_yaxes(title_text=score, secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text="Shared rows", secondary_y=True, rangemode="tozero", showgrid=False)
    if not days:
        figure.add_annotation(text="No shared rows with an outcome yet", showarrow=False, font={"size": 14})
    return _figure_dict(figure)
