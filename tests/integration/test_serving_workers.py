"""The model server with two worker processes, as deployed (configs/deploy.yaml prod): new
connections spread evenly over the workers (serving/balance.py, serving/worker.py). The kernel's
own spread of eight keep-alive connections opened at once over two workers was 4/4 in 22 of 40
tries here (3/5 in 17, 8/0 once), so five rounds all 4/4 by chance would be a 1-in-20 event."""

import json
import os
import signal
import socket
import threading
import time

import pytest

from deployment import serve as launch
from deployment.serve import free_port
from serving import balance
from serving.loadgen import KeepAliveClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def connections_per_worker(server: int, port: int) -> list[int]:
    return sorted(launch.worker_connections(server, port).values())


@pytest.fixture
def two_workers(registry, tmp_path):
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    port = free_port()
    proc = launch.start(registry.storage.root, str(tmp_path / "pred.db"), tmp_path / "cache", tmp_path / "log",
                        port=port, metrics_port=free_port(), workers=2, threads=4)
    server = proc.pid
    try:
        # The server answers once one worker does; the other may still be loading its model, and
        # a worker not yet serving takes no connection. Both serve once two connections opened
        # one after the other land on different workers.
        deadline = time.monotonic() + 60
        while True:
            socks = [_ping(socket.create_connection(("127.0.0.1", port), timeout=5)) for _ in range(2)]
            both = connections_per_worker(server, port) == [1, 1]
            for s in socks:
                s.close()
            if both:
                break
            assert time.monotonic() < deadline, "the second worker never took a connection"
            time.sleep(0.5)
        while connections_per_worker(server, port) != [0, 0]:  # the closes seen by both workers
            time.sleep(0.05)
        yield server, port
    finally:
        launch.stop(proc)


def _ping(sock: socket.socket) -> socket.socket:
    sock.sendall(b"GET /health/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def test_eight_connections_opened_at_once_are_split_four_and_four(two_workers, mnist_small):
    server, port = two_workers
    x = mnist_small["test"][0][:16]
    body = json.dumps({"data": {"ndarray": (x * 255).round().astype(int).tolist()}}).encode()
    url = f"http://127.0.0.1:{port}/api/v1.0/predictions"
    splits = []
    for _ in range(5):
        clients = [KeepAliveClient(url) for _ in range(8)]
        start, codes = threading.Barrier(8), []

        def first_request(client, start=start, codes=codes):
            start.wait()  # all eight connect at once
            codes.append(client.request(body)[0])

        threads = [threading.Thread(target=first_request, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in clients:  # a second request on each: the connections are kept, not reopened
            codes.append(c.request(body)[0])
        splits.append(connections_per_worker(server, port))
        for c in clients:
            c.close()
        assert codes == [200] * 16
        deadline = time.monotonic() + 10
        while connections_per_worker(server, port) != [0, 0] and time.monotonic() < deadline:
            time.sleep(0.05)  # every close seen by its worker before the next round
    assert splits == [[4, 4]] * 5, splits


def test_connections_opened_one_by_one_alternate(two_workers):
    server, port = two_workers
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        for s in socks:  # each answered: accepted and served
            _ping(s)
        assert connections_per_worker(server, port) == [10, 10]
    finally:
        for s in socks:
            s.close()


def test_a_worker_that_holds_fewer_but_does_not_accept_delays_a_connection_never_refuses_it(two_workers):
    """The other worker takes the connection after balance.WAIT_S (a stopped worker here: its
    process is alive, its event loop is not)."""
    server, port = two_workers
    first = _ping(socket.create_connection(("127.0.0.1", port), timeout=5))
    held = launch.worker_connections(server, port)
    idle = next(pid for pid, n in held.items() if n == 0)
    os.kill(idle, signal.SIGSTOP)
    try:
        t = time.monotonic()
        second = _ping(socket.create_connection(("127.0.0.1", port), timeout=5))  # within the 5 s timeout
        waited = time.monotonic() - t
        assert waited >= balance.WAIT_S * 0.9, waited  # it did leave it to the idle worker first
        assert sorted(launch.worker_connections(server, port).items()) == sorted({**held, **{p: 2 for p in held if p != idle}}.items())
    finally:
        os.kill(idle, signal.SIGCONT)
    second.close()
    first.close()


@pytest.mark.parametrize("env, words", [
    ({"MNISTCL_SERVE_LOOP": "tokio"}, "MNISTCL_SERVE_LOOP must be asyncio or uvloop, not 'tokio'"),
    ({"MNISTCL_SERVE_BALANCE": "maybe"}, "MNISTCL_SERVE_BALANCE must be true or false, not 'maybe'"),
])
def test_a_bad_serving_setting_stops_the_server_with_its_name(registry, tmp_path, env, words):
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    with pytest.raises(RuntimeError) as err:
        launch.start(registry.storage.root, str(tmp_path / "pred.db"), tmp_path / "cache", tmp_path / "log",
                     port=free_port(), metrics_port=free_port(), workers=2, timeout=20, extra_env=env)
    assert words in str(err.value)


@pytest.mark.parametrize("env", [{"MNISTCL_SERVE_BALANCE": "false", "MNISTCL_SERVE_LOOP": "uvloop"}])
def test_the_previous_layout_still_serves_for_comparison(registry, tmp_path, env, mnist_small):
    """What bench/serve_tail.py compares against: uvicorn's own listener on uvloop."""
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    port = free_port()
    proc = launch.start(registry.storage.root, str(tmp_path / "pred.db"), tmp_path / "cache", tmp_path / "log",
                        port=port, metrics_port=free_port(), workers=2, extra_env=env)
    try:
        x = mnist_small["test"][0][:4]
        client = KeepAliveClient(f"http://127.0.0.1:{port}/api/v1.0/predictions")
        status, answer = client.request(json.dumps({"data": {"ndarray": x.tolist()}}).encode())
        client.close()
    finally:
        launch.stop(proc)
    assert status == 200 and len(json.loads(answer)["meta"]["tags"]["digits"]) == 4
