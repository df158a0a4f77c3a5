"""Drift detection benchmark: how well and how fast the monitoring sees new handwriting.

With the shipped configuration (configs/monitoring.yaml: windows of 500 images, normed
Wasserstein 0.2 on 20 features, 30% of features; hysteresis 2 of 3 windows), against a
reference of 5,000 MNIST training images, on windows drawn from the MNIST test set:

- false alarm rate on clean windows (drift check, and any input rule);
- for each drift type (rotation, stroke thickness, noise, inversion) at three severities:
  detection rate over many windows (drift check, and the input rules);
- windows until detection after the onset: a stream of clean windows then drifted ones;
  the first drifted window the check flags, and the window the hysteresis triggers retraining;
- seconds per check (features + Evidently) for a 5,000-image window;
- after adaptation: once the champion was trained on a labelled production batch of one drift
  type (800 shifted MNIST training digits outside the reference), how often windows of that type
  and of the others are still flagged, against MNIST only and against MNIST plus the batch
  (the monitor's nearest-reference rule, `reference_batches` in configs/monitoring.yaml).

  python -m bench.drift --windows 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DRIFTS = {"rotate": (10, 20, 30), "thicken": (0.5, 1, 2), "noise": (0.05, 0.1, 0.2), "invert": (0.02, 0.05, 0.2)}
UNITS = {"rotate": "degrees", "thicken": "pixels of dilation", "noise": "Gaussian sigma", "invert": "share inverted"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=10, help="drifted windows per drift type and severity")
    ap.add_argument("--clean-windows", type=int, default=20)
    ap.add_argument("--learned-windows", type=int, default=5, help="windows per cell of the after-adaptation matrix")
    ap.add_argument("--out", type=Path, default=RESULTS / "drift.json")
    args = ap.parse_args(argv)

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.shifts import apply
    from monitoring.drift import check_drift
    from monitoring.features import features
    from monitoring.rules import evaluate_input_rules, load_config
    from monitoring.state import decide

    cfg = load_config()
    train_csv, test_csv = find_mnist_csvs()
    xtr, _ = read_mnist_csv(train_csv, "train")
    xt, _ = read_mnist_csv(test_csv, "test")
    rng = np.random.default_rng(7)
    in_reference = np.sort(rng.choice(len(xtr), cfg.reference_images, replace=False))
    reference = features(xtr[in_reference])
    outside_reference = np.setdiff1d(np.arange(len(xtr)), in_reference)
    n = cfg.window_images

    def check(x) -> tuple[bool, bool, float, float]:
        t = time.perf_counter()
        feats = features(x)
        d = check_drift(reference, feats, cfg.drift)
        rules = evaluate_input_rules(cfg, feats, n_rejected=0)
        return d.drifted, any(r.breached for r in rules), d.share, time.perf_counter() - t

    def window(seed):
        r = np.random.default_rng(seed)
        return xt[r.choice(len(xt), n, replace=False)], r

    out = {"window_images": n, "reference_images": cfg.reference_images, "drift_config": vars(cfg.drift),
           "hysteresis": {"breaches": cfg.trigger.breaches, "of_last": cfg.trigger.of_last}, "clean": {}, "drifts": {}}
    clean = [check(window(1000 + i)[0]) for i in range(args.clean_windows)]
    out["clean"] = {"windows": len(clean), "drift_false_alarm_rate": float(np.mean([c[0] for c in clean])),
                    "input_rule_false_alarm_rate": float(np.mean([c[1] for c in clean])),
                    "max_drift_share": float(max(c[2] for c in clean)),
                    "median_seconds": float(np.median([c[3] for c in clean]))}
    print(f"clean: drift false alarms {out['clean']['drift_false_alarm_rate']:.0%}, input rules "
          f"{out['clean']['input_rule_false_alarm_rate']:.0%} of {len(clean)} windows "
          f"(largest drifted share {out['clean']['max_drift_share']:.2f})", flush=True)
    for kind, severities in DRIFTS.items():
        out["drifts"][kind] = {"unit": UNITS[kind], "severities": {}}
        for sev in severities:
            res = []
            for i in range(args.windows):
                x, r = window(2000 + i)
                res.append(check(apply(x, {kind: sev}, r)))
            drift_hits = [c[0] for c in res]
            first = next((i + 1 for i, h in enumerate(drift_hits) if h), None)
            # a stream: 3 clean windows (the first three of the clean set), then the drifted ones
            history, trigger_at = [c[0] for c in clean[:3]], None
            for i, h in enumerate(drift_hits):
                history.append(h)
                if decide(history, cfg.trigger, now=0.0, last_retrain_started=None, retrain_running=False).retrain:
                    trigger_at = i + 1
                    break
            row = {"drift_detection_rate": float(np.mean(drift_hits)),
                   "input_rule_detection_rate": float(np.mean([c[1] for c in res])),
                   "either_detection_rate": float(np.mean([c[0] or c[1] for c in res])),
                   "mean_drift_share": float(np.mean([c[2] for c in res])),
                   "windows_to_first_detection": first, "windows_to_retrain_trigger": trigger_at}
            out["drifts"][kind]["severities"][str(sev)] = row
            print(f"{kind:8s} {sev:>5}: drift {row['drift_detection_rate']:.0%}, input rules "
                  f"{row['input_rule_detection_rate']:.0%}, first detection after {first} windows, "
                  f"retrain triggered after {trigger_at}", flush=True)
    big = []
    for i in range(3):
        x = xt[np.random.default_rng(3000 + i).choice(len(xt), 5000, replace=False)]
        big.append(check(x)[3])
    out["seconds_per_check_5000"] = float(np.median(big))
    print(f"seconds per check, 5,000-image window: {out['seconds_per_check_5000']:.2f} (median of 3)")
    out["after_adaptation"] = learned(args, cfg, xtr[outside_reference], reference, window)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def learned(args, cfg, pool, reference, window) -> dict:
    """Rows: the drift type the champion was trained on (a batch of 800 shifted training digits);
    columns: the windows' drift type, middle severity. Share of windows flagged as drift."""
    from mnistcl.shifts import apply
    from monitoring.check import Reference, nearest_drift
    from monitoring.features import features

    mnist_ref = Reference("mnist", reference)
    kinds = {k: sev[1] for k, sev in DRIFTS.items()}
    cols = ["clean", *kinds]

    def window_features(col, i):
        x, r = window(4000 + i)
        return features(x if col == "clean" else apply(x, {col: kinds[col]}, r))

    # the same windows for every row: their features are computed once
    feats = {(c, i): window_features(c, i) for c in cols for i in range(args.learned_windows)}

    def flagged(refs, col, i):
        return nearest_drift(refs, feats[col, i], cfg).drifted

    out = {"batch_images": 800, "windows": args.learned_windows, "severities": kinds, "mnist_only": {}, "learned": {}}
    for col in cols:
        out["mnist_only"][col] = float(np.mean([flagged([mnist_ref], col, i) for i in range(args.learned_windows)]))
    print("after adaptation, share of windows flagged (rows: learned batch; columns: window)")
    print(f"{'MNIST only':12s} " + " ".join(f"{c}={out['mnist_only'][c]:.0%}" for c in cols), flush=True)
    for k, sev in kinds.items():
        r = np.random.default_rng(5000)
        batch = pool[r.choice(len(pool), 800, replace=False)]
        refs = [mnist_ref, Reference(f"{k}-batch", features(apply(batch, {k: sev}, r)))]
        row = {c: float(np.mean([flagged(refs, c, i) for i in range(args.learned_windows)])) for c in cols}
        out["learned"][k] = row
        print(f"{k + ' learned':12s} " + " ".join(f"{c}={row[c]:.0%}" for c in cols), flush=True)
    return out


if __name__ == "__main__":
    main()
