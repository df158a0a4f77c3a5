"""Gate, register, act on the verdict: the one path every new model takes (a sweep's best runs,
a retraining's candidate, `mnistcl models validate`).

  gate_inputs(settings, dataset, cfg)   the dataset's evaluation slices and their objective weights
  validate_candidate(...)               the gate against the current champion, reports written
  register_and_act(...)                 register the version with its report, then move aliases:
                                        promote -> champion (a challenger it beats is retired),
                                        challenger -> challenger (shadowed until the evidence decides),
                                        reject -> nothing
  validate_register_promote(...)        after a sweep: the best ``cfg.candidates`` runs through the above

Plain functions (no Prefect): flows/train.py and the retraining call them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnistcl.experiments import ExperimentStore, experiment_files
from mnistcl.registry import Registry, RegistryError
from mnistcl.stores import stores
from validation.gate import GateConfig, GateReport, load_gate, report_files, validate
from validation.objective import traffic_weights


def gate_inputs(settings, dataset: str, cfg: GateConfig) -> tuple[dict, dict[str, float]]:
    """Evaluation slices of ``dataset`` and each slice's weight in the objective (its share of the
    recent labelled production traffic; MNIST test as the long-run base)."""
    ds_store, _ = stores(settings)
    data = ds_store.load(dataset)
    batches = []
    for v in data.manifest.lineage[1:]:
        if v in data.slices:
            own = ds_store.manifest(v).counts
            batches.append((v, sum(own.get("train", [])) + sum(own.get("eval", []))))
    return data.slices, traffic_weights(batches, cfg.objective)


def validate_candidate(settings, cfg: GateConfig, onnx_path: Path, dataset: str, *, name: str,
                       report_dir: Path, champion: str | None = "champion", inputs: tuple | None = None,
                       champion_cache: dict | None = None) -> tuple[GateReport, dict[str, Path]]:
    """Gate one ONNX file against the current champion (if any) on the dataset's slices.

    When several candidates are gated in a row, pass ``inputs`` (from gate_inputs) and one
    ``champion_cache`` dict: the dataset is then read once and the champion measured once.
    """
    _, reg = stores(settings)
    champ_id = champ_onnx = None
    if champion:
        try:
            champ_id = reg.resolve(champion)
            champ_onnx = reg.fetch(champ_id, "onnx", settings.home_dir / "cache" / "models")
        except RegistryError:
            champ_id = champ_onnx = None
    slices, weights = inputs if inputs is not None else gate_inputs(settings, dataset, cfg)
    cache = champion_cache if champion_cache is not None else {}
    rep, champ_measured = validate(cfg, Path(onnx_path), slices, weights=weights, candidate=name,
                                   champion_onnx=champ_onnx, champion=champ_id, champion_measured=cache.get(champ_id))
    if champ_id and champ_measured is not None:
        cache[champ_id] = champ_measured
    return rep, report_files(rep, report_dir)


def retire_challenger(reg: Registry, reason: str, keep: str | None = None) -> str | None:
    """Clear the challenger alias (unless it is ``keep``); returns the retired version."""
    current = reg.alias("challenger")
    if current is None or current == keep:
        return None
    reg.move_alias("challenger", None, reason=reason, expect=current)
    return current


def act_on_verdict(reg: Registry, cfg: GateConfig, version: str, rep: GateReport, reason: str) -> dict[str, Any]:
    """Move the aliases the verdict asks for; returns what moved."""
    out: dict[str, Any] = {"promoted": None, "challenger": None, "retired": None}
    try:
        if rep.passed:  # promote (or any verdict in dry-run / disabled mode: reported, never blocking)
            move = reg.promote(version, cfg.promote_to, reason=reason, force=cfg.mode != "enforced")
            out["promoted"] = {"version": version, "alias": cfg.promote_to, "seq": move.seq, "previous": move.previous}
            if cfg.promote_to == "champion":
                out["retired"] = retire_challenger(reg, f"retired: {version} became champion", keep=None)
        elif rep.verdict == "challenger":
            move = reg.promote(version, "challenger", reason=f"{reason}; shadowed: {rep.reason}")
            out["challenger"] = {"version": version, "seq": move.seq, "previous": move.previous}
    except RegistryError as exc:
        out["promotion_error"] = str(exc)
    return out


def register_and_act(settings, cfg: GateConfig, rep: GateReport, files: dict[str, Path], reports: dict[str, Path],
                     *, reason: str, act: bool = True, **record) -> dict[str, Any]:
    """Register a gated model (its report files ``reports`` beside it) and, with ``act``, move
    aliases by the verdict."""
    _, reg = stores(settings)
    mv = reg.register(files={"onnx": files["onnx"], "native": files["native"]}, validation=rep.to_json(),
                      gate_passed=rep.passed, gate_verdict=rep.verdict,
                      reports={"report_md": rep.to_markdown(), "report_json": json.dumps(rep.to_json(), default=float)},
                      **record)
    md = reports["report_md"]  # the report names the registered version from now on
    md.write_text(md.read_text().replace(f"# Validation report: {rep.candidate}",
                                         f"# Validation report: {mv.id} ({rep.candidate})", 1))
    out = {"version": mv.id, "passed": rep.passed, "verdict": rep.verdict, "why": rep.reason,
           "violations": [v.text() for v in rep.violations], "accuracy": rep.metrics.get("accuracy", {}),
           "objective": rep.metrics.get("objective"), "decision": rep.decision, "gate_seconds": rep.seconds,
           "champion_accuracy": (rep.champion_metrics or {}).get("accuracy", {}),
           "report_md": str(reports["report_md"]), "report_json": str(reports["report_json"]),
           "promoted": None, "challenger": None}
    if act:
        out.update(act_on_verdict(reg, cfg, mv.id, rep, reason))
    return out


def _rank(r: dict) -> tuple:
    return ((r.get("decision") or {}).get("objective", {}).get("estimate", 0.0), r.get("objective") or 0.0)


def validate_register_promote(settings, summary: dict, *, gate_path: Path | None = None) -> dict[str, Any]:
    """Validate the sweep's best ``cfg.candidates`` runs, register each, then act on the best verdict:
    the best promotable run by the objective becomes champion; failing that, the best challenger."""
    cfg = load_gate(gate_path)
    _, reg = stores(settings)
    exps = ExperimentStore(settings.experiments_location)
    done = [r for r in summary["leaderboard"] if r["status"] == "completed"][: max(cfg.candidates, 1)]
    out: dict[str, Any] = {"champion_before": reg.alias("champion"), "registered": [], "promoted": None,
                           "challenger": None, "mode": cfg.mode, "reports": {}}
    inputs = gate_inputs(settings, summary["dataset"], cfg) if done else None
    champion_cache: dict = {}
    gate_reports = {}
    # The best of several is promoted: each is gated at the gate's share over their number.
    cfg = cfg.model_copy(update={"compared": max(len(done), 1)})
    storage = stores(settings)[0].storage
    for row in done:
        e = exps.get(row["id"]).row
        model = experiment_files(storage, e, settings.home_dir / "cache")  # trained in another pod, perhaps
        rep, files = validate_candidate(settings, cfg, model["onnx"], summary["dataset"],
                                        name=f"experiment {e['id']} ({e['family']})",
                                        report_dir=settings.home_dir / "reports" / f"experiment-{e['id']}",
                                        inputs=inputs, champion_cache=champion_cache)
        r = register_and_act(
            settings, cfg, rep, model, files,
            reason="", act=False, family=e["family"], config=e.get("config") or {}, params=e["params"],
            dataset=summary["dataset"], experiment_id=e["id"], sweep=e["sweep"],
            metrics={k: e[k] for k in ("val_accuracy", "val_loss", "wall_s", "cpu_s", "param_count", "flops")})
        r.update(experiment=e["id"], family=e["family"])
        gate_reports[r["version"]] = rep
        out["registered"].append(r)
        out["reports"][r["version"]] = r["report_md"]
    for want in ("promote", "challenger"):
        pool = [r for r in out["registered"] if (r["passed"] if want == "promote" else r["verdict"] == want)]
        if pool:
            best = max(pool, key=_rank)
            reason = (f"sweep {summary['sweep']}: best {'passing' if want == 'promote' else 'unproven'} of "
                      f"{len(out['registered'])} validated ({gate_reports[best['version']].reason}; gate {cfg.mode})")
            out.update(act_on_verdict(reg, cfg, best["version"], gate_reports[best["version"]], reason))
            break
    out["champion_after"] = reg.alias("champion")
    return out
