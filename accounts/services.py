"""Writes of the accounts app: API tokens, the sign-in limits and audit of every login path, e-mail and
the limits on password reset requests."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import caches
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from accounts.models import SignInEvent
from mlops_site import client_ip

logger = logging.getLogger(__name__)
audit = logging.getLogger("mlops.audit")

#: The cache holding failure counts and locks (settings.CACHES): Redis when configured.
CACHE_ALIAS = "throttle"
#: Where the login backend leaves a refusal for the form or serializer that called authenticate().
REFUSAL_ATTRIBUTE = "sign_in_refusal"


def token_create(*, user: AbstractBaseUser) -> Token:
    """Give the user a token; refuses when one exists, because the old key would silently keep working."""
    if Token.objects.filter(user=user).exists():
        raise ValidationError(
            "You already have an API token. Regenerate it to get a new key, or revoke it first.",
            code="token_exists",
        )
    try:
        with transaction.atomic():
            return Token.objects.create(user=user)
    except IntegrityError:
        # A concurrent request created it between our check and our insert.
        raise ValidationError("You already have an API token.", code="token_exists") from None


def token_regenerate(*, user: AbstractBaseUser) -> Token:
    """Replace the user's token (or create the first one); the old key stops working at once."""
    try:
        with transaction.atomic():
            Token.objects.filter(user=user).delete()
            return Token.objects.create(user=user)
    except IntegrityError:
        # Two regenerations raced and the other one won; its key is the valid one now.
        raise ValidationError(
            "Your token was changed by another request at the same time. Please try again.",
            code="token_conflict",
        ) from None


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's token; returns whether there was one. Revoking twice is harmless."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


def token_obtain(*, user: AbstractBaseUser) -> Token:
    """The user's token, created on first use: what a program gets from POST /api/auth/token/."""
    try:
        with transaction.atomic():
            token, _ = Token.objects.get_or_create(user=user)
    except IntegrityError:
        token = Token.objects.get(user=user)
    return token


class EmailNotSent(Exception):
    """The mail could not be handed over (refused, unreachable, timed out); the reason was logged."""


def email_send(*, message: EmailMessage, purpose: str, user_id: object) -> None:
    """Send one mail through the configured backend (settings.EMAIL_BACKEND), or raise EmailNotSent.

    Any failure of the backend counts: SMTP refusals, connection errors and timeouts (EMAIL_TIMEOUT),
    an unwritable folder for file://. Only the user's id is logged, not their address.
    """
    try:
        message.send()
    except Exception as exc:
        logger.error("%s e-mail to user %s not sent: %s: %s", purpose, user_id, type(exc).__name__, exc)
        raise EmailNotSent(str(exc)) from exc


@dataclass(frozen=True)
class RetryLater:
    """A refusal that ends by itself: the seconds until then, and the wait in words."""

    retry_after: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))

    @property
    def wait(self) -> str:
        return f"{self.minutes} {'minute' if self.minutes == 1 else 'minutes'}"


class SignInRefusal(RetryLater):
    """Why an attempt was refused before its password was checked, and for how long."""

    @property
    def message(self) -> str:
        return (
            "Too many failed sign-in attempts for this account or from your address; "
            f"try again in {self.wait}."
        )


def _subjects(*, username: str, address: str, now: float) -> list[tuple[str, str, int]]:
    """(count key, lock key, limit) per subject: the account as typed (case-folded), and the client address.

    Failures are counted in fixed windows of LOGIN_LOCKOUT_MINUTES named by their number, as the API
    throttles count requests: a new window is a new key, whatever the cache's own expiry does.
    """
    window = int(now // (settings.LOGIN_LOCKOUT_MINUTES * 60))
    # Hashed: usernames are arbitrary text, and cache keys must stay short and printable.
    account = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    subjects = [(f"account:{account}", settings.LOGIN_FAILURE_LIMIT)]
    if address:
        subjects.append((f"client:{address}", settings.LOGIN_CLIENT_FAILURE_LIMIT))
    return [(f"signin:count:{name}:{window}", f"signin:lock:{name}", limit) for name, limit in subjects]


class SignInLocked(PermissionDenied):
    """Raised instead of checking a password: PermissionDenied makes authenticate() try no other backend."""

    def __init__(self, refusal: SignInRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _guarded(action: str, work: Callable[[], Any], fallback: Any, *, limits: str = "sign-in") -> Any:
    """Run a cache operation; with the cache down, log and fail open: a limit is not worth an outage."""
    try:
        return work()
    except Exception as exc:
        logger.warning("%s limits unavailable (%s), attempt allowed unlimited: %s", limits, action, exc)
        return fallback


def _begin(*, subjects: list[tuple[str, str, int]], now: float) -> SignInRefusal | None:
    """Count an attempt before its password is checked; a refusal when the account or client is locked.

    Counting first (an atomic incr) means parallel guesses cannot all slip in under the limit. The
    attempt is taken back by `_finish` if it succeeds, so only failures are left counted. A lock holds
    the time it ends, so it ends on time even where the cache keeps it a little longer.
    """
    lockout = settings.LOGIN_LOCKOUT_MINUTES * 60
    cache = caches[CACHE_ALIAS]

    def check() -> SignInRefusal | None:
        locks = cache.get_many([lock_key for _, lock_key, _ in subjects])
        until = max((float(value) for value in locks.values()), default=0.0)
        if until > now:
            return SignInRefusal(retry_after=math.ceil(until - now))
        for count_key, lock_key, limit in subjects:
            cache.add(count_key, 0, lockout + 1)
            try:
                count = cache.incr(count_key)
            except ValueError:  # evicted between add and incr
                cache.set(count_key, 1, lockout + 1)
                count = 1
            if count > limit:
                # Limit reached by attempts still in flight: lock now rather than check one too many.
                cache.set(lock_key, now + lockout, lockout)
                return SignInRefusal(retry_after=lockout)
        return None

    return _guarded("check", check, None)


def _finish(*, subjects: list[tuple[str, str, int]], now: float, succeeded: bool) -> None:
    """After the password check: a success clears its account's failures and takes back its own attempt
    from the client's count (not other accounts' failures); a failure at the limit starts a lock."""
    lockout = settings.LOGIN_LOCKOUT_MINUTES * 60
    cache = caches[CACHE_ALIAS]

    def finish() -> None:
        if succeeded:
            cache.delete(subjects[0][0])
            for count_key, _, _ in subjects[1:]:
                # ValueError: the key expired meanwhile, so there is nothing to take back.
                with contextlib.suppress(ValueError):
                    cache.decr(count_key)
            return
        counts = cache.get_many([count_key for count_key, _, _ in subjects])
        for count_key, lock_key, limit in subjects:
            if int(counts.get(count_key, 0)) >= limit:
                cache.set(lock_key, now + lockout, lockout)

    _guarded("record", finish, None)


def _record(
    *, request: Any, address: str, username: str, user: AbstractBaseUser | None, outcome: SignInEvent.Outcome
) -> SignInEvent:
    """Write the audit row and the `mlops.audit` log line of one attempt."""
    path = str(getattr(request, "path", ""))[:200]
    event = SignInEvent.objects.create(
        username=username[:150], user=user, client_address=address or None, outcome=outcome, path=path
    )
    audit.info("sign-in %s username=%r address=%s path=%s", outcome, username[:150], address or "-", path)
    return event


def sign_in_refusal(*, request: Any) -> SignInRefusal | None:
    """The refusal the login backend left on this request, if it refused the attempt unchecked."""
    return getattr(request, REFUSAL_ATTRIBUTE, None) if request is not None else None


def sign_in_attempt(
    *, request: Any, username: str, check_password: Callable[[], AbstractBaseUser | None]
) -> AbstractBaseUser | None:
    """One attempt on any login path: refused unchecked while its account or client is locked, else the
    password checked, counted and audited. Returns the user, or None for wrong credentials.

    A refusal raises SignInLocked and is also left on the request (`sign_in_refusal`), because the login
    forms only learn from authenticate() that it returned None. Wrong passwords, unknown accounts and
    disabled accounts are counted and refused alike, so the answers never tell which accounts exist.
    """
    address = client_ip.client_address(request) if request is not None else ""
    now = time.time()
    subjects = _subjects(username=username, address=address, now=now)
    refusal = _begin(subjects=subjects, now=now)
    if refusal is not None:
        _record(
            request=request,
            address=address,
            username=username,
            user=None,
            outcome=SignInEvent.Outcome.LOCKED_OUT,
        )
        if request is not None:
            setattr(request, REFUSAL_ATTRIBUTE, refusal)
        raise SignInLocked(refusal)
    user = check_password()
    _finish(subjects=subjects, now=now, succeeded=user is not None)
    outcome = SignInEvent.Outcome.SUCCEEDED if user is not None else SignInEvent.Outcome.FAILED
    _record(request=request, address=address, username=username, user=user, outcome=outcome)
    return user


#: Password reset requests are counted in windows of this many seconds (the settings say "per hour").
PASSWORD_RESET_WINDOW = 3600


class PasswordResetRefusal(RetryLater):
    """A reset request refused unsent, and the seconds until the window that refused it ends."""

    @property
    def message(self) -> str:
        return (
            "Too many password reset requests for this e-mail address or from your network; no e-mail was "
            f"sent. Try again in {self.wait}."
        )


class PasswordResetLimited(Exception):
    """Raised instead of sending a reset mail: the client or the e-mail address is over its hourly limit."""

    def __init__(self, refusal: PasswordResetRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _email_key(email: str) -> str:
    """The address as Django's reset form matches accounts (Unicode-folded, case-insensitive), hashed.

    Any spelling that could reach the same account shares one count, and no address is stored in the cache.
    """
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    return hashlib.sha256(folded.encode()).hexdigest()[:32]


def password_reset_admit(*, request: Any, email: str) -> None:
    """Count one reset request for `email` from the request's client; raise PasswordResetLimited over a limit.

    Called before any account is looked up, so an address with no account is counted and refused exactly
    like one with an account, and the answer tells nothing about which addresses are registered. The
    client is counted first and, once it is over its limit, the e-mail address is not counted at all: one
    client cannot use up the budgets of many addresses (and so their owners' resets) with requests it
    was refused. Counts live in fixed hourly windows named by their number, like the sign-in limits; with the
    cache down the request is allowed and a warning logged.
    """
    address = client_ip.client_address(request) if request is not None else ""
    now = time.time()
    window = int(now // PASSWORD_RESET_WINDOW)
    subjects = [(f"email:{_email_key(email)}", settings.PASSWORD_RESET_ADDRESS_LIMIT)]
    if address:
        subjects.insert(0, (f"client:{address}", settings.PASSWORD_RESET_CLIENT_LIMIT))
    cache = caches[CACHE_ALIAS]

    def count() -> str | None:
        for name, limit in subjects:
            key = f"pwreset:count:{name}:{window}"
            cache.add(key, 0, PASSWORD_RESET_WINDOW + 1)
            try:
                value = cache.incr(key)
            except ValueError:  # evicted between add and incr
                cache.set(key, 1, PASSWORD_RESET_WINDOW + 1)
                value = 1
            if value > limit:
                return name.split(":", 1)[0]
        return None

    over = _guarded("count", count, None, limits="password reset")
    if over is None:
        return
    audit.info(
        "password reset refused limit=%s address=%s path=%s",
        over,
        address or "-",
        str(getattr(request, "path", ""))[:200],
    )
    retry_after = math.ceil((window + 1) * PASSWORD_RESET_WINDOW - now)
    raise PasswordResetLimited(PasswordResetRefusal(retry_after=retry_after))
