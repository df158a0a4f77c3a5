"""The validation gate: measure a candidate against the champion, judge it by rules in data.

Everything runs through ONNX Runtime, so the gate treats every framework alike and needs
neither TensorFlow nor PyTorch. Measurements: accuracy overall and per class on every
evaluation slice (MNIST test plus each labelled production batch), size, complexity, speed
(single-image p50/p99 latency and batch throughput, candidate and champion timed in the same
process, interleaved), robustness under mild shifts, calibration (ECE), and forgetting.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from mnistcl.settings import read_yaml

DEFAULT_GATE = Path(__file__).resolve().parent.parent / "configs" / "gate.yaml"


class Rule(BaseModel):
    name: str
    metric: str  # a dotted path into the metrics, e.g. accuracy.mnist-test, speed.p99_ms
    threshold: float
    higher_is_better: bool = True
    relative: bool = False  # compare candidate - champion (or the forgetting of every slice)
    # Forgetting only: allow a drop of noise_z standard errors of the accuracy difference on a
    # slice when that is more than the threshold (sqrt(2 p (1 - p) / n)): on a 60-image slice one
    # image is 1.7 points, so a fixed 1-point rule there would judge noise.
    noise_z: float = 0.0
    description: str = ""


class GateConfig(BaseModel):
    mode: Literal["disabled", "dry-run", "enforced"] = "enforced"
    rules: list[Rule] = Field(default_factory=list)
    promote_to: Literal["champion", "challenger"] = "champion"
    candidates: int = 3  # how many of a sweep's best runs are validated and registered
    robustness_images: int = 2000
    latency_runs: int = 200


def load_gate(path: Path | None = None) -> GateConfig:
    path = Path(path or DEFAULT_GATE)
    raw = read_yaml(path, "gate config")
    try:
        return GateConfig.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"gate config {path} is invalid: {exc}") from None


# ------------------------------------------------------------------ measurement
class OnnxModel:
    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray, batch: int = 1024) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32) / 255.0 if np.asarray(images).dtype == np.uint8 else images
        return np.concatenate([self.session.run(None, {self.input: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def accuracy_report(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(1)
    per_class = {str(c): float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(10)}
    return {"accuracy": float((pred == y).mean()), "per_class": per_class, "n": int(len(y))}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def shifts(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Mild, label-preserving shifts: small rotation, pixel noise, thicker strokes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    xf = x.astype(np.float32)
    angles = rng.uniform(-12, 12, len(x))
    rot = np.stack([ndimage.rotate(img, a, reshape=False, order=1, mode="constant") for img, a in zip(xf, angles, strict=True)])
    noise = np.clip(xf + rng.normal(0, 0.15 * 255, xf.shape), 0, 255)
    thick = ndimage.grey_dilation(xf, size=(1, 2, 2))
    return {name: np.clip(a, 0, 255).astype(np.uint8) for name, a in
            (("rotation_12deg", rot), ("noise_0.15", noise), ("thicker_strokes", thick))}


def speed(models: dict[str, OnnxModel], runs: int = 200, batch: int = 256) -> dict[str, dict[str, float]]:
    """Single-image latency (p50, p99) and batch throughput, models interleaved run by run."""
    rng = np.random.default_rng(0)
    one = rng.random((1, 28, 28), dtype=np.float32)
    many = rng.random((batch, 28, 28), dtype=np.float32)
    lat: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():  # warm-up
        for _ in range(10):
            m.session.run(None, {m.input: one})
        m.session.run(None, {m.input: many})
    for _ in range(runs):
        for k, m in models.items():
            t = time.perf_counter()
            m.session.run(None, {m.input: one})
            lat[k].append((time.perf_counter() - t) * 1e3)
    thr: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(5):
        for k, m in models.items():
            t = time.perf_counter()
            m.session.run(None, {m.input: many})
            thr[k].append(batch / (time.perf_counter() - t))
    return {k: {"p50_ms": float(np.percentile(lat[k], 50)), "p99_ms": float(np.percentile(lat[k], 99)),
                "throughput_per_s": float(np.median(thr[k])), "batch": batch} for k in models}


def measure(model: OnnxModel, slices: dict[str, tuple[np.ndarray, np.ndarray]], *, robustness_images: int) -> dict:
    """Accuracy per slice and class, robustness, calibration, size and complexity."""
    from mnistcl.onnx_utils import macs_per_image, param_count

    out: dict[str, Any] = {"accuracy": {}, "per_class": {}, "slices": {}}
    for name, (x, y) in slices.items():
        probs = model.predict(x)
        rep = accuracy_report(probs, y)
        out["accuracy"][name] = rep["accuracy"]
        out["per_class"][name] = rep["per_class"]
        out["slices"][name] = {"n": rep["n"]}
        if name == "mnist-test":
            out["calibration"] = {"ece": expected_calibration_error(probs, y),
                                  "mean_confidence": float(probs.max(1).mean())}
    newest = list(slices)[-1]
    out["accuracy"]["newest"] = out["accuracy"][newest]
    out["newest_slice"] = newest
    x, y = slices["mnist-test"]
    n = min(robustness_images, len(x))
    out["robustness"] = {k: float((model.predict(v).argmax(1) == y[:n]).mean()) for k, v in shifts(x[:n]).items()}
    out["robustness"]["min"] = min(out["robustness"].values())
    macs = macs_per_image(model.path)
    out["size"] = {"params": param_count(model.path), "onnx_bytes": model.path.stat().st_size}
    out["complexity"] = {"macs": macs, "flops": 2 * macs}
    return out


# ------------------------------------------------------------------ judging
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
    violations: list[Violation] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    champion_metrics: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "candidate": self.candidate, "champion": self.champion, "mode": self.mode, "passed": self.passed,
            "violations": [v.__dict__ for v in self.violations], "checks": self.checks,
            "metrics": self.metrics, "champion_metrics": self.champion_metrics, "seconds": round(self.seconds, 3),
        }

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        if self.mode == "dry-run" and self.violations:
            verdict = "would FAIL (dry-run: reported only)"
        lines = [f"# Validation report: {self.candidate}", "",
                 f"**{verdict}** (mode `{self.mode}`), against champion `{self.champion or 'none'}`; "
                 f"gate ran in {self.seconds:.1f} s.", ""]
        if self.violations:
            lines += ["## Violated rules", "", "| rule | metric | measured | threshold | detail |", "|---|---|---|---|---|"]
            for v in self.violations:
                lines.append(f"| {v.rule} | `{v.metric}` | {_num(v.measured)} | {_num(v.threshold)} | {v.detail} |")
            lines.append("")
        lines += ["## Rules", "", "| rule | metric | measured | threshold | result |", "|---|---|---|---|---|"]
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
        if m.get("forgetting"):
            lines += ["", "## Forgetting (champion minus candidate, per earlier slice)", "", "| slice | drop |", "|---|---|"]
            for s, d in m["forgetting"].items():
                lines.append(f"| {s} | {d:+.4f} |")
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


def forgetting_allowance(rule: Rule, champ: dict, cand: dict, slice_name: str) -> float:
    """The largest accuracy drop tolerated on a slice: the threshold, or noise_z standard errors."""
    n = ((cand.get("slices") or {}).get(slice_name) or {}).get("n")
    p = lookup(champ, f"accuracy.{slice_name}")
    if not rule.noise_z or not n or p is None:
        return rule.threshold
    return max(rule.threshold, rule.noise_z * float(np.sqrt(2 * p * (1 - p) / n)))


def judge(cfg: GateConfig, cand: dict, champ: dict | None, *, candidate: str, champion: str | None) -> GateReport:
    """Apply every rule; collect every violation (never stop at the first)."""
    violations, checks = [], []
    for r in cfg.rules:
        op = ">=" if r.higher_is_better else "<="
        if r.relative and r.metric == "forgetting":
            if champ is None:
                checks.append({"rule": r.name, "metric": "forgetting", "measured": None, "threshold": r.threshold,
                               "op": "<=", "ok": True, "note": "skipped: no champion"})
                continue
            worst = max(cand.get("forgetting", {}).values(), default=0.0)
            allowed = {s: forgetting_allowance(r, champ, cand, s) for s in cand.get("forgetting", {})}
            bad = {s: d for s, d in cand.get("forgetting", {}).items() if d > allowed[s]}
            checks.append({"rule": r.name, "metric": "forgetting.max", "measured": worst, "threshold": r.threshold,
                           "op": "<=", "ok": not bad,
                           **({"note": "per-slice allowance " + ", ".join(f"{s} {a:.4f}" for s, a in allowed.items())}
                              if r.noise_z else {})})
            for s, drop in bad.items():
                violations.append(Violation(r.name, f"accuracy.{s}", drop, allowed[s],
                                            f"forgets slice {s}: accuracy {lookup(cand, f'accuracy.{s}'):.4f} vs champion "
                                            f"{lookup(champ, f'accuracy.{s}'):.4f} (drop {drop:.4f} > {allowed[s]:.4f})"))
            continue
        value = lookup(cand, r.metric)
        if value is None:
            violations.append(Violation(r.name, r.metric, None, r.threshold, f"metric {r.metric} was not measured"))
            checks.append({"rule": r.name, "metric": r.metric, "measured": None, "threshold": r.threshold, "op": op, "ok": False})
            continue
        if r.relative:
            base = lookup(champ, r.metric) if champ else None
            if base is None:
                checks.append({"rule": r.name, "metric": f"{r.metric} - champion", "measured": None,
                               "threshold": r.threshold, "op": op, "ok": True, "note": "skipped: no champion"})
                continue
            delta = value - base
            ok = delta >= r.threshold if r.higher_is_better else delta <= r.threshold
            checks.append({"rule": r.name, "metric": f"{r.metric} - champion", "measured": delta, "threshold": r.threshold,
                           "op": op, "ok": ok})
            if not ok:
                violations.append(Violation(r.name, r.metric, delta, r.threshold,
                                            f"{r.metric} {value:.4f} vs champion {base:.4f}: change {delta:+.4f}, needs {op} {r.threshold:+}"))
        else:
            ok = value >= r.threshold if r.higher_is_better else value <= r.threshold
            checks.append({"rule": r.name, "metric": r.metric, "measured": value, "threshold": r.threshold, "op": op, "ok": ok})
            if not ok:
                violations.append(Violation(r.name, r.metric, value, r.threshold,
                                            f"{r.metric} = {_num(value)}, needs {op} {_num(r.threshold)}"))
    passed = cfg.mode != "enforced" or not violations
    return GateReport(candidate=candidate, champion=champion, mode=cfg.mode, passed=passed, violations=violations,
                      checks=checks, metrics=cand, champion_metrics=champ)


def validate(cfg: GateConfig, candidate_onnx: Path, slices: dict[str, tuple[np.ndarray, np.ndarray]], *,
             candidate: str = "candidate", champion_onnx: Path | None = None, champion: str | None = None,
             champion_metrics: dict | None = None) -> GateReport:
    """Measure the candidate (and the champion on the same slices, same process) and judge.

    ``champion_metrics``: the champion's accuracy, robustness, calibration and size measured
    earlier on these same slices (``report.champion_metrics``); only speed is timed again, since
    latency is only comparable within one interleaved run.
    """
    t0 = time.perf_counter()
    cand_m = OnnxModel(candidate_onnx)
    models = {"candidate": cand_m}
    champ_m = OnnxModel(champion_onnx) if champion_onnx else None
    if champ_m:
        models["champion"] = champ_m
    if cfg.mode == "disabled":
        metrics = {"accuracy": {}}
        x, y = slices["mnist-test"]
        metrics["accuracy"]["mnist-test"] = float((cand_m.predict(x).argmax(1) == y).mean())
        rep = GateReport(candidate=candidate, champion=champion, mode="disabled", passed=True, metrics=metrics)
        rep.seconds = time.perf_counter() - t0
        return rep
    cand = measure(cand_m, slices, robustness_images=cfg.robustness_images)
    champ = None
    if champ_m:
        champ = (dict(champion_metrics) if champion_metrics is not None
                 else measure(champ_m, slices, robustness_images=cfg.robustness_images))
    sp = speed(models, runs=cfg.latency_runs)
    cand["speed"] = sp["candidate"]
    if champ is not None:
        champ["speed"] = sp["champion"]
        newest = cand["newest_slice"]
        cand["forgetting"] = {s: champ["accuracy"][s] - a for s, a in cand["accuracy"].items()
                              if s not in ("newest", newest)}
    rep = judge(cfg, cand, champ, candidate=candidate, champion=champion)
    rep.seconds = time.perf_counter() - t0
    return rep


def report_files(rep: GateReport, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "validation.md", directory / "validation.json"
    md.write_text(rep.to_markdown())
    js.write_text(json.dumps(rep.to_json(), indent=2, default=float) + "\n")
    return {"report_md": md, "report_json": js}
