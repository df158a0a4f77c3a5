"""The validation gate: measure a candidate beside the champion on the same images, and decide.

Everything runs through ONNX Runtime, so the gate treats every framework alike. Measured on the
dataset version's evaluation slices (MNIST test plus the held-out part of every labelled
production batch; validation/measure.py): accuracy overall and per class, size, complexity, speed
(single-image p50/p99 latency and batch throughput, candidate and champion interleaved in one
process), robustness under mild shifts, calibration (ECE), and the per-image outcomes the
decision pairs.

The decision (``decide``), all parameters in configs/gate.yaml:
  objective   expected accuracy on the recent traffic mix (validation/objective.py); the
              candidate "improves" when the one-sided lower bound of the paired difference is
              above 0 at the gate's confidence, or (``objective.current_traffic``) when it is
              confidently better on the newest batch, the traffic now, and no worse than
              ``objective.margin`` on the mix: two claims sharing the gate's error (Hochberg)
  forgetting  on every slice, a one-sided paired score test of "the drop exceeds that slice's
              allowance"; Holm's adjustment over the slices; a confident drop refuses;
              a likely one (p below ``doubt``) keeps a better candidate from a direct
              promotion: it becomes the challenger
  guards      absolute rules (size, latency, calibration, robustness, accuracy floors); a floor
              never refuses a candidate that is confidently better than the champion on that slice
  verdict     promote | challenger (not enough evidence either way: it is shadowed) | reject
Modes: disabled (no checks), dry-run (decide and report, never block), enforced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from mnistcl.onnx_utils import OnnxModel
from mnistcl.settings import read_yaml
from validation import stats
from validation.measure import Measured, fit_estimators, measure, speed
from validation.objective import BASE_SLICE, ObjectiveConfig

DEFAULT_GATE = Path(__file__).resolve().parent.parent / "configs" / "gate.yaml"
VERDICTS = ("promote", "challenger", "reject")


class Rule(BaseModel):
    """A guard: an absolute bound on one metric, or (``relative``) on its change from the champion."""
    name: str
    metric: str  # a dotted path into the metrics, e.g. accuracy.mnist-test, speed.p99_ms
    threshold: float
    higher_is_better: bool = True
    relative: bool = False
    description: str = ""


class ForgettingConfig(BaseModel):
    allowance: float = Field(default=0.01, ge=0.0, lt=1.0, description="accuracy drop tolerated on a slice")
    per_slice: dict[str, float] = Field(default_factory=dict, description="allowances by slice name")
    doubt: float = Field(default=0.3, ge=0.0, le=1.0, description=(
        "a promotion at the gate needs every slice's p-value of 'the drop exceeds the allowance' above this; "
        "a slice below it (the data lean toward such a drop without showing it) makes a better candidate the "
        "challenger, whose shadow gathers the evidence; 0 turns the tier off"))
    overwhelming: float = Field(default=0.001, gt=0.0, lt=0.5, description=(
        "a candidate better on the objective at this p-value is promoted despite a likely drop: the drop is "
        "priced into the objective by its slice's weight, and the win is too sure to wait (the shadow's "
        "interim level)"))

    def for_slice(self, name: str) -> float:
        return self.per_slice.get(name, self.allowance)


class EvidenceConfig(BaseModel):
    """How much of a new labelled batch is held out for evaluation (never trained on): enough for
    a paired test to see a gain of ``detect`` with ``power``, within the fraction bounds."""
    detect: float = Field(default=0.03, gt=0.0, lt=1.0)
    discordance: float = Field(default=0.08, gt=0.0, le=1.0)
    power: float = Field(default=0.8, gt=0.0, lt=1.0)
    min_eval_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    max_eval_fraction: float = Field(default=0.4, ge=0.0, lt=1.0)


class ShadowConfig(BaseModel):
    """The challenger's judgement on labelled live traffic (validation/shadow.py)."""
    judge_every: int = Field(default=200, gt=0, description="new labelled shadow images between judgements")
    max_images: int = Field(default=2000, gt=0, description="retire a challenger that has shown no win by then")
    interim_alpha: float = Field(default=0.001, gt=0.0, lt=0.5,
                                 description="error spent at each look before the last (Haybittle-Peto)")


class GateConfig(BaseModel):
    mode: Literal["disabled", "dry-run", "enforced"] = "enforced"
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="one-sided confidence of every verdict")
    gate_alpha_share: float = Field(default=0.5, gt=0.0, le=1.0,
                                    description="share of the promotion error budget spent at the gate; the shadow "
                                                "judgement spends the rest")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    rules: list[Rule] = Field(default_factory=list)
    promote_to: Literal["champion", "challenger"] = "champion"
    candidates: int = 3  # how many of a sweep's best runs are validated and registered
    compared: int = Field(default=1, ge=1, description=(
        "candidates gated at once against one champion (a sweep sets it): the gate's share of the "
        "error is split among them (Bonferroni), so any one promoted by chance stays within it"))
    robustness_images: int = 2000
    latency_runs: int = 200

    @property
    def alpha(self) -> float:
        """The error of every verdict: promoting a model that is not better (gate and shadow
        together), or calling a slice forgotten that is not."""
        return round(1.0 - self.confidence, 12)

    @property
    def gate_alpha(self) -> float:
        """The one-sided error of one candidate's promotion at the gate."""
        return self.alpha * self.gate_alpha_share / self.compared

    @property
    def claim_alpha(self) -> float:
        """The level one claim of "better" is shown at alone (the evidence is sized for it): the
        whole ``gate_alpha``, or half of it when the traffic-now claim shares it (Hochberg)."""
        return self.gate_alpha / 2 if self.objective.current_traffic else self.gate_alpha

    @property
    def shadow_alpha(self) -> float:
        """What the shadow's looks at the one challenger spend, all together."""
        return self.alpha * (1.0 - self.gate_alpha_share)


def load_gate(path: Path | None = None) -> GateConfig:
    path = Path(path or DEFAULT_GATE)
    raw = read_yaml(path, "gate config")
    try:
        return GateConfig.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"gate config {path} is invalid: {exc}") from None


def eval_fraction(n_labelled: int, cfg: EvidenceConfig, alpha: float) -> float:
    """The held-out share of a new batch of ``n_labelled`` images: the paired sample size the
    gate needs (stats.pairs_needed), kept within [min_eval_fraction, max_eval_fraction]."""
    if n_labelled <= 0:
        return cfg.min_eval_fraction
    need = stats.pairs_needed(cfg.detect, max(cfg.discordance, cfg.detect), alpha, cfg.power)
    return float(min(max(need / n_labelled, cfg.min_eval_fraction), cfg.max_eval_fraction))


# ------------------------------------------------------------------ the decision
def decide(cfg: GateConfig, cand: Measured, champ: Measured, weights: dict[str, float]) -> dict[str, Any]:
    """Paired comparison on every slice and on the objective; the statistical verdict.

    "Improves" (``_claim``): the objective's one-sided lower bound above 0, or, with
    ``objective.current_traffic``, the newest batch shown better with the objective no worse than
    the margin; the two claims share the gate's part of the error budget (``gate_alpha``; a
    challenger's shadow judgement spends the rest, so a model better at neither is promoted with
    probability at most alpha in all). "Forgets": a slice's drop shown
    beyond its allowance at alpha (a score test, Holm-adjusted over the slices); "doubtful": the data
    lean toward a drop beyond the allowance (unadjusted p below ``forgetting.doubt``), which turns a
    promotion into a challenger: its accuracy on labelled live traffic settles it. Intervals are
    two-sided at 1 - 2 gate_alpha: each end is the one-sided bound the verdict uses."""
    alpha, level = cfg.alpha, 1 - 2 * cfg.gate_alpha
    names = [s for s in cand.correct if s in champ.correct]
    pairs = {s: stats.Paired.from_correct(cand.correct[s], champ.correct[s]) for s in names}
    p_forget = [stats.margin_pvalue(pairs[s], -cfg.forgetting.for_slice(s), "less") for s in names]
    p_holm = stats.holm(p_forget)
    rows = []
    for s, pf, ph in zip(names, p_forget, p_holm, strict=True):
        p = pairs[s]
        lo, hi = stats.score_interval(p, level)
        rows.append({"slice": s, "n": p.n, "weight": round(weights.get(s, 0.0), 6),
                     "candidate": p.candidate_accuracy, "champion": p.champion_accuracy, "difference": p.diff,
                     "interval": [lo, hi], "only_candidate_right": p.b, "only_champion_right": p.c,
                     "allowance": cfg.forgetting.for_slice(s), "p_forgets": pf, "p_forgets_holm": ph,
                     "forgets": ph < alpha, "doubtful": pf < cfg.forgetting.doubt, "p_better": stats.mcnemar_exact(p.b, p.c, "greater")})
    w = [weights.get(s, 0.0) for s in names]
    total = sum(w) or 1.0
    w = [x / total for x in w]
    plist = [pairs[s] for s in names]
    est, lo, hi = stats.weighted_interval(plist, w, level)
    p_better = stats.weighted_pvalue(plist, w, "greater")
    objective = {"estimate": est, "interval": [lo, hi], "p_better": p_better,
                 "candidate": float(sum(wi * pairs[s].candidate_accuracy for s, wi in zip(names, w, strict=True))),
                 "champion": float(sum(wi * pairs[s].champion_accuracy for s, wi in zip(names, w, strict=True))),
                 "weights": dict(zip(names, w, strict=True))}
    claim = _claim(cfg, rows, plist, w, p_better, (est, lo, hi))
    objective["claim"] = claim
    forgets = [r for r in rows if r["forgets"]]
    # A likely drop holds back a win that is only just shown, not an overwhelming one.
    doubtful = [r for r in rows if r["doubtful"]] if p_better >= cfg.forgetting.overwhelming else []
    if forgets:
        verdict = "reject"
        why = "forgets " + ", ".join(f"{r['slice']} (drop {-r['difference']:.2%} > {r['allowance']:.2%}, "
                                      f"Holm p = {r['p_forgets_holm']:.3g})" for r in forgets)
    elif claim["better"] and doubtful:
        verdict, why = "challenger", (f"{claim['says']}, but not enough evidence that it keeps " + ", ".join(
                                          f"{r['slice']} (drop {-r['difference']:.2%}, p (drop > "
                                          f"{r['allowance']:.2%}) = {r['p_forgets']:.3g})" for r in doubtful))
    elif claim["better"]:
        outweighed = [r for r in rows if r["doubtful"]]  # likely drops an overwhelming win carries
        verdict, why = "promote", (f"{claim['says']}, and no slice forgotten"
                                   + ("; the win is overwhelming (p below "
                                      f"{cfg.forgetting.overwhelming:g}), so it outweighs the likely drop on "
                                      + ", ".join(f"{r['slice']} ({-r['difference']:.2%})" for r in outweighed)
                                      if outweighed else ""))
    elif hi < 0:
        verdict, why = "reject", (f"worse on the recent traffic mix: {est:+.2%} ({level:.0%} interval "
                                  f"{lo:+.2%} to {hi:+.2%})")
    else:
        verdict, why = "challenger", claim["why_not"]
    return {"verdict": verdict, "reason": why, "confidence": cfg.confidence, "interval_level": level,
            "gate_alpha": cfg.gate_alpha, "doubt": cfg.forgetting.doubt,
            "test": "paired: Tango score interval per slice, MOVER for the weighted objective, "
                    "score test against each slice's allowance with Holm's adjustment"
                    + ("; exact McNemar on the newest batch, Hochberg over the two claims" if claim.get("newest") else ""),
            "objective": objective, "slices": rows}


def _claim(cfg: GateConfig, rows: list[dict], plist: list, w: list[float], p_mix: float,
           mix_interval: tuple[float, float, float]) -> dict[str, Any]:
    """Is the candidate better? Two claims, either of which promotes (``p_mix`` and
    ``mix_interval``: the objective's p-value and its estimate and interval at ``gate_alpha``):

    - mix: better on the recent traffic mix (the objective's one-sided lower bound above 0 at the
      claim's level: ``gate_alpha`` with the other claim, ``gate_alpha / 2`` alone);
    - now (``objective.current_traffic``): better on the newest labelled batch, the traffic of
      today (exact McNemar), and no worse than ``objective.margin`` on the mix (its lower bound
      above -margin): an intersection-union test, each part at the claim's level.

    They share the gate's error by Hochberg's step-up for two hypotheses (valid here: the newest
    batch is part of the mix, so the two statistics move together): both claims hold at
    ``gate_alpha``, or either holds at half of it. Without a production batch (the newest slice is
    MNIST's, the base) only the mix is claimed, at the whole ``gate_alpha``."""
    a, o = cfg.gate_alpha, cfg.objective
    newest = rows[-1] if rows else None
    if not o.current_traffic or newest is None or newest["slice"] == BASE_SLICE:
        est, lo, hi = mix_interval
        return {"better": p_mix < a, "by": "mix" if p_mix < a else None, "says": _says_mix(mix_interval, p_mix, a),
                "why_not": f"not enough evidence: {est:+.2%} on the recent traffic mix, {1 - 2 * a:.0%} interval "
                           f"{lo:+.2%} to {hi:+.2%} includes 0 (p = {p_mix:.3g})"}
    interval = {a: mix_interval, a / 2: stats.weighted_interval(plist, w, 1 - a)}
    bound = {lvl: iv[1] for lvl, iv in interval.items()}
    p_now = newest["p_better"]
    mix = {lvl: p_mix < lvl for lvl in (a, a / 2)}
    now = {lvl: p_now < lvl and bound[lvl] > -o.margin for lvl in (a, a / 2)}
    if mix[a] and now[a]:
        by = "mix and now"
    elif mix[a / 2]:
        by = "mix"
    elif now[a / 2]:
        by = "now"
    else:
        by = None
    shown = {"mix and now": (a,), "now": (a / 2,)}.get(by, (a, a / 2))  # the bound(s) the claim used
    bounds = " and ".join(f"{bound[lvl]:+.2%} at {1 - lvl:.{1 if lvl == a else 2}%}" for lvl in shown)
    says_now = (f"on the newest batch ({newest['slice']}, the traffic now) {newest['difference']:+.2%} "
                f"({newest['only_candidate_right']} images only it reads right, {newest['only_champion_right']} "
                f"only the champion; exact McNemar p = {p_now:.3g}), the mix's one-sided lower bound {bounds} "
                f"against a margin of -{o.margin:.2%}")
    says = {"mix and now": f"{_says_mix(interval[a], p_mix, a)}; {says_now}",
            "mix": _says_mix(interval[a / 2], p_mix, a / 2),
            "now": f"better on the traffic now: {says_now}"}.get(by, "")
    why_not = (f"not enough evidence: {mix_interval[0]:+.2%} on the recent traffic mix (p = {p_mix:.3g}); {says_now}; "
               f"a promotion needs one claim at p < {a / 2:.3g} or both at p < {a:.3g} (Hochberg), the traffic "
               f"now with the mix's lower bound above -{o.margin:.2%}")
    return {"better": by is not None, "by": by, "says": says, "why_not": why_not, "hochberg_levels": [a, a / 2],
            "newest": {"slice": newest["slice"], "p_better": p_now, "mix_lower_bound": {"at_gate_alpha": bound[a], "at_half": bound[a / 2]}, "says": says_now,
                       "margin": o.margin}}


def _claims_words(claim: dict) -> str:
    """The report's words for "better" when the traffic-now claim was made (``claim["newest"]``)."""
    now = claim["newest"]
    a, half = claim["hochberg_levels"]
    return (f"is one of two claims sharing the error (Hochberg): the recent mix (the objective's lower bound "
            f"above 0), or the traffic now (the newest batch, {now['slice']}, better by exact McNemar, with the "
            f"mix's lower bound above -{now['margin']:.2%}); both at p < {a:.3g} ({1 - a:.1%} bounds), or either "
            f"alone at p < {half:.3g} ({1 - half:.2%} bounds)")


def _says_mix(interval: tuple[float, float, float], p_mix: float, a: float) -> str:
    est, lo, hi = interval
    return (f"better on the recent traffic mix: {est:+.2%} ({1 - 2 * a:.1%} interval {lo:+.2%} to {hi:+.2%}, "
            f"p = {p_mix:.3g})")


@dataclass
class Violation:
    rule: str
    metric: str
    measured: float | None
    threshold: float
    detail: str

    def text(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass
class GateReport:
    candidate: str
    champion: str | None
    mode: str
    passed: bool
    verdict: str = "promote"
    reason: str = ""
    violations: list[Violation] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    champion_metrics: dict | None = None
    decision: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "candidate": self.candidate, "champion": self.champion, "mode": self.mode, "passed": self.passed,
            "verdict": self.verdict, "reason": self.reason,
            "violations": [v.__dict__ for v in self.violations], "checks": self.checks, "decision": self.decision,
            "metrics": self.metrics, "champion_metrics": self.champion_metrics, "seconds": round(self.seconds, 3),
        }

    def to_markdown(self) -> str:
        words = {"promote": "PROMOTE", "challenger": "CHALLENGER (not enough evidence yet)", "reject": "REJECT"}
        verdict = words.get(self.verdict, self.verdict)
        if self.mode == "dry-run" and self.verdict != "promote":
            verdict = f"would {verdict} (dry-run: reported only)"
        lines = [f"# Validation report: {self.candidate}", "",
                 f"**{verdict}** (mode `{self.mode}`), against champion `{self.champion or 'none'}`; "
                 f"gate ran in {self.seconds:.1f} s.", "", f"Why: {self.reason}", ""]
        if self.violations:
            lines += ["## Violated rules", "", "| rule | metric | measured | threshold | detail |", "|---|---|---|---|---|"]
            for v in self.violations:
                lines.append(f"| {v.rule} | `{v.metric}` | {_num(v.measured)} | {_num(v.threshold)} | {v.detail} |")
            lines.append("")
        d = self.decision
        if d:
            o = d["objective"]
            lvl = d["interval_level"]
            claim = o.get("claim") or {}  # reports from before the traffic-now claim have none
            lines += ["## Decision: candidate against champion on the same images", "",
                      f"Test: {d['test']}. Slices are called forgotten at {d['confidence']:.0%} one-sided "
                      f"confidence; \"better\" " + (_claims_words(claim) if claim.get("newest")
                                                    else f"needs the objective's lower bound above 0 at "
                                                         f"{1 - d['gate_alpha']:.1%}")
                      + f" (the gate's share of the {1 - d['confidence']:.0%} error budget; a challenger's shadow "
                      f"judgement spends the rest)."
                      + (f" Here: {claim['newest']['says']}; the claim that held: {claim.get('by') or 'none'}."
                         if claim.get("newest") else "")
                      + f" Intervals are {lvl:.0%} two-sided. "
                      f"A slice's drop is \"likely\" when the data lean toward a drop beyond its allowance "
                      f"(p below {d.get('doubt', 0):.2g}): a better candidate is then the challenger.", "",
                      f"Objective (expected accuracy on the recent traffic mix): candidate {o['candidate']:.4f}, "
                      f"champion {o['champion']:.4f}, difference {o['estimate']:+.4f}, interval "
                      f"[{o['interval'][0]:+.4f}, {o['interval'][1]:+.4f}], p (better) = {o['p_better']:.3g}.", "",
                      "| slice | weight | images | champion | candidate | difference | interval | only cand. / only champ. right "
                      "| allowance | p (drop > allowance) / Holm | forgets |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in d["slices"]:
                lines.append(f"| {r['slice']} | {r['weight']:.3f} | {r['n']:,} | {r['champion']:.4f} | {r['candidate']:.4f} | "
                             f"{r['difference']:+.4f} | [{r['interval'][0]:+.4f}, {r['interval'][1]:+.4f}] | "
                             f"{r['only_candidate_right']} / {r['only_champion_right']} | {r['allowance']:.3f} | "
                             f"{r['p_forgets']:.3g} / {r['p_forgets_holm']:.3g} | "
                             f"{'**yes**' if r['forgets'] else 'likely' if r.get('doubtful') else 'no'} |")
            lines.append("")
        lines += ["## Guards", "", "| rule | metric | measured | threshold | result |", "|---|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c['rule']} | `{c['metric']}` | {_num(c['measured'])} | {c['op']} {_num(c['threshold'])} | "
                         f"{c['note'] if c.get('note') else 'ok' if c['ok'] else '**violated**'} |")
        m, ch = self.metrics, self.champion_metrics or {}
        lines += ["", "## Accuracy by slice", "", "| slice | candidate | champion |", "|---|---|---|"]
        for s, a in m.get("accuracy", {}).items():
            lines.append(f"| {s} | {a:.4f} | {_num(ch.get('accuracy', {}).get(s))} |")
        lines += ["", "## Per class (MNIST test)", "", "| class | candidate | champion |", "|---|---|---|"]
        for c, a in m.get("per_class", {}).get("mnist-test", {}).items():
            lines.append(f"| {c} | {_num(a)} | {_num(ch.get('per_class', {}).get('mnist-test', {}).get(c))} |")
        lines += ["", "## Size, speed, robustness, calibration", "", "| measure | candidate | champion |", "|---|---|---|"]
        for group in ("size", "complexity", "speed", "robustness", "calibration"):
            for k, v in m.get(group, {}).items():
                lines.append(f"| {group}.{k} | {_num(v)} | {_num(ch.get(group, {}).get(k))} |")
        return "\n".join(lines) + "\n"


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def lookup(metrics: dict, path: str):
    cur: Any = metrics
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _floor_slice(metric: str, metrics: dict) -> str | None:
    """The slice an accuracy floor is about (``accuracy.<slice>``, ``accuracy.newest``), if any."""
    if not metric.startswith("accuracy."):
        return None
    name = metric.split(".", 1)[1]
    return metrics.get("newest_slice") if name == "newest" else name


def check_guards(cfg: GateConfig, cand: dict, champ: dict | None, decision: dict | None,
                 ) -> tuple[list[Violation], list[dict]]:
    """Apply every guard; collect every violation (never stop at the first). A floor on a slice's
    accuracy is waived when the candidate is confidently better than the champion there."""
    better = {r["slice"]: r for r in (decision or {}).get("slices", []) if r["p_better"] < cfg.alpha}
    violations, checks = [], []
    for r in cfg.rules:
        op = ">=" if r.higher_is_better else "<="
        value = lookup(cand, r.metric)
        if value is None:
            violations.append(Violation(r.name, r.metric, None, r.threshold, f"metric {r.metric} was not measured"))
            checks.append({"rule": r.name, "metric": r.metric, "measured": None, "threshold": r.threshold, "op": op,
                           "ok": False})
            continue
        if r.relative:
            base = lookup(champ, r.metric) if champ else None
            if base is None:
                checks.append({"rule": r.name, "metric": f"{r.metric} - champion", "measured": None,
                               "threshold": r.threshold, "op": op, "ok": True, "note": "skipped: no champion"})
                continue
            delta = value - base
            ok = delta >= r.threshold if r.higher_is_better else delta <= r.threshold
            checks.append({"rule": r.name, "metric": f"{r.metric} - champion", "measured": delta,
                           "threshold": r.threshold, "op": op, "ok": ok})
            if not ok:
                violations.append(Violation(r.name, r.metric, delta, r.threshold,
                                            f"{r.metric} {value:.4f} vs champion {base:.4f}: change {delta:+.4f}, "
                                            f"needs {op} {r.threshold:+}"))
            continue
        ok = value >= r.threshold if r.higher_is_better else value <= r.threshold
        check = {"rule": r.name, "metric": r.metric, "measured": value, "threshold": r.threshold, "op": op, "ok": ok}
        s = _floor_slice(r.metric, cand)
        if not ok and r.higher_is_better and s in better:
            b = better[s]
            check.update(ok=True, note=f"waived: confidently better than the champion on {s} ({b['champion']:.4f} -> "
                                       f"{b['candidate']:.4f}, McNemar p = {b['p_better']:.3g})")
        checks.append(check)
        if not check["ok"]:
            violations.append(Violation(r.name, r.metric, value, r.threshold,
                                        f"{r.metric} = {_num(value)}, needs {op} {_num(r.threshold)}"))
    return violations, checks


def judge(cfg: GateConfig, cand: Measured, champ: Measured | None, *, candidate: str, champion: str | None,
          weights: dict[str, float]) -> GateReport:
    """Guards and, against a champion, the paired decision; every violation is listed."""
    decision = decide(cfg, cand, champ, weights) if champ is not None else None
    violations, checks = check_guards(cfg, cand.metrics, champ.metrics if champ else None, decision)
    if decision and decision["verdict"] == "reject":
        violations += [Violation("forgetting", f"accuracy.{r['slice']}", -r["difference"], r["allowance"],
                                 f"forgets slice {r['slice']}: accuracy {r['candidate']:.4f} vs champion "
                                 f"{r['champion']:.4f} (drop {-r['difference']:.4f} beyond {r['allowance']:.4f}, "
                                 f"Holm p = {r['p_forgets_holm']:.3g})")
                       for r in decision["slices"] if r["forgets"]]
        if not any(r["forgets"] for r in decision["slices"]):
            o = decision["objective"]
            violations.append(Violation("objective", "objective", o["estimate"], 0.0, decision["reason"]))
    if violations:
        verdict, reason = "reject", "; ".join(v.text() for v in violations)
    elif decision:
        verdict, reason = decision["verdict"], decision["reason"]
    else:
        verdict, reason = "promote", "no champion to compare with; every guard holds"
    passed = cfg.mode != "enforced" or verdict == "promote"
    return GateReport(candidate=candidate, champion=champion, mode=cfg.mode, passed=passed, verdict=verdict,
                      reason=reason, violations=violations, checks=checks, metrics=cand.metrics,
                      champion_metrics=champ.metrics if champ else None, decision=decision)


def validate(cfg: GateConfig, candidate_onnx: Path, slices: dict[str, tuple[np.ndarray, np.ndarray]], *,
             weights: dict[str, float], candidate: str = "candidate", champion_onnx: Path | None = None,
             champion: str | None = None, champion_measured: Measured | None = None) -> tuple[GateReport, Measured | None]:
    """Measure the candidate (and the champion on the same slices, in the same process) and judge.

    ``champion_measured``: the champion measured earlier on these same slices (returned by a
    previous call); only speed is timed again, since latency is only comparable within one
    interleaved run. Returns the report and the champion's measurements for the next call.
    """
    t0 = time.perf_counter()
    cand_m = OnnxModel(candidate_onnx)
    models = {"candidate": cand_m}
    champ_m = OnnxModel(champion_onnx) if champion_onnx else None
    if champ_m:
        models["champion"] = champ_m
    if cfg.mode == "disabled":
        x, y = slices["mnist-test"]
        metrics = {"accuracy": {"mnist-test": float((cand_m.predict(x).argmax(1) == y).mean())}}
        rep = GateReport(candidate=candidate, champion=champion, mode="disabled", passed=True, metrics=metrics,
                         reason="gate disabled")
        rep.seconds = time.perf_counter() - t0
        return rep, champion_measured
    cand = measure(cand_m, slices, robustness_images=cfg.robustness_images)
    champ = None
    if champ_m:
        champ = champion_measured or measure(champ_m, slices, robustness_images=cfg.robustness_images)
        champ = Measured({**champ.metrics}, champ.correct, champ.probs)
    sp = speed(models, runs=cfg.latency_runs)
    cand.metrics["speed"] = sp["candidate"]
    cand.metrics["estimators"] = fit_estimators(cand, slices, weights)
    total = sum(weights.get(s, 0.0) for s in slices) or 1.0
    cand.metrics["objective"] = sum(weights.get(s, 0.0) * cand.metrics["accuracy"][s] for s in slices) / total
    if champ is not None:
        champ.metrics["speed"] = sp["champion"]
    rep = judge(cfg, cand, champ, candidate=candidate, champion=champion, weights=weights)
    rep.seconds = time.perf_counter() - t0
    return rep, champ


def report_files(rep: GateReport, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "validation.md", directory / "validation.json"
    md.write_text(rep.to_markdown())
    js.write_text(json.dumps(rep.to_json(), indent=2, default=float) + "\n")
    return {"report_md": md, "report_json": js}
