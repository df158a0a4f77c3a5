"""Drift detection benchmark: how well and how fast the monitoring sees new handwriting.

With the shipped configuration (configs/monitoring.yaml: windows of 500 images, normed
Wasserstein 0.2 on 20 features, 30% of features; hysteresis 2 of 3 windows), against a
reference of 5,000 MNIST training images, on windows drawn from the MNIST test set:

- false alarm rate on clean windows (drift check, and any input rule);
- for each drift type (rotation, stroke thickness, noise, inversion) at three severities:
  detection rate over many windows (drift check, and the input rules);
- windows until detection after the onset: a stream of clean windows then drifted ones;
  the first drifted window the check flags, and the window the hysteresis triggers retraining;
- seconds per check (features, the decision, the input rules) for a 5,000-image window, the
  shipped direct statistic and Evidently's Report on the same windows in the same run;
- ``mnistcl monitor check`` end to end (a new process: imports, reading the window from the
  prediction log, features, estimate, rules, drift, reports, metrics) on a quiet and on a drifted
  window of 500 images, in a fresh home with a small champion;
- after adaptation: once the champion was trained on a labelled production batch of one drift
  type (800 shifted MNIST training digits outside the reference), how often windows of that type
  and of the others are still flagged, against MNIST only and against MNIST plus the batch
  (the monitor's nearest-reference rule, `reference_batches` in configs/monitoring.yaml).

  python -m bench.drift --windows 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
    ap.add_argument("--cli-repeats", type=int, default=3, help="`mnistcl monitor check` runs per window kind")
    ap.add_argument("--skip-cli", action="store_true", help="leave out the end-to-end `mnistcl monitor check` timing")
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
    xtr, ytr = read_mnist_csv(train_csv, "train")
    xt, yt = read_mnist_csv(test_csv, "test")
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
           "hysteresis": {"breaches": cfg.trigger.breaches, "of_last": cfg.trigger.of_last,
                          "overwhelming_drift": cfg.trigger.overwhelming_drift}, "clean": {}, "drifts": {}}
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
                if decide(history, cfg.trigger, now=0.0, last_retrain_started=None, retrain_running=False,
                          drift_share=res[i][2]).retrain:
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
    from monitoring.drift import evidently_scores

    evidently_scores(reference, features(xt[:500]), cfg.drift)  # import Evidently outside the timing
    big, via_evidently, same = [], [], True
    for i in range(3):
        x = xt[np.random.default_rng(3000 + i).choice(len(xt), 5000, replace=False)]
        direct = check(x)
        big.append(direct[3])
        t = time.perf_counter()
        feats = features(x)
        theirs = evidently_scores(reference, feats, cfg.drift)
        via_evidently.append(time.perf_counter() - t)
        mine = check_drift(reference, feats, cfg.drift).scores
        same = same and all(abs(mine[c] - v) <= 1e-9 * max(1.0, abs(v)) for c, v in theirs.items())
    out["seconds_per_check_5000"] = float(np.median(big))
    out["evidently_seconds_per_check_5000"] = float(np.median(via_evidently))
    out["speedup_over_evidently"] = out["evidently_seconds_per_check_5000"] / out["seconds_per_check_5000"]
    out["scores_equal_to_evidently"] = bool(same)
    print(f"seconds per check, 5,000-image window: {out['seconds_per_check_5000']:.3f} (median of 3), through "
          f"Evidently's Report {out['evidently_seconds_per_check_5000']:.2f} s "
          f"({out['speedup_over_evidently']:.0f}x); same scores: {same}", flush=True)
    if not args.skip_cli:
        out["monitor_check"] = monitor_check_seconds((xtr, ytr), (xt, yt), args.cli_repeats)
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


def monitor_check_seconds(train: tuple, test: tuple, repeats: int) -> dict:
    """``mnistcl monitor check`` as an operator runs it, timed from the shell: a fresh home with
    dataset v1 (3,000 MNIST training digits) and a small PyTorch champion; 500 images logged as
    the model server logs them, then one check; quiet windows (MNIST test digits) and drifted ones
    (rotated 30 degrees: a breach, an email to the outbox, the drift report; once more with
    Evidently's report, ``drift.report_engine: evidently``, and once with ``drift.report: never``,
    to show what each report costs)."""
    import models.torchnet as tn
    from mnistcl.images import to_uint8
    from mnistcl.onnx_utils import OnnxModel
    from mnistcl.predlog import PredictionLog
    from mnistcl.settings import Settings
    from mnistcl.shifts import apply
    from mnistcl.stores import stores
    from models.common import NullReporter, TrainData

    (x, y), (xt, yt) = train, test
    out: dict = {"window_images": 500, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        ds, reg = stores(settings)
        ds.create({"train": (x[:3000], y[:3000]), "test": (xt[:1000], yt[:1000])}, parent=None, source="bench")
        m = tn.train(TrainData(x[:3000], y[:3000], xt[:300], yt[:300]), tn.Config(epochs=2, channels=8),
                     NullReporter())
        files = m.export(Path(tmp) / "export")
        mv = reg.register(files=files, family="torchnet", config=json.loads(json.dumps(m.config.__dict__)),
                          dataset="v1")
        reg.promote(mv.id, "champion", reason="bench")
        model, plog = OnnxModel(files["onnx"]), PredictionLog(settings.predictions_db_path)
        env = {**os.environ, "MNISTCL_HOME": str(settings.home)}
        env.pop("MNISTCL_SMTP_HOST", None)  # alerts go to the home's outbox
        cli = [sys.executable, "-c", "from cli import app; app()", "monitor", "check"]
        shipped = (Path(__file__).resolve().parent.parent / "configs" / "monitoring.yaml").read_text()
        variants = {"drifted_evidently_report": shipped.replace("  report_engine: mnistcl ", "  report_engine: evidently"),
                    "drifted_without_report": shipped.replace("  report: drifted ", "  report: never   ")}
        rng = np.random.default_rng(11)
        for kind in ("quiet", "drifted", "drifted_evidently_report", "drifted_without_report"):
            if kind in variants:
                assert variants[kind] != shipped, kind
                (Path(tmp) / f"{kind}.yaml").write_text(variants[kind])
                env["MNISTCL_MONITORING_CONFIG"] = str(Path(tmp) / f"{kind}.yaml")
            runs = []
            for i in range(repeats):
                imgs = xt[rng.choice(np.arange(1000, len(xt)), 500, replace=False)]
                if kind != "quiet":
                    imgs = to_uint8(apply(imgs, {"rotate": 30}, rng))
                xf = imgs.astype(np.float32) / 255.0
                for j in range(0, 500, 10):
                    plog.log_predictions(f"{kind}-{i}-{j}", mv.id, "ndarray", xf[j:j + 10], model.predict(xf[j:j + 10]))
                t = time.perf_counter()
                proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
                runs.append(time.perf_counter() - t)
                if proc.returncode != 0 or "window of 500 images" not in proc.stdout:
                    raise RuntimeError(f"mnistcl monitor check failed:\n{proc.stdout}\n{proc.stderr}")
                if ("BREACH" in proc.stdout) != (kind != "quiet") or ("drift report: -" in proc.stdout) != (
                        kind in ("quiet", "drifted_without_report")):
                    raise RuntimeError(f"a {kind} window was judged otherwise:\n{proc.stdout}")
            out[kind] = {"median_seconds": float(np.median(runs)), "seconds": [round(r, 3) for r in runs]}
            print(f"mnistcl monitor check, {kind} window of 500: {out[kind]['median_seconds']:.2f} s end to end "
                  f"(median of {repeats})", flush=True)
    return out


if __name__ == "__main__":
    main()
