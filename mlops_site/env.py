"""Typed readers for environment variables; every variable the app reads goes through here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

#: Names of every variable read, so tests can check the README and docker-compose against it.
READ_VARIABLES: set[str] = set()


def env_str(name: str, default: str = "") -> str:
    READ_VARIABLES.add(name)
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "True" if default else "False")
    if raw not in ("True", "False"):
        raise ImproperlyConfigured(f"{name} must be True or False, not {raw!r}")
    return raw == "True"


def env_int(name: str, default: int) -> int:
    raw = env_str(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_float(name: str, default: float, *, low: float, high: float) -> float:
    """A finite number from `low` to `high` (both included)."""
    raw = env_str(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN and infinities fail this too
        raise ImproperlyConfigured(f"{name} must be a number from {low:g} to {high:g}, not {raw!r}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker secrets)."""
    file_name = env_str(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points at {file_name!r}: {exc}") from None
    return env_str(name, default)


#: EMAIL_URL's schemes and the Django e-mail backend each one selects.
EMAIL_BACKENDS = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "smtps": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "dummy": "django.core.mail.backends.dummy.EmailBackend",
}
EMAIL_URL_FORMS = (
    "smtp://user:password@host:587 (STARTTLS), smtps://user:password@host:465 (TLS), "
    "console:// (the web process's output), file:///folder or dummy:// (no e-mail)"
)
#: Added to every complaint about the user or password part, the usual cause of a URL that will not parse.
PERCENT_ENCODING_HINT = (
    "if the user name or password holds @ : / # ? or %, percent-encode it (@ as %40, # as %23)"
)


@dataclass(frozen=True)
class EmailSettings:
    """Django's EMAIL_* settings as one EMAIL_URL gives them."""

    backend: str
    host: str = "localhost"
    port: int = 25
    user: str = ""
    # Out of the repr, so a settings dump or a traceback's locals do not show it.
    password: str = field(default="", repr=False)
    use_tls: bool = False
    use_ssl: bool = False
    file_path: str = ""


def email_url_parse(url: str, *, name: str = "EMAIL_URL") -> EmailSettings:
    """Read an e-mail URL; an empty one means console://.

    smtp:// always asks for STARTTLS (`?starttls=False` turns that off, for a relay on the same host or
    network); smtps:// is TLS from the first byte. No message quotes the URL: it may hold a password.
    """
    url = url.strip() or "console://"
    if "://" not in url:
        raise ImproperlyConfigured(f"{name} must be a URL: {EMAIL_URL_FORMS}.")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in EMAIL_BACKENDS:
        raise ImproperlyConfigured(f"{name} has the unknown scheme {scheme!r}: use {EMAIL_URL_FORMS}.")
    parts = urlsplit(url)
    if parts.fragment:
        raise ImproperlyConfigured(f"{name} holds a '#'; {PERCENT_ENCODING_HINT}.")
    options = _email_url_options(parts.query, name=name)
    backend = EMAIL_BACKENDS[scheme]
    if scheme in ("console", "dummy"):
        if parts.netloc or parts.path or options:
            raise ImproperlyConfigured(f"{name}: {scheme}:// takes no host, path or options.")
        return EmailSettings(backend=backend)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or options:
            raise ImproperlyConfigured(
                f"{name}: file:// takes an absolute folder and nothing else, e.g. file:///var/mail/mlops."
            )
        return EmailSettings(backend=backend, file_path=unquote(parts.path))
    return _smtp_settings(parts, scheme=scheme, options=options, name=name)


def _email_url_options(query: str, *, name: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ImproperlyConfigured(f"{name}: the options after '?' must read name=value.") from None
    names = [option for option, _ in pairs]
    if names not in ([], ["starttls"]):
        raise ImproperlyConfigured(
            f"{name}: the only option is starttls=False (smtp:// only), once; got {', '.join(names)}."
        )
    return dict(pairs)


def _smtp_settings(parts: SplitResult, *, scheme: str, options: dict[str, str], name: str) -> EmailSettings:
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}: the port must be a number from 1 to 65535; {PERCENT_ENCODING_HINT}."
        ) from None
    if not parts.hostname:
        raise ImproperlyConfigured(
            f"{name}: {scheme}:// needs a host, e.g. {scheme}://user:password@mail.example.com; "
            f"{PERCENT_ENCODING_HINT}."
        )
    if parts.path not in ("", "/"):
        raise ImproperlyConfigured(f"{name}: {scheme}:// takes no path; {PERCENT_ENCODING_HINT}.")
    if port == 0:
        raise ImproperlyConfigured(f"{name}: the port must be a number from 1 to 65535.")
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    if password and not user:
        raise ImproperlyConfigured(f"{name}: a password needs a user name before it (user:password@host).")
    starttls = options.get("starttls", "True")
    if starttls not in ("True", "False"):
        raise ImproperlyConfigured(f"{name}: starttls must be True or False, not {starttls!r}.")
    if scheme == "smtps" and "starttls" in options:
        raise ImproperlyConfigured(f"{name}: smtps:// is TLS from the start; starttls is for smtp:// only.")
    return EmailSettings(
        backend=EMAIL_BACKENDS[scheme],
        host=parts.hostname,
        port=port or (465 if scheme == "smtps" else 587),
        user=user,
        password=password,
        use_tls=scheme == "smtp" and starttls == "True",
        use_ssl=scheme == "smtps",
    )


def env_email_address(name: str, default: str) -> str:
    """An e-mail address, bare or with a display name: `MLOps <mlops@example.com>`."""
    raw = env_str(name, default).strip() or default
    _display_name, address = parseaddr(raw)
    try:
        if "\n" in raw or "\r" in raw or not address:
            raise ValidationError("not an address")
        validate_email(address)
    except ValidationError:
        raise ImproperlyConfigured(
            f"{name} must be an e-mail address such as mlops@example.com or 'MLOps <mlops@example.com>', "
            f"not {raw!r}"
        ) from None
    return raw
