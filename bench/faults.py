"""Fault benchmark: the model server under load through a restart of its prediction log's
PostgreSQL (a real server on 127.0.0.1, stopped and started again, open connections terminated).

Counts answers by status, checks readiness during the outage, measures the seconds from the
database's return to an unbroken run of 200s, and compares every request answered 200 with the
log (goal: none missing). Writes bench/results/faults.json.

  python -m bench.faults --outages 3 --outage-seconds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from deployment import serve as launch
from deployment.serve import free_port
from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
from mnistcl.predlog import PredictionLog
from mnistcl.registry import Registry
from mnistcl.storage import LocalStorage
from tests.pgserver import PostgresServer, load_through_outage

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outages", type=int, default=3, help="database restarts, one after another")
    ap.add_argument("--outage-seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--store", type=Path, default=ROOT / ".mnistcl" / "store", help="registry with a champion")
    ap.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = ap.parse_args(argv)

    reg = Registry(LocalStorage(args.store))
    champion = reg.resolve("champion")
    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    body = {"data": {"ndarray": xt[:4].tolist()}}  # a cheque amount of 4 digits
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    pg = PostgresServer()
    pg.start()
    port = free_port()
    proc = launch.start(args.store, pg.url, work / "cache", work / "log", port=port, metrics_port=free_port(),
                        workers=args.workers, threads=args.threads)
    url = f"http://127.0.0.1:{port}"
    runs = []
    try:
        for i in range(args.outages):
            r = load_through_outage(url, pg, body, before_s=3.0, outage_s=args.outage_seconds, after_s=8.0,
                                    clients=args.clients)
            ids = r.pop("ok_ids")
            logged = PredictionLog(pg.url).request_ids()
            r["answered_200"] = len(ids)
            r["missing_from_log"] = len(set(ids) - logged)
            runs.append(r)
            print(f"restart {i + 1}: {r['requests']} requests {r['codes']}, readiness during the outage "
                  f"{r['ready_during_outage']}, recovery {r['recovery_seconds']} s, "
                  f"missing from the log {r['missing_from_log']}", flush=True)
            time.sleep(1.0)
    finally:
        launch.stop(proc)
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "champion": champion, "workers": args.workers, "threads": args.threads, "clients": args.clients,
        "outage_seconds": args.outage_seconds,
        "missing_from_log": sum(r["missing_from_log"] for r in runs),
        "recovery_seconds": max(r["recovery_seconds"] for r in runs),
        "recovery_seconds_each": [r["recovery_seconds"] for r in runs],
        "first_ok_after_restart_seconds_each": [r["first_ok_after_restart_seconds"] for r in runs],
        "answered_200": sum(r["answered_200"] for r in runs),
        "answered_503": sum(r["codes"].get("503", 0) for r in runs),
        "other_answers": sum(n for r in runs for c, n in r["codes"].items() if c not in ("200", "503")),
        "not_ready_during_every_outage": all(r["ready_during_outage"] and 200 not in r["ready_during_outage"]
                                             for r in runs),
        "unavailable_message": runs[0]["unavailable_message"] if runs else None,
        "runs": runs,
        "median_requests_per_run": float(np.median([r["requests"] for r in runs])) if runs else 0.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"missing from the log: {result['missing_from_log']} of {result['answered_200']} answered 200; "
          f"503s {result['answered_503']}, other {result['other_answers']}; worst recovery "
          f"{result['recovery_seconds']} s -> {args.out}")
    return result


if __name__ == "__main__":
    main()
