"""Reading the prediction log the model server writes (mnistcl/predlog.py): export and retrain."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from mnistcl.images import ImageError
from mnistcl.predlog import PredictionLog, is_postgres


def read_predictions(db: str | Path, *, since: float = 0.0, labelled_only: bool = False) -> list[dict]:

    if not is_postgres(db) and not Path(db).exists():
        raise ImageError(f"no prediction log at {db}: start the server (`mnistcl serve`) and send predictions")
    return PredictionLog(db).read(since=since, labelled_only=labelled_only)


def export_csv(rows: list[dict]) -> str:
    from datetime import UTC, datetime

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["request_id", "item", "time", "model_version", "digit", "confidence", "feedback",
                *[f"p{d}" for d in range(10)], *[f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]])
    for r in rows:
        w.writerow([r["request_id"], r["item"], datetime.fromtimestamp(r["at"], UTC).isoformat(timespec="seconds"),
                    r["model_version"], r["digit"], f"{r['confidence']:.6f}", "" if r["feedback"] is None else r["feedback"],
                    *[f"{p:.6f}" for p in r["probs"]], *r["image"].reshape(-1).tolist()])
    return buf.getvalue()


def labelled_feedback(db: Path, *, since: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Production inputs with their true labels: (images, labels, number of requests)."""
    rows = read_predictions(db, since=since, labelled_only=True)
    if not rows:
        raise ImageError(f"no labelled production inputs in {db} (send feedback for earlier predictions first)")
    return (np.stack([r["image"] for r in rows]), np.array([r["feedback"] for r in rows], dtype=np.uint8),
            len({r["request_id"] for r in rows}))
