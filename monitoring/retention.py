"""Retention: delete what has outlived its use, by age (``settings.retention``), losing nothing
the loop still needs.

- logged images (and their shadow answers) older than ``prediction_images_days``, except those the
  monitoring has not checked yet and labelled ones no dataset version holds yet;
- rejected payloads' reasons, check reports and drift HTML, retraining work folders, outbox
  emails, and lines of the local event log, each by its own age.

Run by `mnistcl monitor retention` and the scheduled `retention` deployment (flows/retention.py).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistcl.predlog import PredictionLog
from mnistcl.stores import dataset_store
from monitoring.check import REPORTS_PREFIX
from monitoring.state import monitor_state

DAY = 86400.0


def _old_entries(folder: Path, cutoff: float, pattern: str = "*") -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.stat().st_mtime < cutoff)


def _remove(paths: list[Path], dry_run: bool) -> int:
    if not dry_run:
        for p in paths:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return len(paths)


def _trim_events(path: Path, cutoff: float, dry_run: bool) -> int:
    """Drop event-log lines that occurred before ``cutoff`` (a line that cannot be read is kept)."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            old = datetime.fromisoformat(json.loads(line)["occurred"]).timestamp() < cutoff
        except (ValueError, KeyError, TypeError):
            old = False
        if old:
            dropped += 1
        else:
            keep.append(line)
    if dropped and not dry_run:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        tmp.replace(path)
    return dropped


def _remove_stored_reports(storage, cut: float, dry_run: bool) -> int:
    """Check reports in the shared storage (reports/checks/<time>/...) older than ``cut``: the
    folder's name is its window's end, so no object needs a stat; a name that is not a time
    falls back to the object's write time."""
    n = 0
    for key in storage.list(REPORTS_PREFIX + "/"):
        stamp = key[len(REPORTS_PREFIX) + 1:].split("/", 1)[0]
        try:
            at = datetime.strptime(stamp.split("-")[0], "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            at = storage.modified(key)
        if at < cut:
            n += 1
            if not dry_run:
                storage.delete(key)
    return n


def apply_retention(settings, *, now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete by age; returns what was (or, with ``dry_run``, would be) removed per kind, and how
    many old logged images were kept back because the loop still needs them."""
    r = settings.retention
    now = time.time() if now is None else now
    out: dict[str, Any] = {"dry_run": dry_run, "removed": {}, "kept_back": {}}
    removed, kept = out["removed"], out["kept_back"]
    if r.prediction_images_days or r.rejected_days:
        plog = PredictionLog(settings.predictions_db_path)
        if r.prediction_images_days:
            checked = int(monitor_state(settings, plog).read()["cursor"])
            learned = dataset_store(settings).feedback_watermark(plog.identity(), plog.baseline("feedback_seq"))
            removed["prediction_images"], kept["prediction_images"] = plog.delete_old(
                before=now - r.prediction_images_days * DAY, checked_through=checked, learned_through=learned,
                dry_run=dry_run)
        if r.rejected_days:
            removed["rejected"] = plog.delete_rejected(before=now - r.rejected_days * DAY, dry_run=dry_run)
    if r.reports_days:
        cut = now - r.reports_days * DAY
        removed["reports"] = _remove(_old_entries(settings.monitoring_dir / "checks", cut)
                                     + _old_entries(settings.home_dir / "retrain", cut), dry_run)
        removed["stored_reports"] = _remove_stored_reports(dataset_store(settings).storage, cut, dry_run)
    if r.outbox_days:
        removed["outbox"] = _remove(_old_entries(settings.outbox, now - r.outbox_days * DAY, "*.eml"), dry_run)
    if r.events_days:
        removed["events"] = _trim_events(settings.events_log, now - r.events_days * DAY, dry_run)
    return out
