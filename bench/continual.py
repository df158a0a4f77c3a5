"""Continual-learning benchmark: what retraining strategy pays on the scenario's cohort stream.

The same stream as `make demo` (configs/scenario.yaml: cohorts of shifted MNIST test digits; the
labelled share of each cohort's stream, 80% of it for training as the pipeline does), one run,
our PyTorch recipe (torchnet, 1 epoch on the 60,000 MNIST training digits) as the first model,
then after each cohort:

  static            no retraining
  finetune          the previous model fine-tuned on the new cohort's labelled digits only
  finetune-replay   ... on the new digits plus twice as many replayed older ones (the pipeline's default)
  full (joint)      a new model from scratch on MNIST plus every cohort's labelled digits so far

Reported per strategy: the accuracy matrix R[i][j] (after cohort i, on cohort j's held-out
digits), ACC, BWT, forgetting, and compute (training seconds and images processed).

  python -m bench.continual
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("static", "finetune", "finetune-replay", "full")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (the pipeline's default)")
    ap.add_argument("--lr-scale", type=float, default=0.5, help="fine-tuning learning rate / the model's own")
    ap.add_argument("--replay", type=float, default=2.0, help="old digits replayed per new digit")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    ap.add_argument("--base-images", type=int, default=0, help="MNIST training digits for the first model (0: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "continual.json")
    args = ap.parse_args(argv)

    import models.torchnet as tn
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.scenario import Cohorts, cl_metrics, load_scenario
    from models.common import NullReporter, TrainData

    sc = load_scenario(args.scenario)
    train_csv, test_csv = find_mnist_csvs()
    x0, y0 = read_mnist_csv(train_csv, "train")
    if args.base_images:
        x0, y0 = x0[: args.base_images], y0[: args.base_images]
    xt, yt = read_mnist_csv(test_csv, "test")
    cohorts = Cohorts(sc, xt, yt)
    xv, yv = cohorts.rest[0][:1000], cohorts.rest[1][:1000]
    rng = np.random.default_rng(sc.seed)
    new = []
    for x, y in cohorts.stream:  # the labelled share, 80% of it to training (as the pipeline's append)
        idx = rng.permutation(len(y))[: int(round(len(y) * sc.feedback_fraction * 0.8))]
        new.append((x[idx], y[idx]))

    base_cfg = tn.Config(epochs=1)
    t = time.perf_counter()
    base = tn.train(TrainData(x0, y0, xv, yv), base_cfg, NullReporter())
    base_s = time.perf_counter() - t
    print(f"first model: torchnet, 1 epoch on {len(y0):,} digits, {base_s:.0f} s", flush=True)

    def acc(model, x, y):
        return float((model.predict(x).argmax(1) == y).mean())

    def ft(model, x, y):
        cfg = replace(model.config, epochs=args.epochs, learning_rate=model.config.learning_rate * args.lr_scale)
        return tn.train(TrainData(x, y, xv, yv), cfg, NullReporter(), init=model.net.state_dict())

    src = Path(sc.source).resolve()
    root = Path(__file__).resolve().parent.parent
    out = {"scenario": str(src.relative_to(root)) if src.is_relative_to(root) else src.name, "cohorts": [c.name for c in sc.cohorts], "base_images": int(len(y0)),
           "base_train_seconds": base_s, "new_images_per_cohort": [int(len(y)) for _, y in new], "strategies": {}}
    out["settings"] = {"epochs": args.epochs, "lr_scale": args.lr_scale, "replay": args.replay}
    for strat in args.strategies.split(","):
        model, R, secs, images = base, [], 0.0, 0
        seen_x, seen_y = [x0], [y0]
        for i, (x, y) in enumerate(new):
            t = time.perf_counter()
            if strat == "finetune":
                model = ft(model, x, y)
                images += len(y) * args.epochs
            elif strat == "finetune-replay":
                old_x, old_y = np.concatenate(seen_x), np.concatenate(seen_y)
                pick = rng.choice(len(old_y), int(round(args.replay * len(y))), replace=False)
                mx, my = np.concatenate([x, old_x[pick]]), np.concatenate([y, old_y[pick]])
                order = rng.permutation(len(my))
                model = ft(model, mx[order], my[order])
                images += len(my) * args.epochs
            elif strat == "full":
                ax, ay = np.concatenate([*seen_x, x]), np.concatenate([*seen_y, y])
                order = rng.permutation(len(ay))
                model = tn.train(TrainData(ax[order], ay[order], xv, yv), replace(base_cfg, seed=i + 1), NullReporter())
                images += len(ay) * base_cfg.epochs
            secs += time.perf_counter() - t
            seen_x.append(x)
            seen_y.append(y)
            R.append([acc(model, *cohorts.eval[j]) for j in range(len(new))])
        m = cl_metrics(np.array(R))
        out["strategies"][strat] = {"R": R, **m, "train_seconds": secs, "images_processed": images,
                                    "final_mnist_test": acc(model, *cohorts.rest)}
        print(f"{strat:16s} ACC {m['ACC']:.4f}  BWT {m['BWT']:+.4f}  forgetting {m['mean_forgetting']:.4f}  "
              f"train {secs:6.1f} s, {images:,} images", flush=True)
    full = out["strategies"].get("full")
    for s in out["strategies"].values() if full else []:
        s["acc_gap_to_joint"] = s["ACC"] - full["ACC"]
        s["compute_ratio_to_joint"] = s["train_seconds"] / full["train_seconds"] if full["train_seconds"] else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
