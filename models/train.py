"""Run one experiment: prepare data, train a family, track it, export it, record it.

A plain function (no Prefect): the flow calls it in a worker process, tests call it directly.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistcl.datasets import DatasetStore
from mnistcl.experiments import ARTIFACTS_PREFIX, ExperimentStore
from mnistcl.onnx_utils import macs_per_image
from mnistcl.predlog import is_postgres
from mnistcl.storage import open_storage
from mnistcl.tracking import Tracker
from models.common import EpochLog, TrainData
from models.search import ExperimentSpec, Profile, family_module


@dataclass
class ExperimentResult:
    id: int
    family: str
    params: dict[str, Any]
    status: str  # completed | pruned | failed
    val_accuracy: float | None = None
    val_loss: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    param_count: int | None = None
    flops: int | None = None
    onnx_path: str | None = None
    native_path: str | None = None
    wandb_dir: str | None = None
    error: str | None = None
    history: list[dict] = field(default_factory=list)


def prepare_data(train_x: np.ndarray, train_y: np.ndarray, profile: Profile, seed: int = 0) -> TrainData:
    """A deterministic validation hold-out from the training pool, then the profile's subset."""
    n = len(train_x)
    if n < 20:
        raise ValueError(f"the training pool holds only {n} images")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(profile.val_images, n // 5)
    val, rest = order[:n_val], order[n_val:]
    if profile.train_images:
        rest = rest[: profile.train_images]
    return TrainData(train_x[rest], train_y[rest], train_x[val], train_y[val])


class _Reporter:
    """Forwards progress to the caller, checkpoints to W&B and the pruner."""
    def __init__(self, exp_id: int, tracker, trial, progress_cb, min_interval: float = 0.25):
        self.exp_id = exp_id
        self.tracker = tracker
        self.trial = trial
        self.progress_cb = progress_cb
        self.min_interval = min_interval
        self._last = 0.0
        self.peak_rss = 0
        self.step = 0
        import psutil

        self._proc = psutil.Process()

    def progress(self, step, total, loss):
        self.step = step
        now = time.perf_counter()
        if now - self._last >= self.min_interval or step == total:
            self._last = now
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
            if self.progress_cb:
                self.progress_cb({"id": self.exp_id, "step": step, "total": total, "loss": loss})
            self.tracker.log({"train/batch_loss": loss}, step=step)

    def checkpoint(self, index, val_accuracy):
        self.tracker.log({"val/accuracy_checkpoint": val_accuracy, "checkpoint": index}, step=self.step)
        if self.trial is None:
            return False
        self.trial.report(val_accuracy, index)
        return bool(self.trial.should_prune())

    def epoch(self, log: EpochLog):
        self.tracker.log({f"epoch/{k}": v for k, v in asdict(log).items()}, step=self.step)


_OPTUNA_SCHEMA_LOCK = 0x6D6E6F70  # advisory lock key ("mnop")


def pruning_storage(experiments_db: str, home: Path | None):
    """Where the median pruner's study lives (Optuna's RDB storage, which every trial reaches): the
    experiment store's PostgreSQL database when it is one (trials in separate pods, each its own
    Job, compare with each other's checkpoints), else SQLite in the home (``optuna.db``: the trial
    processes of one machine, whichever worker started them)."""
    import optuna

    if is_postgres(experiments_db):
        import psycopg

        url = "postgresql+psycopg://" + experiments_db.split("://", 1)[1]  # SQLAlchemy's name for psycopg 3
        # Optuna creates its tables (and enum types) on first use, which races between trials
        # starting at once (a unique violation in pg_type): one at a time, on an advisory lock.
        with psycopg.connect(experiments_db, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_OPTUNA_SCHEMA_LOCK,))
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_OPTUNA_SCHEMA_LOCK,))
    import fcntl

    Path(home).mkdir(parents=True, exist_ok=True)
    # The same race in SQLite (Optuna's first-use migration, alembic_version): one process at a time.
    with open(Path(home) / "optuna.db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return optuna.storages.RDBStorage(f"sqlite:///{Path(home) / 'optuna.db'}",
                                          engine_kwargs={"connect_args": {"timeout": 60}})


def study_name(sweep: str, family: str) -> str:
    return f"{sweep}-{family}"


def _pruning_trial(storage, study_name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        # Median rule: stop a run whose checkpoint accuracy is below the median of finished
        # runs at the same checkpoint, once 2 runs of the family have finished.
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    return study, study.ask()


def fail_stale_trials(experiments_db: str, home: Path | None, name: str, exp_id: int) -> int:
    """Mark the study's trials of experiment ``exp_id`` that are still running as failed (its
    process died: a killed pod or flow run); return how many."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=pruning_storage(experiments_db, home))
    except KeyError:  # no study: the trial died before it asked for one
        return 0
    stale = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
             if t.user_attrs.get("exp_id") == exp_id]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def run_experiment(
    spec: ExperimentSpec,
    *,
    exp_id: int,
    sweep: str,
    data: TrainData,
    dataset_version: str,
    home: Path,
    experiments_db: str,
    wandb_mode: str = "offline",
    wandb_project: str = "mnist-continual",
    prune: bool = False,
    progress_cb=None,
    storage=None,
) -> ExperimentResult:
    """One run of the sweep. ``storage`` (the shared store): the exported model goes to
    ``experiments/<sweep>/<id>/`` there, and the finished W&B run to ``wandb/<run>/``, so that
    the gate and the CLI in another pod find them (the row's ``artifact_dir`` is that key)."""
    import psutil

    store = ExperimentStore(experiments_db)
    mod = family_module(spec.family)
    config = mod.Config(**spec.config)
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    store.update(exp_id, status="running", started=time.time())
    tracker = Tracker(mode=wandb_mode, root=home / "wandb", project=wandb_project,
                      name=f"{spec.family}-{exp_id}", group=sweep,
                      config={"family": spec.family, **spec.config, "dataset": dataset_version,
                              "train_images": len(data.x_train), "experiment_id": exp_id},
                      tags=[spec.family, sweep], storage=storage)
    study = trial = None
    if prune:
        study, trial = _pruning_trial(pruning_storage(experiments_db, home), study_name(sweep, spec.family))
        trial.set_user_attr("exp_id", exp_id)
        trial.set_user_attr("pid", os.getpid())
    reporter = _Reporter(exp_id, tracker, trial, progress_cb)
    result = ExperimentResult(id=exp_id, family=spec.family, params=spec.params, status="failed",
                              wandb_dir=tracker.location)
    try:
        model = mod.train(data, config, reporter)
        out = model.outcome
        last = out.history[-1] if out.history else None
        result.history = [asdict(h) for h in out.history]
        result.val_accuracy = last.val_accuracy if last else None
        result.val_loss = last.val_loss if last else None
        result.param_count = model.param_count()
        fields: dict[str, Any] = {}
        if out.pruned:
            result.status = "pruned"
        else:
            art = home / "experiments" / str(exp_id)
            files = model.export(art)
            macs = macs_per_image(files["onnx"])
            result.flops = 2 * macs
            result.onnx_path, result.native_path = str(files["onnx"]), str(files["native"])
            stored = str(art)
            if storage is not None:
                stored = f"{ARTIFACTS_PREFIX}/{sweep}/{exp_id}"
                storage.put_folder(stored, art)
            fields.update(artifact_dir=stored, onnx_path=result.onnx_path, native_path=result.native_path,
                          onnx_bytes=files["onnx"].stat().st_size, native_bytes=files["native"].stat().st_size,
                          macs=macs, flops=2 * macs)
            result.status = "completed"
            tracker.log_artifact(f"model-{sweep}-{exp_id}", "model", [files["onnx"]],
                                 metadata={"family": spec.family, "dataset": dataset_version, "params": spec.params,
                                           "val_accuracy": result.val_accuracy, "experiment_id": exp_id})
        if study is not None:
            import optuna

            if out.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, result.val_accuracy)
        result.wall_s = time.perf_counter() - t0
        result.cpu_s = sum(proc.cpu_times()[:2]) - cpu0
        fields.update(
            status=result.status, finished=time.time(), wall_s=result.wall_s, cpu_s=result.cpu_s,
            peak_rss_mb=max(reporter.peak_rss, proc.memory_info().rss) / 2**20,
            train_loss=last.loss if last else None, train_accuracy=last.accuracy if last else None,
            val_loss=result.val_loss, val_accuracy=result.val_accuracy, epochs=len(out.history),
            param_count=result.param_count, history=result.history, checkpoints=out.checkpoints,
            wandb_dir=tracker.location,
        )
        store.update(exp_id, **fields)
        tracker.summary({k: v for k, v in fields.items()
                         if k in ("val_accuracy", "val_loss", "wall_s", "cpu_s", "peak_rss_mb",
                                  "param_count", "flops", "onnx_bytes", "status")})
        tracker.finish(0)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.wall_s = time.perf_counter() - t0
        store.update(exp_id, status="failed", error=result.error, finished=time.time(), wall_s=result.wall_s)
        if study is not None:
            import optuna

            try:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already ended (a sweep failed it as stale): the row says failed
                pass
        tracker.finish(1)
    return result


# ------------------------------------------------------------------ worker processes
def quiet_frameworks() -> None:
    """Silence import banners and exporter chatter that would bury the progress bars."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def init_worker(threads: int, tensorflow: bool = True) -> None:
    """Process-pool initializer: pin each framework to its share of the cores (``tensorflow=False``:
    PyTorch only, for a process that trains no Keras model: TensorFlow's import takes seconds)."""
    quiet_frameworks()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    if not tensorflow:
        return
    try:
        import tensorflow as tf
    except ImportError:  # a Keras-on-PyTorch image (e.g. a CUDA image without TensorFlow)
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # already initialised in this process


def run_in_worker(spec_json: str, queue=None) -> dict:
    """Entry point in a worker process: everything arrives as JSON, a dict goes back."""
    args = json.loads(spec_json)
    spec = ExperimentSpec(**args.pop("spec"))
    profile = Profile(**args.pop("profile"))

    storage = open_storage(args.pop("store_url"), s3_endpoint_url=args.pop("s3_endpoint_url"))
    ds = DatasetStore(storage).load(args["dataset_version"])
    data = prepare_data(ds.train_x, ds.train_y, profile, seed=args.pop("data_seed", 0))
    result = run_experiment(
        spec, data=data, home=Path(args.pop("home")), experiments_db=args.pop("experiments_db"),
        progress_cb=queue.put if queue is not None else None, storage=storage, **args,
    )
    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    return asdict(result)
