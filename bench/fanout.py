"""AutoML trials fanned out (issue: scale), written to bench/results/fanout.json.

The quick grid (configs/search_space.yaml: 18 experiments on 4,000 real MNIST images, one epoch)
three ways, in one run, on one machine:
  in_process    the automl flow's own process pool (2 processes, one thread each);
  fanout_1      each experiment a flow run of the `automl-trial/trial` deployment, one process
                work-pool worker taking one run at a time, one thread per trial;
  fanout_2      the same with two such workers.
speedup_2_workers = wall(fanout_1) / wall(fanout_2); trials_lost = experiments of the fanned-out
sweeps that did not end completed or pruned (the goal is 0).

Then a projection of the full profile over N GPU nodes, from the per-trial times measured here:
each trial's training time scaled by the full profile's images x epochs over the quick one's
(per family), plus the per-trial overhead measured here (flow run start to end minus training:
process start, imports, data loading; one worker's wall time less its trials' training, per trial) and
an assumed pod start on a warm node; the trials are
placed longest-first on the node that frees first (LPT), and the makespan is reported per N.

  python -m bench.fanout        # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TRIAL = "automl-trial/trial"
POD_START_S = 30.0  # assumed: a trial's pod scheduled and its image present on a warm GPU node


def _setup(work: Path):
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.settings import Settings
    from mnistcl.stores import dataset_store

    home = work / "home"
    settings = Settings(home=home)
    train_csv, test_csv = find_mnist_csvs()
    x, y = read_mnist_csv(train_csv, "train")
    xt, yt = read_mnist_csv(test_csv, "test")
    dataset_store(settings).create({"train": (x[:10000], y[:10000]), "test": (xt[:2000], yt[:2000])},
                                   parent=None, source="bench: the first 10,000 MNIST training digits")
    os.environ["MNISTCL_HOME"] = str(home)
    os.environ["MNISTCL_WANDB_MODE"] = "disabled"
    return settings


def _sweep_stats(settings, summary: dict) -> dict:
    from mnistcl.experiments import ExperimentStore

    rows = ExperimentStore(settings.experiments_location).list(sweep=summary["sweep"])
    return {"sweep": summary["sweep"], "wall_s": summary["wall_s"], "experiments": len(rows),
            "completed": summary["completed"], "pruned": summary["pruned"], "failed": summary["failed"],
            "lost": sum(r.status not in ("completed", "pruned") for r in rows),
            "best": {k: summary["best"][k] for k in ("family", "params", "val_accuracy")} if summary["best"] else None,
            "trials": [{"id": r.id, "family": r.family, "params": r.params, "train_s": r.wall_s,
                        "span_s": (r.finished - r.started) if r.finished and r.started else None} for r in rows]}


def _wait_for_workers(n: int, timeout: float = 120.0) -> None:
    """Until ``n`` workers have registered with the pool (the sweep checks for a live one)."""
    from prefect import get_client

    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while len(client.read_workers_for_work_pool("mnistcl-local")) < n:
            if time.time() > deadline:
                raise SystemExit(f"{n} worker(s) did not register within {timeout:.0f} s")
            time.sleep(1)


def _flow_run_spans(api: str, home: Path, sweep: str) -> dict[int, float]:
    """Each trial flow run's wall time (start to end), by experiment id: its overhead is this minus
    the experiment's own training time."""
    from deployment.orchestrate import api_http

    with api_http(api, home, timeout=30) as c:
        runs = c.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["automl-trial"]}}, "limit": 200}).json()
    out = {}
    for r in runs:
        payload = json.loads(r["parameters"]["payload"])
        if payload["sweep"] == sweep and r.get("total_run_time") is not None:
            out[payload["exp_id"]] = float(r["total_run_time"])
    return out


def _project(trials: list[dict], overhead_s: float, nodes: list[int]) -> dict:
    """Makespan of the full profile over N nodes (longest trial first, on the node free first)."""
    from models.search import family_module, load_search_space

    space = load_search_space()
    quick, full = space.profiles["quick"], space.profiles["full"]
    full_images = 60000 - full.val_images if not full.train_images else full.train_images
    times = []
    for t in trials:
        epochs = full.epochs or family_module(t["family"]).Config().epochs
        scale = (full_images * epochs) / (quick.train_images * (quick.epochs or 1))
        times.append(t["train_s"] * scale + overhead_s + POD_START_S)
    out = {}
    for n in nodes:
        free = [0.0] * n
        for d in sorted(times, reverse=True):
            i = free.index(min(free))
            free[i] += d
        out[str(n)] = round(max(free), 1)
    return {"method": "per-trial training time measured on this machine's cores (quick grid, fanned out, one "
                      "thread) x full/quick images x epochs per family, + measured per-trial overhead "
                      f"({overhead_s:.1f} s) + an assumed pod start of {POD_START_S:.0f} s; longest-first onto the "
                      "node free first. CPU times: a GPU node shortens each trial's training part by its own factor "
                      "(bench/results/train-full-gpu-h200.json); the overheads stay.",
            "serial_s": round(sum(times), 1), "makespan_s_by_nodes": out,
            "speedup_by_nodes": {k: round(sum(times) / v, 2) for k, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".mnistcl-bench/fanout"))
    ap.add_argument("--out", type=Path, default=RESULTS / "fanout.json")
    ap.add_argument("--profile", default="quick")
    args = ap.parse_args()

    from deployment import orchestrate as orch
    from deployment import serve as launch

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    settings = _setup(args.work)
    port = launch.free_port()
    api = f"http://127.0.0.1:{port}/api"
    phome = args.work / "prefect"
    procs = [orch.start_server(phome, port, args.work / "server.log")]
    common = {"profile": args.profile, "gate": "skip", "show_progress": False}
    cases: dict[str, dict] = {}
    try:
        if not orch.wait_for_api(api):
            raise SystemExit("the Prefect server did not start; see " + str(args.work / "server.log"))
        orch.create_pools(api, phome, kubernetes=False)
        orch.deploy(api, phome, ["trial"])
        os.environ["PREFECT_API_URL"] = api
        os.environ["PREFECT_API_AUTH_STRING"] = orch.auth_string(phome)
        # Prefect reads its settings when it is first imported: after the two above.
        from flows.train import run_automl


        t = time.perf_counter()
        cases["in_process"] = _sweep_stats(settings, run_automl(concurrency=2, **common))
        print(f"in-process: {time.perf_counter() - t:.0f} s", flush=True)
        workers = []
        for n in (1, 2):
            while len(workers) < n:
                workers.append(orch.start_worker(api, phome, args.work / f"worker-{len(workers)}.log",
                                                 env={"MNISTCL_TRIAL_THREADS": "1"}, limit=1))
            _wait_for_workers(n)
            t = time.perf_counter()
            summary = run_automl(fanout=TRIAL, **common)
            cases[f"fanout_{n}"] = _sweep_stats(settings, summary)
            spans = _flow_run_spans(api, phome, summary["sweep"])
            for tr in cases[f"fanout_{n}"]["trials"]:
                tr["flow_run_s"] = spans.get(tr["id"])
            print(f"fanout over {n} worker(s): {time.perf_counter() - t:.0f} s", flush=True)
        procs += workers
    finally:
        for p in reversed(procs):
            launch.stop(p, term_wait=30)

    write(cases, args.out)


def write(cases: dict, path: Path) -> dict:
    f1, f2 = cases["fanout_1"], cases["fanout_2"]
    # One worker runs the trials one after another: its wall time less their training is what
    # starting each trial costs (process, Prefect's engine, imports, data), spread over them.
    overhead = (f1["wall_s"] - sum(t["train_s"] or 0.0 for t in f1["trials"])) / max(len(f1["trials"]), 1)
    out = {
        "speedup_2_workers": round(f1["wall_s"] / f2["wall_s"], 3),
        "trials_lost": f1["lost"] + f2["lost"],
        "wall_s": {k: v["wall_s"] for k, v in cases.items()},
        "ratio_fanout_2_to_in_process": round(f2["wall_s"] / cases["in_process"]["wall_s"], 3),
        "same_best": f1["best"] is not None and all(
            (c["best"]["family"], c["best"]["params"]) == (f1["best"]["family"], f1["best"]["params"])
            for c in cases.values()),
        "per_trial_overhead_s": round(overhead, 2),
        "projection_full_profile": _project(f2["trials"], overhead, [1, 2, 4, 8, 18]),
        "cases": cases,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("speedup_2_workers", "trials_lost", "wall_s", "same_best",
                                          "per_trial_overhead_s")}, indent=2))
    return out


if __name__ == "__main__":
    main()
