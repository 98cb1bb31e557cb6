"""Django's SQLite backend, with one write transaction at a time per process and database file.

Transactions begin IMMEDIATE (settings.py), so a thread that finds another connection writing waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10, … up to 100 ms between tries and favours no one: under
load from a web worker's threads, a few requests waited hundreds of milliseconds while others kept taking
the lock (p99 of 340 to 740 ms at 8 connections). Here the threads of one process queue on a lock before
they BEGIN, and each takes the write lock as soon as the one before commits; only writers in other
processes (the other web workers, the Celery worker) still meet the busy handler.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.db.backends.sqlite3 import base

#: Python's sqlite3 default busy timeout, for a database whose OPTIONS give none (settings.py gives 20 s).
_DEFAULT_WAIT_SECONDS = 5.0

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def write_lock(name: str) -> threading.Lock:
    """The process's lock for writing to the database file `name`."""
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _locks_forget() -> None:
    # A child forked while one of the parent's threads was writing (a Celery pool replacing a process)
    # would inherit that lock held, with no thread of its own to release it.
    global _locks_guard
    _locks.clear()
    _locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_locks_forget)


class DatabaseWrapper(base.DatabaseWrapper):
    """A connection whose write transactions queue on the process's lock for its file before BEGIN."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock_held: threading.Lock | None = None

    def _start_transaction_under_autocommit(self) -> None:
        lock = write_lock(str(self.settings_dict["NAME"]))
        wait = float(self.settings_dict.get("OPTIONS", {}).get("timeout", _DEFAULT_WAIT_SECONDS))
        # Past the wait, BEGIN goes ahead and SQLite's own busy timeout decides, as without this lock: a
        # thread that holds the lock while it waits on another thread's write fails as it did, not forever.
        if lock.acquire(timeout=wait):
            self._write_lock_held = lock
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._write_lock_release()
            raise

    def _write_lock_release(self) -> None:
        lock, self._write_lock_held = self._write_lock_held, None
        if lock is not None:
            lock.release()

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._write_lock_release()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._write_lock_release()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            # Closing a connection in a transaction rolls it back.
            self._write_lock_release()
