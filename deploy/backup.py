#!/usr/bin/env python
"""Back up the site into one new folder DEST_DIR/mlops-backup-<UTC time>: both databases, both buckets,
checksums.

Usage: deploy/backup.py DEST_DIR [--keep-daily N] [--keep-weekly M] [--skip-mlflow] [--jobs N]

Reads the app's own configuration (DATABASE_URL, AWS_*, MLFLOW_TRACKING_URI, MLFLOW_ARTIFACT_ROOT; when
MLflow is a tracking server also MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION) and writes:
the app database (pg_dump custom format, --no-owner; a SQLite database through its online backup),
MLflow's database (the same; a file store is copied), every object of the app's storage (under
AWS_LOCATION; the media folder without a bucket) and of MLflow's artifact root, and manifest.json with
each file's size and sha256, the app version, the applied migrations, the time and the source.

Order makes it consistent: the databases are dumped first, the objects copied after. Every object a row
refers to (model files, dataset files, batch and import files) is stored before the row's transaction
commits, so each object the dump needs exists when the copy starts.

The folder is built as a hidden .partial folder and renamed when complete: a failed or interrupted
backup leaves nothing that looks like a backup. With --keep-daily/--keep-weekly, older backups are
pruned after a successful one. Exit 0 when done, 1 when it failed (the message says why).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import backup_format as bf


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="backup.py",
        description="Back up both databases and both buckets of the site into DEST_DIR/mlops-backup-<time>.",
    )
    parser.add_argument("dest", type=Path, metavar="DEST_DIR", help="folder holding the backups")
    parser.add_argument(
        "--keep-daily",
        type=int,
        metavar="N",
        help="after the backup, keep the newest backup of each of the last N days",
    )
    parser.add_argument(
        "--keep-weekly",
        type=int,
        metavar="M",
        help="… and of each of the last M ISO weeks; delete the others",
    )
    parser.add_argument(
        "--skip-mlflow", action="store_true", help="leave out MLflow's database and artifacts"
    )
    parser.add_argument("--jobs", type=int, default=8, metavar="N", help="objects copied at once (default 8)")
    args = parser.parse_args(argv)
    for name in ("keep_daily", "keep_weekly"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


@contextlib.contextmanager
def locked(dest: Path) -> Iterator[None]:
    """One backup at a time per folder: a second one would prune or clean up the first one's files."""
    with (dest / ".backup.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise bf.BackupError(f"another backup into {dest} is running") from None
        yield


def app_version() -> str:
    """APP_VERSION when the image sets it, else `git describe` of a checkout, else "unknown"."""
    if os.environ.get("APP_VERSION"):
        return os.environ["APP_VERSION"]
    git = shutil.which("git")
    if git and (bf.BASE_DIR / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            described = subprocess.run(
                [git, "describe", "--always", "--dirty", "--tags"],
                cwd=bf.BASE_DIR, capture_output=True, text=True, timeout=10, check=True,
            )  # fmt: skip
            return described.stdout.strip()
    return "unknown"


class Backup:
    """One backup being written into its .partial folder."""

    def __init__(self, folder: Path, jobs: int) -> None:
        self.folder = folder
        self.jobs = jobs
        self.parts: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.lines: list[str] = []

    def add_file(self, name: str) -> int:
        path = self.folder / name
        size = path.stat().st_size
        self.files[name] = {"size": size, "sha256": bf.sha256_file(path)}
        return size

    def database(self, part: str, database: bf.Database) -> None:
        name = bf.PART_PATHS[part][database.kind]
        entry: dict[str, Any] = {"kind": database.kind, "source": database.describe(), "file": name}
        if database.kind == "postgresql":
            server = bf.postgres_server_version(database)
            tool, major = bf.postgres_tool("pg_dump", at_least=server // 10000)
            bf.run_tool(
                [str(tool), "--format=custom", "--no-owner", f"--file={self.folder / name}"],
                env=database.libpq_env(),
                what=f"pg_dump of {database.describe()}",
            )
            entry.update(server_version=server, pg_dump_major=major)
        else:
            assert database.path is not None
            if not database.path.exists():
                # The embedded MLflow store appears with the first training run; until then it is empty.
                entry["file"] = None
                self.parts[part] = entry
                self.lines.append(f"{bf.PART_LABELS[part]:<17} {database.describe()}: does not exist yet")
                return
            bf.sqlite_copy(database.path, self.folder / name)
        size = self.add_file(name)
        self.parts[part] = entry
        self.lines.append(
            f"{bf.PART_LABELS[part]:<17} {database.describe()} -> {name} ({bf.human_size(size)})"
        )

    def objects(self, part: str, store: bf.ObjectStore) -> None:
        folder = bf.PART_PATHS[part][store.kind]
        listed = list(store.list())
        for key, _size in listed:
            if not bf.safe_relative(key):
                raise bf.BackupError(f"{store.describe()} holds the key {key!r}, which cannot be a file name")
        vanished: list[str] = []

        def copy(key: str) -> None:
            target = self.folder / folder / key
            try:
                size, sha256, content_type = store.download(key, target)
            except bf.ObjectVanished:
                target.unlink(missing_ok=True)
                vanished.append(key)
                return
            entry: dict[str, Any] = {"size": size, "sha256": sha256}
            if content_type:
                entry["content_type"] = content_type
            self.files[f"{folder}/{key}"] = entry

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            # list() re-raises the first failure; the others finish or fail quietly before the pool closes.
            list(pool.map(copy, [key for key, _size in listed]))
        copied = len(listed) - len(vanished)
        total = sum(self.files[f"{folder}/{key}"]["size"] for key, _size in listed if key not in vanished)
        self.parts[part] = {"kind": store.kind, "source": store.describe(), "objects": copied}
        copies = bf.plural(copied, "object")
        line = f"{bf.PART_LABELS[part]:<17} {store.describe()} -> {copies} ({bf.human_size(total)})"
        if vanished:
            # Deleted between the listing and the copy: a row that still needed them did not exist then.
            line += f"; {len(vanished)} deleted during the copy, left out"
        self.lines.append(line)

    def mlflow_store_folder(self, source: Path) -> None:
        store = bf.ObjectStore(kind="folder", path=source)
        folder = bf.PART_PATHS[bf.MLFLOW_DATABASE]["folder"]
        count = 0
        for key, _size in store.list():
            store.download(key, self.folder / folder / key)
            self.add_file(f"{folder}/{key}")
            count += 1
        self.parts[bf.MLFLOW_DATABASE] = {"kind": "folder", "source": f"folder {source}", "file": None}
        self.lines.append(
            f"{bf.PART_LABELS[bf.MLFLOW_DATABASE]:<17} folder {source} -> {bf.plural(count, 'file')}"
        )


def backup_run(args: argparse.Namespace) -> Path:
    settings = bf.settings_load()
    # Every source is resolved before anything is written: a configuration error costs no half backup.
    database = bf.database_from_django(settings.DATABASES["default"])
    storage = bf.app_storage(settings)
    mlflow = None if args.skip_mlflow else bf.mlflow_places(settings)
    dest = args.dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with locked(dest):
        for stale in dest.glob(f".{bf.NAME_PREFIX}*{bf.PARTIAL_SUFFIX}"):
            # Left by a backup that was killed; we hold the lock, so no backup is writing it now.
            shutil.rmtree(stale, ignore_errors=True)
        started = dt.datetime.now(dt.UTC)
        name = bf.backup_name(started)
        final = dest / name
        if final.exists():
            raise bf.BackupError(f"{final} already exists: one backup per second at most")
        partial = dest / f".{name}{bf.PARTIAL_SUFFIX}"
        partial.mkdir()
        try:
            backup = Backup(partial, args.jobs)
            migrations = bf.applied_migrations(database)
            backup.database(bf.DATABASE, database)
            if mlflow is not None:
                if mlflow.database is not None:
                    backup.database(bf.MLFLOW_DATABASE, mlflow.database)
                elif mlflow.store_folder is not None:
                    backup.mlflow_store_folder(mlflow.store_folder)
            backup.objects(bf.STORAGE, storage)
            if mlflow is not None:
                backup.objects(bf.MLFLOW_ARTIFACTS, mlflow.artifacts)
            manifest = {
                "format": bf.FORMAT,
                "format_version": bf.FORMAT_VERSION,
                "name": name,
                "created_at": started.isoformat(timespec="seconds"),
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "source": {
                    "host": socket.gethostname(),
                    "site_name": settings.SITE_NAME,
                    "mlflow": "skipped" if mlflow is None else "included",
                },
                "app": {"version": app_version(), "migrations": migrations},
                "parts": backup.parts,
                "files": backup.files,
            }
            bf.manifest_write(partial, manifest)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        total = sum(entry["size"] for entry in backup.files.values())
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
        print(
            f"backup {final}: {bf.plural(len(backup.files), 'file')}, {bf.human_size(total)}, {elapsed:.1f} s"
        )
        for line in backup.lines:
            print(f"  {line}")
        if args.keep_daily is not None or args.keep_weekly is not None:
            prune(dest, keep_daily=args.keep_daily or 0, keep_weekly=args.keep_weekly or 0)
    return final


def prune(dest: Path, *, keep_daily: int, keep_weekly: int) -> None:
    kept, deleted = bf.prune_plan(bf.backups_list(dest), keep_daily=keep_daily, keep_weekly=keep_weekly)
    for path in deleted:
        # Renamed first, so an interrupted delete leaves a .partial folder (cleaned up next time), never a
        # backup with files missing.
        doomed = path.with_name(f".{path.name}{bf.PARTIAL_SUFFIX}")
        os.replace(path, doomed)
        shutil.rmtree(doomed)
    print(
        f"kept {bf.plural(len(kept), 'backup')} ({keep_daily} daily, {keep_weekly} weekly), "
        f"deleted {len(deleted)}" + (": " + ", ".join(path.name for path in deleted) if deleted else "")
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        backup_run(args)
    except bf.BackupError as exc:
        print(f"backup failed after {time.monotonic() - started:.1f} s, nothing kept: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
