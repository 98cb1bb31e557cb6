"""The gunicorn worker class: gthread, but a request is read in the poller before it gets a thread."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

#: Bytes of a request (headers and body) gathered in the poller before it goes to a thread. Bodies larger
#: than this (dataset and batch uploads) stream in the thread, each read bounded by the read timeout.
READ_AHEAD_LIMIT = 256 * 1024
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,15})[ \t]*\r\n")
_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def read_timeout_from_env() -> int:
    """WEB_READ_TIMEOUT: seconds a client has to send a request (and may stall at most, once streaming)."""
    raw = os.environ.get("WEB_READ_TIMEOUT", "10")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"WEB_READ_TIMEOUT must be a whole number of seconds, at least 1, not {raw!r}")
    return value


def request_is_ready(buffered: bytes) -> bool:
    """Whether a thread can take the request now without waiting on the client for what fits the buffer.

    Only framing is looked at here; gunicorn's parser still judges the request. Guessing "ready" too early
    costs nothing but a thread reading the rest with the bounded socket; a valid request is never held back.
    """
    end = buffered.find(_HEADER_END)
    if end < 0:
        return len(buffered) >= READ_AHEAD_LIMIT
    head = buffered[: end + 2].lower()
    if b"\r\ntransfer-encoding:" in head or b"\r\nexpect:" in head:
        # A chunked body has no length to wait for; 100-continue clients wait for gunicorn's answer.
        return True
    match = _CONTENT_LENGTH.search(head)
    body_length = int(match.group(1)) if match else 0
    return len(buffered) >= min(end + 4 + body_length, READ_AHEAD_LIMIT)


class _BoundedReads:
    """The socket as gunicorn's parser sees it: every read waits at most the read timeout."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout

    def recv(self, size: int) -> bytes:
        # The socket is blocking (no timeout) whenever gunicorn hands it to a thread; set it on every read.
        self._sock.settimeout(self._timeout)
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (a request line or headers too large, a malformed request) as the site's
    JSON error envelope instead of an HTML page, so API clients parse every error the same way."""
    body = json.dumps({"detail": mesg, "code": "bad_request", "errors": []}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


# The base worker calls util.write_error for every request it refuses before the application sees it.
util.write_error = _write_json_error


class BoundedReadWorker(ThreadWorker):
    """gunicorn's ThreadWorker, except that no thread waits for a client that is slow to send.

    Upstream, a thread waits up to 5 s for a new connection's first bytes, then reads headers and body
    with blocking reads and no time limit: a few idle or half-sent requests hold every thread. Here the
    main loop reads without blocking until the request's headers and body (up to READ_AHEAD_LIMIT) are
    in, and closes the connection (408) when that takes longer than WEB_READ_TIMEOUT. Only then does a
    thread take it; what it still reads (a large body) and writes is bounded by the same timeout per
    call. Idle keep-alive connections wait in the poller as upstream, for `keepalive` seconds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout_from_env()
        #: Connections whose request is still arriving, oldest deadline first (all share one timeout).
        self.reading_conns: collections.deque[TConn] = collections.deque()

    def enqueue_req(self, conn: TConn) -> None:
        # Called for a new connection and for a kept-alive one that became readable: read in this loop.
        conn.read_ahead = b""
        conn.timeout = time.monotonic() + self.read_timeout
        self._read_more(conn)

    def _read_more(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        while True:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._drop(conn)
                return
            conn.read_ahead += data
            if request_is_ready(conn.read_ahead):
                self._dispatch(conn)
                return
        if conn not in self.reading_conns:
            self.reading_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: TConn, client: socket.socket) -> None:
        self._read_more(conn)

    def _stop_reading(self, conn: TConn) -> None:
        if conn in self.reading_conns:
            self.reading_conns.remove(conn)
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)

    def _drop(self, conn: TConn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()

    def _dispatch(self, conn: TConn) -> None:
        self._stop_reading(conn)
        conn.data_ready = True
        super().enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading_conns and self.reading_conns[0].timeout <= now:
            conn = self.reading_conns[0]
            if conn.read_ahead:
                # Only a started request gets the 408: a browser's spare connection that never sent a
                # byte is just closed.
                with contextlib.suppress(OSError):
                    conn.sock.send(_TIMEOUT_ANSWER)
            self._drop(conn)

    def handle(self, conn: TConn) -> Any:
        conn.sock.setblocking(True)
        conn.init()
        unreader = getattr(conn.parser, "unreader", None)
        if unreader is not None:
            if not isinstance(unreader.sock, _BoundedReads):
                unreader.sock = _BoundedReads(conn.sock, self.read_timeout)
            # Bytes the parser read ahead of the last request (pipelining) came before these.
            unreader.unread(unreader.take_buffered() + conn.read_ahead)
        conn.read_ahead = b""
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        # Writing the answer to a client that does not read it must not hold the thread either.
        conn.sock.settimeout(self.read_timeout)
        return super().handle_request(req, conn)
