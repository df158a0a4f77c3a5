"""The local experiment store (SQLite): what the CLI lists, shows and compares.

W&B offline runs cannot be read back without a server, so every experiment is also recorded
here: hyperparameters, per-epoch history, validation checkpoints, system metrics, size and
complexity, artifact paths and the W&B run folder.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep TEXT NOT NULL,
    family TEXT NOT NULL,
    params TEXT NOT NULL,
    config TEXT,
    status TEXT NOT NULL,
    dataset TEXT,
    profile TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    wall_s REAL,
    cpu_s REAL,
    peak_rss_mb REAL,
    train_loss REAL,
    train_accuracy REAL,
    val_loss REAL,
    val_accuracy REAL,
    epochs INTEGER,
    param_count INTEGER,
    macs INTEGER,
    flops INTEGER,
    onnx_bytes INTEGER,
    native_bytes INTEGER,
    artifact_dir TEXT,
    onnx_path TEXT,
    native_path TEXT,
    wandb_dir TEXT,
    history TEXT,
    checkpoints TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS experiments_sweep ON experiments(sweep);
"""

COLUMNS = [
    "id", "sweep", "family", "params", "config", "status", "dataset", "profile", "created", "started",
    "finished", "wall_s", "cpu_s", "peak_rss_mb", "train_loss", "train_accuracy", "val_loss",
    "val_accuracy", "epochs", "param_count", "macs", "flops", "onnx_bytes", "native_bytes",
    "artifact_dir", "onnx_path", "native_path", "wandb_dir", "history", "checkpoints", "error",
]
JSON_COLUMNS = {"params", "config", "history", "checkpoints"}
DEFAULT_LIST_COLUMNS = ["id", "sweep", "family", "status", "val_accuracy", "val_loss", "wall_s",
                        "param_count", "flops", "params"]


class ExperimentNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Experiment:
    row: dict[str, Any]

    def __getattr__(self, name):
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None


class ExperimentStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _conn(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            yield conn
            conn.commit()
        finally:
            conn.close()

    def create(self, sweep: str, family: str, params: dict, *, dataset: str, profile: str,
               config: dict | None = None) -> int:
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO experiments (sweep, family, params, config, status, dataset, profile, created) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (sweep, family, json.dumps(params, sort_keys=True), json.dumps(config, sort_keys=True),
                 dataset, profile, time.time()),
            )
            return int(cur.lastrowid)

    def update(self, exp_id: int, **fields) -> None:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown experiment fields {sorted(unknown)}")
        vals = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE experiments SET {sets} WHERE id = ?", (*vals, exp_id))

    def _decode(self, row: sqlite3.Row) -> Experiment:
        d = dict(row)
        for k in JSON_COLUMNS:
            if d.get(k):
                d[k] = json.loads(d[k])
        return Experiment(d)

    def get(self, exp_id: int) -> Experiment:
        with self._conn() as c:
            row = c.execute("SELECT * FROM experiments WHERE id = ?", (int(exp_id),)).fetchone()
        if row is None:
            raise ExperimentNotFound(f"experiment {exp_id} does not exist")
        return self._decode(row)

    def list(self, *, sweep: str | None = None, family: str | None = None, status: str | None = None,
             sort: str = "id", descending: bool = False, limit: int | None = None) -> list[Experiment]:
        if sort not in COLUMNS:
            raise ValueError(f"cannot sort by {sort!r}; columns: {', '.join(COLUMNS)}")
        where, args = [], []
        for col, val in (("sweep", sweep), ("family", family), ("status", status)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM experiments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {sort} IS NULL, {sort} {'DESC' if descending else 'ASC'}, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._conn() as c:
            return [self._decode(r) for r in c.execute(sql, args).fetchall()]

    def sweeps(self) -> list[str]:
        with self._conn() as c:
            return [r[0] for r in c.execute("SELECT sweep FROM experiments GROUP BY sweep ORDER BY MIN(id)")]
