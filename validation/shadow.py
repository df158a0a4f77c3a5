"""The challenger's judgement: the same paired test as the gate, on labelled live traffic.

A candidate the gate could not decide on (not enough evidence) becomes ``challenger``. The model
server scores every request with it beside the champion (shadow: only the champion answers,
both answers are logged; on Kubernetes the canary predictor does the same the other way round),
so each labelled request is a paired observation neither model was trained on: an evaluation
pool that grows with feedback. Every ``shadow.judge_every`` new labelled images a judgement
looks at all of them since the challenger was set:

  promote  the lower bound of the challenger's accuracy gain is above 0 -> champion
  retire   the upper bound is below 0, or ``shadow.max_images`` were seen without a win
  wait     otherwise

Looking again as evidence grows would inflate the error if each look used the full alpha. The
gate spent its share of the error budget (``gate_alpha``) on the first look; the shadow spends
the rest (``shadow_alpha``) the Haybittle-Peto way: a strict ``interim_alpha`` at each look
before the last (only an overwhelming win promotes early) and what remains at the last, so the
chance of ever promoting a challenger that is not better stays within alpha in all. Judgements are
records in the registry (the shared store), so any process, pod or Job can judge next.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mnistcl.events import announce
from mnistcl.predlog import PredictionLog
from mnistcl.stores import stores
from monitoring.state import retrain_lease
from validation import stats
from validation.gate import GateConfig

EVIDENCE = "mnistcl.challenger.evidence"


def _state(settings, cfg: GateConfig) -> dict[str, Any]:
    _, reg = stores(settings)
    chall, champ = reg.alias("challenger"), reg.alias("champion")
    if not chall or not champ or chall == champ:
        return {"reg": reg, "challenger": None, "champion": champ}
    since = reg.alias_set_at("challenger") or 0.0
    a, b = PredictionLog(settings.predictions_db_path).paired_outcomes(chall, champ, since=since)
    records = reg.judgements(chall)
    return {"reg": reg, "challenger": chall, "champion": champ, "since": since, "a": a, "b": b,
            "judged": records[-1]["n"] if records else 0, "looks": len(records)}


def pending(settings, cfg: GateConfig) -> dict[str, Any]:
    """How much new labelled shadow evidence awaits a judgement (for the monitor's event)."""
    st = _state(settings, cfg)
    if not st["challenger"]:
        return {"challenger": None, "new": 0, "due": False}
    new = len(st["a"]) - st["judged"]
    return {"challenger": st["challenger"], "champion": st["champion"], "labelled": len(st["a"]), "new": new,
            "due": new >= cfg.shadow.judge_every or len(st["a"]) >= cfg.shadow.max_images}


def look_alpha(cfg: GateConfig, look: int, final: bool) -> float:
    """The error spent at one look (Haybittle-Peto): ``interim_alpha`` at each look before the
    last, and what is left of the shadow's budget at the last, so all looks together spend at
    most ``cfg.shadow_alpha`` (Bonferroni's inequality)."""
    looks_max = math.ceil(cfg.shadow.max_images / cfg.shadow.judge_every)
    interim = min(cfg.shadow.interim_alpha, cfg.shadow_alpha / looks_max)
    return cfg.shadow_alpha - interim * (looks_max - 1) if final else interim


def shadow_verdict(cfg: GateConfig, p: stats.Paired, look: int) -> dict[str, Any]:
    """The pure judgement of look number ``look`` on the paired outcomes ``p`` (challenger as the
    candidate): promote, retire or wait, with the estimate, interval and test."""
    looks_max = math.ceil(cfg.shadow.max_images / cfg.shadow.judge_every)
    final = p.n >= cfg.shadow.max_images
    if not final and look >= looks_max:  # forced looks have spent the interim budget: wait for the last
        return {"n": p.n, "look": look, "looks_max": looks_max, "alpha_per_look": 0.0, "verdict": "wait",
                "challenger_accuracy": p.candidate_accuracy, "champion_accuracy": p.champion_accuracy,
                "estimate": p.diff, "interval": [-1.0, 1.0], "interval_level": 1.0,
                "p_better": stats.mcnemar_exact(p.b, p.c, "greater"), "only_challenger_right": p.b,
                "only_champion_right": p.c, "test": "none: no error left to spend before the last look",
                "why": f"the {looks_max - 1} interim looks are spent; the last look waits for "
                       f"{cfg.shadow.max_images} labelled images ({p.n} so far)"}
    alpha = look_alpha(cfg, look, final)
    lo, hi = stats.score_interval(p, 1 - 2 * alpha)
    out = {"n": p.n, "look": look, "looks_max": looks_max, "alpha_per_look": alpha,
           "challenger_accuracy": p.candidate_accuracy, "champion_accuracy": p.champion_accuracy,
           "estimate": p.diff, "interval": [lo, hi], "interval_level": 1 - 2 * alpha,
           "p_better": stats.mcnemar_exact(p.b, p.c, "greater"), "only_challenger_right": p.b,
           "only_champion_right": p.c,
           "test": "paired Tango score interval on labelled shadow traffic; Haybittle-Peto error spending over the looks"}
    summary = (f"{p.diff:+.2%} on {p.n} labelled live images ({1 - 2 * alpha:.2%} interval {lo:+.2%} to {hi:+.2%}; "
               f"{p.b} only the challenger right, {p.c} only the champion)")
    if lo > 0:
        out.update(verdict="promote", why=f"better: {summary}")
    elif hi < 0 or final:
        why = "worse" if hi < 0 else f"no win shown within {cfg.shadow.max_images} labelled images"
        out.update(verdict="retire", why=f"{why}: {summary}")
    else:
        out.update(verdict="wait", why=f"not enough evidence yet: {summary}")
    return out


def judge_challenger(settings, cfg: GateConfig, *, force: bool = False) -> dict[str, Any]:
    """One judgement of the current challenger against the champion; moves aliases on a verdict.
    Returns the judgement (status ``idle`` without a challenger, ``waiting`` without new evidence)."""
    t0 = time.time()
    st = _state(settings, cfg)
    reg, chall, champ = st["reg"], st["challenger"], st["champion"]
    if not chall:
        return {"status": "idle", "why": "no challenger to judge", "champion": champ}
    busy = retrain_lease(settings).holder()
    if busy and not force:  # its candidate supersedes the challenger (see superseded_by_retraining)
        return {"status": "waiting", "challenger": chall, "champion": champ, "n": len(st["a"]),
                "why": f"a retraining is running ({busy}); it builds on the champion with all data since, "
                       "and its candidate replaces the challenger or leaves it to the next judgement"}
    n = len(st["a"])
    if not force and n - st["judged"] < cfg.shadow.judge_every and n < cfg.shadow.max_images:
        return {"status": "waiting", "challenger": chall, "champion": champ, "n": n,
                "why": f"{n - st['judged']} new labelled shadow images since the last judgement "
                       f"(judging every {cfg.shadow.judge_every})"}
    out = {"status": "judged", "challenger": chall, "champion": champ,
           **shadow_verdict(cfg, stats.Paired.from_correct(st["a"], st["b"]), st["looks"] + 1)}
    if out["verdict"] == "promote":
        reg.artifact_bytes(chall, "onnx")  # refuse to serve a corrupt artifact
        move = reg.move_alias("champion", chall, reason=f"shadow judgement: {out['why']}", expect=champ)
        reg.move_alias("challenger", None, reason=f"promoted to champion (move {move.seq})", expect=chall)
    elif out["verdict"] == "retire":
        reg.move_alias("challenger", None, reason=f"shadow judgement: retired, {out['why']}", expect=chall)
    out["seq"] = reg.record_judgement(chall, {k: v for k, v in out.items() if k != "status"})
    out["seconds"] = time.time() - t0
    return out


def announce_evidence(settings, cfg: GateConfig, *, retraining: bool = False) -> dict[str, Any] | None:
    """Emit ``mnistcl.challenger.evidence`` when a judgement is due (the ``judge`` deployment's
    trigger); None when there is no challenger or not enough new evidence, or when the same check
    triggered a retraining (``retraining``).

    A retraining supersedes the challenger's judgement: it fine-tunes the champion on everything
    labelled since the champion's data (the challenger's batch included), so judging first would
    only race it, and a challenger promoted first would leave the retraining only the newest
    batch as new data. Measured in the scenario (3 seeds, bench/results/scenario-seeds.json and
    docs/scenario.md). The challenger stays until the new candidate's verdict: promoted, it is
    retired; challenger, it replaces it; refused, the next check's judgement goes on."""
    if retraining:
        return None
    p = pending(settings, cfg)
    if not p["due"]:
        return None
    return announce(EVIDENCE, f"mnistcl.model.{p['challenger']}", p, events_log=settings.events_log,
                    prefect_api=settings.prefect_api)


def to_markdown(j: dict[str, Any]) -> str:
    if j.get("status") != "judged":
        return f"# Challenger judgement: {j['status']}\n\n{j.get('why', '')}\n"
    lo, hi = j["interval"]
    return "\n".join([
        f"# Challenger judgement: {j['verdict']}", "",
        f"{j['challenger']} (challenger) against {j['champion']} (champion) on {j['n']} labelled live images "
        f"both scored (look {j['look']} of at most {j['looks_max']}).", "",
        "| | challenger | champion |", "|---|---|---|",
        f"| accuracy | {j['challenger_accuracy']:.4f} | {j['champion_accuracy']:.4f} |",
        f"| right where the other was wrong | {j['only_challenger_right']} | {j['only_champion_right']} |", "",
        f"Difference {j['estimate']:+.4f}, {j['interval_level']:.2%} interval [{lo:+.4f}, {hi:+.4f}] "
        f"(alpha {j['alpha_per_look']:.4f} per look), exact McNemar p (better) = {j['p_better']:.3g}. "
        f"Test: {j['test']}.", "", f"Verdict: **{j['verdict']}**: {j['why']}", ""])
