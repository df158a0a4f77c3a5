"""Shared fixtures: real MNIST (a few hundred images unless a test needs all), tmp homes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deployment.serve import free_port  # noqa: F401 - re-exported for the tests
from mnistcl.datasets import find_mnist_csvs
from mnistcl.settings import Settings


@pytest.fixture(scope="session")
def mnist_csvs() -> tuple[Path, Path]:
    return find_mnist_csvs()


def _head(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    arr = pd.read_csv(path, nrows=n).to_numpy()
    return arr[:, 1:].reshape(-1, 28, 28).astype(np.uint8), arr[:, 0].astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_small(mnist_csvs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """600 real training and 200 real test digits."""
    train_csv, test_csv = mnist_csvs
    return {"train": _head(train_csv, 600), "test": _head(test_csv, 200)}


@pytest.fixture(scope="session")
def mnist_medium(mnist_csvs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """3,000 real training digits and the whole real test set (10,000).

    The first rows of MNIST's test set come from other writers than the rest (its two NIST
    sources), so windows of held-out digits are drawn from the whole set, as production traffic
    would mix them."""
    train_csv, test_csv = mnist_csvs
    return {"train": _head(train_csv, 3000), "test": _head(test_csv, 10000)}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def store(settings):
    from mnistcl.datasets import DatasetStore
    from mnistcl.storage import open_storage

    return DatasetStore(open_storage(settings.store_url))


@pytest.fixture
def small_store(store, mnist_small):
    """A store whose root version holds the small real MNIST subset."""
    store.create(mnist_small, parent=None, source="test: first rows of MNIST")
    return store


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 (the Debian binaries), stopped after the session;
    a test may stop and start it (it must leave it running)."""
    from tests.pgserver import PostgresServer

    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    return postgres_server.url


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint any process can reach)."""
    from moto.server import ThreadedMotoServer

    from deployment.serve import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_url):
    """A URL of a new, empty database on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


class _SmtpSink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        import email

        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1; ``.messages`` holds what it received."""
    from aiosmtpd.controller import Controller

    from deployment.serve import free_port

    sink = _SmtpSink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    sink.host, sink.port = "127.0.0.1", ctl.port
    yield sink
    ctl.stop()


@pytest.fixture
def pushgateway(tmp_path):
    """A real Prometheus Pushgateway (Debian package prometheus-pushgateway) on 127.0.0.1, empty.

    Debian builds it to persist its metrics in /var/lib/prometheus/pushgateway.data and to load
    them on start; an empty --persistence.file keeps them in memory only, so each test starts
    without an earlier run's pushes."""
    import shutil
    import subprocess

    from deployment.serve import wait_http_ok

    binary = shutil.which("prometheus-pushgateway")
    if not binary:
        pytest.skip("prometheus-pushgateway not installed (apt-get install prometheus-pushgateway)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "pushgateway.log", "w"))
    try:
        if not wait_http_ok(f"{url}/-/ready", 30, interval=0.2):
            pytest.fail(f"the Pushgateway did not start: {(tmp_path / 'pushgateway.log').read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
