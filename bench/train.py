"""Training benchmarks (issue: AutoML), written to bench/results/train-<profile>.json.

1. Time to a target test accuracy (99.0% on the full set): our best recipe against the Keras
   example's recipe (ConvNet, batch 128, Adam, 15 epochs), in the same run, on the same data
   (the example's 54,000 training images; it holds out 10% for validation). Test accuracy is
   checked 4 times per epoch on the 10,000 MNIST test images; evaluation time is excluded
   from the clock for both recipes.
2. A pruned grid against the full grid: the same grid with and without the median pruner,
   in the same run; total CPU seconds and the best model's validation accuracy.

  python -m bench.train --profile full     # the numbers in docs/benchmarks.md (minutes)
  python -m bench.train --profile quick    # a smoke run of the same code (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

PROFILES = {
    # train images, target test accuracy, max epochs for the baseline, grid profile
    "quick": {"train_images": 6000, "target": 0.95, "max_epochs": 3, "grid_train_images": 3000},
    "full": {"train_images": 54000, "target": 0.99, "max_epochs": 15, "grid_train_images": 4000},
}

# Our recipe: models/torchnet.py (batch norm, flattened 7x7 head, channels_last) with a
# one-cycle schedule over a single epoch.
OUR_RECIPE = {"family": "torchnet", "config": {"epochs": 1, "batch_size": 128, "learning_rate": 4e-3,
                                               "channels": 12}}
BASELINE = {"family": "convnet", "config": {"epochs": 15, "batch_size": 128, "learning_rate": 1e-3}}

# A grid with the spread a real search has: some learning rates are hopeless.
PRUNE_GRID = {"convnet": ["learning_rate=0.0001,0.0003,0.001,0.003", "batch_size=64,128"],
              "torchnet": ["learning_rate=0.0003,0.001,0.004,0.03", "batch_size=64,128"]}


class TargetReporter:
    """Stops training once test accuracy reaches the target."""

    def __init__(self, target: float):
        self.target = target

    def progress(self, step, total, loss):
        pass

    def checkpoint(self, index, val_accuracy):
        return val_accuracy >= self.target

    def epoch(self, log):
        print(f"    epoch {log.epoch}: loss {log.loss:.4f} test acc {log.val_accuracy:.4f} ({log.seconds:.1f} s)", flush=True)


def time_to_accuracy(recipe: dict, data, target: float, max_epochs: int | None = None) -> dict:
    from models.search import family_module

    mod = family_module(recipe["family"])
    cfg = dict(recipe["config"])
    if max_epochs is not None:
        cfg["epochs"] = min(cfg["epochs"], max_epochs)
    t0 = time.perf_counter()
    model = mod.train(data, mod.Config(**cfg), TargetReporter(target))
    wall = time.perf_counter() - t0
    out = model.outcome
    reached = next((i for i, a in enumerate(out.checkpoints) if a >= target), None)
    steps_per_epoch = len(out.checkpoints) / max(len(out.history), 1)
    return {
        "family": recipe["family"], "config": cfg, "target": target,
        "reached": reached is not None,
        "seconds_to_target": out.checkpoint_seconds[reached] if reached is not None else None,
        "epochs_to_target": round((reached + 1) / steps_per_epoch, 2) if reached is not None else None,
        "best_test_accuracy": max(out.checkpoints) if out.checkpoints else None,
        "train_seconds_total": out.checkpoint_seconds[-1] if out.checkpoint_seconds else None,
        "wall_seconds_with_eval": wall,
        "checkpoints": [{"seconds": round(s, 2), "test_accuracy": round(a, 4)}
                        for s, a in zip(out.checkpoint_seconds, out.checkpoints, strict=True)],
        "param_count": model.param_count(),
    }


def grid_vs_pruned(settings, train_images: int) -> dict:
    from models.automl import WorkerPool, default_concurrency, plan_sweep, summarise

    out = {}
    for prune in (False, True):
        t0 = time.perf_counter()
        plans = [plan_sweep(settings, profile_name="quick", families=[fam], params=ps, prune=prune,
                            train_images=train_images, sweep=f"bench-{'pruned' if prune else 'full'}-{fam}-{int(t0)}")
                 for fam, ps in PRUNE_GRID.items()]
        with WorkerPool(default_concurrency(), show_progress=False) as pool:
            futs = [pool.submit(p) for plan in plans for p in plan.payloads]
            results = [f.result() for f in futs]
        wall = time.perf_counter() - t0
        merged = plans[0]
        merged.specs = [s for p in plans for s in p.specs]
        s = summarise(merged, results, wall)
        out["pruned" if prune else "full"] = {
            "experiments": s["experiments"], "completed": s["completed"], "pruned": s["pruned"],
            "failed": s["failed"], "cpu_s": s["cpu_s"], "wall_s": s["wall_s"],
            "best_val_accuracy": s["best"]["val_accuracy"] if s["best"] else None,
            "best": s["best"] and {k: s["best"][k] for k in ("family", "params", "val_accuracy")},
        }
    f, p = out["full"], out["pruned"]
    out["compute_ratio_pruned_over_full"] = p["cpu_s"] / f["cpu_s"] if f["cpu_s"] else None
    out["best_accuracy_delta"] = (p["best_val_accuracy"] or 0) - (f["best_val_accuracy"] or 0)
    return out


def machine() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import keras

        info["keras"] = keras.__version__
        info["keras_backend"] = keras.backend.backend()
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["tf_gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception as exc:  # noqa: BLE001 - informational only
        info["error"] = str(exc)
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--skip-grid", action="store_true", help="only the time-to-accuracy part")
    ap.add_argument("--skip-tta", action="store_true", help="only the pruning part")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--home", type=Path, default=Path(".mnistcl-bench"), help="scratch home for the grid part")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    from models.train import quiet_frameworks

    quiet_frameworks()

    from mnistcl.datasets import DatasetStore, find_mnist_csvs, read_mnist_csv
    from mnistcl.settings import Settings
    from models.common import TrainData

    out = args.out or RESULTS / f"train-{args.profile}.json"
    result = {"profile": args.profile, "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if out.exists() and (args.skip_tta or args.skip_grid):
        # A partial run keeps the other part's earlier numbers.
        old = json.loads(out.read_text())
        for part in ("time_to_accuracy", "pruning"):
            if part in old:
                result[part] = old[part]

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    train_csv, test_csv = find_mnist_csvs()
    x, y = read_mnist_csv(train_csv, "train")
    xt, yt = read_mnist_csv(test_csv, "test")
    n = prof["train_images"]
    data = TrainData(x[:n], y[:n], xt, yt)

    if not args.skip_tta:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        print(f"time to {prof['target']:.2%} test accuracy on {n} training images", flush=True)
        print("  baseline: Keras example recipe", flush=True)
        base = time_to_accuracy(BASELINE, data, prof["target"], prof["max_epochs"])
        print("  ours:", OUR_RECIPE, flush=True)
        ours = time_to_accuracy(OUR_RECIPE, data, prof["target"])
        speedup = (base["seconds_to_target"] / ours["seconds_to_target"]
                   if base["reached"] and ours["reached"] else None)
        result["time_to_accuracy"] = {"baseline": base, "ours": ours, "speedup": speedup}
        print(f"  baseline {base['seconds_to_target']} s, ours {ours['seconds_to_target']} s, speedup {speedup}", flush=True)
        save()

    if not args.skip_grid:
        settings = Settings(home=args.home, wandb_mode="disabled")
        store = DatasetStore(__import__("mnistcl.storage", fromlist=["open_storage"]).open_storage(settings.store_url))
        if not store.ids():
            store.ingest_mnist()
        print("pruned grid against full grid", flush=True)
        result["pruning"] = grid_vs_pruned(settings, prof["grid_train_images"])
        print(json.dumps(result["pruning"], indent=2), flush=True)

    save()
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
