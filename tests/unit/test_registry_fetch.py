"""Registry.fetch under concurrency: several server workers write the same cached model at once."""

import threading

import numpy as np
import pytest

from mnistcl.registry import Registry
from mnistcl.storage import LocalStorage

pytestmark = pytest.mark.unit


def test_concurrent_fetches_of_one_model_all_succeed(tmp_path):
    reg = Registry(LocalStorage(tmp_path / "store"))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(np.random.default_rng(0).bytes(8_000_000))
    mv = reg.register(files={"onnx": onnx}, family="torchnet", config={}, dataset="v1")
    for round_ in range(10):  # a fresh cache each round: every worker finds it empty and writes
        cache = tmp_path / f"cache{round_}"
        errors, paths = [], []
        start = threading.Barrier(16)

        def fetch(cache=cache, errors=errors, paths=paths, start=start):
            start.wait()
            try:
                paths.append(reg.fetch(mv.id, "onnx", cache))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors[0]
        assert len(set(paths)) == 1 and paths[0].read_bytes() == onnx.read_bytes()
        assert not list(cache.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["../../escape.onnx", "/etc/passwd", ".hidden", "a/b.onnx", ""])
def test_fetch_refuses_a_record_whose_file_name_is_a_path(tmp_path, name):
    """The version record names the cached file; a tampered record cannot write outside the cache."""
    import json

    from mnistcl.registry import VERSIONS, RegistryError

    store = LocalStorage(tmp_path / "store")
    reg = Registry(store)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx bytes")
    mv = reg.register(files={"onnx": onnx}, family="torchnet", config={}, dataset="v1")
    record = json.loads(store.get(f"{VERSIONS}{mv.id}.json"))
    record["artifacts"]["onnx"]["filename"] = name
    store.put(f"{VERSIONS}{mv.id}.json", json.dumps(record).encode())
    with pytest.raises(RegistryError, match="unsafe file name"):
        reg.fetch(mv.id, "onnx", tmp_path / "cache" / "deep")
    assert not (tmp_path / "escape.onnx").exists() and not (tmp_path / "cache").exists()
