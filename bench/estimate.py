"""Label-free accuracy estimate: how close each estimator comes to the served accuracy of a window.

The scenario's cohort stream (configs/scenario.yaml) plus an unseen cohort (a mix of stroke
styles), replayed offline as the pipeline lives it: the champion serves each cohort's windows of
500 digits before it has learned that handwriting, then is fine-tuned with replay on the
cohort's labelled digits (the pipeline's recipe), refits its estimator on its validation data
(MNIST test digits no cohort uses, plus the held-out part of every labelled batch it learned),
and serves a window of the same cohort again. For each window and estimator (monitoring/
estimate.py): estimated accuracy against the true accuracy of the window. Seeds 0..S-1.

  python -m bench.estimate [--seeds 3]

Writes bench/results/estimate.json: ``mae`` (the chosen method, mean absolute error per window,
as a fraction), ``method``, per-method and per-cohort detail.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
RECENT, RECENT_MIN = 300, 150  # labelled images of recent traffic to refit on, and the least (monitoring.yaml)
UNSEEN = {"name": "mixed-strokes", "shifts": {"thicken": 1, "slant": 0.3, "elastic": 2.0}}


def _shown(path: Path) -> str:
    """A path as the results file records it: relative to the repository, never this machine's."""
    root = Path(__file__).resolve().parent.parent
    p = path.resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else p.name


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--method", default="atc+recent", help="the method monitoring uses (reported as mae)")
    ap.add_argument("--scenario-seeds", type=Path, default=RESULTS / "scenario-seeds.json",
                    help="the scenario's own per-window errors, reported beside (make bench-scenario)")
    ap.add_argument("--out", type=Path, default=RESULTS / "estimate.json")
    args = ap.parse_args(argv)

    import models.torchnet as tn
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from models.common import NullReporter, TrainData
    from monitoring import estimate as E
    from monitoring.drift import DriftConfig, check_drift
    from monitoring.features import features
    from scenario.simulator import Cohort, Cohorts, load_scenario
    from validation.gate import Measured, fit_estimators
    from validation.objective import ObjectiveConfig, traffic_weights

    train_csv, test_csv = find_mnist_csvs()
    x0, y0 = read_mnist_csv(train_csv, "train")
    xt, yt = read_mnist_csv(test_csv, "test")
    rows, t0 = [], time.perf_counter()
    for seed in range(args.seeds):
        sc = load_scenario(None, seed=seed)
        sc.cohorts = [*sc.cohorts, Cohort(UNSEEN["name"], UNSEEN["shifts"])]
        sc.stream_images, sc.eval_images = 1000, 400
        cohorts = Cohorts(sc, xt, yt)
        rng = np.random.default_rng(seed)
        # MNIST training digits the first model never sees stand in for the gate's MNIST slice.
        order = rng.permutation(len(y0))
        base, hold = order[:-5000], order[-5000:]
        xv, yv = x0[hold[:1000]], y0[hold[:1000]]   # training-time validation
        val = [(x0[hold[1000:]], y0[hold[1000:]])]  # the estimator's validation data: grows per cohort
        model = tn.train(TrainData(x0[base], y0[base], xv, yv), tn.Config(epochs=1, seed=seed), NullReporter())
        seen_x, seen_y = [x0[base]], [y0[base]]

        def fitted(m, val):
            # As the gate fits them: every slice's images weighted by its share of the objective
            # (the recent traffic mix, validation/objective.py), MNIST as the long-run base.
            names = ["mnist-test", *[f"c{i}" for i in range(1, len(val))]]
            slices = dict(zip(names, val, strict=True))
            weights = traffic_weights([(n, int(len(v[1]) / 0.2)) for n, v in list(slices.items())[1:]],
                                      ObjectiveConfig())
            meas = Measured({}, probs={n: m.predict(v[0]) for n, v in slices.items()})
            return {k: E.Estimator.from_json(v) for k, v in fit_estimators(meas, slices, weights).items()}

        ests = fitted(model, val)
        recent: list[tuple[np.ndarray, np.ndarray]] = []  # labelled traffic this model served (feedback)
        for ci, cohort in enumerate(sc.cohorts):
            xs, ys = cohorts.stream[ci]
            for i in range(0, len(ys), args.window):
                wx, wy = xs[i:i + args.window], ys[i:i + args.window]
                p = model.predict(wx)
                acc = float((p.argmax(1) == wy).mean())
                row = {"seed": seed, "cohort": cohort.name, "phase": "before", "n": int(len(wy)), "accuracy": acc,
                       **{k: e.estimate(p) for k, e in ests.items()}}
                # Refitted on the labelled part of the windows before (monitoring's default), when this
                # window looks like them (no drift between their features, as monitoring/check.py decides).
                like = False
                if recent:
                    rx = np.concatenate([r[0] for r in recent])[-RECENT:]
                    rp = np.concatenate([r[1] for r in recent])[-RECENT:]
                    ry = np.concatenate([r[2] for r in recent])[-RECENT:]
                    like = not check_drift(features(rx), features(wx), DriftConfig()).drifted
                row["like_recent"] = like
                row.update({f"{k}+recent": (E.recalibrated(e, rp, ry, RECENT_MIN).estimate(p) if like else row[k])
                            for k, e in ests.items()})
                rows.append(row)
                lab = rng.random(len(wy)) < 0.6
                recent.append((wx[lab], p[lab], wy[lab]))
            # Labelled feedback: 60% of the stream, 80% to training and 20% held out (the pipeline's split).
            idx = rng.permutation(len(ys))[: int(0.6 * len(ys))]
            n_eval = int(round(0.2 * len(idx)))
            ev, tr = idx[:n_eval], idx[n_eval:]
            old_x, old_y = np.concatenate(seen_x), np.concatenate(seen_y)
            pick = rng.choice(len(old_y), 2 * len(tr), replace=False)
            mx, my = np.concatenate([xs[tr], old_x[pick]]), np.concatenate([ys[tr], old_y[pick]])
            cfg = replace(model.config, epochs=5, learning_rate=model.config.learning_rate * 0.5, seed=seed)
            model = tn.train(TrainData(mx, my, xv, yv), cfg, NullReporter(), init=model.net.state_dict())
            seen_x.append(xs[tr])
            seen_y.append(ys[tr])
            val.append((xs[ev], ys[ev]))
            ests = fitted(model, val)
            recent = []  # a new model: no traffic served yet
            wx, wy = cohorts.eval[ci]
            p = model.predict(wx)
            est = {k: e.estimate(p) for k, e in ests.items()}
            rows.append({"seed": seed, "cohort": cohort.name, "phase": "after", "n": int(len(wy)),
                         "accuracy": float((p.argmax(1) == wy).mean()), **est, **{f"{k}+recent": v for k, v in est.items()}})
            print(f"seed {seed} {cohort.name:16s} " + "  ".join(
                f"{r['phase']} acc {r['accuracy']:.3f} atc {r['atc']:.3f} conf {r['confidence']:.3f}"
                for r in rows if r["seed"] == seed and r["cohort"] == cohort.name), flush=True)

    def mae(rs, k):
        return float(np.mean([abs(r[k] - r["accuracy"]) for r in rs])) if rs else None

    out = {"method": args.method, "window": args.window, "seeds": args.seeds,
           "mae": mae(rows, args.method),
           "methods": {k: {"mae": mae(rows, k), "mae_before": mae([r for r in rows if r["phase"] == "before"], k),
                           "mae_after": mae([r for r in rows if r["phase"] == "after"], k),
                           "bias": float(np.mean([r[k] - r["accuracy"] for r in rows])),
                           "max_abs_error": float(max(abs(r[k] - r["accuracy"]) for r in rows))}
                       for k in [*E.METHODS, *(f"{m}+recent" for m in E.METHODS)]},
           "per_cohort": {c: {"accuracy": float(np.mean([r["accuracy"] for r in rows if r["cohort"] == c])),
                              **{k: mae([r for r in rows if r["cohort"] == c], k)
                                 for k in [*E.METHODS, *(f"{m}+recent" for m in E.METHODS)]}}
                          for c in dict.fromkeys(r["cohort"] for r in rows)},
           "windows": rows, "seconds": time.perf_counter() - t0}
    if args.scenario_seeds.exists():  # the same estimate inside the real loop (make bench-scenario)
        sc_res = json.loads(args.scenario_seeds.read_text())
        out["scenario"] = {"mae_mean": sc_res.get("estimate_mae_mean"), "source": _shown(args.scenario_seeds),
                           "per_seed": {p["seed"]: p.get("estimate_mae") for p in sc_res.get("per_seed", [])}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k in ("method", "mae", "methods")}, indent=1))
    return out


if __name__ == "__main__":
    main()
