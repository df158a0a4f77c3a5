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


def test_folders_go_in_and_come_back_and_links_open(tmp_path):
    src = tmp_path / "run"
    (src / "files").mkdir(parents=True)
    (src / "run-1.wandb").write_bytes(b"\x00records")
    (src / "files" / "config.yaml").write_text("lr: 0.1\n")
    s = LocalStorage(tmp_path / "store")
    keys = s.put_folder("wandb/offline-run-1", src)
    assert keys == {"files/config.yaml": "wandb/offline-run-1/files/config.yaml",
                    "run-1.wandb": "wandb/offline-run-1/run-1.wandb"}
    back = s.get_folder("wandb/offline-run-1", tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in back) == ["files/config.yaml", "run-1.wandb"]
    assert (tmp_path / "back" / "run-1.wandb").read_bytes() == b"\x00records"
    # A prefix is a folder, not a string prefix: offline-run-10 is not part of offline-run-1.
    s.put("wandb/offline-run-10/x", b"other")
    assert len(s.get_folder("wandb/offline-run-1", tmp_path / "again")) == 2
    link = s.link("wandb/offline-run-1/run-1.wandb")
    assert link.startswith("file://") and link.endswith("/store/wandb/offline-run-1/run-1.wandb")
