"""Fixtures of the integration tests that start the model server."""

import contextlib
from pathlib import Path

import pytest

from deployment import serve as launch
from deployment.serve import free_port
from mnistcl.registry import Registry
from mnistcl.storage import LocalStorage
from models.common import NullReporter, TrainData

FEEDBACK_TOKEN = "test-feedback-token-0123456789"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, mnist_small):
    import models.torchnet as tn

    x, y = mnist_small["train"]
    root = tmp_path_factory.mktemp("store")
    reg = Registry(LocalStorage(root))
    for i, epochs in enumerate((3, 1)):
        m = tn.train(TrainData(x[:500], y[:500], x[500:], y[500:]), tn.Config(epochs=epochs, batch_size=32, channels=8, seed=i),
                     NullReporter())
        files = m.export(root.parent / f"export-{i}")
        reg.register(files=files, family="torchnet", config={}, dataset="v1")
    reg.promote("m1", "champion", reason="test")
    return reg


@contextlib.contextmanager
def running_server(registry, work: Path, db: str):
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    port, mport, gport = free_port(), free_port(), free_port()
    try:
        proc = launch.start(registry.storage.root, db, work / "cache", work / "log", port=port, metrics_port=mport,
                            threads=4, grpc_port=gport, poll_s=0.5, timeout=60,
                            feedback_tokens=f"tester:{FEEDBACK_TOKEN}")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    url = f"http://127.0.0.1:{port}"
    try:
        yield {"url": url, "metrics": f"http://127.0.0.1:{mport}/metrics", "db": db, "port": port, "log": work / "log",
               "grpc": f"127.0.0.1:{gport}"}
    finally:
        launch.stop(proc)


