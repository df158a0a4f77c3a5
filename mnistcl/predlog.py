"""The prediction log: every accepted input and output, feedback labels, rejected requests, and
the shadow model's answers to the same inputs (the challenger, scored beside the champion).

One class, two backends chosen by the location: a SQLite file (default; WAL, several gunicorn
workers may write) or a PostgreSQL URL (``postgresql://user@host:5432/db``, through psycopg 3).
Standard library, NumPy and (for PostgreSQL) psycopg only: the serving environment imports it.

Faults: each thread keeps one connection; one that fails (a database restart, a dropped link) is
discarded and the call is tried once more on a fresh connection (a short connect timeout, so an
outage answers in seconds). Failing that, :class:`LogUnavailable`: the server answers 503 and
serves nothing it could not log. A retried write cannot be applied twice: a request's rows go in
one transaction and a second insert of the same rows is a no-op (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_TABLES = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    input_kind TEXT NOT NULL,
    image {blob} NOT NULL,
    probs TEXT NOT NULL,
    digit INTEGER NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    feedback INTEGER,
    feedback_at DOUBLE PRECISION,
    PRIMARY KEY (request_id, item)
);
CREATE INDEX IF NOT EXISTS predictions_at ON predictions(at);
CREATE TABLE IF NOT EXISTS shadow (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    digit INTEGER NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, item, model_version)
);
CREATE TABLE IF NOT EXISTS rejected (
    at DOUBLE PRECISION NOT NULL,
    endpoint TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

_SCHEMA_LOCK = 0x6D6E6973  # advisory lock key ("mnis") guarding schema creation
CONNECT_TIMEOUT_S = 3


class LogUnavailable(RuntimeError):
    """The prediction log's database cannot be reached or written, even on a fresh connection."""


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def redact(location: str) -> str:
    """The location without a password (``postgresql://user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", location)


class PredictionLog:
    """``images`` are 784 uint8 pixels per row (0-255), ``probs`` JSON lists of 10 floats."""

    def __init__(self, location: str | Path, *, connect: bool = True):
        """``connect=False``: connect on first use (a server that starts while the database is
        down still loads its model, and its readiness says what is wrong)."""
        self.location = str(location)
        self.pg = is_postgres(location)
        self.ph = "%s" if self.pg else "?"
        self._local = threading.local()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        if self.pg:
            import psycopg

            # A broken or refused connection; not a constraint or a syntax error.
            self._faults: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
        else:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
            self._faults = (sqlite3.OperationalError,)
        if connect:
            self._run(lambda conn: None)  # connect and create the schema now

    def _connect(self):
        if self.pg:
            import psycopg

            return psycopg.connect(self.location, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn = sqlite3.connect(self.location, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _create_schema(self, conn) -> None:
        ddl = _TABLES.format(blob="BYTEA" if self.pg else "BLOB")
        if self.pg:
            # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE in PostgreSQL (two
            # server processes starting together hit a unique violation in pg_type): serialise
            # schema creation with a transaction-scoped advisory lock.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for stmt in filter(str.strip, ddl.split(";")):
                    conn.execute(stmt)
        else:
            conn.executescript(ddl)

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.pg and (conn.closed or conn.broken):
            self._drop()
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    self._create_schema(conn)
                    self._schema_ready = True
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(connection)``; a connection fault drops the connection and tries once more on a
        fresh one, then raises :class:`LogUnavailable` naming the database and the cause."""
        for attempt in (0, 1):
            try:
                return fn(self._conn())
            except self._faults as exc:
                self._drop()
                if attempt:
                    raise LogUnavailable(f"prediction log {redact(self.location)} is unavailable: "
                                         f"{str(exc).strip() or type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _tx(self, statements: list[tuple[str, list]]) -> None:
        """Run statements in one transaction (all or nothing)."""
        def tx(conn):
            if self.pg:
                with conn.transaction(), conn.cursor() as cur:
                    for sql, rows in statements:
                        cur.executemany(sql, rows)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._run(tx)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        def query(conn):
            if self.pg:
                with conn.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall()
            return conn.execute(sql, args).fetchall()
        return self._run(query)

    def ping(self) -> None:
        """Raise :class:`LogUnavailable` unless the database answers (the server's readiness)."""
        self._query("SELECT 1")

    # ---------------------------------------------------------------- writing
    def log_predictions(self, request_id: str, model_version: str, kind: str, images: np.ndarray,
                        probs: np.ndarray, shadow: list[tuple[str, np.ndarray]] | None = None) -> None:
        """One transaction per request: all of its images or none (the server answers after this).
        ``shadow``: (model version, probabilities) of each model that scored the same images
        without answering."""
        now = time.time()
        px = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).reshape(len(images), -1)
        rows = [(request_id, i, now, model_version, kind, px[i].tobytes(), json.dumps([round(float(p), 6) for p in probs[i]]),
                 int(probs[i].argmax()), float(probs[i].max())) for i in range(len(images))]
        p = self.ph
        # ON CONFLICT DO NOTHING: a write retried after its commit went through (the answer lost
        # with the connection) adds nothing; request ids are fresh UUIDs, so nothing else collides.
        statements = [(f"INSERT INTO predictions (request_id, item, at, model_version, input_kind, image, probs, digit, "
                       f"confidence) VALUES ({', '.join([p] * 9)}) ON CONFLICT DO NOTHING", rows)]
        for version, sp in shadow or []:
            statements.append((f"INSERT INTO shadow (request_id, item, model_version, digit, confidence) "
                               f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
                               [(request_id, i, version, int(sp[i].argmax()), float(sp[i].max())) for i in range(len(sp))]))
        self._tx(statements)

    def log_rejected(self, endpoint: str, reason: str) -> None:
        p = self.ph
        self._tx([(f"INSERT INTO rejected (at, endpoint, reason) VALUES ({p}, {p}, {p})",
                   [(time.time(), endpoint, reason[:500])])])

    def add_feedback(self, request_id: str, labels: list[int]) -> list[tuple[int, int]]:
        """Attach true labels to an earlier request's items; return (predicted, true) pairs."""
        p = self.ph
        rows = self._query(f"SELECT item, digit FROM predictions WHERE request_id = {p} ORDER BY item", (request_id,))
        if not rows:
            raise KeyError(f"no prediction with request id {request_id!r}")
        if len(labels) != len(rows):
            raise ValueError(f"request {request_id} had {len(rows)} images but {len(labels)} labels were given")
        now = time.time()
        self._tx([(f"UPDATE predictions SET feedback = {p}, feedback_at = {p} WHERE request_id = {p} AND item = {p}",
                   [(int(lbl), now, request_id, item) for (item, _), lbl in zip(rows, labels, strict=True)])])
        return [(digit, int(lbl)) for (_, digit), lbl in zip(rows, labels, strict=True)]

    # ---------------------------------------------------------------- reading
    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM predictions")[0][0])

    def request_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT DISTINCT request_id FROM predictions")}

    def rejected_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM rejected")[0][0])

    def window(self, *, after: float, limit: int, max_per_request: int = 64) -> list[tuple]:
        """The next ``limit`` images logged after time ``after`` (never half a request):
        rows of (at, digit, confidence, feedback or -1, image bytes, probabilities JSON, model version),
        oldest first."""
        rows = self._query(f"SELECT at, digit, confidence, COALESCE(feedback, -1), image, probs, model_version "
                           f"FROM predictions "
                           f"WHERE at > {self.ph} ORDER BY at, request_id, item LIMIT {int(limit) + max_per_request}",
                           (after,))
        if len(rows) <= limit:
            return rows
        cut = rows[limit - 1][0]
        return [r for r in rows if r[0] <= cut]

    def labelled_after(self, feedback_after: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Inputs whose true label arrived after ``feedback_after``: (uint8 images, labels, last feedback time)."""
        rows = self._query(f"SELECT image, feedback, feedback_at FROM predictions WHERE feedback IS NOT NULL "
                           f"AND feedback_at > {self.ph} ORDER BY feedback_at", (feedback_after,))
        if not rows:
            return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8), feedback_after
        x = np.stack([np.frombuffer(bytes(r[0]), np.uint8).reshape(28, 28) for r in rows])
        return x, np.array([r[1] for r in rows], dtype=np.uint8), float(rows[-1][2])

    def paired_outcomes(self, a: str, b: str, *, since: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Labelled images logged at or after ``since`` that both model versions scored (one
        answering, the other in shadow, either way round): whether ``a`` and ``b`` were right,
        per image, oldest first."""
        p = self.ph
        rows = self._query(
            "SELECT p.feedback, p.model_version, p.digit, s.digit FROM predictions p JOIN shadow s "
            "ON p.request_id = s.request_id AND p.item = s.item WHERE p.feedback IS NOT NULL "
            f"AND p.at >= {p} AND ((p.model_version = {p} AND s.model_version = {p}) "
            f"OR (p.model_version = {p} AND s.model_version = {p})) ORDER BY p.at, p.request_id, p.item",
            (since, a, b, b, a))
        truth = np.array([r[0] for r in rows], dtype=np.int64)
        served = np.array([r[2] for r in rows], dtype=np.int64)
        shadowed = np.array([r[3] for r in rows], dtype=np.int64)
        a_served = np.array([r[1] == a for r in rows], dtype=bool)
        digit_a = np.where(a_served, served, shadowed)
        digit_b = np.where(a_served, shadowed, served)
        return digit_a == truth, digit_b == truth

    def recent_labelled(self, model_version: str, *, before: float, limit: int,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The latest ``limit`` labelled images ``model_version`` answered before time ``before``:
        (uint8 images, probabilities (n, 10), true labels)."""
        p = self.ph
        rows = self._query(f"SELECT image, probs, feedback FROM predictions WHERE model_version = {p} "
                           f"AND feedback IS NOT NULL AND at < {p} ORDER BY at DESC LIMIT {int(limit)}",
                           (model_version, before))
        if not rows:
            return np.zeros((0, 28, 28), np.uint8), np.zeros((0, 10)), np.zeros((0,), np.int64)
        return (np.stack([np.frombuffer(bytes(r[0]), np.uint8).reshape(28, 28) for r in rows]),
                np.array([json.loads(r[1]) for r in rows]), np.array([r[2] for r in rows], dtype=np.int64))

    def rejected_between(self, start: float, end: float, endpoint: str = "predict") -> int:
        p = self.ph
        return int(self._query(f"SELECT COUNT(*) FROM rejected WHERE at > {p} AND at <= {p} AND endpoint = {p}",
                               (start, end, endpoint))[0][0])

    def read(self, *, since: float = 0.0, labelled_only: bool = False) -> list[dict]:
        sql = ("SELECT request_id, item, at, model_version, digit, confidence, feedback, probs, image FROM predictions "
               f"WHERE at >= {self.ph}" + (" AND feedback IS NOT NULL" if labelled_only else "")
               + " ORDER BY at, request_id, item")
        out = []
        for rid, item, at, ver, digit, conf, fb, probs, image in self._query(sql, (since,)):
            out.append({"request_id": rid, "item": item, "at": at, "model_version": ver, "digit": digit,
                        "confidence": conf, "feedback": fb, "probs": json.loads(probs),
                        "image": np.frombuffer(bytes(image), dtype=np.uint8).reshape(28, 28)})
        return out
