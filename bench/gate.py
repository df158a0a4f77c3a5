"""Gate benchmark: planted candidates over many trials; how often the decision is right.

A champion (our PyTorch recipe on 50,000 MNIST digits, then fine-tuned with replay on a slanted
cohort, as the pipeline would have) meets a new cohort (thick markers). Planted candidates, each
trained as several variants (seeds and data draws):

  identical     the champion itself                                   (must not be promoted: churn)
  forgetting    fine-tuned on the new cohort only, no replay          (must be refused)
  noisy-labels  fine-tuned with replay on feedback with 20% wrong labels; its evaluation slice
                carries the same wrong labels
  within-noise  fine-tuned with replay on more MNIST-like digits: a change within noise
  clear-win     fine-tuned with replay on the new cohort              (>= 3 points on it: adopt)

Each trial draws fresh evaluation slices of the pipeline's sizes from large pools (MNIST test
stays the fixed 10,000), runs the gate's decision (validation/gate.py: paired tests, the
objective, forgetting with Holm), and, for a challenger, the shadow judgement on labelled live
traffic of the same mix (validation/shadow.py, looks every ``judge_every`` images). The truth is
each model's accuracy on the other part of each cohort's pool (1,500 images; MNIST: its 10,000
test digits); live traffic is drawn from the same populations.

  python -m bench.gate [--trials 40 --variants 4] [--sweep-doubt 0,0.3,0.5]

A promotion is bad when, on the truth pools, the promoted model is no better on the objective
(point estimate), or forgets a slice beyond its allowance by the gate's own test (score test,
Holm, the gate's confidence) on those 6x larger pools. The strict reading (any point drop beyond
an allowance, however small the evidence) is counted beside it as ``strict_bad_promotions``.

Writes bench/results/gate.json: ``bad_promotions`` (count over all trials), ``clear_win_adoption``
(share of clear-win trials promoted, at the gate or after the shadow), and the per-case detail.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PREV = {"slant": 0.45, "rotate": 12}   # the cohort the champion already learned (slice v2)
NEW = {"thicken": 1}                   # the new cohort (slice v3, the newest)
CASES = ("identical", "forgetting", "noisy-labels", "within-noise", "clear-win")


def score_models(args) -> dict:
    """Train the champion and every planted candidate; per-image outcomes on every pool."""
    import models.torchnet as tn
    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
    from mnistcl.images import to_uint8
    from mnistcl.shifts import apply
    from models.common import NullReporter, TrainData
    from retraining.retrain import balanced_counts

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    train_csv, test_csv = find_mnist_csvs()
    x0, y0 = read_mnist_csv(train_csv, "train")
    xt, yt = read_mnist_csv(test_csv, "test")

    def shifted(x, shift, seed):
        return to_uint8(apply(x, shift, np.random.default_rng(seed)))

    # Each cohort's pools come from one set of MNIST training digits the first model never saw,
    # shifted once and split at random: the gate's evaluation slices are drawn from one part, the
    # truth (and the shadow's live traffic) is the other, so both measure the same population.
    # MNIST's slice is the real test set, at the gate and as the truth.
    order = rng.permutation(len(y0))
    base, held = order[:50000], order[50000:]
    prev_x, new_x = shifted(x0[held[:3600]], PREV, 1), shifted(x0[held[3600:8100]], NEW, 2)
    prev_y, new_y = y0[held[:3600]], y0[held[3600:8100]]
    pools = {  # (images, labels) per pool
        "prev_train": (prev_x[:600], prev_y[:600]), "prev_eval": (prev_x[600:2100], prev_y[600:2100]),
        "prev_truth": (prev_x[2100:], prev_y[2100:]),
        "new_train": (new_x[:1500], new_y[:1500]), "new_eval": (new_x[1500:3000], new_y[1500:3000]),
        "new_truth": (new_x[3000:], new_y[3000:]),
        "mnist_truth": (xt, yt),
    }
    xv, yv = x0[held[-400:]], y0[held[-400:]]

    def finetune(model, x, y, seed):
        c = replace(model.config, epochs=5, learning_rate=model.config.learning_rate * 0.5, seed=seed)
        return tn.train(TrainData(x, y, xv, yv), c, NullReporter(), init=model.net.state_dict())

    def replayed(new_x, new_y, r):
        """The new images plus twice as many old ones, drawn evenly from MNIST and the slanted batch."""
        groups = [(x0[base], y0[base]), pools["prev_train"]]
        take = balanced_counts([len(g[1]) for g in groups], 2 * len(new_y))
        xs, ys = [new_x], [new_y]
        for (gx, gy), k in zip(groups, take, strict=True):
            pick = r.choice(len(gy), k, replace=False)
            xs.append(gx[pick])
            ys.append(gy[pick])
        xx, yy = np.concatenate(xs), np.concatenate(ys)
        perm = r.permutation(len(yy))
        return xx[perm], yy[perm]

    print("training the champion ...", flush=True)
    first = tn.train(TrainData(x0[base], y0[base], xv, yv), tn.Config(epochs=1, seed=args.seed), NullReporter())
    px, py = pools["prev_train"]
    champion = finetune(first, *replayed(px[:480], py[:480], np.random.default_rng(11)), args.seed)

    models: dict[str, list] = {c: [] for c in CASES}
    for j in range(args.variants):
        r = np.random.default_rng(100 + j)
        nx, ny = pools["new_train"]
        pick = r.choice(len(ny), args.train_images, replace=False)
        x_new, y_new = nx[pick], ny[pick]
        noisy = y_new.copy()
        flip = r.random(len(noisy)) < 0.2
        noisy[flip] = (noisy[flip] + r.integers(1, 10, flip.sum())) % 10
        mnist_like = r.choice(len(base), args.train_images, replace=False)  # digits like those it has seen
        models["identical"].append(champion)
        models["forgetting"].append(finetune(champion, x_new, y_new, j))
        models["noisy-labels"].append(finetune(champion, *replayed(x_new, noisy, r), j))
        models["within-noise"].append(finetune(champion, *replayed(x0[base][mnist_like], y0[base][mnist_like], r), j))
        models["clear-win"].append(finetune(champion, *replayed(x_new, y_new, r), j))
        print(f"variant {j + 1}/{args.variants} trained ({time.perf_counter() - t0:.0f} s)", flush=True)

    slice_pools = {"mnist-test": None, "v2": "prev_eval", "v3": "new_eval"}
    truth_pools = {"mnist-test": "mnist_truth", "v2": "prev_truth", "v3": "new_truth"}
    ex, ey = pools["new_eval"]  # the noisy case's evaluation slice carries 20% wrong labels
    r = np.random.default_rng(7)
    ey_noisy = ey.copy()
    flip = r.random(len(ey)) < 0.2
    ey_noisy[flip] = (ey_noisy[flip] + r.integers(1, 10, flip.sum())) % 10

    def correct(model, pool, labels=None):
        x, y = (xt, yt) if pool is None else pools[pool]
        return model.predict(x).argmax(1) == (y if labels is None else labels)

    def outcomes(model):
        return {"gate": {s: correct(model, p) for s, p in slice_pools.items()},
                "truth": {s: correct(model, p) for s, p in truth_pools.items()},
                "gate_noisy_v3": correct(model, "new_eval", ey_noisy)}

    return {"champion": outcomes(champion), "cases": {c: [outcomes(m) for m in ms] for c, ms in models.items()}}


def save_outcomes(scored: dict, path: Path) -> None:
    arrays = {}
    for who, outs in [("champion", [scored["champion"]]), *scored["cases"].items()]:
        for j, o in enumerate(outs):
            for kind in ("gate", "truth"):
                for s, a in o[kind].items():
                    arrays[f"{who}|{j}|{kind}|{s}"] = a
            arrays[f"{who}|{j}|gate_noisy_v3|"] = o["gate_noisy_v3"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_outcomes(path: Path) -> dict:
    out: dict = {"champion": None, "cases": {}}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            who, j, kind, s = key.split("|")
            lst = out["cases"].setdefault(who, []) if who != "champion" else None
            if who == "champion":
                o = out["champion"] = out["champion"] or {"gate": {}, "truth": {}}
            else:
                while len(lst) <= int(j):
                    lst.append({"gate": {}, "truth": {}})
                o = lst[int(j)]
            if kind == "gate_noisy_v3":
                o["gate_noisy_v3"] = z[key]
            else:
                o[kind][s] = z[key]
    out["cases"] = {c: out["cases"][c] for c in CASES}
    return out


def evaluate(cfg, scored: dict, args, log=print) -> dict:
    """Every case over ``args.trials`` trials with the gate config ``cfg``: the decisions and their truth."""
    from validation import stats
    from validation.gate import Measured, decide
    from validation.objective import traffic_weights
    from validation.shadow import shadow_verdict

    champ_out, cases = scored["champion"], scored["cases"]
    slices = list(champ_out["truth"])
    weights = traffic_weights([("v2", 600), ("v3", 600)], cfg.objective)
    pool_size = {s: len(champ_out["gate"][s]) for s in slices}

    results: dict[str, dict] = {}
    bad_total = strict_total = 0
    for case in CASES:
        noisy = case == "noisy-labels"  # its slice of the newest batch carries the feedback's wrong labels
        outs = cases[case]
        truth = []
        for o in outs:
            d = {s: float(o["truth"][s].mean() - champ_out["truth"][s].mean()) for s in slices}
            # Forgetting in truth: the gate's own test (score test against the allowance, Holm) on
            # the truth pools, which are 6x the gate's slices; and the strict reading, any point drop
            # beyond the allowance however small the evidence, reported beside it.
            pf = [stats.margin_pvalue(stats.Paired.from_correct(o["truth"][s], champ_out["truth"][s]),
                                      -cfg.forgetting.for_slice(s), "less") for s in slices]
            truth.append({"by_slice": d, "objective": float(sum(weights[s] * d[s] for s in d)),
                          "forgets": [s for s, p in zip(slices, stats.holm(pf), strict=True) if p < cfg.alpha],
                          "drops_beyond_allowance": [s for s, v in d.items() if v < -cfg.forgetting.for_slice(s)]})
        counts = {"promote": 0, "challenger": 0, "reject": 0, "shadow_promote": 0, "shadow_retire": 0}
        bad, strict_bad, ests, lows, trials = 0, 0, [], [], []
        for t in range(args.trials):
            k = t % len(outs)
            o, tr = outs[k], truth[k]
            r = np.random.default_rng(args.seed * 1000 + t)
            cand_c, champ_c = {}, {}
            for s in slices:
                cg, hg = ((o["gate_noisy_v3"], champ_out["gate_noisy_v3"]) if noisy and s == "v3"
                          else (o["gate"][s], champ_out["gate"][s]))
                if s == "mnist-test":  # the fixed 10,000; production slices are drawn afresh
                    cand_c[s], champ_c[s] = cg, hg
                else:
                    idx = r.choice(pool_size[s], args.eval_images, replace=False)
                    cand_c[s], champ_c[s] = cg[idx], hg[idx]
            d = decide(cfg, Measured({}, cand_c), Measured({}, champ_c), weights)
            counts[d["verdict"]] += 1
            ests.append(d["objective"]["estimate"])
            lows.append(d["objective"]["interval"][0])
            promoted = d["verdict"] == "promote"
            if d["verdict"] == "challenger":  # the shadow: labelled live traffic of the objective's mix
                n_max = cfg.shadow.max_images
                mix = r.choice(slices, size=n_max, p=[weights[s] for s in slices])
                a = np.empty(n_max, bool)
                b = np.empty(n_max, bool)
                for s in slices:  # live traffic: draws from the truth populations
                    pick = r.choice(len(o["truth"][s]), (mix == s).sum(), replace=True)
                    a[mix == s] = o["truth"][s][pick]
                    b[mix == s] = champ_out["truth"][s][pick]
                look = 0
                while True:
                    look += 1
                    n = min(look * cfg.shadow.judge_every, n_max)
                    v = shadow_verdict(cfg, stats.Paired.from_correct(a[:n], b[:n]), look)
                    if v["verdict"] != "wait":
                        break
                counts["shadow_" + v["verdict"]] += 1
                promoted = v["verdict"] == "promote"
            is_bad = promoted and (tr["objective"] <= 0 or bool(tr["forgets"]))
            bad += is_bad
            strict_bad += promoted and (tr["objective"] <= 0 or bool(tr["drops_beyond_allowance"]))
            trials.append({"variant": k, "verdict": d["verdict"], "shadow": v["verdict"] if d["verdict"] == "challenger"
                           else None, "promoted": promoted, "bad": is_bad,
                           "objective_estimate": d["objective"]["estimate"], "objective_interval": d["objective"]["interval"]})
        bad_total += bad
        strict_total += strict_bad
        adopted = counts["promote"] + counts["shadow_promote"]
        results[case] = {"trials": args.trials, **counts, "adopted": adopted, "adoption": adopted / args.trials,
                         "bad_promotions": bad, "strict_bad_promotions": strict_bad,
                         "truth": [{"objective": t_["objective"], "new_cohort": t_["by_slice"]["v3"],
                                    "by_slice": t_["by_slice"], "forgets": t_["forgets"],
                                    "drops_beyond_allowance": t_["drops_beyond_allowance"]} for t_ in truth],
                         "trials_detail": trials,
                         "gate_estimate_mean": float(np.mean(ests)), "gate_lower_bound_mean": float(np.mean(lows))}
        log(f"{case:13s} promote {counts['promote']:2d}  challenger {counts['challenger']:2d} "
              f"(shadow: promote {counts['shadow_promote']}, retire {counts['shadow_retire']})  reject "
              f"{counts['reject']:2d}  bad {bad}  true objective "
              + ", ".join(f"{t_['objective']:+.4f}" for t_ in truth)
              + "  true new cohort " + ", ".join(f"{t_['by_slice']['v3']:+.3f}" for t_ in truth))

    out = {"bad_promotions": bad_total, "clear_win_adoption": results["clear-win"]["adoption"],
           "strict_bad_promotions": strict_total,
           "cases": results, "trials_per_case": args.trials, "variants": args.variants,
           "eval_images": args.eval_images, "train_images": args.train_images, "weights": weights,
           "champion_truth": {s: float(champ_out["truth"][s].mean()) for s in slices},
           "gate": json.loads(cfg.model_dump_json())}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40, help="trials per case")
    ap.add_argument("--variants", type=int, default=4, help="independently trained candidates per case")
    ap.add_argument("--train-images", type=int, default=360, help="new-cohort images a candidate trains on")
    ap.add_argument("--eval-images", type=int, default=240, help="images in each production evaluation slice")
    ap.add_argument("--gate", type=Path, default=None, help="gate config (default configs/gate.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--outcomes", type=Path, default=None,
                    help="an .npz of every model's per-image outcomes: written after training, read instead of it")
    ap.add_argument("--sweep-doubt", default="",
                    help="comma-separated values of forgetting.doubt to compare as well (writes gate-doubt.json)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gate.json")
    args = ap.parse_args(argv)

    from validation.gate import load_gate

    t0 = time.perf_counter()
    cfg = load_gate(args.gate)
    if args.outcomes and args.outcomes.exists():
        scored = load_outcomes(args.outcomes)
        print(f"per-image outcomes of every model from {args.outcomes}", flush=True)
    else:
        scored = score_models(args)
        if args.outcomes:
            save_outcomes(scored, args.outcomes)
    out = evaluate(cfg, scored, args)
    out["seconds"] = time.perf_counter() - t0
    if args.sweep_doubt:  # the doubt tier's values over the same outcomes and the same trial draws
        by = {}
        for d in args.sweep_doubt.split(","):
            r = evaluate(cfg.model_copy(update={"forgetting": cfg.forgetting.model_copy(update={"doubt": float(d)})}),
                         scored, args, log=lambda m: None)
            by[d] = {"bad_promotions": r["bad_promotions"], "strict_bad_promotions": r["strict_bad_promotions"],
                     "clear_win_adoption": r["clear_win_adoption"], "clear_win_direct": r["cases"]["clear-win"]["promote"],
                     "forgetting_promoted": r["cases"]["forgetting"]["adopted"]}
            print(f"doubt {d}: bad promotions {r['bad_promotions']} (strict {r['strict_bad_promotions']}), clear wins "
                  f"adopted {r['clear_win_adoption']:.0%}, {by[d]['clear_win_direct']} of them at the gate", flush=True)
        (args.out.parent / "gate-doubt.json").write_text(json.dumps(
            {"what": "forgetting.doubt over the same per-image outcomes and trial draws", "trials_per_case": args.trials,
             "by_doubt": by}, indent=1) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"bad promotions {out['bad_promotions']} of {args.trials * len(CASES)} trials "
          f"(strict reading: {out['strict_bad_promotions']}); "
          f"clear wins adopted {out['clear_win_adoption']:.0%}")
    return out


if __name__ == "__main__":
    main()
