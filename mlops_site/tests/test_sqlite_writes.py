"""The SQLite backend's process-wide write lock: threads queue on it before BEGIN, and every way out of a
transaction (commit, rollback, close) hands it on. Each test opens its own connections to a file of its
own, so it runs the same on either test database."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connections

from mlops_site.db.sqlite3.base import DatabaseWrapper, write_lock


def _settings(path: Path, *, timeout: float) -> dict:
    return {
        "ENGINE": "mlops_site.db.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "timeout": timeout,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "TEST": {},
    }


@pytest.fixture
def open_connection(tmp_path: Path, django_db_blocker) -> Iterator:
    """Opens connections to one fresh SQLite file (a table `t` with one column); closes them at the end."""
    opened: list[DatabaseWrapper] = []

    def connect(*, timeout: float = 20.0) -> DatabaseWrapper:
        settings = _settings(tmp_path / "db.sqlite3", timeout=timeout)
        wrapper = DatabaseWrapper(settings, alias=f"w{len(opened)}")
        wrapper.inc_thread_sharing()  # opened here, used on the test's threads
        opened.append(wrapper)
        with wrapper.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        return wrapper

    with django_db_blocker.unblock():
        yield connect
        for wrapper in opened:
            wrapper.close()


def _begin(wrapper: DatabaseWrapper) -> None:
    # What transaction.atomic does when it opens the outermost block.
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def _insert(wrapper: DatabaseWrapper, value: str) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO t (v) VALUES (%s)", [value])


def _commit(wrapper: DatabaseWrapper) -> None:
    wrapper.commit()
    wrapper.set_autocommit(True)


def _rows(wrapper: DatabaseWrapper) -> list[str]:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT v FROM t ORDER BY rowid")
        return [value for (value,) in cursor.fetchall()]


def _waiting_in(thread: threading.Thread) -> str | None:
    """The name of the function `thread` is running (or blocked in) right now."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame.f_code.co_name if frame is not None else None


def _eventually(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_the_embedded_database_uses_the_backend_with_the_lock():
    default = connections["default"]
    if default.vendor != "sqlite":
        pytest.skip("the test database is not SQLite")
    assert isinstance(default, DatabaseWrapper)


def test_a_second_writer_of_the_process_waits_for_the_lock_not_in_sqlite_and_writes_after_the_first(
    open_connection,
):
    first, second = open_connection(), open_connection()
    _begin(first)
    _insert(first, "first")
    began = threading.Event()

    def write() -> None:
        _begin(second)
        began.set()
        _insert(second, "second")
        _commit(second)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        # Blocked in the lock's acquire, called by the backend before BEGIN: not polling SQLite's lock.
        assert _eventually(lambda: _waiting_in(thread) == "_start_transaction_under_autocommit")
        assert not began.is_set()
        assert write_lock(first.settings_dict["NAME"]).locked()
        _commit(first)
        thread.join(5)
    finally:
        if first.in_atomic_block or not first.get_autocommit():
            first.rollback()
    assert began.is_set()
    assert not thread.is_alive()
    assert _rows(first) == ["first", "second"]
    assert not write_lock(first.settings_dict["NAME"]).locked()


@pytest.mark.parametrize("ending", ["rollback", "close"])
def test_a_transaction_rolled_back_or_closed_hands_the_lock_on(open_connection, ending):
    first, second = open_connection(), open_connection()
    _begin(first)
    _insert(first, "dropped")
    lock = write_lock(first.settings_dict["NAME"])
    assert lock.locked()
    if ending == "rollback":
        first.rollback()
        first.set_autocommit(True)
    else:
        first.close()
    assert not lock.locked()
    _begin(second)
    _insert(second, "kept")
    _commit(second)
    assert _rows(second) == ["kept"]


def test_a_begin_that_fails_leaves_the_lock_free(open_connection, monkeypatch):
    wrapper = open_connection()
    lock = write_lock(wrapper.settings_dict["NAME"])
    monkeypatch.setattr(wrapper, "transaction_mode", "NOT-A-MODE")
    with pytest.raises(OperationalError):
        _begin(wrapper)
    assert not lock.locked()


def test_past_the_busy_timeout_sqlite_decides_as_without_the_lock(open_connection):
    """A writer that waited the timeout for the lock tries BEGIN anyway, and meets SQLite's own busy
    timeout: it fails with SQLite's error, not silently, and never takes the lock it did not get."""
    first, second = open_connection(timeout=0.2), open_connection(timeout=0.2)
    _begin(first)
    _insert(first, "first")
    lock = write_lock(first.settings_dict["NAME"])
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            _begin(second)
        assert time.monotonic() - started >= 0.2
        assert second._write_lock_held is None
        assert lock.locked()  # still the first writer's
    finally:
        _commit(first)
    assert not lock.locked()


def test_each_database_file_has_a_lock_of_its_own(tmp_path):
    assert write_lock(str(tmp_path / "a.sqlite3")) is write_lock(str(tmp_path / "a.sqlite3"))
    assert write_lock(str(tmp_path / "a.sqlite3")) is not write_lock(str(tmp_path / "b.sqlite3"))


def test_a_process_forked_while_a_thread_writes_starts_with_the_lock_free(open_connection):
    """A Celery pool forks its processes from a parent whose other threads may be inside a transaction."""
    writer = open_connection()
    _begin(writer)
    name = writer.settings_dict["NAME"]
    try:
        assert write_lock(name).locked()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child only reports through its exit code)
            os._exit(0 if write_lock(name).acquire(timeout=0) else 1)
        _, status = os.waitpid(child, 0)
    finally:
        writer.rollback()
        writer.set_autocommit(True)
    assert os.waitstatus_to_exitcode(status) == 0
