"""Serving load benchmark: the Seldon Core wrapper on 127.0.0.1 against raw ONNX Runtime.

Starts `python -m serving.server` from .venv-serve on a scratch registry holding the current
champion (or a fresh small model), then for each request size (1 and 16 digits) and
concurrency (1 and 8) sends requests for a fixed time; reports requests per second, p50/p99
latency, 5xx count, and checks that every accepted request is in the prediction log. The raw
in-process ONNX Runtime call on the same model is the limit. Loopback only, bounded in time.

  python -m bench.serve --seconds 15 --workers 1 --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, body: dict, seconds: float, concurrency: int) -> dict:
    lat, codes, ids, lock = [], {}, [], threading.Lock()
    stop = time.perf_counter() + seconds

    def worker():
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = c.post(url, json=body)
                    code = r.status_code
                except httpx.HTTPError:
                    code = 0
                dt = time.perf_counter() - t
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == 200:
                        lat.append(dt)
                        ids.append(r.json()["meta"]["tags"]["request_id"])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": sum(codes.values()), "ok": codes.get(200, 0), "codes": {str(k): v for k, v in codes.items()},
            "errors_5xx": sum(v for k, v in codes.items() if k >= 500 or k == 0),
            "rps": codes.get(200, 0) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat else None, "ids": ids}


def raw_onnx(onnx_path: Path, x: np.ndarray, seconds: float = 3.0) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    lat = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        s.run(None, {"image": x})
        lat.append(time.perf_counter() - t)
    return {"rps": len(lat) / sum(lat), "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="per case (4 cases)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--store", type=Path, default=ROOT / ".mnistcl" / "store", help="registry with a champion")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = ap.parse_args(argv)

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.registry import Registry
    from mnistcl.storage import LocalStorage

    reg = Registry(LocalStorage(args.store))
    champion = reg.resolve("champion")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    onnx_path = reg.fetch(champion, "onnx", work / "cache")
    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    port, mport = free_port(), free_port()
    env = {**os.environ, "MNISTCL_STORE_URL": str(args.store), "MNISTCL_PREDICTIONS_DB": str(work / "pred.db"),
           "MNISTCL_MODEL_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([str(ROOT / ".venv-serve/bin/python"), "-m", "serving.server", "--port", str(port),
                             "--metrics-port", str(mport), "--workers", str(args.workers), "--threads", str(args.threads),
                             "--log-level", "WARNING"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=open(work / "log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/v1.0/predictions"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/status", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        result = {"champion": champion, "workers": args.workers, "threads": args.threads, "seconds": args.seconds,
                  "cases": {}}
        all_ids = []
        for n in (1, 16):
            body = {"data": {"ndarray": xt[:n].tolist()}}
            raw = raw_onnx(onnx_path, (xt[:n] / 255).astype(np.float32))
            for conc in (1, 8):
                r = load(url, body, args.seconds, conc)
                all_ids += r.pop("ids")
                r["raw_onnx"] = raw
                r["ratio_to_raw_onnx_rps"] = r["rps"] / raw["rps"]
                result["cases"][f"{n}-digit-c{conc}"] = r
                print(f"{n:2d} digits, concurrency {conc}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, 5xx {r['errors_5xx']}; raw ONNX {raw['rps']:.0f}/s", flush=True)
        with sqlite3.connect(work / "pred.db") as c:
            logged = {row[0] for row in c.execute("SELECT DISTINCT request_id FROM predictions")}
        result["accepted"] = len(all_ids)
        result["missing_from_log"] = len(set(all_ids) - logged)
        print(f"accepted {len(all_ids)} requests, missing from the log: {result['missing_from_log']}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
