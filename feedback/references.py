"""Which prediction each feedback item names: by our id, by the client's key (with its model), or by a
batch job's row; each kind looked up for all items at once, and only among predictions the user may label.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from predictions.models import Prediction, PredictionKey

REFERENCE_FIELDS = ("prediction", "model", "key", "batch_job", "row")


class Refuse(Protocol):
    def __call__(self, message: str, *, row: int, field: str | None, code: str = "invalid") -> None: ...


@dataclass(frozen=True)
class Target:
    """A prediction as feedback needs it, read without building model instances."""

    prediction_id: int
    model_version_id: int
    created_at: Any
    predicted: Any


def _scoped(user: Any) -> Any:
    predictions = Prediction.objects.all()
    if not user.is_staff:
        predictions = predictions.filter(user=user)
    return predictions


_TARGET_FIELDS = ("pk", "model_version_id", "created_at", "prediction")
#: Values per lookup: far below SQLite's bound on parameters in an IN list.
_IN_LIST = 5000


def parts(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_LIST):
        yield values[start : start + _IN_LIST]


def _int_or_none(value: Any, *, text: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if text and isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        return int(value.strip())
    return None


def resolve(
    items: Sequence[Mapping[str, Any]], *, user: Any, text: bool, refuse: Refuse, first_row: int
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
                refuse(
                    'Name the prediction one way: "prediction", "model" and "key", or "batch_job" and "row".',
                    row=row,
                    field="prediction",
                )
                continue
            pk = _int_or_none(item["prediction"], text=text)
            if pk is None or not 1 <= pk <= 2**63 - 1:
                refuse(
                    f"'prediction' must be a prediction id (1, 2, ...); got {item['prediction']!r:.80}.",
                    row=row,
                    field="prediction",
                )
                continue
            by_id[pk].append(row)
        elif "key" in given or "model" in given:
            if set(given) != {"model", "key"}:
                refuse(
                    'A key names a prediction together with its model: give "model" and "key".',
                    row=row,
                    field="key" if "key" not in given else "model",
                )
                continue
            model, key = item["model"], item["key"]
            if not isinstance(model, str) or not isinstance(key, str) or len(key) > 128 or len(model) > 100:
                refuse("'model' and 'key' must be texts (a key: at most 128).", row=row, field="key")
                continue
            by_key[(model, key)].append(row)
        elif "batch_job" in given or "row" in given:
            if set(given) != {"batch_job", "row"}:
                refuse(
                    'A batch row is named by "batch_job" (the job\'s id) and "row" (from 1).',
                    row=row,
                    field="row" if "row" not in given else "batch_job",
                )
                continue
            try:
                job = uuid.UUID(str(item["batch_job"]))
            except ValueError:
                refuse(
                    f"'batch_job' must be a batch job's id (a UUID); got {item['batch_job']!r:.80}.",
                    row=row,
                    field="batch_job",
                )
                continue
            number = _int_or_none(item["row"], text=text)
            if number is None or not 1 <= number <= 2**31:
                refuse(
                    f"'row' must be a row number of the job's file, from 1; got {item['row']!r:.80}.",
                    row=row,
                    field="row",
                )
                continue
            by_row[(job, number)].append(row)
        else:
            refuse(
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
        for part in parts(list(by_id)):
            for values in scoped.filter(pk__any_of=part).values_list(*_TARGET_FIELDS):
                take(by_id[values[0]], values)
                seen.add(values[0])
        for pk in set(by_id) - seen:
            for row in by_id[pk]:
                refuse(
                    f"There is no prediction {pk} you may label.",
                    row=row,
                    field="prediction",
                    code="not_found",
                )
    if by_key:
        for model in {m for m, _ in by_key}:
            keys = [k for m, k in by_key if m == model]
            seen = set()
            for part in parts(keys):
                rows = PredictionKey.objects.filter(
                    registered_model__name=model, key__any_of=part
                ).values_list(
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
                    refuse(
                        f"Model '{model}' has no prediction with key {key!r} that you may label.",
                        row=row,
                        field="key",
                        code="not_found",
                    )
    if by_row:
        for job in {j for j, _ in by_row}:
            numbers = [n - 1 for j, n in by_row if j == job]
            seen = set()
            for part in parts(numbers):
                rows = scoped.filter(batch_job__uuid=job, row_index__any_of=part).values_list(
                    "row_index", *_TARGET_FIELDS
                )
                for index, *values in rows:
                    take(by_row[(job, index + 1)], tuple(values))
                    seen.add(index)
            for index in set(numbers) - seen:
                for row in by_row[(job, index + 1)]:
                    refuse(
                        f"Batch job {job} has no predicted row {index + 1} that you may label.",
                        row=row,
                        field="row",
                        code="not_found",
                    )
    return found
