"""Writes for champion and challenger: how the staging version meets production traffic (off, shadow,
canary and its share)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from mlops_site import errors
from models_registry import selectors
from models_registry.models import ChallengerMode, RegisteredModel

CANARY_PERCENT_MAX = 100


class ChallengerUnavailable(errors.Conflict):
    """Shadow or canary asked for a model without a production and a staging version (409)."""

    code = "no_version_in_stage"


def _mode_check(mode: Any) -> str:
    if mode not in ChallengerMode.values:
        raise ValidationError(
            {"mode": f"Choose one of: {', '.join(ChallengerMode.values)}; got {str(mode)[:40]!r}."}
        )
    return str(mode)


def _percent_check(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= CANARY_PERCENT_MAX:
        raise ValidationError(
            {
                "canary_percent": "The canary's share must be a whole number from 0 to "
                f"{CANARY_PERCENT_MAX}; got {str(percent)[:40]!r}."
            }
        )
    return percent


def challenger_mode_check(
    *, registered_model: RegisteredModel, mode: Any, canary_percent: Any = None
) -> tuple[str, int]:
    """The mode and share after checking them; raises ValidationError naming the field, or
    ChallengerUnavailable when shadow or canary lacks a production or a staging version.

    `canary_percent` None keeps the model's current share. The share is kept in every mode (it is what the
    canary answers once the mode is canary), so changing the mode never loses it.
    """
    mode = _mode_check(mode)
    percent = registered_model.canary_percent if canary_percent is None else _percent_check(canary_percent)
    if mode != ChallengerMode.OFF:
        missing = [
            stage
            for stage, found in (
                ("production", selectors.champion_of(registered_model)),
                ("staging", selectors.challenger_of(registered_model)),
            )
            if found is None
        ]
        if missing:
            message = (
                f"Model '{registered_model.name}' has no {' and no '.join(missing)} version: "
                f"{ChallengerMode(mode).label.lower()} mode compares the staging version (the challenger) "
                "with the production version (the champion)."
            )
            raise ChallengerUnavailable(
                message, errors=[errors.problem(message, field="mode", code="no_version_in_stage")]
            )
    return mode, percent


def challenger_mode_set(
    *,
    registered_model: RegisteredModel,
    mode: Any,
    canary_percent: Any = None,
    user: AbstractBaseUser | None,
) -> RegisteredModel:
    """Set how the challenger meets production traffic: off, shadow, or canary answering `canary_percent`
    of it (None keeps the current share).

    Only staff users may (None: the system itself). `challenger_since` moves to now when the mode changes,
    or when the challenger became the staging version after it (a new challenger starts afresh); a change
    of the share alone keeps it, so canary figures stay comparable. Prediction processes see the change at
    their next request (at once in this process, within half a second in the others). Nothing is emitted.
    Raises ValidationError naming the field, ChallengerUnavailable or PermissionDenied.
    """
    if user is not None and not getattr(user, "is_staff", False):
        raise PermissionDenied("Only staff members may change a model's challenger mode.")
    with transaction.atomic():
        # Transitions lock the same row: the staging and production versions checked stay so until commit.
        locked = RegisteredModel.objects.select_for_update().get(pk=registered_model.pk)
        mode, percent = challenger_mode_check(
            registered_model=locked, mode=mode, canary_percent=canary_percent
        )
        since = locked.challenger_since
        challenger = selectors.challenger_of(locked)
        restarted = (
            mode != locked.challenger_mode
            or since is None
            or (challenger is not None and selectors.challenger_staged_at(challenger) > since)
        )
        if restarted:
            since = timezone.now()
        before = (locked.challenger_mode, locked.canary_percent, locked.challenger_since)
        locked.challenger_mode, locked.canary_percent, locked.challenger_since = mode, percent, since
        if (mode, percent, since) != before:
            locked.save(update_fields=["challenger_mode", "canary_percent", "challenger_since"])
    registered_model.challenger_mode = locked.challenger_mode
    registered_model.canary_percent = locked.canary_percent
    registered_model.challenger_since = locked.challenger_since
    return registered_model
