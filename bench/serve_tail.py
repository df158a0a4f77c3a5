"""Where the model server's slowest requests came from: the shipped server against itself with one
choice undone at a time, in one run (issue 17's p99 goal: 20 ms at 16 digits x 8 clients).

The two choices (serving/worker.py, serving/balance.py), each undone through the environment the
server starts in:

- ``kernel-accept`` (MNISTCL_SERVE_BALANCE=false): the workers take new connections as the
  kernel hands them out, instead of the least-loaded worker taking each;
- ``uvloop`` (MNISTCL_SERVE_LOOP=uvloop): uvloop's event loop instead of the standard library's;
- ``previous``: both undone (the server before these changes).

Rounds visit every server in turn (the order reversed every other round, so a slow spell of
this shared machine hits all alike), each on fresh keep-alive connections (so each round is
another draw of how the kernel spreads them), and a pause follows each (``--pause``, a
checkpoint's 5 s: a server's log is copied back then, not in the next server's round). Reports requests per
second, p50 / p90 / p99 over every request and per round, how the connections were split over
the two workers in each round, and every server's p99 as a ratio to the shipped one. Loopback only.

  python -m bench.serve_tail --seconds 8 --rounds 8 --pause 5 --store <registry>
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serve import RESULTS, ROOT, load
from deployment import serve as launch
from deployment.serve import free_port

SERVERS = {
    "shipped": {},
    "kernel-accept": {"MNISTCL_SERVE_BALANCE": "false"},
    "uvloop": {"MNISTCL_SERVE_LOOP": "uvloop"},
    "previous": {"MNISTCL_SERVE_BALANCE": "false", "MNISTCL_SERVE_LOOP": "uvloop"},
}


def percentiles(latencies_s) -> dict:
    ms = np.asarray(latencies_s) * 1e3
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="per round and server")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--pause", type=float, default=5.0, help="idle seconds after each server's round")
    ap.add_argument("--digits", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(ROOT / ".mnistcl" / "store"), help="registry with a champion")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve-tail.json")
    args = ap.parse_args(argv)

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv

    xt, _ = read_mnist_csv(find_mnist_csvs()[1], "test")
    body = {"data": {"ndarray": xt[:args.digits].tolist()}}
    work = Path(tempfile.mkdtemp(prefix="bench-serve-tail-"))
    procs, urls, ports = {}, {}, {}
    rounds: dict[str, list] = {name: [] for name in SERVERS}
    try:
        for name, env in SERVERS.items():
            ports[name] = free_port()
            procs[name] = launch.start(args.store, str(work / f"{name}.db"), work / "cache", work / f"{name}.log",
                                       port=ports[name], metrics_port=free_port(), workers=args.workers,
                                       extra_env=env)
            urls[name] = f"http://127.0.0.1:{ports[name]}/api/v1.0/predictions"
        for url in urls.values():  # warm-up: every worker has served before the rounds
            load(url, body, 2.0, args.concurrency)
        for r in range(args.rounds):
            for name in (list(SERVERS) if r % 2 == 0 else list(reversed(SERVERS))):
                split: list[int] = []

                def look(name=name, split=split):
                    split[:] = sorted(launch.worker_connections(procs[name].pid, ports[name]).values())

                out = load(urls[name], body, args.seconds, args.concurrency, probe=look)
                rounds[name].append({"rps": out["rps"], **percentiles(out["latencies_s"]), "ok": out["ok"],
                                     "errors_5xx": out["errors_5xx"], "connections_per_worker": split,
                                     "latencies_s": out["latencies_s"]})
                print(f"round {r + 1} {name:18s} {out['rps']:6.0f} req/s p99 {rounds[name][-1]['p99_ms']:5.1f} ms "
                      f"connections {split}", flush=True)
                time.sleep(args.pause)
    finally:
        for proc in procs.values():
            launch.stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    result = {"digits": args.digits, "concurrency": args.concurrency, "workers": args.workers,
              "seconds_per_round": args.seconds, "rounds": args.rounds, "pause_s": args.pause,
              "servers": {n: " ".join(f"{k}={v}" for k, v in env.items()) or "(defaults)"
                          for n, env in SERVERS.items()}, "results": {}}
    for name, rs in rounds.items():
        merged = np.concatenate([x.pop("latencies_s") for x in rs])
        result["results"][name] = {
            "rps": float(np.mean([x["rps"] for x in rs])), **percentiles(merged),
            "errors_5xx": sum(x["errors_5xx"] for x in rs),
            "rounds_p99_ms": [round(x["p99_ms"], 2) for x in rs],
            "rounds_balanced": sum(x["connections_per_worker"] == [args.concurrency // args.workers] * args.workers
                                   for x in rs),
            "rounds": rs}
    shipped = result["results"]["shipped"]
    for name, res in result["results"].items():
        res["p99_ratio_to_shipped"] = res["p99_ms"] / shipped["p99_ms"]
        res["p90_ratio_to_shipped"] = res["p90_ms"] / shipped["p90_ms"]
        res["rps_ratio_to_shipped"] = res["rps"] / shipped["rps"]
        print(f"{name:18s} {res['rps']:6.0f} req/s p50 {res['p50_ms']:5.1f} p90 {res['p90_ms']:5.1f} "
              f"p99 {res['p99_ms']:5.1f} ms (x{res['p99_ratio_to_shipped']:.2f} of shipped), "
              f"balanced rounds {res['rounds_balanced']}/{args.rounds}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
