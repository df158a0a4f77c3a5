"""Continual-learning benchmark: what retraining strategy pays on the scenario's cohort stream.

The same stream as `make demo` (configs/scenario.yaml: cohorts of shifted MNIST test digits; the
labelled share of each cohort's stream, less the held-out part the gate sizes by the evidence it
needs, for training, as the pipeline does), one run,
our PyTorch recipe (torchnet, 1 epoch on the 60,000 MNIST training digits) as the first model,
then after each cohort:

  static            no retraining
  finetune          the previous model fine-tuned on the new cohort's labelled digits only
  finetune-replay   ... on the new digits plus twice as many replayed older ones, drawn uniformly
                    from everything seen so far (nearly all MNIST)
  finetune-replay-slice    ... replay drawn evenly from every earlier slice: MNIST and each cohort
                    (the pipeline's default, REPLAY_BY in retraining/retrain.py)
  finetune-replay-distill  ... the same, plus distillation from the previous model on the replayed
                    digits (its probabilities as soft targets, DER++-style; weight --distill)
  finetune-replay-augment  ... the slice replay, plus --augment transformed copies of each new digit
                    (retraining/augment.py: small rotation, scale, shift); replay sized by the new
                    digits themselves, so the cohort weighs more (the pipeline's, AUGMENT_COPIES)
  finetune-replay-repeat   ... the same number of plain repeats of the new digits instead: what the
                    extra weight alone brings, without the transforms
  finetune-replay-augment-distill  the augmented recipe plus the distillation above: does the
                    previous model's view of the replayed digits take back the forgetting the
                    augmented digits add?
  full (joint)      a new model from scratch on MNIST plus every cohort's labelled digits so far

Reported per strategy: the accuracy matrix R[i][j] (after cohort i, on cohort j's held-out
digits), ACC, BWT, forgetting, and compute (training seconds and images processed).

  python -m bench.continual [--seeds 3]

Each seed draws other cohort digits, replay samples and first model; the summary gives each
strategy's mean and standard deviation over the seeds, and its ACC minus the pipeline's choice
paired by seed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
# What the pipeline uses (retraining/retrain.py: REPLAY_BY = "slice", AUGMENT_COPIES): every strategy is compared with it.
CHOSEN = "finetune-replay-augment-distill"
STRATEGIES = ("static", "finetune", "finetune-replay", "finetune-replay-slice", "finetune-replay-distill",
              "finetune-replay-augment", "finetune-replay-repeat", "finetune-replay-augment-distill", "full")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the pipeline's, FINETUNE_EPOCHS)")
    ap.add_argument("--lr-scale", type=float, default=0.5, help="fine-tuning learning rate / the model's own")
    ap.add_argument("--replay", type=float, default=2.0, help="old digits replayed per new digit")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    ap.add_argument("--distill", type=float, default=1.0, help="distillation weight (finetune-replay-distill)")
    ap.add_argument("--augment", type=int, default=2, help="augmented copies per new digit (finetune-replay-augment)")
    ap.add_argument("--seeds", type=int, default=3, help="runs, seeds 0..N-1 (scenario cohorts, sampling, training)")
    ap.add_argument("--eval-fraction", type=float, default=None,
                    help="held-out share of each cohort's feedback (default: the gate's evidence sizing)")
    ap.add_argument("--base-images", type=int, default=0, help="MNIST training digits for the first model (0: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "continual.json")
    args = ap.parse_args(argv)
    if args.epochs is None:
        from retraining.retrain import FINETUNE_EPOCHS

        args.epochs = FINETUNE_EPOCHS
    runs = [run_seed(args, seed) for seed in range(args.seeds)]
    names = list(runs[0]["strategies"])

    def ms(values):
        a = np.asarray(values, np.float64)
        return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0}

    summary = {}
    for name in names:
        per = [r["strategies"][name] for r in runs]
        summary[name] = {"ACC": ms([p["ACC"] for p in per]), "BWT": ms([p["BWT"] for p in per]),
                         "mean_forgetting": ms([p["mean_forgetting"] for p in per]),
                         "train_seconds": ms([p["train_seconds"] for p in per])}
        if CHOSEN in names:  # paired by seed: the same cohorts, the same first model
            summary[name]["ACC_minus_chosen"] = ms([r["strategies"][name]["ACC"] - r["strategies"][CHOSEN]["ACC"]
                                                    for r in runs])
    out = {"seeds": list(range(args.seeds)), "chosen": CHOSEN, "summary": summary, "per_seed": runs,
           "settings": runs[0]["settings"], "scenario": runs[0]["scenario"], "cohorts": runs[0]["cohorts"]}
    for name, v in summary.items():
        print(f"{name:24s} ACC {v['ACC']['mean']:.4f} +/- {v['ACC']['sd']:.4f}  BWT {v['BWT']['mean']:+.4f}"
              + (f"  vs {CHOSEN} {v['ACC_minus_chosen']['mean']:+.4f} +/- {v['ACC_minus_chosen']['sd']:.4f}"
                 if "ACC_minus_chosen" in v else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def run_seed(args, seed: int) -> dict:
    import models.torchnet as tn
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from models.common import NullReporter, TrainData
    from retraining.retrain import balanced_counts
    from scenario.simulator import Cohorts, cl_metrics, load_scenario
    from validation.gate import eval_fraction, load_gate

    sc = load_scenario(args.scenario, seed=seed)
    train_csv, test_csv = find_mnist_csvs()
    x0, y0 = read_mnist_csv(train_csv, "train")
    if args.base_images:
        x0, y0 = x0[: args.base_images], y0[: args.base_images]
    xt, yt = read_mnist_csv(test_csv, "test")
    cohorts = Cohorts(sc, xt, yt)
    xv, yv = cohorts.rest[0][:1000], cohorts.rest[1][:1000]
    rng = np.random.default_rng(sc.seed)
    new = []
    gate = load_gate()
    for x, y in cohorts.stream:  # the labelled share, less the held-out part the pipeline's gate needs
        n_fb = int(round(len(y) * sc.feedback_fraction))
        frac = args.eval_fraction if args.eval_fraction is not None else eval_fraction(n_fb, gate.evidence, gate.alpha)
        idx = rng.permutation(len(y))[: int(round(n_fb * (1 - frac)))]
        new.append((x[idx], y[idx]))

    base_cfg = tn.Config(epochs=1, seed=seed)
    t = time.perf_counter()
    base = tn.train(TrainData(x0, y0, xv, yv), base_cfg, NullReporter())
    base_s = time.perf_counter() - t
    print(f"seed {seed}: first model: torchnet, 1 epoch on {len(y0):,} digits, {base_s:.0f} s", flush=True)

    def acc(model, x, y):
        return float((model.predict(x).argmax(1) == y).mean())

    def ft(model, x, y, soft=None):
        cfg = replace(model.config, epochs=args.epochs, learning_rate=model.config.learning_rate * args.lr_scale)
        return tn.train(TrainData(x, y, xv, yv), cfg, NullReporter(), init=model.net.state_dict(),
                        soft_targets=soft, distill=args.distill if soft is not None else 0.0)

    def replay_pick(seen_y, n):
        """(group, index) pairs: evenly over the earlier slices (MNIST and each cohort so far)."""
        take = balanced_counts([len(g) for g in seen_y], n)
        return [(g, rng.choice(len(seen_y[g]), k, replace=False)) for g, k in enumerate(take)]

    src = Path(sc.source).resolve()
    root = Path(__file__).resolve().parent.parent
    out = {"scenario": str(src.relative_to(root)) if src.is_relative_to(root) else src.name, "cohorts": [c.name for c in sc.cohorts], "base_images": int(len(y0)),
           "base_train_seconds": base_s, "new_images_per_cohort": [int(len(y)) for _, y in new], "strategies": {}}
    out["settings"] = {"epochs": args.epochs, "lr_scale": args.lr_scale, "replay": args.replay,
                       "eval_fraction": args.eval_fraction or "the gate's evidence sizing"}
    for strat in args.strategies.split(","):
        rng = np.random.default_rng(sc.seed + 1)  # every strategy draws the same replay stream
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
            elif strat in ("finetune-replay-slice", "finetune-replay-distill", "finetune-replay-augment",
                           "finetune-replay-repeat", "finetune-replay-augment-distill"):
                picks = replay_pick(seen_y, int(round(args.replay * len(y))))
                ox = np.concatenate([seen_x[g][i] for g, i in picks])
                oy = np.concatenate([seen_y[g][i] for g, i in picks])
                mx, my = np.concatenate([x, ox]), np.concatenate([y, oy])
                if strat in ("finetune-replay-augment", "finetune-replay-augment-distill"):
                    from retraining.augment import augment_labelled

                    ax, ay = augment_labelled(x, y, args.augment, np.random.default_rng([sc.seed, i]))
                    mx, my = np.concatenate([mx, ax]), np.concatenate([my, ay])
                elif strat == "finetune-replay-repeat":
                    mx = np.concatenate([mx, np.tile(x, (args.augment, 1, 1))])
                    my = np.concatenate([my, np.tile(y, args.augment)])
                soft = None
                if strat in ("finetune-replay-distill", "finetune-replay-augment-distill"):
                    # the previous model's view of the replayed digits (rows len(y) .. len(y) + len(oy))
                    soft = np.full((len(my), 10), np.nan, np.float32)
                    soft[len(y):len(y) + len(oy)] = model.predict(ox)
                order = rng.permutation(len(my))
                model = ft(model, mx[order], my[order], None if soft is None else soft[order])
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
    return out


if __name__ == "__main__":
    main()
