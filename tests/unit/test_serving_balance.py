"""The model server's connection table (serving/balance.py): worker processes share it through
memory made before they fork, and a worker accepts only while no other live worker holds fewer
connections. The server itself, with two workers and eight connections, is in
tests/integration/test_serving_workers.py."""

import asyncio
import multiprocessing as mp
import socket
import subprocess
import sys

import pytest

from serving import balance

pytestmark = pytest.mark.unit


def test_fewest_connections_take_the_next_one(monkeypatch):
    alive = {101, 102}
    monkeypatch.setattr(balance, "_alive", alive.__contains__)
    table = balance.Table(slots=4)
    a, b = table.join(pid=101), table.join(pid=102)
    assert (a.slot, b.slot) == (0, 1)
    assert a.least_loaded() and b.least_loaded()  # 0 and 0: either may
    a.opened()
    assert not a.least_loaded() and b.least_loaded()
    b.opened()
    b.opened()
    assert a.least_loaded() and not b.least_loaded()
    b.closed()
    assert a.least_loaded() and b.least_loaded()  # 1 and 1
    alive.discard(102)  # b's process is gone: its count no longer holds a back
    b.closed()
    a.opened()
    assert a.least_loaded()
    b.closed()  # never below zero
    assert b.connections == 0


def _child(table: balance.Table, ready, done) -> None:
    seat = table.join()
    for _ in range(3):
        seat.opened()
    ready.set()
    done.wait(10)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="gunicorn forks its workers")
def test_the_table_is_shared_by_forked_workers_and_a_gone_one_leaves_its_slot():
    table = balance.Table(slots=4)
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_child, args=(table, ready, done))
    child.start()
    try:
        assert ready.wait(10)
        me = table.join()
        me.opened()
        assert me.least_loaded()  # 1 against the child's 3, seen through the shared memory
        for _ in range(3):
            me.opened()
        assert not me.least_loaded()  # 4 against 3
    finally:
        done.set()
        child.join(10)
    assert me.least_loaded()  # the child has exited: its 3 no longer count
    slot_of_child = list(table.pids).index(child.pid)
    again = table.join(pid=child.pid + 100000)  # a new worker takes the gone one's slot
    assert again.slot == slot_of_child and again.connections == 0


def test_a_full_table_lets_a_worker_accept_as_if_alone():
    table = balance.Table(slots=1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        held = table.join(pid=sleeper.pid)  # the only slot, held by a live process
        extra = table.join()
        assert held.slot == 0 and extra.slot is None
        extra.opened()
        assert extra.least_loaded() and extra.connections == 0  # not counted, never held back
    finally:
        sleeper.kill()
        sleeper.wait()


class FakeSeat:
    """A seat whose standing the test sets."""

    def __init__(self, least_loaded: bool):
        self.least, self.opened_n, self.closed_n, self.left = least_loaded, 0, 0, False

    def least_loaded(self):
        return self.least

    def opened(self):
        self.opened_n += 1

    def closed(self):
        self.closed_n += 1

    def leave(self):
        self.left = True


class Proto(asyncio.Protocol):
    seat = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"hi")

    def connection_lost(self, exc):
        if self.seat is not None:
            self.seat.closed()


async def _connect_and_wait(port: int, loop) -> float:
    """Seconds until the server's greeting arrives on a new connection."""
    t = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
    writer.close()
    return loop.time() - t


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_a_worker_holding_more_waits_then_accepts_and_counts(monkeypatch):
    monkeypatch.setattr(balance, "WAIT_S", 0.2)

    async def run():
        loop, sock = asyncio.get_running_loop(), _listening()
        seat = FakeSeat(least_loaded=False)
        listener = balance.Listener(loop, sock, Proto, seat)
        waited = await _connect_and_wait(sock.getsockname()[1], loop)
        await asyncio.sleep(0.05)  # the connection's close reaches the protocol
        seat.least = True
        quick = await _connect_and_wait(sock.getsockname()[1], loop)
        await asyncio.sleep(0.05)
        listener.close()
        sock.close()
        return waited, quick, seat

    waited, quick, seat = asyncio.run(run())
    assert 0.2 <= waited < 1.0, waited  # left to a worker with fewer, then taken anyway
    assert quick < 0.1, quick
    assert (seat.opened_n, seat.closed_n, seat.left) == (2, 2, True)


def test_a_deferral_ends_when_another_worker_took_the_connection(monkeypatch):
    """A worker that deferred while another took the connection starts its wait afresh for the
    next one (it used to remember the old deferral and take the next connection at once)."""
    monkeypatch.setattr(balance, "WAIT_S", 0.3)

    async def run():
        loop, sock = asyncio.get_running_loop(), _listening()
        seat = FakeSeat(least_loaded=False)
        listener = balance.Listener(loop, sock, Proto, seat)
        port = sock.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.05)  # the listener has seen it and deferred
        taken, _ = sock.accept()  # "the other worker" takes it
        await asyncio.sleep(0.5)  # longer than WAIT_S
        waited = await _connect_and_wait(port, loop)
        listener.close()
        for s in (client, taken, sock):
            s.close()
        return waited

    assert asyncio.run(run()) >= 0.3 * 0.9
