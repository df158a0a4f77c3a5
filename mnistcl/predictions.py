"""Reading the prediction log the model server writes (mnistcl/predlog.py): export and retrain."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from mnistcl.datasets import DatasetStore, Manifest
from mnistcl.images import ImageError
from mnistcl.predlog import PredictionLog, is_postgres


def append_feedback(store: DatasetStore, log: PredictionLog, *, source: str, **append) -> tuple[Manifest | None, int]:
    """A dataset version from the labelled inputs of ``log`` that no version holds yet (after
    the store's watermark for this log), or None when there are none; and how many requests they
    came from. The version records the feedback numbers it holds, so each label enters one
    version, whoever appends (the CLI or a retraining). Hold the retraining lease around it."""
    log_id = log.identity()
    start = store.feedback_watermark(log_id, log.baseline("feedback_seq"))
    x, y, last, n_req = log.labelled_after(start)
    if not len(y):
        return None, 0
    m = store.append(x, y, source=source.format(n=len(y), requests=n_req), feedback=(log_id, start, last), **append)
    return m, n_req


def read_predictions(db: str | Path, *, since: float = 0.0, labelled_only: bool = False) -> Iterator[dict]:
    """The logged rows, streamed (see PredictionLog.iter_rows)."""
    if not is_postgres(db) and not Path(db).exists():
        raise ImageError(f"no prediction log at {db}: start the server (`mnistcl serve`) and send predictions")
    return PredictionLog(db).iter_rows(since=since, labelled_only=labelled_only)


def write_csv(rows: Iterable[dict], out: TextIO) -> int:
    """Write rows as CSV to ``out`` as they come; returns how many."""
    from datetime import UTC, datetime

    w = csv.writer(out)
    n = 0
    w.writerow(["request_id", "item", "time", "model_version", "digit", "confidence", "feedback",
                *[f"p{d}" for d in range(10)], *[f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]])
    for r in rows:
        w.writerow([r["request_id"], r["item"], datetime.fromtimestamp(r["at"], UTC).isoformat(timespec="seconds"),
                    r["model_version"], r["digit"], f"{r['confidence']:.6f}", "" if r["feedback"] is None else r["feedback"],
                    *[f"{p:.6f}" for p in r["probs"]], *r["image"].reshape(-1).tolist()])
        n += 1
    return n


