"""AutoML sweep logic without Prefect: plan the grid, run it in worker processes, rank it.

``flows/train.py`` wires these into a Prefect flow; the CLI and tests can call them directly.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistcl.experiments import ARTIFACTS_PREFIX, ExperimentStore
from mnistcl.predlog import redact
from mnistcl.stores import dataset_store
from models.common import ParamError
from models.search import (
    ExperimentSpec,
    Profile,
    SearchSpace,
    expand,
    load_search_space,
    parse_overrides,
    profile,
)
from models.train import fail_stale_trials, init_worker, run_in_worker, study_name


@dataclass
class SweepPlan:
    sweep: str
    profile: Profile
    dataset_version: str
    specs: list[ExperimentSpec]
    exp_ids: list[int]
    payloads: list[str]
    done: list[dict] = field(default_factory=list)  # a resumed sweep's experiments that finished before
    max_parallel_trials: int = SearchSpace.max_parallel_trials
    trial_timeout_s: float = SearchSpace.trial_timeout_s


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def plan_sweep(settings, *, profile_name: str = "quick", families: list[str] | None = None,
               params: list[str] | None = None, search_space: Path | None = None,
               dataset: str = "latest", prune: bool = False, epochs: int | None = None,
               train_images: int | None = None, sweep: str | None = None) -> SweepPlan:
    """Check everything (names, values, dataset) and register the queued experiments.

    Raises ParamError / DatasetError before any training starts.
    """
    space = load_search_space(search_space)
    prof = profile(space, profile_name)
    if train_images is not None:
        prof = Profile(prof.name, train_images, prof.val_images, prof.epochs)
    specs = expand(space, families=families, overrides=parse_overrides(params or []),
                   epochs=epochs if epochs is not None else prof.epochs)
    if prune:
        # The median rule compares a run with those already finished; in grid order the first
        # finishers are the extreme corners (e.g. the smallest learning rate), which would make
        # every later run look good. A fixed shuffle gives the pruner a representative baseline.
        import random

        random.Random(0).shuffle(specs)
    store = dataset_store(settings)
    version = store.resolve(dataset)
    exps = ExperimentStore(settings.experiments_location)
    # Resuming a sweep: experiments that finished keep their results; failed (a trial whose pod
    # died) and never-started ones run again under their own ids, on the sweep's own dataset
    # version and profile. One still running refuses the resume (it may be alive).
    earlier = {}
    if sweep:
        rows = exps.list(sweep=sweep)
        if not rows:
            raise ParamError(f"no sweep {sweep!r} to resume (`mnistcl experiments list` shows the sweeps)")
        running = [r.id for r in rows if r.status == "running"]
        if running:
            raise ParamError(f"sweep {sweep}: experiments {running} are still running; wait for them, or mark them "
                             "failed if their trials are gone, before resuming")
        kept = {(r.dataset, r.profile) for r in rows}
        if len(kept) != 1 or next(iter(kept))[1] != prof.name:
            raise ParamError(f"sweep {sweep} ran on {sorted(kept)}; resume it with the same profile "
                             f"(asked: {prof.name})")
        version = next(iter(kept))[0]
        earlier = {(e.family, json.dumps(e.params, sort_keys=True)): e for e in rows}
    sweep = sweep or new_sweep_id()
    ids, payloads, todo, done = [], [], [], []
    for spec in specs:
        prev = earlier.get((spec.family, json.dumps(spec.params, sort_keys=True)))
        if prev is not None and prev.status in ("completed", "pruned"):
            done.append(result_from_row(prev))
            continue
        todo.append(spec)
        if prev is not None:
            exp_id = int(prev.id)
            if not exps.requeue(exp_id):
                raise ParamError(f"sweep {sweep}: experiment {exp_id} changed while resuming (another resume?)")
        else:
            exp_id = exps.create(sweep, spec.family, spec.params, dataset=version, profile=prof.name,
                                 config=spec.config)
        ids.append(exp_id)
        payloads.append(json.dumps({
            "spec": asdict(spec), "profile": asdict(prof), "exp_id": exp_id, "sweep": sweep,
            "dataset_version": version, "store_url": settings.store_url,
            "s3_endpoint_url": settings.s3_endpoint_url, "home": str(settings.home_dir),
            "experiments_db": settings.experiments_location, "wandb_mode": settings.wandb_mode,
            "wandb_project": settings.wandb_project, "prune": prune,
        }))
    return SweepPlan(sweep, prof, version, todo, ids, payloads, done, space.max_parallel_trials,
                     space.trial_timeout_s)


RESULT_FIELDS = ("val_accuracy", "val_loss", "wall_s", "cpu_s", "param_count", "flops", "onnx_path",
                 "native_path", "wandb_dir", "error", "history")


def result_from_row(e) -> dict:
    """An experiment's result as a worker returns it, read from the experiment store (a trial that
    ran in another process, pod or earlier run of the sweep)."""
    status = e.status if e.status in ("completed", "pruned", "failed") else "failed"
    return {"id": int(e.id), "family": e.family, "params": e.params, "status": status,
            **{k: e.row.get(k) for k in RESULT_FIELDS}}


def trial_payload(payload: str) -> str:
    """The payload a trial's flow run gets: without a database URL that holds a password (flow
    run parameters are stored in Prefect and shown in its UI); the trial takes it from its own
    settings (on the cluster `MNISTCL_EXPERIMENTS_DB` from the Secret)."""
    args = json.loads(payload)
    if redact(args["experiments_db"]) != args["experiments_db"]:
        del args["experiments_db"]
    return json.dumps(args)


def settle_trial(payload: str, ended: str) -> dict:
    """The result of a trial that ran as its own flow run, once that run is final (``ended``: its
    state's name). A trial whose process died before it recorded an end (killed pod, crashed run)
    is marked failed, and its Optuna trial too, so that the sweep finishes without it."""
    args = json.loads(payload)
    exps = ExperimentStore(args["experiments_db"])
    e = exps.get(args["exp_id"])
    if e.status not in ("completed", "pruned", "failed"):
        exps.update(e.id, status="failed", finished=time.time(),
                    error=f"the trial's flow run ended {ended} before the experiment finished")
        if args.get("prune"):
            fail_stale_trials(args["experiments_db"], Path(args["home"]), study_name(args["sweep"], e.family), int(e.id))
        e = exps.get(args["exp_id"])
    return result_from_row(e)


def default_concurrency() -> int:
    return max(1, min(2, os.cpu_count() or 1))


class WorkerPool:
    """Long-lived worker processes (TensorFlow and PyTorch are imported once per worker).

    Each worker gets cores // concurrency threads. Progress from the workers arrives on a
    queue and is drawn as one bar per experiment with its current loss.
    """
    def __init__(self, concurrency: int, *, show_progress: bool = True, labels: dict[int, str] | None = None):
        import multiprocessing as mp

        self.concurrency = concurrency
        threads = max(1, (os.cpu_count() or 1) // concurrency)
        ctx = mp.get_context("spawn")
        self._manager = ctx.Manager()
        self.queue = self._manager.Queue()
        self.pool = ProcessPoolExecutor(max_workers=concurrency, mp_context=ctx, initializer=init_worker,
                                        initargs=(threads,))
        self.labels = labels or {}
        self._stop = threading.Event()
        self._show = show_progress
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                            disable=not self._show)
        bars: dict[int, Any] = {}
        with progress:
            while not self._stop.is_set():
                try:
                    msg = self.queue.get(timeout=0.2)
                except (queue_mod.Empty, EOFError, OSError):
                    continue
                i = msg["id"]
                if i not in bars:
                    bars[i] = progress.add_task(f"#{i} {self.labels.get(i, '')}", total=msg["total"], loss=msg["loss"])
                progress.update(bars[i], completed=msg["step"], total=msg["total"], loss=msg["loss"])

    def submit(self, payload: str):

        return self.pool.submit(run_in_worker, payload, self.queue)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(timeout=5)
        self._manager.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def leaderboard(results: list[dict]) -> list[dict]:
    """Completed runs by validation accuracy (ties: fewer FLOPs), then pruned, then failed."""
    order = {"completed": 0, "pruned": 1, "failed": 2}
    ranked = sorted(results, key=lambda r: (order.get(r["status"], 3), -(r.get("val_accuracy") or 0.0),
                                            r.get("flops") or 0))
    rows = []
    for i, r in enumerate(ranked, 1):
        rows.append({
            "rank": i, "id": r["id"], "family": r["family"], "status": r["status"],
            "val_accuracy": None if r.get("val_accuracy") is None else round(r["val_accuracy"], 4),
            "val_loss": None if r.get("val_loss") is None else round(r["val_loss"], 4),
            "wall_s": round(r.get("wall_s") or 0.0, 1), "cpu_s": round(r.get("cpu_s") or 0.0, 1),
            "param_count": r.get("param_count"), "flops": r.get("flops"),
            "params": " ".join(f"{k}={v}" for k, v in r["params"].items()),
        })
    return rows


def summarise(plan: SweepPlan, results: list[dict], wall_s: float) -> dict:
    board = leaderboard(results)
    done = [r for r in results if r["status"] == "completed"]
    best = max(done, key=lambda r: (r["val_accuracy"], -(r.get("flops") or 0))) if done else None
    return {
        "sweep": plan.sweep,
        "profile": asdict(plan.profile),
        "dataset": plan.dataset_version,
        "experiments": len(results),
        "completed": len(done),
        "pruned": sum(r["status"] == "pruned" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "errors": {r["id"]: r["error"] for r in results if r.get("error")},
        "wall_s": round(wall_s, 2),
        "cpu_s": round(sum(r.get("cpu_s") or 0.0 for r in results), 2),
        "best": None if best is None else {
            k: best.get(k) for k in ("id", "family", "params", "val_accuracy", "val_loss", "onnx_path",
                                     "native_path", "param_count", "flops", "wandb_dir")
        },
        "leaderboard": board,
    }


def write_summary(settings, summary: dict) -> Path:
    """The sweep's summary in the home and, for other pods, beside its models in the storage
    (``experiments/<sweep>/summary.json``)."""
    out = settings.home_dir / "sweeps" / f"{summary['sweep']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(summary, indent=2, default=str) + "\n"
    out.write_text(body)
    dataset_store(settings).storage.put(f"{ARTIFACTS_PREFIX}/{summary['sweep']}/summary.json", body.encode())
    return out
