"""Serving load benchmark: the Seldon Core wrapper on 127.0.0.1 against MLServer and raw ONNX Runtime.

Starts `python -m serving.server` from .venv-serve three times on the registry's champion (what
ships: the ASGI front; the same with group-committed log writes; the previous path, the wrapper's
Flask app on gunicorn's threads, `--no-fast-path`), and MLServer (its own environment,
.venv-mlserver, with bench/mlserver_runtime.py) serving the same ONNX file, the closest peer.
For each request size (1 and 16 digits) and concurrency (1 and 8), rounds visit every server in
turn for a few seconds each (interleaved, so a slow spell of this shared machine hits all alike);
reports requests per second, p50/p99 latency over every request, 5xx count, ratios to MLServer and
to the previous path, and checks that every request answered 200 is in that server's prediction
log. The client is serving.loadgen.KeepAliveClient (one keep-alive connection per thread), on
the same cores. Raw in-process ONNX Runtime on the same model is the limit. Loopback only.

  python -m bench.serve --seconds 4 --rounds 4 --workers 2 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from deployment import serve as launch
from deployment.serve import free_port
from serving.loadgen import KeepAliveClient, drive

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def load(url: str, body: dict, seconds: float, concurrency: int,
         request_id=lambda answer: json.loads(answer)["meta"]["tags"]["request_id"], probe=None) -> dict:
    """POST ``body`` to ``url`` back to back from ``concurrency`` threads for ``seconds``, each
    on its own keep-alive connection (serving.loadgen.KeepAliveClient); ``probe`` as drive's."""
    payload = json.dumps(body).encode()

    def send(client: KeepAliveClient):
        try:
            status, answer = client.request(payload)
        except (OSError, EOFError, ValueError):
            return 0, False, None, True
        ok = status == 200
        return status, ok, request_id(answer) if ok else None, status >= 500

    return drive(lambda: KeepAliveClient(url), send, seconds, concurrency, probe=probe)


def start_mlserver(python: Path, onnx_path: Path, work: Path, parallel_workers: int = 0) -> tuple[subprocess.Popen, str]:
    """MLServer serving the same ONNX file through bench/mlserver_runtime.py, on 127.0.0.1."""
    folder = work / "mlserver"
    folder.mkdir()
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": parallel_workers, "debug": False}))
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


def servers(postgres: bool) -> dict[str, dict]:
    """Our servers compared, in the order each round visits them (MLServer, the peer, comes last):
    what ships, the same server with the other way of writing the log (group commit on SQLite,
    inline on PostgreSQL: the defaults are the other way round), and the previous path (the
    wrapper's Flask app on gunicorn's threads)."""
    other = ("seldon-inline", "false") if postgres else ("seldon-group-commit", "true")
    return {"seldon": {"args": (), "env": {}},
            other[0]: {"args": (), "env": {"MNISTCL_LOG_GROUP_COMMIT": other[1]}},
            "seldon-flask": {"args": ("--no-fast-path",), "env": {}}}
CASES = [(1, 1), (1, 8), (16, 1), (16, 8)]


def mlserver_answer(answer: bytes) -> None:
    """What the client does with MLServer's answer: parse it, as it parses ours (to find the
    request id), so both servers' answers cost the client the same."""
    if "outputs" not in json.loads(answer):
        raise ValueError("MLServer answered without outputs")


def merged(rounds: list[dict]) -> dict:
    """One server's rounds of one case as one result: totals, and percentiles of every latency."""
    lat = np.concatenate([np.asarray(r["latencies_s"]) for r in rounds]) if rounds else np.array([])
    codes: dict[str, int] = {}
    for r in rounds:
        for k, v in r["codes"].items():
            codes[k] = codes.get(k, 0) + v
    wall = sum(r["wall_s"] for r in rounds)
    return {"requests": sum(r["requests"] for r in rounds), "ok": int(len(lat)), "codes": codes,
            "errors_5xx": sum(r["errors_5xx"] for r in rounds), "seconds": round(wall, 2),
            "rps": len(lat) / wall if wall else 0.0,
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="per round, server and case")
    ap.add_argument("--rounds", type=int, default=4, help="rounds; each visits every server in turn")
    ap.add_argument("--workers", type=int, default=2, help="model server processes (configs/deploy.yaml prod: 2)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--store", type=Path, default=ROOT / ".mnistcl" / "store", help="registry with a champion")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/serve.json "
                    "(serve-postgres.json with --postgres)")
    ap.add_argument("--mlserver-workers", type=int, default=0,
                    help="MLServer's parallel_workers (0: inference in its one server process, its fastest here)")
    ap.add_argument("--postgres", action="store_true",
                    help="each server's prediction log in its own database of a local PostgreSQL (tests/pgserver.py)")
    ap.add_argument("--mlserver-python", type=Path, default=ROOT / ".venv-mlserver" / "bin" / "python",
                    help="python of an environment with MLServer (skipped if missing)")
    args = ap.parse_args(argv)

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.predlog import PredictionLog
    from mnistcl.registry import Registry
    from mnistcl.storage import LocalStorage

    reg = Registry(LocalStorage(args.store))
    champion = reg.resolve("champion")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    onnx_path = reg.fetch(champion, "onnx", work / "cache")
    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    out = args.out or RESULTS / ("serve-postgres.json" if args.postgres else "serve.json")
    SERVERS = servers(args.postgres)  # noqa: N806 - the table above, for this run
    procs, urls, logs, pg = {}, {}, {}, None
    try:
        if args.postgres:
            import psycopg

            from tests.pgserver import PostgresServer

            pg = PostgresServer()
            pg.start()
            with psycopg.connect(pg.url, autocommit=True) as c:
                for name in SERVERS:
                    c.execute(f'CREATE DATABASE "{name}"')
        for name, spec in SERVERS.items():
            port = free_port()
            logs[name] = pg.url.rsplit("/", 1)[0] + f"/{name}" if pg else str(work / f"{name}.db")
            procs[name] = launch.start(args.store, logs[name], work / "cache", work / f"{name}.log", port=port,
                                       metrics_port=free_port(), workers=args.workers, threads=args.threads,
                                       extra_args=spec["args"], extra_env=spec["env"])
            urls[name] = f"http://127.0.0.1:{port}/api/v1.0/predictions"
        if args.mlserver_python.exists():
            procs["mlserver"], ml_url = start_mlserver(args.mlserver_python, onnx_path, work, args.mlserver_workers)
            urls["mlserver"] = f"{ml_url}/v2/models/mnist/infer"
        result = {"champion": champion, "workers": args.workers, "threads": args.threads,
                  "mlserver_parallel_workers": args.mlserver_workers,
                  "prediction_log": "PostgreSQL (127.0.0.1)" if pg else "SQLite",
                  "seconds_per_round": args.seconds, "rounds": args.rounds, "client": "KeepAliveClient",
                  "servers": {n: " ".join([*spec["args"], *(f"{k}={v}" for k, v in spec["env"].items())])
                              for n, spec in SERVERS.items()}, "cases": {}}
        ids: dict[str, list] = {n: [] for n in SERVERS}
        for n, conc in CASES:
            x = xt[:n]
            bodies = {name: {"data": {"ndarray": x.tolist()}} for name in SERVERS}
            bodies["mlserver"] = {"inputs": [{"name": "image", "shape": [n, 28, 28], "datatype": "FP32",
                                              "data": x.reshape(-1).tolist()}]}  # the same integers as ours
            rounds: dict[str, list] = {name: [] for name in urls}
            for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every server alike
                for name, url in urls.items():
                    r = load(url, bodies[name], args.seconds, conc,
                             **({"request_id": mlserver_answer} if name == "mlserver" else {}))
                    if name in ids:
                        ids[name] += r["ids"]
                    rounds[name].append(r)
            raw = raw_onnx(onnx_path, (x / 255).astype(np.float32))
            each = {name: merged(rounds[name]) for name in urls}
            case = {**each["seldon"], "raw_onnx": raw, "ratio_to_raw_onnx_rps": each["seldon"]["rps"] / raw["rps"]}
            for name, other in each.items():
                if name == "seldon":
                    continue
                case[name.replace("seldon-", "")] = other
                key = "ratio_seldon_to_mlserver_rps" if name == "mlserver" else f"ratio_to_{name.replace('seldon-', '')}_rps"
                case[key] = case["rps"] / other["rps"] if other["rps"] else None
            result["cases"][f"{n}-digit-c{conc}"] = case
            print(f"{n:2d} digits, concurrency {conc}: " + "; ".join(
                f"{name} {r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms" for name, r in each.items())
                + f"; raw ONNX {raw['rps']:.0f}/s", flush=True)
        missing, accepted = {}, {}
        for name, got in ids.items():
            logged = PredictionLog(logs[name]).request_ids()
            accepted[name], missing[name] = len(got), len(set(got) - logged)
        result["accepted"], result["missing_from_log_by_server"] = accepted, missing
        result["missing_from_log"] = sum(missing.values())
        print(f"accepted {accepted}, missing from the log: {missing}")
    finally:
        for proc in procs.values():
            launch.stop(proc)
        if pg is not None:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)  # the logs: about 1 GB per run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
