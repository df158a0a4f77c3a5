"""Appending labelled batches: formats, lineage, slices, and refusing bad input whole."""


import numpy as np
import pytest
from PIL import Image

from mnistcl.datasets import DatasetError, read_labelled
from mnistcl.images import ImageError
from tests.helpers import kill_when_marked
from tests.helpers import write_mnist_csv as _write_csv

pytestmark = pytest.mark.data


def _batch(mnist_small, n=50):
    x, y = mnist_small["test"]
    return 255 - x[:n], y[:n]  # a "new handwriting": inverted digits


def test_append_npz_makes_child_with_eval_slice(tmp_path, small_store, mnist_small):
    x, y = _batch(mnist_small)
    np.savez(tmp_path / "b.npz", images=x, labels=y)
    m = small_store.append(*read_labelled(tmp_path / "b.npz"), parent="latest", source="test")
    assert (m.id, m.parent, m.lineage) == ("v2", "v1", ["v1", "v2"])
    assert sum(m.counts["train"]) == 40 and sum(m.counts["eval"]) == 10
    assert m.slices == ["mnist-test", "v2"]
    assert sum(m.totals["train"]) == 600 + 40
    ds = small_store.load("v2")
    assert len(ds.train_x) == 640 and list(ds.slices) == ["mnist-test", "v2"]
    assert set(np.unique(ds.train_origin)) == {0, 1}
    # the appended images are exactly the ones given, split without loss
    got = np.concatenate([ds.train_x[ds.train_origin == 1], ds.slices["v2"][0]])
    assert sorted(map(bytes, got)) == sorted(map(bytes, x))
    # the parent is untouched
    assert len(small_store.load("v1").train_x) == 600


def test_append_csv_and_png_folder(tmp_path, small_store, mnist_small):
    x, y = _batch(mnist_small, 20)
    _write_csv(tmp_path / "b.csv", x, y)
    cx, cy = read_labelled(tmp_path / "b.csv")
    assert np.array_equal(cx, x) and np.array_equal(cy, y)
    _write_csv(tmp_path / "nohdr.csv", x, y, header=False)
    assert np.array_equal(read_labelled(tmp_path / "nohdr.csv")[0], x)
    folder = tmp_path / "pngs"
    for i, (img, lbl) in enumerate(zip(x, y, strict=True)):
        sub = folder / str(lbl) if i % 2 else folder
        sub.mkdir(parents=True, exist_ok=True)
        name = f"{i}.png" if i % 2 else f"{lbl}_{i}.png"
        Image.fromarray(img).save(sub / name)
    px, py = read_labelled(folder)
    assert sorted(zip(map(bytes, px), py.tolist(), strict=True)) == sorted(zip(map(bytes, x), y.tolist(), strict=True))


def _npz(name, **arrays):
    def make(tmp, x, y):
        np.savez(tmp / name, **{k: v(x, y) for k, v in arrays.items()})
        return tmp / name
    return make


def _raw(name, data):
    def make(tmp, x, y):
        (tmp / name).write_bytes(data)
        return tmp / name
    return make


def _nan_images(x, y):
    xf = x.astype(np.float32)
    xf[0, 3, 3] = np.nan
    return xf


def _broken_png_folder(tmp, x, y):
    d = tmp / "brokenpng" / "3"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"\x89PNG broken")
    return tmp / "brokenpng"


def _unlabelled_png_folder(tmp, x, y):
    d = tmp / "nolabel"
    d.mkdir()
    Image.fromarray(x[0]).save(d / "digit.png")
    return d


# case -> (how to make the bad input, words the error must contain)
BAD = {
    "shape": (_npz("a.npz", images=lambda x, y: x[:, :27, :], labels=lambda x, y: y), "shape"),
    "labels": (_npz("a.npz", images=lambda x, y: x, labels=lambda x, y: y + 5), "outside 0-9"),
    "nan": (_npz("a.npz", images=_nan_images, labels=lambda x, y: y), "NaN"),
    "empty": (_npz("a.npz", images=lambda x, y: x[:0], labels=lambda x, y: y[:0]), "empty"),
    "dtype": (_npz("a.npz", images=lambda x, y: x.astype("U3"), labels=lambda x, y: y), "not numeric"),
    "keys": (_npz("a.npz", foo=lambda x, y: x), "needs arrays"),
    "garbage": (_raw("g.npz", b"not a zip"), "not a readable NPZ"),
    "cols": (_raw("c.csv", b"1,2,3\n"), "785"),
    "emptycsv": (_raw("e.csv", b""), "empty CSV"),
    "bincsv": (_raw("b.csv", b"\xff\xfe\x00garbage"), "CSV"),
    "brokenpng": (_broken_png_folder, "not a PNG"),
    "nolabel": (_unlabelled_png_folder, "cannot tell its label"),
    "txt": (_raw("x.txt", b"hi"), "unsupported file type"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_writes_nothing(tmp_path, small_store, mnist_small, case):
    make, needle = BAD[case]
    path = make(tmp_path, *_batch(mnist_small, 10))
    before_ids = small_store.ids()
    before_keys = list(small_store.storage.list())
    with pytest.raises(ImageError, match=needle):
        x, y = read_labelled(path)
        small_store.append(x, y, parent="latest", source="bad")
    assert small_store.ids() == before_ids
    assert list(small_store.storage.list()) == before_keys


def test_unknown_parent_refused(small_store, mnist_small):
    with pytest.raises(DatasetError, match="v9"):
        small_store.append(*_batch(mnist_small), parent="v9", source="x")
    assert small_store.ids() == ["v1"]


KILL_SCRIPT = r"""
import sys, time, numpy as np
from mnistcl.datasets import DatasetStore
from mnistcl.storage import LocalStorage

class Slow(LocalStorage):
    def put(self, key, data, *, exclusive=False):
        if key.startswith("datasets/versions/"):
            open(sys.argv[2], "w").write("objects written")
            time.sleep(60)            # killed here, before the manifest exists
        super().put(key, data, exclusive=exclusive)

store = DatasetStore(Slow(sys.argv[1]))
rng = np.random.default_rng(0)
store.append(rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30),
             parent="v1", source="killed")
"""


def test_killed_mid_write_leaves_no_version(tmp_path, small_store):
    kill_when_marked(KILL_SCRIPT, [str(small_store.storage.root)], tmp_path / "marker")
    assert small_store.ids() == ["v1"]
    small_store.verify("v1")
    assert small_store.gc() == []  # the dead write's objects are young: an append may be writing them
    removed = small_store.gc(grace_s=0)
    assert len(removed) == 4  # train/eval images and labels of the dead write
    # a later append works and takes the next id
    rng = np.random.default_rng(1)
    m = small_store.append(rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5), parent="v1", source="ok")
    assert m.id == "v2"


def test_concurrent_appends_get_distinct_ids(small_store, mnist_small):
    from concurrent.futures import ThreadPoolExecutor

    x, y = _batch(mnist_small, 20)

    def one(i):
        return small_store.append(np.roll(x, i, axis=1), y, parent="v1", source=f"t{i}").id

    with ThreadPoolExecutor(4) as ex:
        ids = list(ex.map(one, range(4)))
    assert sorted(ids) == ["v2", "v3", "v4", "v5"]
    for vid in ids:
        small_store.verify(vid)


def test_concurrent_appends_on_latest_chain_instead_of_forking(small_store, mnist_small):
    """Appends on "latest" at once: each lands on top of the one before (one lineage, every batch
    in it), where appends on a fixed parent stay siblings."""
    from concurrent.futures import ThreadPoolExecutor

    x, y = _batch(mnist_small, 20)

    def one(i):
        return small_store.append(np.roll(x, i, axis=1), y, parent="latest", source=f"t{i}").id

    with ThreadPoolExecutor(4) as ex:
        ids = list(ex.map(one, range(4)))
    last = small_store.manifest(max(ids, key=lambda v: int(v[1:])))
    assert last.lineage == ["v1", "v2", "v3", "v4", "v5"]
    assert sorted({m.source for m in small_store.list()} - {"test: first rows of MNIST"}) == ["t0", "t1", "t2", "t3"]
    assert sum(last.totals["train"]) == sum(small_store.manifest("v1").totals["train"]) + 4 * sum(
        small_store.manifest("v2").counts["train"])
