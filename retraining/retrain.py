"""Retraining: new labelled production data in, a validated (maybe promoted) model out.

Plain functions; flows/retrain.py runs them as a Prefect flow. One retraining at a time (an
lease in the shared store, monitoring.state), and not again within the cooldown unless forced; a
retraining whose process died (a killed pod: started, never finished) is run again once by the
next trigger, without waiting for the cooldown.

  1. data      the newly labelled production inputs (feedback since the last retraining) become
               a new dataset version on top of the latest one
  2. train     finetune-replay: the champion's weights, trained on the new data (and two
               augmented copies of it) plus twice as many replayed old images drawn evenly from
               every earlier slice, distilled toward the champion's own answers on the replayed
               ones, at half its learning rate, 12 epochs (default)
               full: the champion's family and configuration from scratch on all data so far
               automl: the AutoML sweep (quick profile) on the new version, with its own gate
  3. validate  the gate against the champion on the same images (validation/gate.py): better on the
               recent traffic mix, or on the newest batch and no worse than a margin on the mix,
               with confidence (two claims sharing the error); no slice confidently forgotten
  4. promote   promote: champion (the model server hot-swaps to it); not enough evidence:
               challenger (shadowed beside the champion until labelled traffic decides)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistcl.events import announce_dataset_version
from mnistcl.predictions import append_feedback
from mnistcl.predlog import PredictionLog
from mnistcl.registry import RegistryError
from mnistcl.stores import stores
from mnistcl.tracking import tracker as make_tracker
from models.common import NullReporter, TrainData
from models.finetune import finetune
from models.search import family_module
from monitoring.rules import load_config
from monitoring.state import RetrainBusy, died, monitor_state, retrain_lease
from retraining.augment import augment_labelled
from validation.gate import eval_fraction, load_gate
from validation.promote import register_and_act, validate_candidate

STRATEGIES = ("finetune-replay", "full", "automl")
# Fine-tuning recipe, chosen with bench/continual.py on the demo's cohorts: 12 epochs at half the
# champion's learning rate over the new digits plus twice as many replayed older ones. With 40%
# of each batch held out for the gate, ACC over 2 seeds: 5 epochs 0.939, 8 0.949, 12 0.955,
# 16 0.957 (3.2x the compute of 5); replay 1:1 at 5 epochs 0.932, 3:1 at 8 epochs 0.950.
FINETUNE_EPOCHS = 12
# Replay drawn evenly from every earlier dataset version (MNIST and each production batch), not
# uniformly from the pool (which is nearly all MNIST): chosen with bench/continual.py.
REPLAY_BY = "slice"
# Transformed copies of each new digit (retraining/augment.py: small rotation, scale, shift), on
# top of the new digits and their replay: a few hundred labelled digits of a new handwriting are
# seen in more positions. Chosen with bench/continual.py (docs/training.md): 0 turns it off.
AUGMENT_COPIES = 2
# Distillation on the replayed digits (models/finetune.py, torchnet): their loss also pulls toward
# the champion's own probabilities. Chosen with bench/continual.py (docs/benchmarks.md): 0 turns it off.
DISTILL = 1.0


@dataclass
class PreparedData:
    dataset: str
    created: bool          # a new version was made from feedback
    n_feedback: int
    champion: str | None
    champion_dataset: str | None


def _log(msg: str) -> None:
    print(msg, flush=True)


def prepare_data(settings, gate_cfg, log=_log) -> PreparedData:
    """Turn feedback labelled since the last retraining into a new dataset version; the held-out
    share of the batch is sized by the evidence the gate needs (validation.gate.eval_fraction)."""
    ds_store, reg = stores(settings)
    # The cursor is the store's own: the highest feedback number of this log any version holds.
    plog = PredictionLog(settings.predictions_db_path)
    start = ds_store.feedback_watermark(plog.identity(), plog.baseline("feedback_seq"))
    n_new = plog.count_labelled_after(start)
    created, n_feedback = False, 0
    if n_new:
        frac = eval_fraction(n_new, gate_cfg.evidence, gate_cfg.claim_alpha)
        m, _ = append_feedback(ds_store, plog, source="feedback: {n} labelled production inputs (retrain)",
                               parent=None, eval_fraction=frac, seed=settings.seed)
        if m is not None:
            ev = announce_dataset_version(m, settings, origin="retrain")
            log(f"dataset {m.id} = {m.parent} + {m.n_images} labelled production inputs (feedback "
                f"#{m.feedback_from + 1}-#{m.feedback_through}), {frac:.0%} held out for the gate "
                f"(event {ev['delivered']})")
            created, n_feedback = True, m.n_images
    try:
        champion = reg.resolve("champion")
        champion_dataset = reg.get(champion).dataset
    except RegistryError:
        champion = champion_dataset = None
    return PreparedData(dataset=ds_store.resolve(None), created=created, n_feedback=n_feedback, champion=champion,
                        champion_dataset=champion_dataset)


def balanced_counts(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` draws over groups as evenly as their sizes allow (water-filling)."""
    take = [0] * len(sizes)
    left = min(budget, sum(sizes))
    while left > 0:
        room = [i for i, n in enumerate(sizes) if take[i] < n]
        per = max(left // len(room), 1)
        for i in room:
            t = min(per, sizes[i] - take[i], left)
            take[i] += t
            left -= t
            if not left:
                break
    return take


def replay_indices(origin: np.ndarray, new: np.ndarray, n_replay: int, rng: np.random.Generator,
                   by: str = REPLAY_BY) -> np.ndarray:
    """Indices of ``n_replay`` old training images to replay: ``slice`` draws them evenly from
    every earlier dataset version (MNIST and each production batch), ``uniform`` from the pool."""
    old_idx = np.flatnonzero(~new)
    n_replay = min(len(old_idx), max(n_replay, 0))
    if by == "uniform" or not n_replay:
        return rng.choice(old_idx, n_replay, replace=False) if n_replay else old_idx[:0]
    if by != "slice":
        raise ValueError(f"replay must be drawn by slice or uniform, not {by!r}")
    groups = [old_idx[origin[old_idx] == o] for o in np.unique(origin[old_idx])]
    take = balanced_counts([len(g) for g in groups], n_replay)
    return np.concatenate([rng.choice(g, t, replace=False) for g, t in zip(groups, take, strict=True)])


def training_data(settings, prep: PreparedData, strategy: str, *, replay: float = 2.0, max_images: int | None = None,
                  seed: int = 0, replay_by: str = REPLAY_BY, augment_copies: int = AUGMENT_COPIES) -> tuple[TrainData, dict]:
    """The images a strategy trains on, and counts for the report."""
    ds_store, _ = stores(settings)
    data = ds_store.load(prep.dataset)
    lineage = data.manifest.lineage
    start = lineage.index(prep.champion_dataset) if prep.champion_dataset in lineage else -1
    new = data.train_origin > start
    rng = np.random.default_rng(seed)
    newest = list(data.slices)[-1]
    xv, yv = data.slices[newest]
    if strategy == "finetune-replay":
        new_idx = np.flatnonzero(new)
        old = replay_indices(data.train_origin, new, int(round(replay * len(new_idx))), rng, replay_by)
        idx = np.concatenate([new_idx, old])
        counts = {"new": int(len(new_idx)), "replayed": int(len(old)), "replayed_by": replay_by}
    else:
        idx = np.arange(len(data.train_y))
        if max_images and len(idx) > max_images:  # keep every new image, sample the old ones
            new_idx, old_idx = np.flatnonzero(new), np.flatnonzero(~new)
            keep = rng.choice(old_idx, max(max_images - len(new_idx), 0), replace=False)
            idx = np.concatenate([new_idx, keep])
        counts = {"new": int(new.sum()), "total": int(len(idx))}
    x, y = data.train_x[idx], data.train_y[idx]
    replayed = ~new[idx] if strategy == "finetune-replay" else None
    if strategy == "finetune-replay" and augment_copies > 0:  # new_idx: the new images, as above
        ax, ay = augment_labelled(data.train_x[new_idx], data.train_y[new_idx], augment_copies, rng)
        x, y = np.concatenate([x, ax]), np.concatenate([y, ay])
        replayed = np.concatenate([replayed, np.zeros(len(ay), bool)])
        counts["augmented"] = int(len(new_idx) * augment_copies)
    order = rng.permutation(len(y))
    return (TrainData(x[order], y[order], xv, yv, None if replayed is None else replayed[order]),
            {**counts, "val_slice": newest})


def train_candidate(settings, prep: PreparedData, strategy: str, td: TrainData, *, epochs: int | None,
                    out_dir: Path, seed: int = 0) -> tuple[dict[str, Path], dict[str, Any]]:
    """Train by strategy; returns the exported files and the family/config to register."""
    _, reg = stores(settings)
    if prep.champion is None:
        raise RuntimeError("no champion to retrain: train one first (mnistcl train)")
    champ = reg.get(prep.champion)
    if strategy == "finetune-replay":
        native = reg.fetch(prep.champion, "native", settings.home_dir / "cache" / "models")
        model = finetune(champ.family, native, champ.config, td, NullReporter(), epochs=epochs or FINETUNE_EPOCHS,
                         seed=seed, distill=DISTILL)
    elif strategy == "full":
        mod = family_module(champ.family)
        cfg = mod.Config(**{**champ.config, **({"epochs": epochs} if epochs else {}), "seed": seed})
        model = mod.train(td, cfg, NullReporter())
    else:
        raise ValueError(f"strategy {strategy!r} does not train a single candidate")
    files = model.export(out_dir)
    last = model.outcome.history[-1] if model.outcome.history else None
    return files, {"family": champ.family, "config": champ.config,
                   "metrics": {"val_accuracy": last.val_accuracy if last else None,
                               "train_images": int(len(td.y_train)), "epochs": len(model.outcome.history)}}


def gate_register_promote(settings, prep: PreparedData, files: dict[str, Path], info: dict, *, strategy: str,
                          reason: str, report_dir: Path, gate_cfg) -> dict[str, Any]:
    """The gate against the champion, then the registry and the verdict's alias moves."""
    rep, rfiles = validate_candidate(settings, gate_cfg, files["onnx"], prep.dataset, name=f"retrain ({strategy})",
                                     report_dir=report_dir)
    return register_and_act(settings, gate_cfg, rep, files, rfiles, reason=f"retrain ({strategy}) after {reason}",
                            family=info["family"], config=info["config"], dataset=prep.dataset,
                            metrics=info["metrics"], parent_model=prep.champion,
                            note=f"retrain ({strategy}): {reason}")


def _track(settings, prep: PreparedData, strategy: str, reason: str, counts: dict, files: dict[str, Path],
           gate: dict, train_seconds: float) -> None:
    """The retraining as a W&B run (job type retrain, group retrain): what it trained on, the
    gate's verdict, and the candidate's ONNX as artifact ``model-<version>`` (aliased by its verdict)."""
    tracker = make_tracker(settings, name=f"retrain-{gate['version']}", group="retrain", job_type="retrain",
                           config={"strategy": strategy, "reason": reason, "dataset": prep.dataset,
                                   "champion_before": prep.champion, "n_feedback": prep.n_feedback,
                                   "train_images": counts},
                           tags=["retrain", strategy])
    alias = gate["promoted"]["alias"] if gate.get("promoted") else "challenger" if gate.get("challenger") else None
    tracker.summary({"verdict": gate["verdict"], "status": _status(gate), "train_seconds": train_seconds,
                     **{f"accuracy/{s}": a for s, a in (gate.get("accuracy") or {}).items()},
                     **{f"champion_accuracy/{s}": a for s, a in (gate.get("champion_accuracy") or {}).items()}})
    tracker.log_artifact(f"model-{gate['version']}", "model", [files["onnx"]],
                         metadata={"dataset": prep.dataset, "parent_model": prep.champion, "strategy": strategy,
                                   "verdict": gate["verdict"], "why": gate.get("why")},
                         aliases=[alias] if alias else [])
    tracker.finish(0)


def _status(gate: dict) -> str:
    return "promoted" if gate.get("promoted") else "challenger" if gate.get("challenger") else "rejected"


def retrain(settings, *, strategy: str = "finetune-replay", reason: str = "manual", force: bool = False,
            epochs: int | None = None, replay: float = 2.0, max_images: int | None = None,
            gate_path: Path | None = None, cooldown_hours: float | None = None, log=_log,
            sweep: Callable[[str], dict] | None = None) -> dict[str, Any]:
    """One retraining, end to end; returns what happened (status promoted, rejected or skipped).

    ``sweep`` runs the ``automl`` strategy's AutoML sweep on a dataset version and returns its
    summary; the retrain flow passes the automl flow (a subflow), so this stage never imports flows."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    t0 = time.time()
    state, lock = monitor_state(settings), retrain_lease(settings)
    try:
        lock.acquire(f"retrain {strategy}: {reason}")
    except RetrainBusy as exc:
        log(f"skipped: {exc}")
        return {"status": "skipped", "why": str(exc), "reason": reason}
    try:
        if cooldown_hours is None:
            cooldown_hours = load_config(settings.monitoring_config or None).trigger.cooldown_hours
        st = state.read()
        last, retrying = st.get("last_retrain_started"), False
        if died(st, running=False):  # we hold the lease: nothing else runs
            # Its pod died: that starts no cooldown, once (a retry that dies too does: no crash loop).
            log(f"the retraining started {(t0 - last) / 60:.0f} min ago never finished (its process died): "
                "running it again")
            last, retrying = None, True
        if not force and last and t0 - last < cooldown_hours * 3600:
            why = f"in cooldown: the last retraining started {(t0 - last) / 60:.0f} min ago (cooldown {cooldown_hours} h)"
            log(f"skipped: {why}")
            return {"status": "skipped", "why": why, "reason": reason}
        gate_cfg = load_gate(gate_path)
        prep = prepare_data(settings, gate_cfg, log=log)
        result: dict[str, Any] = {"reason": reason, "strategy": strategy, "dataset": prep.dataset,
                                  "n_feedback": prep.n_feedback, "champion_before": prep.champion}
        if prep.champion and prep.dataset == prep.champion_dataset and not force:
            why = f"no new labelled data since the champion {prep.champion} (dataset {prep.dataset})"
            log(f"skipped: {why}")
            return {**result, "status": "skipped", "why": why}
        state.update(lambda st: st.update(last_retrain_started=t0,  # the cooldown counts from here
                                          **({"retry_of_crash": t0} if retrying else {})))
        work = settings.home_dir / "retrain" / time.strftime("%Y%m%dT%H%M%S", time.gmtime(t0))
        if strategy == "automl":
            if sweep is None:
                raise ValueError("the automl strategy runs a sweep: run it through the retrain flow "
                                 "(flows/retrain.py, `mnistcl retrain --strategy automl`)")
            summary = sweep(prep.dataset)
            promo = summary.get("promotion") or {}
            result.update(status=_status(promo), automl=summary.get("sweep"), gate=promo)
        else:
            td, counts = training_data(settings, prep, strategy, replay=replay, max_images=max_images,
                                       seed=settings.seed)
            log(f"training ({strategy}) on {len(td.y_train):,} images: {counts}")
            t1 = time.time()
            files, info = train_candidate(settings, prep, strategy, td, epochs=epochs, out_dir=work / "model",
                                          seed=settings.seed)
            result["train_seconds"] = time.time() - t1
            result["train_images"] = counts
            gate = gate_register_promote(settings, prep, files, info, strategy=strategy, reason=reason,
                                         report_dir=work / "validation", gate_cfg=gate_cfg)
            result["gate"] = gate
            result["status"] = _status(gate)
            _track(settings, prep, strategy, reason, counts, files, gate, result["train_seconds"])
            moved = (f"promoted to {gate['promoted']['alias']}" if gate["promoted"]
                     else "challenger: shadowed until labelled traffic decides" if gate["challenger"] else "not promoted")
            log(f"{gate['version']}: gate verdict {gate['verdict']} ({gate['why']}); {moved}")
        result["seconds"] = time.time() - t0
        return result
    finally:
        lock.release()
        finished = time.time()
        state.update(lambda st: st.update(last_retrain_finished=finished))
