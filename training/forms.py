"""The form that starts a training run, the algorithm choices the admin's training action shares, and the
closed loop's forms: a model's retraining policy and "retrain now"."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from datasets import selectors as dataset_selectors
from datasets.models import DatasetVersion
from ml import catalogue
from ml.train import MAX_SEED, TEST_SIZE_MAX, TEST_SIZE_MIN
from mlops_site import parsers
from models_registry import selectors as registry_selectors
from models_registry.models import MODEL_NAME_MAX_LENGTH, RegisteredModel, Task
from training import policy_services
from training.models import RetrainingPolicy, Window

#: The algorithm value when the task is left to be inferred from the target column.
INFER = "infer"


def algorithm_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Grouped by task; algorithms that exist for both tasks also appear under "task inferred"."""
    by_key: dict[str, list[catalogue.Algorithm]] = {}
    for algorithm in catalogue.algorithm_list():
        by_key.setdefault(algorithm.key, []).append(algorithm)
    both = [found[0] for found in by_key.values() if len(found) == len(catalogue.TASKS)]
    groups = [
        (
            "Task inferred from the target column",
            [(f"{INFER}:{algorithm.key}", algorithm.label) for algorithm in both],
        )
    ]
    for task in catalogue.TASKS:
        groups.append(
            (
                task.capitalize(),
                [(f"{task}:{a.key}", f"{a.label} ({task})") for a in catalogue.algorithm_list(task=task)],
            )
        )
    return groups


class DatasetVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: DatasetVersion) -> str:
        return f"{obj.dataset.name} v{obj.version} · {obj.row_count:,} rows · target {obj.target_column}"


class TrainingRunForm(forms.Form):
    dataset_version = DatasetVersionChoiceField(
        queryset=DatasetVersion.objects.none(), empty_label="Choose a dataset version"
    )
    model_name = forms.CharField(
        max_length=MODEL_NAME_MAX_LENGTH,
        help_text="A new name registers a new model; an existing name adds a version to it.",
        widget=forms.TextInput(attrs={"list": "model-names", "autocomplete": "off"}),
    )
    algorithm = forms.ChoiceField(choices=algorithm_choices)
    target_column = forms.CharField(
        required=False, max_length=255, help_text="Leave empty to use the dataset version's target column."
    )
    params = forms.CharField(
        label="Hyperparameters (JSON object)",
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "class": "json", "spellcheck": "false"}),
        help_text='For example {"max_depth": 6, "n_estimators": 200}; empty for the defaults.',
    )
    seed = forms.IntegerField(
        min_value=0, max_value=MAX_SEED, initial=42, help_text="Fixes the split and model."
    )
    test_size = forms.FloatField(
        label="Holdout share",
        min_value=TEST_SIZE_MIN,
        max_value=TEST_SIZE_MAX,
        initial=0.2,
        help_text=f"Between {TEST_SIZE_MIN} and {TEST_SIZE_MAX}.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = dataset_selectors.dataset_version_list()

    def clean_params(self) -> Any:
        """The JSON value; the service says whether it is a hyperparameter object the algorithm takes."""
        text = (self.cleaned_data.get("params") or "").strip()
        if not text:
            return {}
        try:
            return parsers.json_loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"This is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None

    def clean_algorithm(self) -> tuple[str | None, str]:
        task, _, key = self.cleaned_data["algorithm"].partition(":")
        return (None if task == INFER else task), key


def training_form_initial(query: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The training form's initial values from a link's query, and a sentence for each value ignored.

    `dataset_version` is a dataset version's id. `model` (or `model_name`, its older spelling) names a
    registered model: its name and target column, and the task and algorithm of its newest version, are
    filled in, and without a `dataset_version` also the newest version of the dataset that trained it.
    An unknown or malformed value leaves its field empty; nothing is refused here.
    """
    initial: dict[str, Any] = {}
    ignored: list[str] = []
    raw_version = (query.get("dataset_version") or "").strip()
    if raw_version:
        found = None
        if raw_version.isascii() and raw_version.isdigit() and len(raw_version) <= 18:
            found = dataset_selectors.dataset_version_list().filter(pk=int(raw_version)).first()
        if found is None:
            ignored.append(f"There is no dataset version {raw_version[:40]!r}; choose one below.")
        else:
            initial["dataset_version"] = found.pk
    raw_model = (query.get("model") or query.get("model_name") or "").strip()
    if raw_model:
        model = None
        if len(raw_model) <= MODEL_NAME_MAX_LENGTH:
            model = registry_selectors.registered_model_list().filter(name=raw_model).first()
        if model is None:
            ignored.append(
                f"There is no model named {raw_model[:80]!r}; type a name below (a new name registers a "
                "new model)."
            )
        else:
            initial.update(_model_initial(model, with_dataset=not raw_version))
    return initial, ignored


def _model_initial(model: RegisteredModel, *, with_dataset: bool) -> dict[str, Any]:
    """A new version's inputs: like the model's newest version, on the newest data of the same dataset."""
    initial: dict[str, Any] = {"model_name": model.name}
    if model.target_column:
        initial["target_column"] = model.target_column
    newest = (
        registry_selectors.model_version_list(model_name=model.name)
        .defer("metrics", "artifacts", "training_summary", "reference_profile", "params", "feature_schema")
        .first()
    )
    if newest is None:
        return initial
    choice = f"{newest.task}:{newest.algorithm}"
    if any(choice == value for _, group in algorithm_choices() for value, _ in group):
        initial["algorithm"] = choice
    if with_dataset and newest.dataset_version is not None:
        latest = dataset_selectors.dataset_version_list(
            dataset_name=newest.dataset_version.dataset.name
        ).first()
        initial["dataset_version"] = (latest or newest.dataset_version).pk
    return initial


METRIC_LABELS = {"accuracy": "Accuracy", "f1_macro": "Macro F1", "mae": "MAE", "rmse": "RMSE"}


def _default(name: str) -> str:
    value = RetrainingPolicy._meta.get_field(name).default
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "window":
        return Window(value).label
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _help(name: str, text: str) -> str:
    return f"{text} Default: {_default(name)}."


def _number(name: str, label: str, text: str) -> forms.CharField:
    # Text, not a number field: the service checks every value and names the field it refuses.
    return forms.CharField(
        label=label,
        max_length=40,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text=_help(name, text),
    )


class RetrainingPolicyForm(forms.Form):
    """Every field of a model's retraining policy; policy_services.retraining_policy_set checks the values."""

    enabled = forms.BooleanField(
        label="Retrain automatically",
        required=False,
        help_text=_help(
            "enabled",
            "Start a retraining when the live metric crosses the threshold. Staff may always start one by "
            "hand.",
        ),
    )
    metric = forms.CharField(
        label="Live metric",
        widget=forms.Select,
        help_text="The live metric watched: accuracy or macro F1 for classification, MAE or RMSE for "
        "regression. Default: accuracy (classification), MAE (regression).",
    )
    threshold = forms.CharField(
        label="Threshold",
        max_length=40,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="Retrain when the live metric falls below this (rises above it for MAE and RMSE). "
        "Default: 0.05 under the champion's holdout score (1.2 times its holdout error for regression).",
    )
    window = forms.CharField(
        label="Window",
        widget=forms.Select(choices=Window.choices),
        help_text=_help("window", "Which outcomes the live metric is read over."),
    )
    last_n = _number(
        "last_n", "N of the last N labelled", 'How many outcomes the "last N labelled" window holds.'
    )
    min_labels = _number(
        "min_labels",
        "Minimum outcomes",
        "Outcomes the window must hold before the metric counts; also the labelled predictions a "
        "retraining needs before it may start.",
    )
    cooldown_minutes = _number(
        "cooldown_minutes",
        "Cooldown (minutes)",
        "Minutes after a retraining before an automatic trigger may start the next (staff may start one "
        "sooner).",
    )
    max_per_day = _number(
        "max_per_day", "Most per day", "Most retrainings in any 24 hours, those started by staff included."
    )
    feedback_rows = _number(
        "feedback_rows",
        "Outcomes learnt from",
        "The newest labelled predictions added to the champion's training data; older outcomes may "
        "teach a concept that has since changed.",
    )
    recent_weight = _number(
        "recent_weight",
        "Weight of recent outcomes",
        "Weight of the outcomes in the window against 1 for older rows: above 1, recent labels outvote "
        "outdated ones sooner, but their noise is learnt too. From 1 to 100.",
    )
    recent_holdout_share = _number(
        "recent_holdout_share",
        "Recent holdout share",
        "Share of the window's outcomes kept out of training to judge champion and challenger on "
        "(0.05 to 0.9).",
    )
    margin = _number(
        "margin",
        "Margin",
        "How much better the challenger must score, in the metric's own units, on the holdout and its "
        "shadow predictions; a new champion worse than its predecessor by more is rolled back (0 to 0.99).",
    )
    alpha = _number(
        "alpha",
        "Significance",
        "The paired test's p-value (McNemar for classification, Wilcoxon for regression) must be below "
        "this (0.0001 to 0.5).",
    )
    shadow_min_labels = _number(
        "shadow_min_labels",
        "Shadow outcomes",
        "Labelled shadow predictions of the challenger before it is judged on them.",
    )
    trigger_on_drift = forms.BooleanField(
        label="Retrain on drift",
        required=False,
        help_text=_help(
            "trigger_on_drift",
            "Also start a retraining when the drift job flags the champion's inputs as drifting, for when "
            "outcomes come late (the other guardrails, minimum outcomes included, still apply).",
        ),
    )
    auto_promote = forms.BooleanField(
        label="Promote automatically",
        required=False,
        help_text=_help(
            "auto_promote",
            "Promote a challenger that passes on its own; off, it waits for a staff member's approval.",
        ),
    )
    rollback_labels = _number(
        "rollback_labels",
        "Rollback watch (outcomes)",
        "A new champion's first outcomes after which its live metric is compared with its predecessor's; "
        "worse by more than the margin, it is rolled back.",
    )

    def __init__(self, *args: Any, task: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = settings.RETRAINING_MAX_FEEDBACK_ROWS
        self.fields["feedback_rows"].help_text += f" This site takes at most {cap:,}."
        metrics = policy_services.POLICY_METRICS[task or Task.CLASSIFICATION]
        self.fields["metric"].widget.choices = [(name, METRIC_LABELS.get(name, name)) for name in metrics]

    @classmethod
    def for_policy(cls, policy: RetrainingPolicy, *, task: str, data: Any = None) -> RetrainingPolicyForm:
        initial = {name: getattr(policy, name) for name in cls.base_fields}
        return cls(data, initial=initial, task=task)

    def add_service_errors(self, exc: ValidationError) -> None:
        """The service's refusal, each message on its field (unknown names go above the form)."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc.messages)
            return
        for name, items in exc.message_dict.items():
            self.add_error(name if name in self.fields else None, items)


class RetrainForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Reason (recorded in the event log)"}),
    )
