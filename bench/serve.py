"""Serving load benchmark: the Seldon Core wrapper on 127.0.0.1 against raw ONNX Runtime.

Starts `python -m serving.server` from .venv-serve on a scratch registry holding the current
champion (or a fresh small model), then for each request size (1 and 16 digits) and
concurrency (1 and 8) sends requests for a fixed time; reports requests per second, p50/p99
latency, 5xx count, and checks that every accepted request is in the prediction log. The raw
in-process ONNX Runtime call on the same model is the limit, and MLServer (its own environment,
.venv-mlserver, with bench/mlserver_runtime.py) serving the same ONNX file is the closest peer.
Loopback only, bounded in time.

  python -m bench.serve --seconds 15 --workers 1 --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from deployment import serve as launch
from deployment.serve import free_port
from serving.loadgen import drive

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def load(url: str, body: dict, seconds: float, concurrency: int,
         request_id=lambda r: r.json()["meta"]["tags"]["request_id"]) -> dict:
    """POST ``body`` to ``url`` back to back from ``concurrency`` threads for ``seconds``."""

    def send(client: httpx.Client):
        try:
            r = client.post(url, json=body)
        except httpx.HTTPError:
            return 0, False, None, True
        ok = r.status_code == 200
        return r.status_code, ok, request_id(r) if ok else None, r.status_code >= 500

    return drive(lambda: httpx.Client(timeout=30), send, seconds, concurrency)


def start_mlserver(python: Path, onnx_path: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """MLServer serving the same ONNX file through bench/mlserver_runtime.py, on 127.0.0.1."""
    folder = work / "mlserver"
    folder.mkdir()
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "mnist", "implementation": "mlserver_runtime.OnnxDigits", "parameters": {"uri": str(onnx_path)}}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([str(python.parent / "mlserver"), "start", str(folder)], env=env, start_new_session=True,
                            stdout=open(work / "mlserver.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(f"{url}/v2/models/mnist/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    launch.stop(proc)
    raise RuntimeError("MLServer did not start: " + (work / "mlserver.log").read_text()[-2000:])


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
    ap.add_argument("--mlserver-python", type=Path, default=ROOT / ".venv-mlserver" / "bin" / "python",
                    help="python of an environment with MLServer (skipped if missing)")
    args = ap.parse_args(argv)

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.registry import Registry
    from mnistcl.storage import LocalStorage

    reg = Registry(LocalStorage(args.store))
    champion = reg.resolve("champion")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    onnx_path = reg.fetch(champion, "onnx", work / "cache")
    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    port = free_port()
    proc = launch.start(args.store, work / "pred.db", work / "cache", work / "log", port=port, metrics_port=free_port(),
                        workers=args.workers, threads=args.threads)
    url = f"http://127.0.0.1:{port}/api/v1.0/predictions"
    try:
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
        if args.mlserver_python.exists():
            ml_proc, ml_url = start_mlserver(args.mlserver_python, onnx_path, work)
            try:
                for n in (1, 16):
                    body = {"inputs": [{"name": "image", "shape": [n, 28, 28], "datatype": "FP32",
                                        "data": xt[:n].reshape(-1).astype(float).tolist()}]}
                    for conc in (1, 8):
                        r = load(f"{ml_url}/v2/models/mnist/infer", body, args.seconds, conc, request_id=lambda r: None)
                        r.pop("ids")
                        case = result["cases"][f"{n}-digit-c{conc}"]
                        case["mlserver"] = r
                        case["ratio_seldon_to_mlserver_rps"] = case["rps"] / r["rps"] if r["rps"] else None
                        print(f"{n:2d} digits, concurrency {conc}: MLServer {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                              f"p99 {r['p99_ms']:.1f} ms, 5xx {r['errors_5xx']}", flush=True)
            finally:
                launch.stop(ml_proc)
        with sqlite3.connect(work / "pred.db") as c:
            logged = {row[0] for row in c.execute("SELECT DISTINCT request_id FROM predictions")}
        result["accepted"] = len(all_ids)
        result["missing_from_log"] = len(set(all_ids) - logged)
        print(f"accepted {len(all_ids)} requests, missing from the log: {result['missing_from_log']}")
    finally:
        launch.stop(proc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
