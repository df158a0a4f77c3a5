"""New connections spread evenly over the model server's worker processes.

gunicorn's workers share one listening socket and each takes what the kernel gives it: when eight
keep-alive connections open at once, one worker's event loop often accepts three to five of them
before the other wakes (measured over 40 tries of 8 connections to 2 workers: 4/4 in 22, 3/5 in
17, 8/0 once; with the standard library's loop, which accepts up to its backlog per wake-up, 7/1
and 5/3 were common). A worker holding five of eight connections answers each of them a quarter
later than a worker holding four: at 16 digits x 8 clients, p99 25-31 ms on the busy side.

Here every worker counts its open connections in memory it shares with the others (created in
gunicorn's master, which imports the worker class before it forks), and accepts a new one only if
no other worker whose process exists holds fewer (:class:`Listener`); otherwise it looks again
``RETRY_S`` later, and once the connection has waited ``WAIT_S`` it accepts anyway, so a worker
that is busy or stopped delays a connection by at most that, never refuses it. A worker that
stops accepting gives its slot up, and the master frees a reaped worker's. Standard library only
(tests/unit/test_serving_balance.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing as mp
import os
import select

log = logging.getLogger(__name__)

#: Worker slots in the shared table (gunicorn's --workers is far below it; a slot whose process
#: has gone is taken again).
SLOTS = 64
#: How long a worker that holds more connections than another leaves a new one to it, and how
#: often it looks again meanwhile.
WAIT_S, RETRY_S = 0.05, 0.002


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has the number now: not one of ours, but alive
        return True
    return True


class Table:
    """Open connections per worker process, in shared memory: ``pids[i]`` holds slot ``i``,
    ``counts[i]`` its connections. Made before the workers fork; each claims a slot with
    :meth:`join`."""

    def __init__(self, slots: int = SLOTS):
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self.pids, self.counts, self.lock = ctx.RawArray("i", slots), ctx.RawArray("i", slots), ctx.Lock()

    def join(self, pid: int | None = None) -> Seat:
        """This process's seat: a free slot, or one whose process is gone. No seat (a worker that
        accepts as if alone) if the table is full, or its lock is not had within a second (a
        process killed while holding it)."""
        pid = pid or os.getpid()
        if not self.lock.acquire(timeout=1.0):
            log.warning("connection table locked: this worker accepts connections without balancing")
            return Seat(self, None)
        try:
            for i, holder in enumerate(self.pids):
                if holder == pid or holder == 0 or not _alive(holder):
                    self.pids[i], self.counts[i] = pid, 0
                    return Seat(self, i)
        finally:
            self.lock.release()
        return Seat(self, None)

    def release(self, pid: int) -> None:
        """Free ``pid``'s slot (gunicorn's master, when it reaps a worker: a slot never waits for
        the number to be taken by another process)."""
        for i, holder in enumerate(self.pids):
            if holder == pid:
                self.pids[i], self.counts[i] = 0, 0


class Seat:
    """One worker's place in the :class:`Table`."""

    def __init__(self, table: Table, slot: int | None):
        self.table, self.slot = table, slot

    @property
    def connections(self) -> int:
        return self.table.counts[self.slot] if self.slot is not None else 0

    def opened(self) -> None:
        if self.slot is not None:
            self.table.counts[self.slot] += 1  # only this process writes its slot

    def closed(self) -> None:
        if self.slot is not None and self.table.counts[self.slot] > 0:
            self.table.counts[self.slot] -= 1

    def leave(self) -> None:
        """Give the slot up (a worker that stops accepting: while it drains, the others do not
        wait for it)."""
        if self.slot is not None and self.table.pids[self.slot] == os.getpid():
            self.table.pids[self.slot], self.table.counts[self.slot] = 0, 0
        self.slot = None

    def least_loaded(self) -> bool:
        """True unless another live worker holds fewer open connections than this one."""
        if self.slot is None:
            return True
        mine, pids, counts = self.connections, self.table.pids, self.table.counts
        for i in range(len(pids)):
            if i != self.slot and pids[i] and counts[i] < mine and _alive(pids[i]):
                return False
        return True


class Listener:
    """Accepts connections on one of gunicorn's listening sockets, one per wake-up, when this
    worker's ``seat`` holds no more than any other (:meth:`Seat.least_loaded`); otherwise it stops
    watching the socket for ``RETRY_S`` and looks again, and once a connection has waited
    ``WAIT_S`` it accepts anyway. Each accepted connection is served by
    ``loop.connect_accepted_socket`` with ``protocol_factory()``, whose object gets the seat as
    ``.seat`` and must call ``seat.closed()`` when its connection is lost. Closed like the asyncio
    server it stands in for (uvicorn's shutdown calls ``close`` and ``wait_closed``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock, protocol_factory, seat: Seat, ssl=None):
        self.loop, self.sock, self.protocol_factory, self.seat, self.ssl = loop, sock, protocol_factory, seat, ssl
        self.deferred_since: float | None = None
        self.watching = False
        sock.setblocking(False)
        self._watch()

    def _watch(self) -> None:
        if not self.watching and self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._readable)
            self.watching = True

    def _unwatch(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.sock.fileno())
            self.watching = False

    def _look_again(self) -> None:
        if self.sock is None:
            return
        if not select.select([self.sock], [], [], 0)[0]:  # taken by another worker meanwhile
            self.deferred_since = None
        self._watch()

    def _readable(self) -> None:
        now = self.loop.time()
        if not self.seat.least_loaded():
            self.deferred_since = self.deferred_since or now
            if now - self.deferred_since < WAIT_S:
                self._unwatch()
                self.loop.call_later(RETRY_S, self._look_again)
                return
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):  # taken, or gone, already
            self.deferred_since = None
            return
        except OSError as exc:
            self.deferred_since = None
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):  # as asyncio's server
                log.error("accepting a connection failed: %s; accepting again in 1 s", exc)
                self._unwatch()
                self.loop.call_later(1.0, self._watch)
            else:
                log.error("accepting a connection failed: %s", exc)
            return
        self.deferred_since = None
        conn.setblocking(False)
        self.seat.opened()  # counted now, before the next wake-up looks at the table
        self.loop.create_task(self._serve(conn))

    async def _serve(self, conn) -> None:
        made = []

        def protocol():
            made.append(p := self.protocol_factory())
            p.seat = self.seat  # its connection_lost gives the seat back
            return p

        try:
            await self.loop.connect_accepted_socket(protocol, conn, ssl=self.ssl)
        except Exception as exc:  # noqa: BLE001 - the client gone already, and the like: this connection only
            log.warning("could not start serving an accepted connection: %s", exc)
            conn.close()
            if not made or getattr(made[0], "transport", None) is None:  # no protocol saw it: give the seat back
                if made:
                    made[0].seat = None
                self.seat.closed()

    def close(self) -> None:
        self._unwatch()
        self.sock = None
        self.seat.leave()

    async def wait_closed(self) -> None:
        return None
