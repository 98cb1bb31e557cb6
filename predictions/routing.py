"""Which version answers a row: the canary's sticky split between the champion and the challenger, and the
challenger's own check of the rows it is given (by the canary here, by the shadow worker later)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from models_registry.models import ChallengerMode, ModelVersion
from predictions import model_cache
from predictions.validation import RowsInvalid, ValidatedRows, rows_validate

#: Who answered a row: the version asked for (production by default), or the canary's challenger.
CHAMPION = "champion"
CHALLENGER = "challenger"
CANARY_BUCKETS = 100


def canary_bucket(*, model_name: str, routing_key: str) -> int:
    """A stable bucket 0..99 of a routing key: sha256, so every process and every release agrees.

    A key whose bucket is below the canary's percent goes to the challenger: the same key always goes the
    same way at a given percent, and raising the percent only moves more keys over.
    """
    digest = hashlib.sha256(f"{model_name}\n{routing_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % CANARY_BUCKETS


def _routing_keys(*, n_rows: int, keys: list[str] | None, user: Any, request_id: str) -> list[str]:
    """Each row's routing key: the client's key for the row, else the user, else the request."""
    if keys is not None:
        return [f"key:{key}" for key in keys]
    user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    shared = f"user:{user_id}" if user_id is not None else f"request:{request_id}"
    return [shared] * n_rows


@dataclass(frozen=True)
class CanaryShare:
    """The rows a canary gives the challenger, checked against its own feature schema, and their positions
    in the call. Rows its schema refused are not among them: the version asked for answers those."""

    challenger: ModelVersion
    validated: ValidatedRows
    positions: list[int]


def canary_share(
    champion: ModelVersion,
    *,
    rows: list[Any],
    keys: list[str] | None,
    user: Any,
    request_id: str,
    n_rows: int,
) -> CanaryShare | None:
    """The challenger's share of a call `champion` would answer: each row whose routing key (its key, else
    the user, else the request id) falls in the canary's percent and that the challenger's schema accepts.

    None when the model is not in canary mode, has no challenger, or none of the rows go to it.
    """
    challenger, positions = _canary_rows(champion, keys=keys, user=user, request_id=request_id, n_rows=n_rows)
    if challenger is None or not positions:
        return None
    validated, kept = rows_validate_for(version=challenger, rows=[rows[i] for i in positions])
    if validated is None:
        return None
    return CanaryShare(challenger=challenger, validated=validated, positions=[positions[i] for i in kept])


def _canary_rows(
    champion: ModelVersion, *, keys: list[str] | None, user: Any, request_id: str, n_rows: int
) -> tuple[ModelVersion | None, list[int]]:
    """The challenger and the positions of the rows it answers, when the model is in canary mode."""
    registered = champion.registered_model
    if registered.challenger_mode != ChallengerMode.CANARY or registered.canary_percent <= 0:
        return None, []
    challenger = model_cache.resolutions.challenger(registered_model=registered)
    if challenger is None:
        return None, []
    routing = _routing_keys(n_rows=n_rows, keys=keys, user=user, request_id=request_id)
    percent = registered.canary_percent
    return challenger, [
        index
        for index, key in enumerate(routing)
        if canary_bucket(model_name=registered.name, routing_key=key) < percent
    ]


def rows_validate_for(*, version: ModelVersion, rows: list[Any]) -> tuple[ValidatedRows | None, list[int]]:
    """The rows `version`'s own feature schema accepts, validated, and their positions in `rows`.

    Each row is first cut down to the version's features, so rows checked against another version (the
    champion's) need only carry what this one reads. Rows it refuses are left out; None when it accepts
    none. The canary and the shadow worker give the challenger rows this way.
    """
    names = [column["name"] for column in version.feature_schema]
    own = [{name: row[name] for name in names if name in row} for row in rows]
    kept = list(range(len(own)))
    while kept:
        try:
            validated = rows_validate(
                rows=[own[i] for i in kept],
                feature_schema=version.feature_schema,
                max_rows=len(kept),
                max_text_chars=settings.PREDICTION_MAX_TEXT_CHARS,
            )
        except RowsInvalid as exc:
            refused = {item["row"] - 1 for item in exc.errors if item.get("row")}
            if not refused:
                break
            kept = [position for index, position in enumerate(kept) if index not in refused]
        else:
            return validated, kept
    return None, []
