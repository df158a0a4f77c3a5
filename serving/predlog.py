"""The prediction log: every accepted input and output, feedback labels, rejected requests.

SQLite (WAL, several gunicorn workers may write). Only the standard library and NumPy.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    at REAL NOT NULL,
    model_version TEXT NOT NULL,
    input_kind TEXT NOT NULL,
    image BLOB NOT NULL,          -- 784 uint8 pixels, row-major, 0-255
    probs TEXT NOT NULL,          -- JSON list of 10 probabilities
    digit INTEGER NOT NULL,
    confidence REAL NOT NULL,
    feedback INTEGER,             -- the true label, once it arrives
    feedback_at REAL,
    PRIMARY KEY (request_id, item)
);
CREATE INDEX IF NOT EXISTS predictions_at ON predictions(at);
CREATE TABLE IF NOT EXISTS rejected (
    at REAL NOT NULL,
    endpoint TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


class PredictionLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def log_predictions(self, request_id: str, model_version: str, kind: str, images: np.ndarray,
                        probs: np.ndarray) -> None:
        """One transaction per request: all of its images or none (the caller answers after this)."""
        now = time.time()
        px = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).reshape(len(images), -1)
        rows = [(request_id, i, now, model_version, kind, px[i].tobytes(), json.dumps([round(float(p), 6) for p in probs[i]]),
                 int(probs[i].argmax()), float(probs[i].max())) for i in range(len(images))]
        c = self._conn()
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("INSERT INTO predictions (request_id, item, at, model_version, input_kind, image, probs, "
                          "digit, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def log_rejected(self, endpoint: str, reason: str) -> None:
        c = self._conn()
        with c:
            c.execute("INSERT INTO rejected (at, endpoint, reason) VALUES (?, ?, ?)", (time.time(), endpoint, reason[:500]))

    def add_feedback(self, request_id: str, labels: list[int]) -> list[tuple[int, int]]:
        """Attach true labels to an earlier request's items; return (predicted, true) pairs."""
        c = self._conn()
        rows = c.execute("SELECT item, digit FROM predictions WHERE request_id = ? ORDER BY item", (request_id,)).fetchall()
        if not rows:
            raise KeyError(f"no prediction with request id {request_id!r}")
        if len(labels) != len(rows):
            raise ValueError(f"request {request_id} had {len(rows)} images but {len(labels)} labels were given")
        now = time.time()
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("UPDATE predictions SET feedback = ?, feedback_at = ? WHERE request_id = ? AND item = ?",
                          [(int(lbl), now, request_id, item) for (item, _), lbl in zip(rows, labels, strict=True)])
        return [(digit, int(lbl)) for (_, digit), lbl in zip(rows, labels, strict=True)]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
