"""One AutoML experiment as its own flow run (the `automl-trial` deployments).

The `automl` flow with ``fanout`` runs each experiment of its sweep through this deployment
instead of its own process pool: locally each trial is a process that a worker of the process work
pool starts (a worker takes as many at once as its `--limit`; the sweep keeps at most
`fanout.max_parallel_trials` in flight), on Kubernetes each is a Job of the `mnistcl-k8s` pool
with its own GPU. Threads per trial: ``threads``, else `MNISTCL_TRIAL_THREADS`, else every core. The trial writes everything to the shared stores (the experiment row, the
model files in the storage, the pruner's study in the experiment database), so nothing has to come
back through Prefect: the sweep reads the row (models.automl.settle_trial).
"""

from __future__ import annotations

import json
import os

from prefect import flow, get_run_logger

from mnistcl.settings import load_settings
from models.train import init_worker, run_in_worker


@flow(name="automl-trial", log_prints=True)
def trial(payload: str, threads: int | None = None) -> dict:
    """Train one experiment (``payload``: what models.automl.plan_sweep prepared) with ``threads``
    threads (default: every core of the process's machine or pod)."""
    args = json.loads(payload)
    if "experiments_db" not in args:  # a URL with a password stays out of Prefect: this pod's settings hold it
        args["experiments_db"] = load_settings().experiments_location
        payload = json.dumps(args)
    n = threads or int(os.environ.get("MNISTCL_TRIAL_THREADS") or os.cpu_count() or 1)
    init_worker(n, tensorflow=args["spec"]["family"] != "torchnet")
    result = run_in_worker(payload)
    get_run_logger().info("experiment %s (%s): %s, val accuracy %s", result["id"], result["family"],
                          result["status"], result.get("val_accuracy"))
    return {k: result.get(k) for k in ("id", "status", "val_accuracy", "wall_s", "error")}
