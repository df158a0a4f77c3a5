"""After a sweep: validate the best candidates against the champion, register, promote.

Plain functions (no Prefect); ``flows/train.py`` wraps them in tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnistcl.datasets import DatasetStore
from mnistcl.registry import Registry, RegistryError
from mnistcl.storage import open_storage
from mnistcl.validate import GateConfig, load_gate, report_files, validate


def stores(settings) -> tuple[DatasetStore, Registry]:
    storage = open_storage(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url)
    return DatasetStore(storage), Registry(storage)


def eval_slices(settings, dataset: str) -> dict:
    ds_store, _ = stores(settings)
    return ds_store.load(dataset).slices


def validate_candidate(settings, cfg: GateConfig, onnx_path: Path, dataset: str, *, name: str,
                       report_dir: Path, champion: str | None = "champion", slices: dict | None = None,
                       champion_cache: dict | None = None):
    """Gate one ONNX file against the current champion (if any) on the dataset's slices.

    When several candidates are gated in a row, pass the loaded ``slices`` and one
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
    cache = champion_cache if champion_cache is not None else {}
    rep = validate(cfg, Path(onnx_path), slices if slices is not None else eval_slices(settings, dataset),
                   candidate=name, champion_onnx=champ_onnx, champion=champ_id, champion_metrics=cache.get(champ_id))
    if champ_id and rep.champion_metrics is not None and champ_id not in cache:
        cache[champ_id] = {k: v for k, v in rep.champion_metrics.items() if k != "speed"}
    files = report_files(rep, report_dir)
    return rep, files


def validate_register_promote(settings, summary: dict, *, gate_path: Path | None = None,
                              experiments: dict[int, dict] | None = None) -> dict[str, Any]:
    """Validate the sweep's best ``cfg.candidates`` runs, register each, promote the best passing one."""
    from mnistcl.experiments import ExperimentStore

    cfg = load_gate(gate_path)
    _, reg = stores(settings)
    exps = ExperimentStore(settings.experiments_db_path)
    done = [r for r in summary["leaderboard"] if r["status"] == "completed"][: max(cfg.candidates, 1)]
    champion_before = reg.alias("champion")
    out: dict[str, Any] = {"champion_before": champion_before, "registered": [], "promoted": None,
                           "mode": cfg.mode, "reports": {}}
    slices = eval_slices(settings, summary["dataset"]) if done else {}
    champion_cache: dict = {}
    for row in done:
        e = exps.get(row["id"]).row
        report_dir = settings.home_dir / "reports" / f"experiment-{e['id']}"
        rep, files = validate_candidate(settings, cfg, Path(e["onnx_path"]), summary["dataset"],
                                        name=f"experiment {e['id']} ({e['family']})", report_dir=report_dir,
                                        slices=slices, champion_cache=champion_cache)
        mv = reg.register(
            files={"onnx": Path(e["onnx_path"]), "native": Path(e["native_path"])}, family=e["family"],
            config=e.get("config") or {}, params=e["params"], dataset=summary["dataset"], experiment_id=e["id"],
            sweep=e["sweep"], metrics={k: e[k] for k in ("val_accuracy", "val_loss", "wall_s", "cpu_s", "param_count", "flops")},
            validation=rep.to_json(), gate_passed=rep.passed,
            reports={"report_md": rep.to_markdown(), "report_json": json.dumps(rep.to_json(), indent=2, default=float)},
        )
        # The report names the registered version from now on.
        md = files["report_md"]
        md.write_text(md.read_text().replace(f"# Validation report: {rep.candidate}",
                                             f"# Validation report: {mv.id} ({rep.candidate})", 1))
        out["registered"].append({"version": mv.id, "experiment": e["id"], "family": e["family"],
                                  "passed": rep.passed, "violations": [v.text() for v in rep.violations],
                                  "accuracy": rep.metrics.get("accuracy", {}), "gate_seconds": rep.seconds,
                                  "report_md": str(files["report_md"]), "report_json": str(files["report_json"])})
        out["reports"][mv.id] = str(files["report_md"])
    passing = [r for r in out["registered"] if r["passed"]]
    if passing:
        best = max(passing, key=lambda r: (r["accuracy"].get("newest", 0.0), r["accuracy"].get("mnist-test", 0.0)))
        reason = (f"sweep {summary['sweep']}: best passing of {len(out['registered'])} validated "
                  f"(newest-slice accuracy {best['accuracy'].get('newest', 0):.4f}, gate {cfg.mode})")
        try:
            move = reg.promote(best["version"], cfg.promote_to, reason=reason, force=cfg.mode != "enforced")
            out["promoted"] = {"version": best["version"], "alias": cfg.promote_to, "seq": move.seq,
                               "previous": move.previous}
        except RegistryError as exc:
            out["promotion_error"] = str(exc)
    out["champion_after"] = reg.alias("champion")
    return out
