import pytest

from mnistcl.storage import AlreadyExists, LocalStorage, NotFound, StorageError, open_storage

pytestmark = pytest.mark.unit


def test_local_roundtrip_and_list(tmp_path):
    s = LocalStorage(tmp_path)
    s.put("a/b/c.bin", b"123")
    s.put("a/x.json", b"{}")
    assert s.get("a/b/c.bin") == b"123"
    assert list(s.list("a/")) == ["a/b/c.bin", "a/x.json"]
    assert s.exists("a/x.json") and not s.exists("a/none")
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "x.json"]


def test_exclusive_put_refuses_overwrite(tmp_path):
    s = LocalStorage(tmp_path)
    s.put("m.json", b"first", exclusive=True)
    with pytest.raises(AlreadyExists):
        s.put("m.json", b"second", exclusive=True)
    assert s.get("m.json") == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_missing_key_names_it(tmp_path):
    s = LocalStorage(tmp_path)
    with pytest.raises(NotFound, match="nothing/here"):
        s.get("nothing/here")


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../../b"])
def test_bad_keys_refused(tmp_path, key):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path).put(key, b"x")


def test_open_storage_dispatch(tmp_path):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    with pytest.raises(StorageError, match="unsupported"):
        open_storage("gs://bucket/x")
