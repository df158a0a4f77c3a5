"""The continual-learning scenario: cohorts of new users stream digits through the real model
server; monitoring alerts and triggers retraining (through Prefect, or in-process); new champions
are validated, promoted and hot-swapped; a report with plots and continual-learning metrics.

  load_scenario(path)        the cohorts and their schedule (configs/scenario.yaml)
  Cohorts                    each cohort's stream and held-out evaluation digits (shifted MNIST test)
  run_scenario(settings, …)  the whole run; returns the report data and writes report.md + plots

Accuracy matrix R[i][j]: the champion in service at the end of cohort i, on cohort j's held-out
digits. ACC = mean_j R[T][j]; BWT = mean_{i<T} (R[T][i] - R[i][i]); forgetting of cohort j =
max_{i<T} R[i][j] - R[T][j] (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from deployment import orchestrate as orch
from deployment import serve as launch
from mnistcl import prefect_client
from mnistcl.datasets import find_mnist_csvs, read_mnist_csv
from mnistcl.images import to_uint8
from mnistcl.onnx_utils import OnnxModel
from mnistcl.settings import read_yaml
from mnistcl.shifts import SHIFTS, apply
from mnistcl.stores import stores
from monitoring.check import run_check
from monitoring.rules import DEFAULT_CONFIG
from retraining.retrain import retrain
from scenario.report import write_report
from serving.client import ModelServer
from validation.gate import load_gate
from validation.shadow import announce_evidence, judge_challenger

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "scenario.yaml"


class ScenarioError(ValueError):
    """The scenario file is invalid; the message names the field."""


@dataclass
class Cohort:
    name: str
    shifts: dict[str, float]


@dataclass
class Scenario:
    cohorts: list[Cohort]
    seed: int | None = None  # None: the settings' seed (one seed drives everything)
    stream_images: int = 1000
    eval_images: int = 400
    digits_per_request: tuple[int, int] = (1, 4)
    feedback_fraction: float = 0.6
    feedback_delay: int = 25
    strategy: str = "finetune-replay"
    monitoring: dict = field(default_factory=dict)
    source: str = ""


def load_scenario(path: Path | str | None = None, **overrides) -> Scenario:
    path = Path(path) if path else DEFAULT_SCENARIO
    raw = read_yaml(path, "scenario file", ScenarioError)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {"seed", "stream_images", "eval_images", "digits_per_request", "feedback", "strategy", "monitoring",
             "cohorts"}
    if set(raw) - known:
        raise ScenarioError(f"scenario {path}: unknown fields {sorted(set(raw) - known)}")
    cohorts = []
    for i, c in enumerate(raw.get("cohorts") or []):
        if not isinstance(c, dict) or not c.get("name"):
            raise ScenarioError(f"scenario {path}: cohort {i} needs a name")
        shifts = c.get("shifts") or {}
        bad = [k for k in shifts if k not in SHIFTS]
        if bad:
            raise ScenarioError(f"cohort {c['name']!r}: unknown shifts {bad}; known: {', '.join(sorted(SHIFTS))}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in shifts.values()):
            raise ScenarioError(f"cohort {c['name']!r}: shift severities must be numbers, got {shifts}")
        cohorts.append(Cohort(str(c["name"]), {k: float(v) for k, v in shifts.items()}))
    if not cohorts:
        raise ScenarioError(f"scenario {path}: no cohorts")
    fb = raw.get("feedback") or {}
    lo, hi = raw.get("digits_per_request", [1, 4])
    sc = Scenario(cohorts=cohorts, seed=None if raw.get("seed") is None else int(raw["seed"]),
                  stream_images=int(raw.get("stream_images", 1000)),
                  eval_images=int(raw.get("eval_images", 400)), digits_per_request=(int(lo), int(hi)),
                  feedback_fraction=float(fb.get("fraction", 0.6)), feedback_delay=int(fb.get("delay_requests", 25)),
                  strategy=str(raw.get("strategy", "finetune-replay")), monitoring=raw.get("monitoring") or {},
                  source=str(path))
    if not 0 <= sc.feedback_fraction <= 1:
        raise ScenarioError(f"feedback.fraction must be in [0, 1], got {sc.feedback_fraction}")
    if not 1 <= lo <= hi <= 64:
        raise ScenarioError(f"digits_per_request must be [low, high] within 1-64, got {[lo, hi]}")
    if sc.stream_images < 1 or sc.eval_images < 1:
        raise ScenarioError("stream_images and eval_images must be positive")
    return sc


class Cohorts:
    """Each cohort's stream and evaluation digits: disjoint MNIST test digits, shifted."""
    def __init__(self, sc: Scenario, xt: np.ndarray, yt: np.ndarray):
        need = len(sc.cohorts) * (sc.stream_images + sc.eval_images)
        if need > len(xt):
            raise ScenarioError(f"{len(sc.cohorts)} cohorts x {sc.stream_images + sc.eval_images} digits need {need} "
                                f"test digits; MNIST has {len(xt)}")
        rng = np.random.default_rng(sc.seed)
        order = rng.permutation(len(xt))
        self.stream, self.eval = [], []
        k = 0
        for c in sc.cohorts:
            s_idx = order[k:k + sc.stream_images]
            e_idx = order[k + sc.stream_images:k + sc.stream_images + sc.eval_images]
            k += sc.stream_images + sc.eval_images
            crng = np.random.default_rng(rng.integers(2**31))
            self.stream.append((to_uint8(apply(xt[s_idx], c.shifts, crng)), yt[s_idx]))
            self.eval.append((to_uint8(apply(xt[e_idx], c.shifts, crng)), yt[e_idx]))
        self.rest = (xt[order[k:]], yt[order[k:]])  # test digits no cohort uses


def cl_metrics(R: np.ndarray) -> dict[str, Any]:
    T = len(R) - 1
    acc = float(R[T].mean())
    bwt = float(np.mean([R[T, i] - R[i, i] for i in range(T)])) if T else 0.0
    forgetting = [float(max(R[i, j] for i in range(T)) - R[T, j]) if T and j < T else 0.0 for j in range(len(R))]
    return {"ACC": acc, "BWT": bwt, "forgetting": forgetting, "mean_forgetting": float(np.mean(forgetting[:T])) if T else 0.0}


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_scenario(settings, sc: Scenario, out_dir: Path, *, orchestrator: str = "prefect", log=_say) -> dict[str, Any]:
    """Run the scenario against the registry's champion; write the report to ``out_dir``."""
    t_start = time.time()
    if sc.seed is None:
        sc = replace(sc, seed=settings.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, reg = stores(settings)
    static_version = reg.resolve("champion")
    cache = out_dir / "cache"
    static = OnnxModel(reg.fetch(static_version, "onnx", cache))
    # A fresh working home for this run (prediction log, monitoring state, outbox, events); the
    # store and the experiment store are the system's own.
    run = settings.model_copy(update={"home": out_dir / "run", "storage_url": settings.store_url,
                                      "experiments_db": settings.experiments_location, "predictions_db": ""})
    base = read_yaml(Path(settings.monitoring_config or DEFAULT_CONFIG), "monitoring config", ScenarioError)
    for key, val in sc.monitoring.items():
        base[key] = {**(base.get(key) or {}), **val} if isinstance(val, dict) else val
    base.setdefault("trigger", {})["strategy"] = sc.strategy
    (out_dir / "monitoring.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    run = run.model_copy(update={"monitoring_config": str(out_dir / "monitoring.yaml")})
    xt, yt = read_mnist_csv(find_mnist_csvs()[1], "test")
    cohorts = Cohorts(sc, xt, yt)
    log(f"scenario: {len(sc.cohorts)} cohorts x {sc.stream_images} digits through the server, static model "
        f"{static_version}; retraining via {orchestrator}")

    procs: list[subprocess.Popen] = []
    prefect_api = None
    try:
        if orchestrator == "prefect":
            port = launch.free_port()
            prefect_api = f"http://127.0.0.1:{port}/api"
            phome = out_dir / "prefect"
            procs.append(orch.start_server(phome, port, out_dir / "prefect-server.log"))
            if not orch.wait_for_api(prefect_api):
                raise RuntimeError(f"the Prefect server did not start; see {out_dir / 'prefect-server.log'}")
            orch.create_pools(prefect_api, phome, kubernetes=False)
            orch.deploy(prefect_api, phome, ["retrain", "judge"])
            os.environ["PREFECT_API_AUTH_STRING"] = orch.auth_string(phome)  # this process's client too
            run = run.model_copy(update={"prefect_api_url": prefect_api})
            # The retrain flow runs the worker starts read this run's settings from the environment.
            env = {"MNISTCL_HOME": str(run.home), "MNISTCL_STORAGE_URL": run.storage_url,
                   "MNISTCL_EXPERIMENTS_DB": run.experiments_db, "MNISTCL_MONITORING_CONFIG": run.monitoring_config,
                   "MNISTCL_PREFECT_API_URL": prefect_api, "MNISTCL_WANDB_MODE": settings.wandb_mode,
                   "MNISTCL_SEED": str(run.seed)}
            procs.append(orch.start_worker(prefect_api, phome, out_dir / "prefect-worker.log", env=env))
            log(f"Prefect server {prefect_api.removesuffix('/api')}: deployments retrain/retrain and judge/judge, "
                "worker on mnistcl-local")
        sport = launch.free_port()
        procs.append(launch.start(run.store_url, run.predictions_db_path, cache / "server", out_dir / "server.log",
                                  port=sport, metrics_port=launch.free_port(), poll_s=0.5,
                                  feedback_tokens=run.feedback_tokens_value()))
        url = f"http://127.0.0.1:{sport}"
        log(f"model server {url} serving {static_version}")
        result = _stream(run, sc, cohorts, static, static_version, url, prefect_api, out_dir, log)
    finally:
        for p in reversed(procs):
            launch.stop(p)
    result["seconds"] = time.time() - t_start
    result["orchestrator"] = orchestrator

    write_report(result, out_dir, run)
    return result


def _stream(run, sc, cohorts, static, static_version, url, prefect_api, out_dir, log):
    _, reg = stores(run)
    gate_cfg = load_gate()
    seen_runs: set[str] = set()  # retrain and judge flow runs already waited for
    judgements: list[dict] = []
    rng = np.random.default_rng(sc.seed + 1)
    server = ModelServer(url, timeout=60, feedback_token=run.feedback_token_value())
    windows: list[dict] = []
    events: list[dict] = []
    R, R_static = [], []
    pending: list[tuple[int, str, list[int]]] = []  # (due request number, request id, labels)
    n_req = 0
    served_version = static_version
    win_served, win_static, win_n, win_versions = 0, 0, 0, set()
    images_total = 0

    def send_due(force=False):
        nonlocal pending
        keep = []
        for due, rid, labels in pending:
            if force or due <= n_req:
                server.feedback(rid, labels)
            else:
                keep.append((due, rid, labels))
        pending = keep

    def wait_for_swap(version: str, timeout=60.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if server.model_version() == version:
                return True
            time.sleep(0.3)
        return False

    def close_window(cohort_idx: int, final: bool):
        nonlocal win_served, win_static, win_n, win_versions, served_version
        if win_n == 0:
            return
        send_due(force=final)
        res = run_check(run)
        w = {"index": len(windows), "cohort": cohort_idx, "cohort_name": sc.cohorts[cohort_idx].name,
             "images": win_n, "images_total": images_total, "accuracy": win_served / win_n,
             "static_accuracy": win_static / win_n, "served_versions": sorted(win_versions), "check": res.status}
        if res.status == "checked":
            low = next((r.share for r in res.prediction_rules if r.name == "low_confidence"), None)
            w.update(drift_share=res.drift.share, drifted=res.drift.drifted, low_confidence=low, breach=res.breach,
                     reasons=res.reasons, decision=res.decision.reason, check_folder=res.folder,
                     drift_report=res.drift.report_html,
                     alerts=[a.get("path") or a.get("subject") for a in res.alerts],
                     events=[e["event"] for e in res.events],
                     estimated_accuracy=(res.estimate or {}).get("accuracy"),
                     estimate_method=(res.estimate or {}).get("method"))
            log(f"  window {w['index']:2d} ({w['cohort_name']}): served accuracy {w['accuracy']:.3f} "
                f"(static {w['static_accuracy']:.3f}"
                + (f", label-free estimate {w['estimated_accuracy']:.3f}" if res.estimate else "")
                + f"), drift {res.drift.share:.2f}, low confidence {low:.2f}"
                + (f" -> {', '.join(w['events'])}" if res.events else ""))
            # As the monitor flow does: a challenger's judgement due (not when retraining supersedes it)?
            ev = announce_evidence(run, gate_cfg, retraining=res.decision.retrain)
            if ev:
                w["judgement"] = _judge(run, gate_cfg, prefect_api, seen_runs, log)
                if w["judgement"].get("verdict") == "promote":
                    champion = w["judgement"]["challenger"]
                    w["judgement"]["hot_swapped"] = wait_for_swap(champion)
                    served_version = champion
                judgements.append({"window": w["index"], **{k: w["judgement"].get(k) for k in (
                    "verdict", "why", "challenger", "champion", "n", "estimate", "interval")}})
            if res.decision.retrain:
                w["retrain"] = _retrain(run, sc, prefect_api, seen_runs, log)
                gate = w["retrain"].get("gate") or {}
                promoted = gate.get("promoted")
                if promoted:
                    swapped = wait_for_swap(promoted["version"])
                    w["retrain"]["hot_swapped"] = swapped
                    served_version = promoted["version"]
                    log(f"  promoted {promoted['version']} (was {promoted['previous']}); server hot-swapped: {swapped}")
                elif gate.get("challenger"):
                    log(f"  {gate['challenger']['version']} is challenger: shadowed until labelled traffic decides")
                events.append({"window": w["index"], **{k: w["retrain"].get(k) for k in ("status", "why", "seconds")},
                               "version": gate.get("version"), "verdict": gate.get("verdict"),
                               "promoted": bool(promoted), "challenger": bool(gate.get("challenger"))})
        windows.append(w)
        win_served = win_static = win_n = 0
        win_versions = set()

    window_size = int(sc.monitoring.get("window", {}).get("images", 500))
    lo, hi = sc.digits_per_request
    for ci, cohort in enumerate(sc.cohorts):
        x, y = cohorts.stream[ci]
        log(f"cohort {ci + 1}/{len(sc.cohorts)}: {cohort.name} {cohort.shifts or '(no shift)'}")
        i = 0
        static_pred = static.predict(x).argmax(1)
        while i < len(x):
            k = int(rng.integers(lo, hi + 1))
            xb, yb = x[i:i + k], y[i:i + k]
            tags = server.predict(xb)
            digits = [int(d) for d in tags["digits"]]
            win_served += int(sum(int(d == t) for d, t in zip(digits, yb, strict=True)))
            win_static += int((static_pred[i:i + k] == yb).sum())
            win_n += len(yb)
            win_versions.add(tags["model_version"])
            images_total += len(yb)
            n_req += 1
            if rng.random() < sc.feedback_fraction:
                pending.append((n_req + sc.feedback_delay, tags["request_id"], [int(v) for v in yb]))
            send_due()
            i += k
            if win_n >= window_size:
                close_window(ci, final=False)
        close_window(ci, final=True)
        champ = reg.resolve("champion")
        model = OnnxModel(reg.fetch(champ, "onnx", out_dir / "cache"))
        R.append([model.accuracy(*cohorts.eval[j]) for j in range(len(sc.cohorts))])
        R_static.append([static.accuracy(*cohorts.eval[j]) for j in range(len(sc.cohorts))])
        log(f"  end of {cohort.name}: champion {champ}, held-out accuracy on this cohort {R[-1][ci]:.3f} "
            f"(static {R_static[-1][ci]:.3f})")
    server.close()
    R_arr, S_arr = np.array(R), np.array(R_static)
    return {"scenario": sc.source, "cohorts": [{"name": c.name, "shifts": c.shifts} for c in sc.cohorts],
            "static_version": static_version, "final_champion": reg.resolve("champion"), "windows": windows,
            "retrains": events, "judgements": judgements, "R": R_arr.tolist(), "R_static": S_arr.tolist(), "metrics": cl_metrics(R_arr),
            "metrics_static": cl_metrics(S_arr), "requests": n_req, "images": images_total,
            "strategy": sc.strategy}


def _retrain(run, sc, prefect_api, seen_runs: set[str], log) -> dict:
    """Wait for the retraining the event started (Prefect), or run it here (local)."""
    t0 = time.time()
    if prefect_api is None:

        log("  retraining (in-process) ...")
        out = retrain(run, strategy=sc.strategy, reason="scenario: monitoring breach", cooldown_hours=0)
        out["seconds"] = time.time() - t0
        return out
    log("  waiting for the retrain flow run the event started in Prefect ...")
    return _await_flow_run(prefect_api, "retrain/retrain", seen_runs, t0)


def _judge(run, gate_cfg, prefect_api, seen_runs: set[str], log) -> dict:
    """Wait for the judgement the evidence event started (Prefect), or judge here (local)."""
    t0 = time.time()
    if prefect_api is None:

        out = judge_challenger(run, gate_cfg)
    else:
        log("  waiting for the judge flow run the evidence event started in Prefect ...")
        out = _await_flow_run(prefect_api, "judge/judge", seen_runs, t0)
    if out.get("verdict"):
        log(f"  challenger judgement: {out['verdict']}: {out['why']}")
    out["seconds"] = time.time() - t0
    return out


def _await_flow_run(prefect_api: str, deployment: str, seen_runs: set[str], t0: float) -> dict:
    """The next flow run of ``deployment`` an event started, awaited; its return value is the
    flow's persisted result (mnistcl.prefect_client)."""
    deadline = time.time() + 900
    run_id = None
    while time.time() < deadline:
        runs = [r for r in prefect_client.flow_runs(prefect_api, deployment)
                if str(r.parameters.get("reason", "")).startswith("mnistcl.")]
        fresh = [r for r in runs if str(r.id) not in seen_runs]
        if fresh:
            run_id = str(fresh[0].id)
            seen_runs.add(run_id)
            break
        time.sleep(1)
    if run_id is None:
        return {"status": "failed", "why": f"no {deployment} flow run appeared in Prefect", "seconds": time.time() - t0}
    try:
        fr, value = prefect_client.run_result(prefect_api, run_id, timeout=max(deadline - time.time(), 1))
    except prefect_client.PrefectError as exc:
        return {"status": "failed", "why": str(exc), "seconds": time.time() - t0, "flow_run_id": run_id}
    state = fr.state.type.value if fr.state else "UNKNOWN"
    result = dict(value) if isinstance(value, dict) else {"status": state.lower(),
                                                          "why": (fr.state.message if fr.state else "") or ""}
    result.update(seconds=time.time() - t0, flow_run=fr.name, flow_run_id=run_id, flow_state=state)
    return result


def run_seeds(settings, sc: Scenario, out_dir: Path, seeds: list[int], *, orchestrator: str = "prefect",
              log=_say) -> dict[str, Any]:
    """The scenario once per seed, each from the same champion on its own copy of the local store
    (so one run's promotions never start the next), then mean and standard deviation."""
    import shutil

    if settings.store_url.startswith("s3://"):
        raise ScenarioError("several seeds copy the local store once per run; point storage_url at a local folder")
    out_dir = Path(out_dir)
    runs = []
    for seed in seeds:
        d = out_dir / f"seed-{seed}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copytree(settings.store_url, d / "store", ignore=shutil.ignore_patterns("*.tmp"))
        log(f"seed {seed}: a copy of the store in {d / 'store'}")
        runs.append(run_scenario(settings.model_copy(update={"seed": seed, "storage_url": str(d / "store")}),
                                 replace(sc, seed=seed), d, orchestrator=orchestrator, log=log))
    summary = summarise_seeds(runs, seeds)
    (out_dir / "seeds.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def drift_episodes(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each cohort after the first is a drift episode; it ends with a better champion when the
    champion at its end reads its held-out digits better than the champion at its start did."""
    R = np.array(result["R"])
    out = []
    for i in range(1, len(R)):
        out.append({"cohort": result["cohorts"][i]["name"], "start": float(R[i - 1][i]), "end": float(R[i][i]),
                    "better": bool(R[i][i] > R[i - 1][i])})
    return out


def summarise_seeds(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    def ms(values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, np.float64)
        return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0

    per = []
    for seed, r in zip(seeds, runs, strict=True):
        names = [c["name"] for c in r["cohorts"]]
        eps = drift_episodes(r)
        est = [(w["estimated_accuracy"], w["accuracy"]) for w in r["windows"] if w.get("estimated_accuracy") is not None]
        per.append({"seed": seed, "ACC": r["metrics"]["ACC"], "BWT": r["metrics"]["BWT"],
                    "mean_forgetting": r["metrics"]["mean_forgetting"], "static_ACC": r["metrics_static"]["ACC"],
                    "retrainings": len(r["retrains"]), "promotions": sum(e["promoted"] for e in r["retrains"])
                    + sum(j.get("verdict") == "promote" for j in r.get("judgements", [])),
                    "challengers": sum(e.get("challenger", False) for e in r["retrains"]),
                    "final_held_out": dict(zip(names, r["R"][-1], strict=True)),
                    "episodes": eps, "episodes_better": sum(e["better"] for e in eps),
                    "estimate_mae": float(np.mean([abs(a - b) for a, b in est])) if est else None,
                    "seconds": r["seconds"], "final_champion": r["final_champion"]})
    acc, bwt, promo = ms([p["ACC"] for p in per]), ms([p["BWT"] for p in per]), ms([p["promotions"] for p in per])
    return {"seeds": seeds, "acc_mean": acc[0], "acc_sd": acc[1], "bwt_mean": bwt[0], "bwt_sd": bwt[1],
            "promotions_mean": promo[0], "promotions_sd": promo[1],
            "static_acc_mean": ms([p["static_ACC"] for p in per])[0],
            "episodes_better_min": min(p["episodes_better"] for p in per),
            "episodes": len(per[0]["episodes"]) if per else 0,
            "estimate_mae_mean": (float(np.mean([p["estimate_mae"] for p in per if p["estimate_mae"] is not None]))
                                  if any(p["estimate_mae"] is not None for p in per) else None),
            "per_seed": per}
