"""Shared fixtures: real MNIST (a few hundred images unless a test needs all), tmp homes."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnistcl.datasets import find_mnist_csvs
from mnistcl.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
