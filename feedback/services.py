"""Writes for feedback: check true outcomes against the predictions they name, store them with their
history, and keep the live-quality rollups in the same transaction.

One path for every entry point: the pages, the single and bulk API and the file import all call
`feedback_check` then `feedback_store` (or `feedback_give`/`feedback_give_many`, which do both).
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from feedback import quality
from feedback.models import DelayHourly, Feedback, FeedbackChange, QualityHourly, Source
from mlops_site import rollups
from mlops_site.errors import NotFound, ProblemsInvalid, problem
from models_registry.models import ModelVersion, Task
from predictions.models import Prediction, PredictionKey

#: Fields an item may carry: one reference, the outcome, a comment.
REFERENCE_FIELDS = ("prediction", "model", "key", "batch_job", "row")
OUTCOME_FIELDS = ("correct", "true_label", "true_value", "comment")
ITEM_FIELDS = REFERENCE_FIELDS + OUTCOME_FIELDS
COMMENT_MAX_CHARS = 1000
#: Larger true values are refused: their squared errors would lose all precision in the sums.
TRUE_VALUE_LIMIT = 1e15
_TRUE = {"true", "right", "yes", "1", "correct"}
_FALSE = {"false", "wrong", "no", "0", "incorrect"}


class FeedbackInvalid(ProblemsInvalid):
    """Feedback was refused (400); `errors` names every problem by row and field. Nothing was stored."""

    what = "feedback"


class PredictionNotFound(NotFound):
    """No prediction the caller may label by that id (404), whether it does not exist or is someone else's."""


@dataclass(frozen=True)
class Target:
    """A prediction as feedback needs it, read without building model instances."""

    prediction_id: int
    model_version_id: int
    created_at: Any
    predicted: Any


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


#: What storing an outcome did: a first outcome, a different one (or a new comment), or nothing.
STORED_STATUSES = ("created", "updated", "unchanged")


@dataclass(frozen=True)
class Stored:
    prediction_id: int
    status: str  # one of STORED_STATUSES
    feedback: Feedback
    # False when only the comment changed: no history row was written.
    outcome_changed: bool = True


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _predicted_label(target: Target) -> str:
    return _label_text(target.predicted)


#: A version's task and classes never change once it exists, so each process reads them once.
_version_infos: dict[int, VersionInfo] = {}
_VERSION_INFOS_MAX = 1000


def _versions(version_ids: set[int]) -> dict[int, VersionInfo]:
    missing = version_ids - set(_version_infos)
    if missing:
        if len(_version_infos) + len(missing) > _VERSION_INFOS_MAX:
            _version_infos.clear()
        _version_infos.update(
            (pk, VersionInfo(task=task, classes=tuple(_label_text(c) for c in (classes or []))))
            for pk, task, classes in ModelVersion.objects.filter(pk__in=missing).values_list(
                "pk", "task", "classes"
            )
        )
    return {pk: _version_infos[pk] for pk in version_ids if pk in _version_infos}


def _scoped(user: Any) -> Any:
    predictions = Prediction.objects.all()
    if not user.is_staff:
        predictions = predictions.filter(user=user)
    return predictions


_TARGET_FIELDS = ("pk", "model_version_id", "created_at", "prediction")
#: Values per IN (...) list: far below SQLite's bound on parameters, and a plan PostgreSQL handles well.
_IN_LIST = 5000


def _parts(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_LIST):
        yield values[start : start + _IN_LIST]


def _int_or_none(value: Any, *, text: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if text and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _resolve(
    items: Sequence[Mapping[str, Any]], *, user: Any, text: bool, result: CheckResult, first_row: int
) -> dict[int, Target]:
    """{row: Target} for every item whose reference names a prediction the user may label.

    Each kind of reference is looked up in one query for all items. A prediction the user may not label
    is reported exactly like one that does not exist.
    """
    by_id: dict[int, list[int]] = defaultdict(list)
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_row: dict[tuple[uuid.UUID, int], list[int]] = defaultdict(list)
    for offset, item in enumerate(items):
        row = first_row + offset
        given = [name for name in REFERENCE_FIELDS if item.get(name) not in (None, "")]
        if "prediction" in given:
            if len(given) > 1:
                result.refuse(
                    'Name the prediction one way: "prediction", "model" and "key", or "batch_job" and "row".',
                    row=row,
                    field="prediction",
                )
                continue
            pk = _int_or_none(item["prediction"], text=text)
            if pk is None or not 1 <= pk <= 2**63 - 1:
                result.refuse(
                    f"'prediction' must be a prediction id (1, 2, ...); got {item['prediction']!r:.80}.",
                    row=row,
                    field="prediction",
                )
                continue
            by_id[pk].append(row)
        elif "key" in given or "model" in given:
            if set(given) != {"model", "key"}:
                result.refuse(
                    'A key names a prediction together with its model: give "model" and "key".',
                    row=row,
                    field="key" if "key" not in given else "model",
                )
                continue
            model, key = item["model"], item["key"]
            if not isinstance(model, str) or not isinstance(key, str) or len(key) > 128 or len(model) > 100:
                result.refuse("'model' and 'key' must be texts (a key: at most 128).", row=row, field="key")
                continue
            by_key[(model, key)].append(row)
        elif "batch_job" in given or "row" in given:
            if set(given) != {"batch_job", "row"}:
                result.refuse(
                    'A batch row is named by "batch_job" (the job\'s id) and "row" (from 1).',
                    row=row,
                    field="row" if "row" not in given else "batch_job",
                )
                continue
            try:
                job = uuid.UUID(str(item["batch_job"]))
            except ValueError:
                result.refuse(
                    f"'batch_job' must be a batch job's id (a UUID); got {item['batch_job']!r:.80}.",
                    row=row,
                    field="batch_job",
                )
                continue
            number = _int_or_none(item["row"], text=text)
            if number is None or not 1 <= number <= 2**31:
                result.refuse(
                    f"'row' must be a row number of the job's file, from 1; got {item['row']!r:.80}.",
                    row=row,
                    field="row",
                )
                continue
            by_row[(job, number)].append(row)
        else:
            result.refuse(
                'Name the prediction: "prediction" (its id), "model" and "key", or "batch_job" and "row".',
                row=row,
                field="prediction",
            )
    found: dict[int, Target] = {}
    scoped = _scoped(user)

    def take(rows: list[int], values: tuple[Any, ...]) -> None:
        for row in rows:
            found[row] = Target(*values)

    if by_id:
        seen = set()
        for part in _parts(list(by_id)):
            for values in scoped.filter(pk__in=part).values_list(*_TARGET_FIELDS):
                take(by_id[values[0]], values)
                seen.add(values[0])
        for pk in set(by_id) - seen:
            for row in by_id[pk]:
                result.refuse(
                    f"There is no prediction {pk} you may label.",
                    row=row,
                    field="prediction",
                    code="not_found",
                )
    if by_key:
        for model in {m for m, _ in by_key}:
            keys = [k for m, k in by_key if m == model]
            seen = set()
            for part in _parts(keys):
                rows = PredictionKey.objects.filter(registered_model__name=model, key__in=part).values_list(
                    "key",
                    "prediction_id",
                    "prediction__model_version",
                    "prediction__created_at",
                    "prediction__prediction",
                )
                if not user.is_staff:
                    rows = rows.filter(prediction__user=user)
                for key, *values in rows:
                    take(by_key[(model, key)], tuple(values))
                    seen.add(key)
            for key in set(keys) - seen:
                for row in by_key[(model, key)]:
                    result.refuse(
                        f"Model '{model}' has no prediction with key {key!r} that you may label.",
                        row=row,
                        field="key",
                        code="not_found",
                    )
    if by_row:
        for job in {j for j, _ in by_row}:
            numbers = [n - 1 for j, n in by_row if j == job]
            seen = set()
            for part in _parts(numbers):
                rows = scoped.filter(batch_job__uuid=job, row_index__in=part).values_list(
                    "row_index", *_TARGET_FIELDS
                )
                for index, *values in rows:
                    take(by_row[(job, index + 1)], tuple(values))
                    seen.add(index)
            for index in set(numbers) - seen:
                for row in by_row[(job, index + 1)]:
                    result.refuse(
                        f"Batch job {job} has no predicted row {index + 1} that you may label.",
                        row=row,
                        field="row",
                        code="not_found",
                    )
    return found


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
            true_label = _label_text(label.strip() if isinstance(label, str) else label)
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
    targets = _resolve(mappings, user=user, text=text, result=result, first_row=first_row)
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


def _snapshot(
    correct: bool | None, true_label: str, true_value: float | None, *, source: str, by: Any, at: Any
) -> dict[str, Any]:
    return {
        "correct": correct,
        "true_label": true_label,
        "true_value": true_value,
        "source": source,
        "labelled_by": by,
        "at": at.isoformat() if at else None,
    }


def _cell(
    version: VersionInfo, target: Target, true_label: str, true_value: float | None
) -> tuple[str, str, float, float]:
    if version.task == Task.REGRESSION:
        error = float(true_value) - float(target.predicted)  # type: ignore[arg-type]
        return "", "", abs(error), error * error
    return _predicted_label(target), true_label, 0.0, 0.0


def feedback_store(checked: Sequence[Checked], *, user: Any, source: str) -> list[Stored]:
    """Store checked outcomes and their rollups in one transaction; idempotent per prediction.

    The same outcome again changes nothing ("unchanged"; a new comment is kept). A different one replaces
    the outcome, records old → new in FeedbackChange, and moves the prediction's count from the old cell
    of the rollup to the new one. The predictions are locked first, in id order, so concurrent writers of
    the same prediction queue up instead of both creating its feedback.
    """
    if source not in Source.values:
        raise ValueError(f"unknown source {source!r}")
    if not checked:
        return []
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _store(checked, user=user, source=source)
        except IntegrityError:
            # SQLite cannot lock rows: a concurrent writer created one of the outcomes first. The
            # second pass finds it and updates it instead.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _store(checked: Sequence[Checked], *, user: Any, source: str) -> list[Stored]:
    now = timezone.now()
    ids = sorted(c.target.prediction_id for c in checked)
    for part in _parts(ids):
        list(Prediction.objects.select_for_update().filter(pk__in=part).order_by("pk").values_list("pk"))
    existing: dict[int, Feedback] = {}
    for part in _parts(ids):
        existing.update((f.prediction_id, f) for f in Feedback.objects.filter(prediction_id__in=part))
    user_id = getattr(user, "pk", None)
    cells: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    delays: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0])
    created: list[Feedback] = []
    updated: list[Feedback] = []
    changes: list[FeedbackChange] = []
    stored: list[Stored] = []
    for item in checked:
        target, outcome, version = item.target, item.outcome, item.version
        hour = rollups.hour_of(target.created_at)
        old = existing.get(target.prediction_id)
        if old is not None and (old.correct, old.true_label, old.true_value) == outcome.values:
            if outcome.comment is not None and outcome.comment != old.comment:
                old.comment = outcome.comment
                old.updated_at = now
                updated.append(old)
                stored.append(Stored(target.prediction_id, "updated", old, outcome_changed=False))
            else:
                stored.append(Stored(target.prediction_id, "unchanged", old, outcome_changed=False))
            continue
        predicted, actual, abs_error, sq_error = _cell(
            version, target, outcome.true_label, outcome.true_value
        )
        cell = cells[(target.model_version_id, hour, predicted, actual)]
        cell[0] += 1
        cell[1] += abs_error
        cell[2] += sq_error
        if old is None:
            delay = (now - target.created_at).total_seconds()
            delays[(target.model_version_id, hour, quality.delay_bin(delay))][0] += 1
            feedback = Feedback(
                prediction_id=target.prediction_id,
                model_version_id=target.model_version_id,
                prediction_created_at=target.created_at,
                predicted_label=predicted if version.task != Task.REGRESSION else "",
                predicted_value=float(target.predicted) if version.task == Task.REGRESSION else None,
                correct=outcome.correct,
                true_label=outcome.true_label,
                true_value=outcome.true_value,
                comment=outcome.comment or "",
                source=source,
                # The user object, not only its id: answering with the username needs no query then.
                labelled_by=user if user_id is not None else None,
                created_at=now,
                updated_at=now,
            )
            created.append(feedback)
            stored.append(Stored(target.prediction_id, "created", feedback))
            continue
        old_predicted, old_actual, old_abs, old_sq = _cell(version, target, old.true_label, old.true_value)
        old_cell = cells[(target.model_version_id, hour, old_predicted, old_actual)]
        old_cell[0] -= 1
        old_cell[1] -= old_abs
        old_cell[2] -= old_sq
        changes.append(
            FeedbackChange(
                feedback=old,
                old=_snapshot(
                    old.correct,
                    old.true_label,
                    old.true_value,
                    source=old.source,
                    by=old.labelled_by_id,
                    at=old.updated_at,
                ),
                new=_snapshot(*outcome.values, source=source, by=user_id, at=now),
                changed_by_id=user_id,
                source=source,
                changed_at=now,
            )
        )
        old.correct, old.true_label, old.true_value = outcome.values
        if outcome.comment is not None:
            old.comment = outcome.comment
        old.source, old.labelled_by_id, old.updated_at = source, user_id, now
        updated.append(old)
        stored.append(Stored(target.prediction_id, "updated", old))
    Feedback.objects.bulk_create(created, batch_size=2000)
    if updated:
        Feedback.objects.bulk_update(
            updated,
            ["correct", "true_label", "true_value", "comment", "source", "labelled_by", "updated_at"],
            batch_size=500,
        )
    FeedbackChange.objects.bulk_create(changes, batch_size=2000)
    rollups.counters_add(
        QualityHourly,
        keys=("model_version", "hour", "predicted", "actual"),
        sums=("n", "sum_abs_error", "sum_sq_error"),
        deltas={key: tuple(values) for key, values in cells.items() if any(values)},
    )
    rollups.counters_add(
        DelayHourly,
        keys=("model_version", "hour", "bin"),
        sums=("n",),
        deltas={key: tuple(values) for key, values in delays.items()},
    )
    return stored


def feedback_give(*, prediction_id: int, user: Any, source: str, data: Mapping[str, Any]) -> Stored:
    """Give one prediction its outcome; raises PredictionNotFound (404) or FeedbackInvalid (400)."""
    if not isinstance(data, Mapping):
        raise FeedbackInvalid([problem("The body must be an object.", code="invalid")])
    extra = sorted(str(k) for k in data if k not in OUTCOME_FIELDS)
    if extra:
        raise FeedbackInvalid(
            [
                problem(
                    f"Unknown field(s) {', '.join(map(repr, extra))}; use {', '.join(OUTCOME_FIELDS)}.",
                    field=extra[0][:100],
                )
            ]
        )
    if not 1 <= prediction_id <= 2**63 - 1:
        raise PredictionNotFound("No such prediction.")
    result = feedback_check([{**data, "prediction": prediction_id}], user=user)
    if any(p["code"] == "not_found" for p in result.problems):
        raise PredictionNotFound("No such prediction.")
    if result.problems:
        raise FeedbackInvalid([{**p, "row": None} for p in result.problems])
    (stored,) = feedback_store(result.valid, user=user, source=source)
    return stored


def bulk_max() -> int:
    return settings.FEEDBACK_BULK_MAX


def feedback_give_many(*, items: Any, user: Any, source: str) -> list[Stored]:
    """Give many predictions their outcomes, all or nothing: any problem refuses the whole list (400)."""
    if not isinstance(items, list) or not items:
        raise FeedbackInvalid([problem("Give 'items', a list of at least one object.", field="items")])
    if len(items) > bulk_max():
        raise FeedbackInvalid(
            [
                problem(
                    f"{len(items)} items; at most {bulk_max()} per request.", field="items", code="too_many"
                )
            ]
        )
    result = feedback_check(items, user=user)
    if result.problems:
        raise FeedbackInvalid(result.problems)
    return feedback_store(result.valid, user=user, source=source)
