"""The plotly figures of a training run's holdout artifacts (confusion matrix, residuals, importances).

Built from the plain dicts ml.metrics computes, so the pages that draw them import plotly, not scikit-learn.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import plotly.graph_objects as go

FIGURE_TEMPLATE = "plotly_white"
# Figures carry their height: the pages draw them at their container's width, and without a height plotly
# took the container's (a 260 px box), whose default margins left a plot area about 80 px tall. Margins are
# trimmed for phone widths; axes grow theirs to fit long labels (automargin).
FIGURE_MARGIN = {"t": 50, "b": 50, "l": 60, "r": 20}
# Titles a little smaller than plotly's 17 px, so that they fit a phone's width.
TITLE_FONT_SIZE = 14
RESIDUALS_HEIGHT = 420
CONFUSION_HEIGHT_RANGE = (380, 900)
IMPORTANCES_HEIGHT_RANGE = (320, 1200)
# Pixels per class row of a confusion matrix and per bar of the importances, plus room for title and axes.
CONFUSION_ROW_PX, CONFUSION_FRAME_PX = 40, 180
IMPORTANCE_ROW_PX, IMPORTANCE_FRAME_PX = 22, 130


@functools.cache
def _template_json() -> str:
    layout = json.loads(go.Figure(layout={"template": FIGURE_TEMPLATE}).to_json())["layout"]
    return json.dumps(layout["template"])


def _figure_dict(figure: go.Figure) -> dict[str, Any]:
    # Through JSON so the result holds only plain lists and numbers, ready for a JSONField or a template.
    data = json.loads(figure.to_json())
    # The template goes in as JSON prepared once: plotly validates every property of a template each time
    # one is set on a figure, which took longer than building the figure.
    data.setdefault("layout", {})["template"] = json.loads(_template_json())
    return data


def _clamped(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def confusion_matrix_height(n_classes: int) -> int:
    return _clamped(CONFUSION_ROW_PX * n_classes + CONFUSION_FRAME_PX, CONFUSION_HEIGHT_RANGE)


def importances_height(n_features: int) -> int:
    return _clamped(IMPORTANCE_ROW_PX * n_features + IMPORTANCE_FRAME_PX, IMPORTANCES_HEIGHT_RANGE)


def confusion_matrix_figure(confusion: dict[str, Any]) -> dict[str, Any]:
    labels = [str(label) for label in confusion["labels"]]
    figure = go.Figure(
        go.Heatmap(
            z=confusion["matrix"],
            x=labels,
            y=labels,
            text=confusion["matrix"],
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Confusion matrix (holdout)",
        xaxis_title="Predicted",
        yaxis_title="True",
        yaxis_autorange="reversed",
        xaxis_type="category",
        yaxis_type="category",
        height=confusion_matrix_height(len(labels)),
        margin=FIGURE_MARGIN,
        title_font_size=TITLE_FONT_SIZE,
        xaxis_automargin=True,
        yaxis_automargin=True,
    )
    return _figure_dict(figure)


@functools.cache
def _residuals_skeleton() -> str:
    figure = go.Figure(
        go.Scatter(
            x=[],
            y=[],
            mode="markers",
            marker={"size": 6, "opacity": 0.6},
            hovertemplate="predicted %{x:.4g}, residual %{y:.4g}<extra></extra>",
        )
    )
    figure.add_hline(y=0, line_dash="dash", line_color="grey")
    figure.update_layout(
        title="",
        xaxis_title="Predicted",
        yaxis_title="Actual - predicted",
        height=RESIDUALS_HEIGHT,
        margin=FIGURE_MARGIN,
        title_font_size=TITLE_FONT_SIZE,
        xaxis_automargin=True,
        yaxis_automargin=True,
    )
    return json.dumps(_figure_dict(figure))


def residuals_figure(residuals: dict[str, Any]) -> dict[str, Any]:
    # plotly validates every property, which took longer than the rest of a training run's figures: the
    # figure is built by plotly once (an empty skeleton, as JSON) and filled for each run; the same dict
    # as plotly's (a test compares them).
    data = json.loads(_residuals_skeleton())
    title = "Residuals (holdout)"
    if residuals["n_points"] < residuals["n_total"]:
        title += f", {residuals['n_points']} of {residuals['n_total']} points"
    data["layout"]["title"]["text"] = title
    data["data"][0]["x"] = [float(value) for value in residuals["predicted"]]
    data["data"][0]["y"] = [float(value) for value in residuals["residual"]]
    return data


@functools.cache
def _importances_skeleton() -> str:
    figure = go.Figure(go.Bar(x=[0.0], y=["name"], orientation="h"))
    figure.update_layout(
        title="",
        xaxis_title="Importance",
        yaxis_type="category",
        height=IMPORTANCES_HEIGHT_RANGE[0],
        margin=FIGURE_MARGIN,
        title_font_size=TITLE_FONT_SIZE,
        yaxis_automargin=True,
    )
    return json.dumps(_figure_dict(figure))


def feature_importances_figure(importances: dict[str, Any]) -> dict[str, Any]:
    # Filled into a skeleton plotly built once, as residuals_figure is.
    features = list(reversed(importances["features"]))
    title = f"Feature importance ({importances['method']}"
    if importances.get("sample_rows") is not None and importances.get("holdout_rows") is not None:
        title += f", {importances['sample_rows']:,} of {importances['holdout_rows']:,} holdout rows"
    data = json.loads(_importances_skeleton())
    data["layout"]["title"]["text"] = title + ")"
    # One row per bar: a tall figure keeps every name legible (the pages show the top ones only).
    data["layout"]["height"] = importances_height(len(features))
    data["data"][0]["x"] = [float(f["importance"]) for f in features]
    data["data"][0]["y"] = [str(f["name"]) for f in features]
    return data
