"""Serving tuning study: how close can the Seldon path get to raw ONNX Runtime?

On the registry's champion, in one run on 127.0.0.1:
- payload formats over REST (JSON ``ndarray`` of 0-255 integers, ``tensor``, base64 PNGs in
  ``strData``) and the wrapper's gRPC server (``tensor`` proto), for 1, 16 and 64 digits per
  request at concurrency 8: requests/s, images/s, p50/p99, and the ratio to raw ONNX Runtime;
- process layouts: gunicorn workers x threads (1x8 and 2x4 on this 2-core machine);
- where a request's time goes, measured in-process for each format: body decode (JSON or
  protobuf), payload checks, the ONNX Runtime call and the prediction-log write;
- batching: images/s as the request grows from 1 to 64 digits (client-side batching; the
  wrapper has no server-side batcher, and the breakdown shows why one would not pay here).

  python -m bench.serve_study --seconds 8
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serve import load, raw_onnx
from deployment.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SIZES = (1, 16, 64)
LAYOUTS = ((1, 8), (2, 4))


def bodies(x: np.ndarray) -> dict[str, dict]:
    from mnistcl.images import encode_png

    return {
        "rest-ndarray": {"data": {"ndarray": x.tolist()}},
        "rest-tensor": {"data": {"tensor": {"shape": list(x.shape), "values": x.reshape(-1).tolist()}}},
        "rest-png": {"strData": ",".join(base64.b64encode(encode_png(i)).decode() for i in x)},
    }


def breakdown(onnx_path: Path, x: np.ndarray, work: Path, reps: int = 200) -> dict:
    """Milliseconds per request for each stage, in this process, one thread."""
    import onnxruntime as ort

    from mnistcl.predlog import PredictionLog
    from serving.payload import parse

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    plog = PredictionLog(str(work / "breakdown.db"))

    def ms(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps * 1e3

    def stages(body: dict) -> dict:
        raw = json.dumps(body).encode()
        images, kind = parse(json.loads(raw), max_images=64)
        probs = sess.run(None, {"image": images})[0]
        decode = ms(lambda: json.loads(raw))
        return {"body_bytes": len(raw), "json_decode_ms": decode,
                "checks_ms": ms(lambda: parse(json.loads(raw), max_images=64)) - decode,
                "onnx_ms": ms(lambda: sess.run(None, {"image": images})),
                "log_write_ms": ms(lambda: plog.log_predictions("r" + os.urandom(8).hex(), "m", kind, images, probs))}

    return {name: stages(body) for name, body in bodies(x).items()}


def grpc_load(target: str, x: np.ndarray, seconds: float, concurrency: int, work: Path) -> dict:
    from deployment.serve import SERVE_PYTHON

    np.save(work / "x.npy", x)
    out = subprocess.run([str(SERVE_PYTHON), "-m", "serving.grpc_client", target, "load", str(work / "x.npy"),
                          "--seconds", str(seconds), "--concurrency", str(concurrency)],
                         cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode:
        raise RuntimeError(out.stdout + out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="per case (2 layouts x 4 formats x 3 sizes)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--store", type=Path, default=ROOT / ".mnistcl" / "store", help="registry with a champion")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve-study.json")
    args = ap.parse_args(argv)

    from deployment import serve as launch
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.registry import Registry
    from mnistcl.storage import LocalStorage

    reg = Registry(LocalStorage(args.store))
    champion = reg.resolve("champion")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-study-"))
    onnx_path = reg.fetch(champion, "onnx", work / "cache")
    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    result = {"champion": champion, "seconds": args.seconds, "concurrency": args.concurrency, "cpus": os.cpu_count(),
              "raw_onnx": {}, "breakdown_16": breakdown(onnx_path, xt[:16], work), "layouts": {}}
    for n in SIZES:
        result["raw_onnx"][str(n)] = raw_onnx(onnx_path, (xt[:n] / 255).astype(np.float32))
    print("in-process breakdown, 16 digits (ms):", json.dumps(result["breakdown_16"], indent=1), flush=True)
    accepted, db_files = [], []
    for workers, threads in LAYOUTS:
        port, gport = free_port(), free_port()
        db = work / f"pred-{workers}x{threads}.db"
        db_files.append(db)
        proc = launch.start(args.store, db, work / "cache", work / f"log-{workers}x{threads}", port=port,
                            metrics_port=free_port(), workers=workers, threads=threads, grpc_port=gport)
        layout = result["layouts"][f"{workers}x{threads}"] = {}
        try:
            for n in SIZES:
                x = xt[:n]
                raw_rps = result["raw_onnx"][str(n)]["rps"]
                cases = {**bodies(x), "grpc-tensor": None}
                for name, body in cases.items():
                    if body is None:
                        r = grpc_load(f"127.0.0.1:{gport}", x, args.seconds, args.concurrency, work)
                    else:
                        r = load(f"http://127.0.0.1:{port}/api/v1.0/predictions", body, args.seconds, args.concurrency)
                    accepted += r.pop("ids")
                    r.pop("latencies_s", None)
                    r.update(images_per_s=r["rps"] * n, ratio_to_raw_onnx=r["rps"] / raw_rps)
                    layout[f"{name}-{n}"] = r
                    print(f"{workers}x{threads} {name:13s} {n:2d} digits: {r['rps']:6.0f} req/s "
                          f"{r['images_per_s']:6.0f} img/s p50 {r['p50_ms']:6.1f} ms p99 {r['p99_ms']:6.1f} ms "
                          f"errors {r['errors_5xx']}  ({r['ratio_to_raw_onnx']:.3f} of raw ONNX)", flush=True)
        finally:
            launch.stop(proc)
    logged = set()
    for db in db_files:
        with sqlite3.connect(db) as c:
            logged |= {row[0] for row in c.execute("SELECT DISTINCT request_id FROM predictions")}
    result["accepted"] = len(accepted)
    result["missing_from_log"] = len(set(accepted) - logged)
    result["errors"] = sum(c["errors_5xx"] for lay in result["layouts"].values() for c in lay.values())
    print(f"accepted {len(accepted)} requests, missing from the log: {result['missing_from_log']}, "
          f"errors: {result['errors']}")
    shutil.rmtree(work, ignore_errors=True)  # the logs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["missing_from_log"] == 0 else 1)
