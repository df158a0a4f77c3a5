"""A cohort the scenario does not have: handwriting that mixes stroke styles (thick markers, a
slant and a shaky hand at once). Streamed through the real model server after MNIST-like users,
as the scenario does; monitoring must trigger a retraining by itself, and the champion after it
must read the new cohort's held-out digits at 95% or better, with no manual step.

  python -m bench.unseen [--orchestrator local]

Runs on a copy of the local store from the current champion (make demo first). Writes
bench/results/unseen.json: the cohort, held-out accuracy before and after, the retrainings.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COHORT = {"name": "mixed-strokes", "shifts": {"thicken": 1, "slant": 0.3, "elastic": 2.0}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orchestrator", default="prefect", choices=("prefect", "local"))
    ap.add_argument("--out", type=Path, default=RESULTS / "unseen.json")
    args = ap.parse_args(argv)

    from mnistcl.settings import load_settings
    from scenario.simulator import Cohort, load_scenario, run_scenario

    settings = load_settings()
    sc = load_scenario(None)
    sc.cohorts = [sc.cohorts[0], Cohort(COHORT["name"], COHORT["shifts"])]
    work = settings.home_dir / "bench-unseen"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(settings.store_url, work / "store")
    run = settings.model_copy(update={"storage_url": str(work / "store")})
    r = run_scenario(run, sc, work / "report", orchestrator=args.orchestrator)
    promoted = [e for e in r["retrains"] if e["promoted"]] + [j for j in r["judgements"] if j.get("verdict") == "promote"]
    out = {"cohort": COHORT, "held_out_before": r["R"][0][1], "held_out_after": r["R"][1][1],
           "mnist_like_after": r["R"][1][0], "retrainings": len(r["retrains"]), "promotions": len(promoted),
           "retrains": r["retrains"], "judgements": r["judgements"], "static_version": r["static_version"],
           "final_champion": r["final_champion"], "orchestrator": args.orchestrator, "seconds": r["seconds"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"{COHORT['name']}: held-out {out['held_out_before']:.3f} -> {out['held_out_after']:.3f} after "
          f"{out['retrainings']} retraining(s), {out['promotions']} promotion(s)")
    return out


if __name__ == "__main__":
    main()
