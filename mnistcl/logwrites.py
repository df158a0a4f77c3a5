"""How the prediction log's writes reach the database on a busy model server (mnistcl/predlog.py).

- :class:`WriterLock`: SQLite writers queue on it instead of in SQLite's busy handler, which
  sleeps in steps of up to 100 ms.
- :class:`GroupCommit`: concurrent requests' writes in one transaction by one thread, each
  request told (:class:`Pending`) once its rows are committed.
- :func:`checkpoints`: the write-ahead log copied back beside the writers, and started over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LogUnavailable(RuntimeError):
    """The prediction log's database cannot be reached or written, even on a fresh connection."""


#: How often the model server copies the prediction log's write-ahead log into the database (every
#: 5 s: p99 at 16 digits x 8 clients 19.4-19.5 ms against 20.5-24.0 every second, in alternating runs).
CHECKPOINT_S = 5.0
#: How long a SQLite writer waits for the log's writer lock before the log counts as unavailable.
WRITER_LOCK_TIMEOUT_S = 30.0
#: A checkpoint that finds more frames than this in the write-ahead log runs again holding the
#: writer lock, so the log is copied back whole and the next writer starts it over (a checkpoint
#: beside busy writers never catches up, and the file would grow while traffic lasts).
WAL_RESTART_FRAMES = 16384
#: The most requests' predictions one group commit writes (a batch of 64 images each: 4,096 rows).
GROUP_MAX = 64


class Pending:
    """One request's write waiting for the group commit: ``result()`` waits for it (and raises
    what failed it); ``on_done(fn)`` calls ``fn`` once it is committed or failed (at once if it
    is), from the writer thread: how an event loop learns without a thread of its own waiting."""

    __slots__ = ("write", "done", "error", "_callbacks", "_lock")

    def __init__(self, write: Callable[[Any], None]):
        self.write, self.done, self.error = write, threading.Event(), None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def finish(self) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - e.g. an event loop already closed: the others still run
                log.exception("prediction log: a commit callback failed")

    def on_done(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def result(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise self.error


class WriterLock:
    """The SQLite log's writer lock: threads of this process queue on a ``threading.Lock``,
    processes on ``flock`` of ``<log>.writer`` (one descriptor per log object). Past
    ``WRITER_LOCK_TIMEOUT_S`` it raises sqlite3.OperationalError, which the log reports as
    unavailable (a 503), as SQLite's own busy timeout did: a writer stopped while holding the
    lock must not freeze the model server's event loop. Waiting for another process polls in
    steps of 0.1 to 2 ms (SQLite's busy handler: 1 to 100 ms)."""

    def __init__(self, path: str):
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            old = os.umask(0o007)  # group-writable: another writer of the log may run as another user
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
            finally:
                os.umask(old)
            weakref.finalize(self, os.close, self._fd)  # closed with this lock
        return self._fd

    def __enter__(self):
        if not self._thread_lock.acquire(timeout=WRITER_LOCK_TIMEOUT_S):
            raise sqlite3.OperationalError(f"prediction log writer lock: this process's writers waited over "
                                           f"{WRITER_LOCK_TIMEOUT_S:.0f} s")
        try:
            fd = self._descriptor()
            deadline, pause = time.monotonic() + WRITER_LOCK_TIMEOUT_S, 0.0001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return self
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise sqlite3.OperationalError(f"prediction log writer lock {self.path} held by another "
                                                       f"process for over {WRITER_LOCK_TIMEOUT_S:.0f} s") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.002)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc):
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class GroupCommit:
    """Concurrent requests' writes committed together through ``transaction(body)`` (the log's
    own: one transaction, with its fault handling). ``submit`` hands a write to the writer thread;
    the caller answers once its Pending is done, so nothing is answered that the log does not
    hold. The writer takes every write waiting when it is free, up to ``GROUP_MAX``, into one
    transaction: one commit and one counter-row lock for many requests. Nothing waits for a batch
    to fill: an idle writer takes a single write at once. A batch that fails for any reason but
    the database being unavailable is retried one write per transaction, so one request's
    failure is its own.
    """

    def __init__(self, transaction: Callable[[Callable[[Any], Any]], Any]):
        self._transaction = transaction
        self._queue: list[Pending] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, write: Callable[[Any], None]) -> Pending:
        """Hand ``write`` to the writer thread; the returned Pending says when it is committed."""
        pending = Pending(write)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="prediction-log-writer")
                self._thread.start()
            self._queue.append(pending)
            self._cond.notify()
        return pending

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
            committed = False
            try:
                self._transaction(lambda conn, batch=batch: [p.write(conn) for p in batch])
                committed = True
            except LogUnavailable as exc:
                for p in batch:
                    p.error = exc
            except Exception:  # noqa: BLE001 - find whose write it was: each alone
                for p in batch:
                    try:
                        self._transaction(p.write)
                    except Exception as exc:  # noqa: BLE001 - handed to the request that wrote it
                        p.error = exc
                committed = True  # each one committed or holds its own error
            finally:
                for p in batch:  # never leave a request waiting, and never let it think it was written
                    if not committed and p.error is None:
                        p.error = LogUnavailable("prediction log writer stopped before the commit")
                    p.finish()


def checkpoints(location: str, writer_lock: WriterLock) -> None:
    """Forever: every ``CHECKPOINT_S`` seconds a PASSIVE checkpoint of the SQLite log at
    ``location`` on its own connection. One that finds more than ``WAL_RESTART_FRAMES`` frames
    catches up and then runs once more holding ``writer_lock``, so the log is copied back whole
    and the next writer starts it over (:func:`_restart`)."""
    conn = None
    while True:
        time.sleep(CHECKPOINT_S)
        try:
            if conn is None:
                conn = sqlite3.connect(location, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_size_limit=67108864")  # the file cut back after a restart
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > WAL_RESTART_FRAMES:
                _restart(conn, location, writer_lock)
        except (sqlite3.Error, OSError) as exc:  # the next round tries again
            log.warning("prediction log checkpoint failed: %s", exc)
            conn = None


#: Before the locked pass: flush and copy again, at most this many times, until fewer frames than
#: CATCH_UP_FRAMES are left for it.
CATCH_UP_PASSES, CATCH_UP_FRAMES = 3, 1000


def _restart(conn, location: str, writer_lock: WriterLock) -> None:
    """The last of the log copied back with the writers held, for as short a time as can be.

    SQLite syncs the database file only when a checkpoint reaches the end of the log, which one
    beside busy writers never does: the pages a round copied stay unsynced, and the locked pass
    used to flush them all (40-235 ms with every writer waiting, at 16 digits x 8 clients: the
    slowest 1% of requests). They are flushed here first, holding no one, and what came in the
    meantime is copied; the locked pass then copies a few hundred frames and syncs them (6-8 ms)."""
    for _ in range(CATCH_UP_PASSES):
        _flush(location)
        _, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames - done < CATCH_UP_FRAMES:
            break
    _flush(location)
    with writer_lock:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _flush(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _SYNC(fd)
    finally:
        os.close(fd)


_SYNC = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
