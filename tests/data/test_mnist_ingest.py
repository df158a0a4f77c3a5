"""The real MNIST: schema, label set and counts, leakage, checksums (full 70,000 images)."""

import numpy as np
import pytest

from mnistcl.datasets import MNIST_COUNTS, DatasetError, DatasetStore, read_mnist_csv
from mnistcl.images import image_hashes
from mnistcl.storage import LocalStorage
from tests.helpers import write_mnist_csv as _write_csv

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    store = DatasetStore(LocalStorage(tmp_path_factory.mktemp("store")))
    m, created = store.ingest_mnist()
    assert created
    return store, m


def test_counts_equal_real_mnist(ingested):
    _, m = ingested
    assert m.id == "v1" and m.parent is None and m.lineage == ["v1"]
    assert m.counts["train"] == MNIST_COUNTS["train"] and sum(m.counts["train"]) == 60_000
    assert m.counts["test"] == MNIST_COUNTS["test"] and sum(m.counts["test"]) == 10_000
    assert m.slices == ["mnist-test"]


def test_schema_and_label_set(ingested):
    store, m = ingested
    ds = store.load("v1")
    assert ds.train_x.shape == (60_000, 28, 28) and ds.train_x.dtype == np.uint8
    assert ds.test[0].shape == (10_000, 28, 28)
    assert set(np.unique(ds.train_y)) == set(range(10))
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0
    assert m.image_shape == [28, 28] and m.dtype == "uint8"
    for f in m.files.values():
        assert len(f.sha256) == 64 and f.bytes > 0


def test_no_test_image_in_train(ingested):
    store, _ = ingested
    ds = store.load("v1")
    assert not set(image_hashes(ds.test[0])) & set(image_hashes(ds.train_x))


def test_ingest_is_idempotent(ingested):
    store, m = ingested
    again, created = store.ingest_mnist()
    assert not created and again.id == m.id and store.ids() == ["v1"]


def test_checksum_mismatch_names_file_and_version(tmp_path, small_store):
    m = small_store.manifest("v1")
    entry = m.files["train/images"]
    path = small_store.storage.root / entry.key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train/images .* of dataset version v1 is corrupt"):
        small_store.load("v1")


def test_missing_file_names_file_and_version(small_store):
    m = small_store.manifest("v1")
    (small_store.storage.root / m.files["test/labels"].key).unlink()
    with pytest.raises(DatasetError, match=r"test/labels .* of dataset version v1 is missing"):
        small_store.verify("v1")


def test_ingest_fails_loudly_on_wrong_counts(tmp_path, mnist_small):
    x, y = mnist_small["train"]
    _write_csv(tmp_path / "mnist_train.csv", x, y)
    _write_csv(tmp_path / "mnist_test.csv", *mnist_small["test"])
    with pytest.raises(DatasetError, match="label counts .* differ from real MNIST train"):
        read_mnist_csv(tmp_path / "mnist_train.csv", "train")
    store = DatasetStore(LocalStorage(tmp_path / "store"))
    with pytest.raises(DatasetError):
        store.ingest_mnist(tmp_path)
    assert store.ids() == []


def test_ingest_fails_on_bad_pixels(tmp_path, mnist_small):
    x, y = mnist_small["test"]
    x = x.astype(np.int32)
    x[0, 0, 0] = 300
    _write_csv(tmp_path / "bad.csv", x, y)
    with pytest.raises(DatasetError, match="pixel range"):
        read_mnist_csv(tmp_path / "bad.csv")


def test_ingest_fails_on_bad_header(tmp_path):
    (tmp_path / "h.csv").write_text("digit,a,b\n1,2,3\n")
    with pytest.raises(DatasetError, match="header"):
        read_mnist_csv(tmp_path / "h.csv")
