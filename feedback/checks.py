"""Checks of outcomes before anything is written: which prediction each item names (by id, by the
client's key, or by a batch job's row), whether the user may label it, and whether the outcome fits the
version (one of its classes, or a finite number). Every problem is reported by row and field."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback import references
from feedback.references import REFERENCE_FIELDS, Target
from mlops_site.errors import problem
from models_registry.models import ModelVersion, Task

#: Fields an item may carry: one reference, the outcome, a comment.
OUTCOME_FIELDS = ("correct", "true_label", "true_value", "comment")
ITEM_FIELDS = REFERENCE_FIELDS + OUTCOME_FIELDS
COMMENT_MAX_CHARS = 1000
#: Larger true values are refused: their squared errors would lose all precision in the sums.
TRUE_VALUE_LIMIT = 1e15
_TRUE = {"true", "right", "yes", "1", "correct"}
_FALSE = {"false", "wrong", "no", "0", "incorrect"}


@dataclass(frozen=True)
class VersionInfo:
    task: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    correct: bool | None
    true_label: str
    true_value: float | None
    comment: str | None  # None: keep the comment there is

    @property
    def values(self) -> tuple[bool | None, str, float | None]:
        return self.correct, self.true_label, self.true_value


@dataclass(frozen=True)
class Checked:
    row: int
    target: Target
    version: VersionInfo
    outcome: Outcome


@dataclass
class CheckResult:
    valid: list[Checked] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: Rows (from 1) with a problem.
    failed_rows: set[int] = field(default_factory=set)

    def refuse(self, message: str, *, row: int, field: str | None, code: str = "invalid") -> None:
        self.problems.append(problem(message, row=row, field=field, code=code))
        self.failed_rows.add(row)


def label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _predicted_label(target: Target) -> str:
    return label_text(target.predicted)


#: A version's task and classes never change once it exists, so each process reads them once.
_version_infos: dict[int, VersionInfo] = {}
_VERSION_INFOS_MAX = 1000


def _versions(version_ids: set[int]) -> dict[int, VersionInfo]:
    missing = version_ids - set(_version_infos)
    if missing:
        if len(_version_infos) + len(missing) > _VERSION_INFOS_MAX:
            _version_infos.clear()
        _version_infos.update(
            (pk, VersionInfo(task=task, classes=tuple(label_text(c) for c in (classes or []))))
            for pk, task, classes in ModelVersion.objects.filter(pk__any_of=missing).values_list(
                "pk", "task", "classes"
            )
        )
    return {pk: _version_infos[pk] for pk in version_ids if pk in _version_infos}


def _correct_parse(value: Any, *, text: bool) -> bool | str | None:
    """True, False, None (not given) or an error message."""
    if value is None or (text and value == ""):
        return None
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    choices = " (or right/wrong, yes/no, 1/0)" if text else ""
    return f"'correct' must be true or false{choices}; got {value!r:.80}."


def _number_parse(value: Any, *, text: bool) -> float | str:
    """A finite float or an error message."""
    if isinstance(value, bool):
        return f"'true_value' must be a number; got {value!r}."
    if isinstance(value, int | float):
        number = float(value) if abs(value) < 2**1023 else math.inf
    elif text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return f"'true_value' must be a number; got {value!r:.80}."
    else:
        return f"'true_value' must be a number; got {value!r:.80}."
    if not math.isfinite(number):
        return f"'true_value' must be a finite number; got {value!r:.80}."
    if abs(number) > TRUE_VALUE_LIMIT:
        limit = f"{TRUE_VALUE_LIMIT:.0e}"
        return f"'true_value' must be between -{limit} and {limit}; got {value!r:.80}."
    return number


def _outcome(
    item: Mapping[str, Any],
    *,
    target: Target,
    version: VersionInfo,
    text: bool,
    row: int,
    result: CheckResult,
) -> Outcome | None:
    """The item's outcome made whole (the true class or value), or None after refusing it."""
    failed_before = len(result.problems)
    correct = _correct_parse(item.get("correct"), text=text)
    if isinstance(correct, str):
        result.refuse(correct, row=row, field="correct")
    comment = item.get("comment")
    if comment is not None and not isinstance(comment, str):
        result.refuse("'comment' must be text.", row=row, field="comment")
    elif comment is not None and len(comment) > COMMENT_MAX_CHARS:
        result.refuse(
            f"'comment' is {len(comment)} characters; at most {COMMENT_MAX_CHARS}.", row=row, field="comment"
        )
    elif isinstance(comment, str) and "\x00" in comment:
        result.refuse("'comment' may not contain NUL characters.", row=row, field="comment")
    label, value = item.get("true_label"), item.get("true_value")
    if text:
        label = None if label == "" else label
        value = None if value == "" else value
    if version.task == Task.REGRESSION:
        if label is not None:
            result.refuse(
                "This model predicts numbers: give 'true_value', not 'true_label'.",
                row=row,
                field="true_label",
            )
        predicted = float(target.predicted)
        if value is not None:
            number = _number_parse(value, text=text)
            if isinstance(number, str):
                result.refuse(number, row=row, field="true_value")
        elif correct is True:
            number = predicted
        else:
            result.refuse(
                "Give 'true_value', the observed number"
                + (" (saying the prediction was wrong is not enough)." if correct is False else "."),
                row=row,
                field="true_value",
            )
        if len(result.problems) > failed_before:
            return None
        return Outcome(
            correct=correct if isinstance(correct, bool) else None,
            true_label="",
            true_value=number,
            comment=_comment(comment),
        )
    if value is not None:
        result.refuse(
            "This model predicts classes: give 'true_label', not 'true_value'.", row=row, field="true_value"
        )
    predicted = _predicted_label(target)
    true_label = ""
    if label is not None:
        if (
            isinstance(label, bool)
            or not isinstance(label, str | int | float)
            or (isinstance(label, float) and not math.isfinite(label))
        ):
            result.refuse(
                f"'true_label' must be one of the model's classes; got {label!r:.80}.",
                row=row,
                field="true_label",
            )
        else:
            true_label = label_text(label.strip() if isinstance(label, str) else label)
            if version.classes and true_label not in version.classes:
                shown = ", ".join(version.classes[:20]) + (", ..." if len(version.classes) > 20 else "")
                result.refuse(
                    f"'true_label' {true_label!r:.80} is not a class of this model version ({shown}).",
                    row=row,
                    field="true_label",
                    code="unknown_class",
                )
            elif len(true_label) > 255:
                result.refuse("'true_label' is longer than 255 characters.", row=row, field="true_label")
            elif isinstance(correct, bool) and correct != (true_label == predicted):
                result.refuse(
                    f"'correct' says {'right' if correct else 'wrong'}, but the prediction was "
                    f"{predicted!r} and the true label is {true_label!r}.",
                    row=row,
                    field="correct",
                    code="contradiction",
                )
    elif correct is True:
        true_label = predicted
    elif correct is False:
        others = [c for c in version.classes if c != predicted]
        # With two classes "wrong" names the other one; with more the true class stays unknown ("").
        true_label = others[0] if len(version.classes) == 2 and len(others) == 1 else ""
    else:
        result.refuse(
            "Say whether the prediction was right ('correct') or give 'true_label'.",
            row=row,
            field="true_label",
        )
    if len(result.problems) > failed_before:
        return None
    return Outcome(
        correct=true_label == predicted, true_label=true_label, true_value=None, comment=_comment(comment)
    )


def _comment(comment: Any) -> str | None:
    return comment.strip() if isinstance(comment, str) else None


def feedback_check(
    items: Sequence[Mapping[str, Any]], *, user: Any, text: bool = False, first_row: int = 1
) -> CheckResult:
    """Check every item against the prediction it names; problems by row (from `first_row`) and field.

    `text=True` for values read from a file, where every value is text ("true", "3.5"); JSON values must
    have their own types. A prediction named twice is refused on its later rows.
    """
    result = CheckResult()
    for offset, item in enumerate(items):
        if not isinstance(item, Mapping):
            result.refuse("Each item must be an object.", row=first_row + offset, field=None)
            continue
        unknown = sorted(str(k) for k in item if k not in ITEM_FIELDS)
        if unknown:
            result.refuse(
                f"Unknown field(s) {', '.join(map(repr, unknown))}; use {', '.join(ITEM_FIELDS)}.",
                row=first_row + offset,
                field=unknown[0][:100],
            )
    mappings = [item if isinstance(item, Mapping) else {} for item in items]
    targets = references.resolve(mappings, user=user, text=text, refuse=result.refuse, first_row=first_row)
    versions = _versions({t.model_version_id for t in targets.values()})
    first_of: dict[int, int] = {}
    for row in sorted(targets):
        if row in result.failed_rows:
            continue
        target = targets[row]
        if target.prediction_id in first_of:
            result.refuse(
                f"Prediction {target.prediction_id} is also named on row {first_of[target.prediction_id]}; "
                "give each prediction one outcome.",
                row=row,
                field="prediction",
                code="duplicate",
            )
            continue
        first_of[target.prediction_id] = row
        version = versions[target.model_version_id]
        outcome = _outcome(
            mappings[row - first_row], target=target, version=version, text=text, row=row, result=result
        )
        if outcome is not None:
            result.valid.append(Checked(row=row, target=target, version=version, outcome=outcome))
    result.problems.sort(key=lambda p: p["row"] or 0)
    return result
