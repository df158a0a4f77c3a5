"""Dataset benchmark: ingest time, size on disk, load and verify time of real MNIST.

Writes bench/results/data.json. Run with `make bench-data`.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from mnistcl.datasets import DatasetStore, find_mnist_csvs
from mnistcl.storage import LocalStorage

OUT = Path(__file__).parent / "results" / "data.json"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(repeats: int = 3) -> dict:
    train_csv, test_csv = find_mnist_csvs()
    results: dict = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "source_csv_bytes": train_csv.stat().st_size + test_csv.stat().st_size,
    }
    ingest, load, verify = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            store = DatasetStore(LocalStorage(tmp))
            t0 = time.perf_counter()
            m, _ = store.ingest_mnist()
            ingest.append(time.perf_counter() - t0)
            results["store_bytes"] = _du(Path(tmp))
            t0 = time.perf_counter()
            ds = store.load(m.id)
            load.append(time.perf_counter() - t0)
            assert len(ds.train_x) == 60_000
            t0 = time.perf_counter()
            store.verify(m.id)
            verify.append(time.perf_counter() - t0)
    results.update(
        ingest_s=min(ingest), load_s=min(load), verify_s=min(verify), repeats=repeats,
        ingest_all_s=ingest, load_all_s=load,
    )
    results["compression_vs_csv"] = results["source_csv_bytes"] / results["store_bytes"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if not k.endswith("_all_s")}, indent=2))
    return results


if __name__ == "__main__":
    main()
