"""What deploy/backup.py and deploy/restore.py share: the backup folder's layout and manifest, checksums,
the places a site keeps its data (PostgreSQL or SQLite, an S3 bucket or a folder), the PostgreSQL client
programs and the retention rule.

A backup is one folder, `mlops-backup-<UTC time>`, holding `manifest.json` (every file's size and
sha256, the app version, the time, the source), `SHA256SUMS` (the same checksums for `sha256sum -c`),
the database dumps and the objects under `storage/` and `mlflow-artifacts/` with their keys as paths.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
FORMAT = "mlops-site-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
NAME_PREFIX = "mlops-backup-"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_PATTERN = re.compile(r"^mlops-backup-(\d{8}T\d{6}Z)$")
PARTIAL_SUFFIX = ".partial"
CHUNK_SIZE = 1024 * 1024

#: The backup folder's part names, in the order they are written and restored.
DATABASE = "database"
MLFLOW_DATABASE = "mlflow_database"
STORAGE = "storage"
MLFLOW_ARTIFACTS = "mlflow_artifacts"
PART_LABELS = {
    DATABASE: "database",
    MLFLOW_DATABASE: "MLflow database",
    STORAGE: "storage",
    MLFLOW_ARTIFACTS: "MLflow artifacts",
}
#: Where each part's files live inside the backup folder.
PART_PATHS = {
    DATABASE: {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"},
    MLFLOW_DATABASE: {"postgresql": "mlflow.pgdump", "sqlite": "mlflow.sqlite3", "folder": "mlflow-store"},
    STORAGE: {"s3": "storage", "folder": "storage"},
    MLFLOW_ARTIFACTS: {"s3": "mlflow-artifacts", "folder": "mlflow-artifacts"},
}


class BackupError(Exception):
    """A problem the operator must fix (configuration, a missing tool, a server refusing); the message says
    which."""


class ObjectVanished(Exception):
    """An object listed a moment ago was deleted before it could be read (a batch job's chunk files)."""


# ------------------------------------------------------------------------------
# Django: the scripts read the same settings (DATABASE_URL, AWS_*, MLFLOW_*) as the app
# ------------------------------------------------------------------------------
def settings_load() -> Any:
    """The app's settings, without importing the apps (a tenth of django.setup()'s time)."""
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")
    from django.conf import settings

    settings.DATABASES  # noqa: B018 - reads the settings now: a configuration error stops us before any work
    return settings


def django_setup() -> None:
    """The apps too: for the migration graph and the checks of a restored site."""
    import django

    django.setup()


# ------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class HashingWriter:
    """A file written in chunks that knows its size and sha256 when closed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def close(self) -> None:
        self._handle.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------
# Databases: PostgreSQL (pg_dump/pg_restore) or a SQLite file
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Database:
    kind: str  # "postgresql" or "sqlite"
    name: str = ""
    host: str = ""
    port: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    options: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite {self.path}"
        where = f"{self.host or 'localhost'}{':' + self.port if self.port else ''}"
        return f"postgresql {self.user + '@' if self.user else ''}{where}/{self.name}"

    def libpq_env(self) -> dict[str, str]:
        """The connection as libpq variables: the password never appears on a command line."""
        env = {"PGDATABASE": self.name, "PGCONNECT_TIMEOUT": "10"}
        for variable, value in (
            ("PGHOST", self.host),
            ("PGPORT", self.port),
            ("PGUSER", self.user),
            ("PGPASSWORD", self.password),
            ("PGSSLMODE", self.options.get("sslmode", "")),
            ("PGSSLROOTCERT", self.options.get("sslrootcert", "")),
            ("PGSSLCERT", self.options.get("sslcert", "")),
            ("PGSSLKEY", self.options.get("sslkey", "")),
        ):
            if value:
                env[variable] = value
        return env

    def connect(self) -> Any:
        import psycopg

        params = {"dbname": self.name, "connect_timeout": 10, **self.options}
        for key in ("host", "port", "user", "password"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        try:
            return psycopg.connect(**params)
        except psycopg.Error as exc:
            raise BackupError(f"cannot connect to {self.describe()}: {str(exc).strip()}") from exc


def database_from_django(settings_dict: dict[str, Any]) -> Database:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return Database(kind="sqlite", path=Path(settings_dict["NAME"]).resolve())
    if "postgresql" in engine:
        options = {
            key: str(value)
            for key, value in (settings_dict.get("OPTIONS") or {}).items()
            if key in ("sslmode", "sslrootcert", "sslcert", "sslkey")
        }
        return Database(
            kind="postgresql",
            name=settings_dict["NAME"],
            host=settings_dict.get("HOST") or "",
            port=str(settings_dict.get("PORT") or ""),
            user=settings_dict.get("USER") or "",
            password=settings_dict.get("PASSWORD") or "",
            options=options,
        )
    raise BackupError(f"the database engine {engine} is not supported: only PostgreSQL and SQLite")


def database_from_url(url: str) -> Database:
    """A PostgreSQL or SQLite database named by a SQLAlchemy URL (MLflow's tracking or backend store URI)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        options = {
            k: v for k, v in parse_qsl(parts.query) if k in ("sslmode", "sslrootcert", "sslcert", "sslkey")
        }
        return Database(
            kind="postgresql",
            name=unquote(parts.path.lstrip("/")),
            host=parts.hostname or "",
            port=str(parts.port or ""),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            options=options,
        )
    if scheme == "sqlite":
        # sqlite:///relative and sqlite:////absolute, as SQLAlchemy reads them.
        path = url.split("://", 1)[1].split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path
        if not path or path == ":memory:":
            raise BackupError(f"{url} is an in-memory database: there is nothing to back up")
        return Database(kind="sqlite", path=Path(unquote(path)).resolve())
    raise BackupError(f"{_without_password(url)}: only postgresql:// and sqlite:// databases are supported")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def postgres_server_version(database: Database) -> int:
    """The server's version number, e.g. 160004 for 16.4."""
    with contextlib.closing(database.connect()) as connection:
        return int(connection.info.server_version)


def applied_migrations(database: Database) -> dict[str, list[str]]:
    """The migrations applied to the database (its django_migrations table), by app."""
    query = "SELECT app, name FROM django_migrations ORDER BY app, name"
    applied: dict[str, list[str]] = {}
    if database.kind == "postgresql":
        import psycopg

        with contextlib.closing(database.connect()) as connection:
            try:
                rows = connection.execute(query).fetchall()
            except psycopg.errors.UndefinedTable:
                rows = []
    else:
        import sqlite3

        assert database.path is not None
        if not database.path.exists():
            raise BackupError(f"{database.describe()} does not exist")
        with contextlib.closing(sqlite3.connect(database.path, timeout=30)) as connection:
            try:
                rows = connection.execute(query).fetchall()
            except sqlite3.OperationalError:
                rows = []
    for app, name in rows:
        applied.setdefault(app, []).append(name)
    return applied


def postgres_is_empty(database: Database) -> bool:
    """No table, view, sequence or type of its own in any schema: what CREATE DATABASE makes."""
    query = """
        SELECT count(*) FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    """
    with contextlib.closing(database.connect()) as connection:
        return connection.execute(query).fetchone()[0] == 0


def sqlite_is_empty(path: Path) -> bool:
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return True
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (its online backup API, which honours the WAL)."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


# ------------------------------------------------------------------------------
# PostgreSQL client programs: pg_dump refuses a newer server, pg_restore a newer dump
# ------------------------------------------------------------------------------
def _tool_major(path: Path) -> int:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"cannot run {path}: {exc}") from exc
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    if match is None:
        raise BackupError(f"cannot read the version of {path}: {out.stdout.strip()!r}")
    return int(match.group(1))


def _tool_candidates(name: str) -> list[Path]:
    if os.environ.get("PG_BIN_DIR"):
        return [Path(os.environ["PG_BIN_DIR"]) / name]
    found = [Path(folder) / name for folder in glob.glob("/usr/lib/postgresql/*/bin")]
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return [path for path in found if path.exists()]


def postgres_tool(name: str, *, at_least: int) -> tuple[Path, int]:
    """The installed `name` (pg_dump, pg_restore) of major version `at_least`, else the newest above it.

    PG_BIN_DIR names the folder to use instead of searching /usr/lib/postgresql/*/bin and PATH.
    """
    candidates = [(path, _tool_major(path)) for path in _tool_candidates(name)]
    if not candidates:
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client (postgresql-client-{at_least}) "
            "or set PG_BIN_DIR to the folder holding it"
        )
    exact = [found for found in candidates if found[1] == at_least]
    newer = sorted((found for found in candidates if found[1] > at_least), key=lambda found: found[1])
    if exact or newer:
        return (exact or newer)[0]
    versions = ", ".join(f"{path} ({major})" for path, major in candidates)
    raise BackupError(
        f"{name} {at_least} or newer is needed, but only {versions} is installed: "
        f"install postgresql-client-{at_least} or set PG_BIN_DIR"
    )


def run_tool(argv: list[str], *, env: dict[str, str], what: str) -> None:
    completed = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()[-2000:]
        raise BackupError(f"{what} failed (exit {completed.returncode}): {detail}")


# ------------------------------------------------------------------------------
# Object stores: an S3 bucket (with a key prefix) or a folder
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectStore:
    kind: str  # "s3" or "folder"
    bucket: str = ""
    prefix: str = ""
    path: Path | None = None
    client: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return f"folder {self.path}"

    def _key(self, relative: str) -> str:
        return f"{self.prefix}{relative}"

    def list(self) -> Iterator[tuple[str, int]]:
        """(key relative to the prefix, size) of every object; S3's folder markers are left out."""
        if self.kind == "folder":
            assert self.path is not None
            if not self.path.exists():
                return
            for root, _dirs, files in os.walk(self.path):
                for name in files:
                    full = Path(root) / name
                    if full.is_file() and not full.is_symlink():
                        yield full.relative_to(self.path).as_posix(), full.stat().st_size
            return
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if key.endswith("/") and item["Size"] == 0:
                        continue
                    yield key, item["Size"]
        except Exception as exc:
            raise BackupError(f"cannot list {self.describe()}: {exc}") from exc

    def is_empty(self) -> bool:
        if self.kind == "folder":
            return next(self.list(), None) is None
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise BackupError(f"cannot list {self.describe()}: {exc}") from exc
        return not page.get("Contents")

    def check_reachable(self) -> None:
        if self.kind == "s3":
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as exc:
                raise BackupError(f"bucket {self.bucket!r} cannot be used (does it exist?): {exc}") from exc

    def download(self, key: str, target: Path) -> tuple[int, str, str]:
        """Copy one object to `target`; returns its size, sha256 and content type."""
        writer = HashingWriter(target)
        content_type = ""
        try:
            if self.kind == "folder":
                assert self.path is not None
                with (self.path / key).open("rb") as handle:
                    while chunk := handle.read(CHUNK_SIZE):
                        writer.write(chunk)
            else:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                content_type = answer.get("ContentType") or ""
                for chunk in answer["Body"].iter_chunks(CHUNK_SIZE):
                    writer.write(chunk)
        except FileNotFoundError:
            raise ObjectVanished(key) from None
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectVanished(key) from None
            raise BackupError(f"cannot read {key!r} from {self.describe()}: {exc}") from exc
        finally:
            writer.close()
        return writer.size, writer.sha256, content_type

    def upload(self, key: str, source: Path, content_type: str = "") -> None:
        try:
            if self.kind == "folder":
                assert self.path is not None
                target = self.path / key
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_name(f".{target.name}.restoring")
                shutil.copyfile(source, temporary)
                os.replace(temporary, target)
            else:
                extra = {"ContentType": content_type} if content_type else {}
                self.client.upload_file(str(source), self.bucket, self._key(key), ExtraArgs=extra)
        except Exception as exc:
            raise BackupError(f"cannot write {key!r} to {self.describe()}: {exc}") from exc


def s3_client(settings: Any, *, endpoint_url: str | None = None) -> Any:
    """A boto3 client with the app's keys, region and addressing style."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.AWS_S3_ENDPOINT_URL or None,
        region_name=settings.AWS_S3_REGION_NAME,
        aws_access_key_id=settings.AWS_ACCESS_KEY_ID or None,
        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY or None,
        config=Config(
            connect_timeout=settings.AWS_S3_CONNECT_TIMEOUT,
            read_timeout=max(settings.AWS_S3_READ_TIMEOUT, 60),
            retries={"max_attempts": max(settings.AWS_S3_MAX_ATTEMPTS, 3), "mode": "standard"},
            s3={"addressing_style": settings.AWS_S3_ADDRESSING_STYLE},
            signature_version="s3v4",
        ),
    )


def _prefix(location: str) -> str:
    location = location.strip("/")
    return f"{location}/" if location else ""


def app_storage(settings: Any) -> ObjectStore:
    """The app's object storage: the bucket under AWS_LOCATION, or the media folder."""
    default = settings.STORAGES["default"]
    options = default.get("OPTIONS", {})
    if default["BACKEND"].endswith("S3Storage"):
        return ObjectStore(
            kind="s3",
            bucket=options["bucket_name"],
            prefix=_prefix(options.get("location") or ""),
            client=s3_client(settings),
        )
    if default["BACKEND"].endswith("FileSystemStorage"):
        return ObjectStore(kind="folder", path=Path(options.get("location") or settings.MEDIA_ROOT).resolve())
    raise BackupError(f"the storage backend {default['BACKEND']} is not supported: only S3 and files")


def artifact_store(settings: Any, uri: str) -> ObjectStore:
    """MLflow's artifact root: s3://bucket/prefix (at MLFLOW_S3_ENDPOINT_URL, else the app's endpoint) or
    a folder."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return ObjectStore(
            kind="s3",
            bucket=parts.netloc,
            prefix=_prefix(parts.path),
            client=s3_client(settings, endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None),
        )
    if parts.scheme == "file":
        return ObjectStore(kind="folder", path=Path(unquote(parts.path)).resolve())
    if not parts.scheme:
        return ObjectStore(kind="folder", path=Path(uri).resolve())
    raise BackupError(f"MLflow artifacts at {uri}: only s3:// and file:// artifact roots are supported")


# ------------------------------------------------------------------------------
# MLflow: its own database or file store, and its artifact root
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MlflowPlaces:
    database: Database | None
    store_folder: Path | None  # a file store (./mlruns) instead of a database
    artifacts: ObjectStore


def mlflow_places(settings: Any) -> MlflowPlaces:
    """Where MLflow keeps its data, read from the app's settings.

    When the app talks to a tracking server (http://mlflow:5000), the server's own stores are named by the
    variables `mlflow server` itself reads: MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION.
    """
    tracking = settings.MLFLOW_TRACKING_URI
    scheme = urlsplit(tracking).scheme
    artifacts_uri = settings.MLFLOW_ARTIFACT_ROOT
    if scheme in ("http", "https"):
        backend = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
        artifacts_uri = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
        if not backend or not artifacts_uri:
            raise BackupError(
                f"MLflow is a tracking server ({tracking}): set MLFLOW_BACKEND_STORE_URI (its database, e.g. "
                "postgresql://mlops:change-me@postgres:5432/mlflow) and MLFLOW_ARTIFACTS_DESTINATION "
                "(e.g. s3://mlflow/), or pass --skip-mlflow"
            )
        tracking = backend
        scheme = urlsplit(tracking).scheme
    if scheme.split("+", 1)[0] in ("postgresql", "postgres", "sqlite"):
        return MlflowPlaces(database_from_url(tracking), None, artifact_store(settings, artifacts_uri))
    if scheme in ("file", ""):
        folder = Path(unquote(urlsplit(tracking).path) if scheme else tracking).resolve()
        return MlflowPlaces(None, folder, artifact_store(settings, artifacts_uri))
    raise BackupError(f"MLflow's store {_without_password(tracking)} is not supported")


# ------------------------------------------------------------------------------
# The manifest
# ------------------------------------------------------------------------------
def safe_relative(name: str) -> bool:
    """A path that stays inside the backup folder: relative, no `..`, no empty or `.` segments."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def manifest_write(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    (folder / MANIFEST).write_text(text, encoding="utf-8")
    lines = [f"{entry['sha256']}  {name}\n" for name, entry in sorted(manifest["files"].items())]
    (folder / SUMS).write_text("".join(lines), encoding="utf-8")


class ManifestInvalid(Exception):
    """The backup folder cannot be restored: the manifest is missing or malformed, or a file is missing
    or differs from its checksum. `problems` names each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def manifest_load(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestInvalid([f"{MANIFEST} is missing: {folder} is not a complete backup"]) from None
    except (OSError, ValueError) as exc:
        raise ManifestInvalid([f"{MANIFEST} cannot be read: {exc}"]) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestInvalid([f"{MANIFEST} is not an {FORMAT} manifest"])
    if manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version")
        raise ManifestInvalid(
            [f"{MANIFEST} has format version {found!r}; this script reads {FORMAT_VERSION}"]
        )
    files = manifest.get("files")
    parts = manifest.get("parts")
    if not isinstance(files, dict) or not isinstance(parts, dict):
        raise ManifestInvalid([f"{MANIFEST} lacks its files or parts"])
    problems = []
    for name, entry in files.items():
        if not safe_relative(name) or name in (MANIFEST, SUMS):
            problems.append(f"{name!r}: not a file name a backup may hold")
        elif (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256")))
        ):
            problems.append(f"{name}: its size or sha256 in {MANIFEST} is malformed")
    for part, entry in parts.items():
        if part not in PART_PATHS or not isinstance(entry, dict) or entry.get("kind") not in PART_PATHS[part]:
            problems.append(f"part {part!r} in {MANIFEST} is unknown or malformed")
    if problems:
        raise ManifestInvalid(problems)
    return manifest


def files_verify(folder: Path, manifest: dict[str, Any]) -> tuple[int, int]:
    """Check every file against its recorded size and sha256; returns (files, bytes) or raises
    ManifestInvalid naming every file that is missing or differs."""
    problems = []
    total = 0
    for name, entry in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{name}: {size} bytes, the manifest says {entry['size']}")
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (the file was changed or damaged)")
            continue
        total += size
    if problems:
        raise ManifestInvalid(problems)
    return len(manifest["files"]), total


def part_objects(manifest: dict[str, Any], part: str) -> list[tuple[str, str, str]]:
    """(key, file name in the backup, content type) of a part's objects."""
    folder = PART_PATHS[part][manifest["parts"][part]["kind"]]
    found = []
    for name, entry in manifest["files"].items():
        if name.startswith(f"{folder}/"):
            found.append((name[len(folder) + 1 :], name, entry.get("content_type", "")))
    return found


# ------------------------------------------------------------------------------
# Names and retention
# ------------------------------------------------------------------------------
def backup_name(when: dt.datetime) -> str:
    return f"{NAME_PREFIX}{when.astimezone(dt.UTC).strftime(TIME_FORMAT)}"


def backups_list(dest: Path) -> list[tuple[dt.datetime, Path]]:
    """The complete backups in `dest` (a name of ours and a manifest), newest first."""
    found = []
    for path in dest.iterdir() if dest.exists() else []:
        match = NAME_PATTERN.match(path.name)
        if match and path.is_dir() and (path / MANIFEST).is_file():
            when = dt.datetime.strptime(match.group(1), TIME_FORMAT).replace(tzinfo=dt.UTC)
            found.append((when, path))
    return sorted(found, reverse=True)


def prune_plan(
    backups: list[tuple[dt.datetime, Path]], *, keep_daily: int, keep_weekly: int
) -> tuple[list[Path], list[Path]]:
    """(kept, deleted): the newest backup of each of the last `keep_daily` days that have one and of each
    of the last `keep_weekly` ISO weeks that have one stay; the newest backup always stays."""
    newest_first = sorted(backups, reverse=True)
    kept: set[Path] = set()
    if newest_first:
        kept.add(newest_first[0][1])
    for keep, period in (
        (keep_daily, lambda when: when.date()),
        (keep_weekly, lambda when: when.isocalendar()[:2]),
    ):
        seen: list[object] = []
        for when, path in newest_first:
            key = period(when)
            if key in seen:
                continue
            if len(seen) == keep:
                break
            seen.append(key)
            kept.add(path)
    ordered = [path for _when, path in newest_first]
    return [p for p in ordered if p in kept], [p for p in ordered if p not in kept]
