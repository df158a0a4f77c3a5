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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mnistcl.images import to_uint8
from mnistcl.logwrites import GroupCommit, LogUnavailable, Pending, WriterLock, checkpoints

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
CREATE TABLE IF NOT EXISTS feedback_conflicts (
    at DOUBLE PRECISION NOT NULL,
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    existing INTEGER NOT NULL,
    existing_labeller TEXT,
    proposed INTEGER NOT NULL,
    labeller TEXT
);
CREATE TABLE IF NOT EXISTS rewards (
    at DOUBLE PRECISION NOT NULL,
    request_id TEXT NOT NULL,
    reward DOUBLE PRECISION NOT NULL,
    labeller TEXT
);
CREATE TABLE IF NOT EXISTS log_counters (
    name TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO log_counters (name, n) VALUES ('feedback', 0) ON CONFLICT DO NOTHING;
INSERT INTO log_counters (name, n) VALUES ('predictions', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS log_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Sequence numbers added to logs made before them: column -> (which rows, their order).
_NUMBERED = {"seq": ("TRUE", "at, request_id, item"),
             "feedback_seq": ("feedback IS NOT NULL", "feedback_at, request_id, item")}
_COUNTER = {"seq": "predictions", "feedback_seq": "feedback"}

_SCHEMA_LOCK = 0x6D6E6973  # advisory lock key ("mnis") guarding schema creation
CONNECT_TIMEOUT_S = 3


class FeedbackConflict(ValueError):
    """Labels that differ from ones already recorded: refused, kept in feedback_conflicts for review."""

    def __init__(self, request_id: str, conflicts: list[tuple[int, int, int]]):
        self.request_id, self.conflicts = request_id, conflicts
        shown = ", ".join(f"image {i}: recorded {old}, sent {new}" for i, old, new in conflicts[:5])
        super().__init__(f"request {request_id} already has different labels ({shown}); labels are written once, "
                         f"so this feedback was not applied and is kept for review")


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def redact(location: str) -> str:
    """The location without a password (``postgresql://user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", location)


class PredictionLog:
    """``images`` are 784 uint8 pixels per row (0-255), ``probs`` JSON lists of 10 floats."""

    def __init__(self, location: str | Path, *, connect: bool = True, group_commit: bool = False,
                 background_checkpoint: bool = False):
        """``connect=False``: connect on first use (a server that starts while the database is
        down still loads its model, and its readiness says what is wrong). ``group_commit``: the
        predictions of concurrent requests are written by one thread, as many requests per
        transaction as are waiting (mnistcl.logwrites.GroupCommit); the model server's choice.
        ``background_checkpoint`` (SQLite; the model server): this process's commits never copy
        the write-ahead log back into the database themselves (SQLite's automatic checkpoint runs
        inside whichever commit crosses 1,000 pages, fsync included, and everyone queued behind
        it waits); a thread does it every ``CHECKPOINT_S`` seconds on its own connection, beside
        the writers (mnistcl.logwrites.checkpoints: it holds them back only to start a long
        write-ahead log over)."""
        self.location = str(location)
        self._group = GroupCommit(lambda body: self._transaction(body)) if group_commit else None
        self.pg = is_postgres(location)
        # SQLite writers queue on this lock before the database's own (mnistcl.logwrites.WriterLock)
        self._writer_lock = None if self.pg else WriterLock(f"{self.location}.writer")
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
        self.background_checkpoint = background_checkpoint and not self.pg
        if self.background_checkpoint:
            threading.Thread(target=checkpoints, args=(self.location, self._writer_lock), daemon=True,
                             name="prediction-log-checkpoint").start()
        if connect:
            self._run(lambda conn: None)  # connect and create the schema now

    def _connect(self):
        if self.pg:
            import psycopg

            return psycopg.connect(self.location, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn = sqlite3.connect(self.location, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if self.background_checkpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _create_schema(self, conn) -> None:
        ddl = _TABLES.format(blob="BYTEA" if self.pg else "BLOB")
        if self.pg:
            # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE in PostgreSQL (two
            # server processes starting together hit a unique violation in pg_type): serialise
            # schema creation with a transaction-scoped advisory lock.
            # CREATE INDEX IF NOT EXISTS locks the table (SHARE) even when the index exists, and
            # INSERT ... ON CONFLICT waits for a write holding the row: every process opening the
            # log waited for the writes in flight, and deadlocked with a feedback write holding the
            # counter row. What exists is left alone.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                have = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'predictions'")}
                counters = set()
                if conn.execute("SELECT to_regclass('log_counters')").fetchone()[0] is not None:
                    counters = {r[0] for r in conn.execute("SELECT name FROM log_counters")}
                for stmt in filter(str.strip, ddl.split(";")):
                    words = stmt.split()
                    if words[:5] == ["CREATE", "INDEX", "IF", "NOT", "EXISTS"] and words[5] in have:
                        continue
                    if words[:3] == ["INSERT", "INTO", "log_counters"] and stmt.split("'")[1] in counters:
                        continue
                    conn.execute(stmt)
                cols = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                                   "WHERE table_name = 'predictions'").fetchall()}
                self._migrate(conn, cols, "BIGINT")
                self._indexes(conn, have)  # under the same lock: these race too (pg_class unique violation)
        else:
            conn.executescript(ddl)
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(conn, {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}, "INTEGER")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._indexes(conn)

    @staticmethod
    def _indexes(conn, have: set[str] = frozenset()) -> None:
        for col in (*_NUMBERED, "puid"):
            if f"predictions_{col}" not in have:
                conn.execute(f"CREATE INDEX IF NOT EXISTS predictions_{col} ON predictions({col})")

    def _migrate(self, conn, cols: set[str], int_type: str) -> None:
        """Under the schema lock: this log's id; sequence-number columns for a log made before
        them; numbers for rows still without (a log from before them, or rows an older server
        wrote during a rolling upgrade), in the order they came, after every number given so far.
        Labels that existed when the column was added are the log's baseline: taken as already
        handled, never appended to a dataset version (the old cursor cannot say which were)."""
        p = self.ph
        conn.execute(f"INSERT INTO log_meta (name, value) VALUES ('log_id', {p}) ON CONFLICT DO NOTHING",
                     (uuid.uuid4().hex,))
        for col in ("labeller", "puid"):  # who labelled; Seldon's request id (puid) when the request had one
            if col not in cols:
                conn.execute(f"ALTER TABLE predictions ADD COLUMN {col} TEXT")
        for col, (which, order) in _NUMBERED.items():
            added = col not in cols
            if added:
                conn.execute(f"ALTER TABLE predictions ADD COLUMN {col} {int_type}")
            n = int(conn.execute(f"SELECT COUNT(*) FROM predictions WHERE {col} IS NULL AND {which}").fetchone()[0])
            if n:
                base = int(conn.execute(f"UPDATE log_counters SET n = n + {n} WHERE name = {p} RETURNING n",
                                        (_COUNTER[col],)).fetchone()[0]) - n
                conn.execute(f"UPDATE predictions SET {col} = {p} + r.k FROM (SELECT request_id, item, "
                             f"row_number() OVER (ORDER BY {order}) AS k FROM predictions WHERE {col} IS NULL "
                             f"AND {which}) AS r WHERE predictions.request_id = r.request_id "
                             f"AND predictions.item = r.item", (base,))
                if added:
                    conn.execute(f"INSERT INTO log_meta (name, value) VALUES ({p}, {p}) ON CONFLICT DO NOTHING",
                                 (f"{col}_baseline", str(base + n)))

    def meta(self, name: str, default: str | None = None) -> str | None:
        rows = self._query(f"SELECT value FROM log_meta WHERE name = {self.ph}", (name,))
        return rows[0][0] if rows else default

    def baseline(self, col: str) -> int:
        """The highest number a log from before sequence numbers gave its existing rows (0: none)."""
        return int(self.meta(f"{col}_baseline", "0"))

    def identity(self) -> str:
        """This log's id (made with its schema): the cursors into it are kept under this name."""
        return self.meta("log_id")

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

    def _transaction(self, body: Callable[[Any], Any]) -> Any:
        """``body(connection)`` in one write transaction (all or nothing), with the fault handling
        of ``_run``."""
        def tx(conn):
            if self.pg:
                with conn.transaction():
                    return body(conn)
            with self._writer_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = body(conn)
                    conn.execute("COMMIT")
                    return out
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        return self._run(tx)

    def _tx(self, statements: list[tuple[str, list]]) -> None:
        """Run statements in one transaction (all or nothing)."""
        def run(conn):
            cur = conn.cursor()
            for sql, rows in statements:
                cur.executemany(sql, rows)
        self._transaction(run)

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
                        probs: np.ndarray, shadow: list[tuple[str, np.ndarray]] | None = None,
                        puid: str | None = None, wait: bool = True) -> Pending | None:
        """All of a request's images in one transaction, or none (the server answers after this).
        ``shadow``: (model version, probabilities) of each model that scored the same images
        without answering. With group commit and ``wait=False``, returns at once with the
        :class:`Pending` write, for a caller that answers once it is done (the asynchronous server)."""
        now = time.time()
        px = to_uint8(images).reshape(len(images), -1)
        pr = np.asarray(probs, dtype=np.float64)
        # whole arrays at once, orjson for the numbers (a fifth of the cost of json.dumps per number)
        rows = [(request_id, i, now, model_version, kind, image.tobytes(), orjson.dumps(ps).decode(), d, c, puid)
                for i, (image, ps, d, c) in enumerate(zip(px, pr.round(6).tolist(), pr.argmax(1).tolist(),
                                                          pr.max(1).tolist(), strict=True))]
        p = self.ph

        def write(conn):
            cur = conn.cursor()
            # Sequence numbers from a counter row updated in this transaction: its lock is held
            # to the commit, so rows commit in number order and the monitoring cursor (a number)
            # never passes a row that commits later. (The cost on PostgreSQL: prediction writes
            # take that row lock one at a time, for the length of one short transaction.)
            cur.execute(f"UPDATE log_counters SET n = n + {len(rows)} WHERE name = 'predictions' RETURNING n")
            first = int(cur.fetchone()[0]) - len(rows) + 1
            # ON CONFLICT DO NOTHING: a write retried after its commit went through (the answer
            # lost with the connection) adds nothing; request ids are fresh UUIDs.
            cur.executemany(f"INSERT INTO predictions (request_id, item, at, model_version, input_kind, image, probs, "
                            f"digit, confidence, puid, seq) VALUES ({', '.join([p] * 11)}) ON CONFLICT DO NOTHING",
                            [(*r, first + i) for i, r in enumerate(rows)])
            for version, sp in shadow or []:
                cur.executemany(f"INSERT INTO shadow (request_id, item, model_version, digit, confidence) "
                                f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
                                [(request_id, i, version, int(sp[i].argmax()), float(sp[i].max()))
                                 for i in range(len(sp))])
        if self._group is None:
            self._transaction(write)
            return None
        pending = self._group.submit(write)
        if wait:
            pending.result()
            return None
        return pending

    def log_rejected(self, endpoint: str, reason: str) -> None:
        p = self.ph
        self._tx([(f"INSERT INTO rejected (at, endpoint, reason) VALUES ({p}, {p}, {p})",
                   [(time.time(), endpoint, reason[:500])])])

    def find_request(self, request_id: str | None = None, puid: str | None = None) -> str | None:
        """The request id of a logged request, by its own id or else by Seldon's puid (None: no such
        request). A puid that several requests carried names none of them: KeyError."""
        p = self.ph
        for rid in (request_id, puid):  # our answers carry puid = request id when the request had none
            if rid and self._query(f"SELECT 1 FROM predictions WHERE request_id = {p} LIMIT 1", (rid,)):
                return rid
        if puid:
            rows = self._query(f"SELECT DISTINCT request_id FROM predictions WHERE puid = {p} LIMIT 2", (puid,))
            if len(rows) > 1:
                raise KeyError(f"puid {puid!r} was sent with several requests: give meta.tags.request_id")
            if rows:
                return rows[0][0]
        return None

    def add_feedback(self, request_id: str, labels: list[int], labeller: str | None = None) -> list[tuple[int, int]]:
        """Attach true labels to an earlier request's items, once; return (predicted, true) pairs.

        Write-once: the same labels sent again change nothing; a label that differs from one
        already recorded refuses the whole feedback (none of it is applied) with
        :class:`FeedbackConflict`, and each differing label is kept in ``feedback_conflicts`` with
        who sent it, for review. ``labeller``: who sent it (recorded with each label)."""
        p = self.ph
        rows = self._query(f"SELECT item, digit FROM predictions WHERE request_id = {p} ORDER BY item", (request_id,))
        if not rows:
            raise KeyError(f"no prediction with request id {request_id!r}")
        if len(labels) != len(rows):
            raise ValueError(f"request {request_id} had {len(rows)} images but {len(labels)} labels were given")
        now = time.time()

        def label(conn):
            cur = conn.cursor()
            # Read the recorded labels inside the write transaction (SQLite's write lock, or the
            # rows locked in PostgreSQL): two different labels sent at once cannot both win.
            lock = " FOR UPDATE" if self.pg else ""
            cur.execute(f"SELECT item, feedback, labeller FROM predictions WHERE request_id = {p} ORDER BY item{lock}",
                        (request_id,))
            recorded = {int(i): (fb, who) for i, fb, who in cur.fetchall()}
            conflicts = [(item, int(recorded[item][0]), int(lbl), recorded[item][1])
                         for (item, _), lbl in zip(rows, labels, strict=True)
                         if recorded[item][0] is not None and int(recorded[item][0]) != int(lbl)]
            if conflicts:
                cur.executemany(f"INSERT INTO feedback_conflicts (at, request_id, item, existing, existing_labeller, "
                                f"proposed, labeller) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                                [(now, request_id, i, old, old_by, new, labeller) for i, old, new, old_by in conflicts])
                return conflicts
            new = [(item, int(lbl)) for (item, _), lbl in zip(rows, labels, strict=True) if recorded[item][0] is None]
            if not new:
                return []
            # The feedback sequence number comes from a counter row updated in the same
            # transaction: its lock (PostgreSQL's row lock, SQLite's write lock) is held to the
            # commit, so numbers commit in order and a reader that has seen n has seen all below n.
            cur.execute("UPDATE log_counters SET n = n + 1 WHERE name = 'feedback' RETURNING n")
            seq = int(cur.fetchone()[0])
            cur.executemany(f"UPDATE predictions SET feedback = {p}, feedback_at = {p}, feedback_seq = {p}, "
                            f"labeller = {p} WHERE request_id = {p} AND item = {p} AND feedback IS NULL",
                            [(lbl, now, seq, labeller, request_id, item) for item, lbl in new])
            return []
        conflicts = self._transaction(label)
        if conflicts:
            raise FeedbackConflict(request_id, [(i, old, new) for i, old, new, _ in conflicts])
        return [(digit, int(lbl)) for (_, digit), lbl in zip(rows, labels, strict=True)]

    def add_reward(self, request_id: str, reward: float, labeller: str | None = None) -> None:
        """Seldon's reward-only feedback (a score for the request, no labels), kept as such."""
        p = self.ph
        self._tx([(f"INSERT INTO rewards (at, request_id, reward, labeller) VALUES ({p}, {p}, {p}, {p})",
                   [(time.time(), request_id, float(reward), labeller)])])

    def conflicts(self) -> list[tuple]:
        """Refused labels for review: (at, request id, item, recorded, recorded by, sent, sent by)."""
        return self._query("SELECT at, request_id, item, existing, existing_labeller, proposed, labeller "
                           "FROM feedback_conflicts ORDER BY at, request_id, item")

    def rewards(self) -> list[tuple]:
        return self._query("SELECT at, request_id, reward, labeller FROM rewards ORDER BY at")

    def labellers(self, request_id: str) -> list[str | None]:
        return [r[0] for r in self._query(f"SELECT labeller FROM predictions WHERE request_id = {self.ph} "
                                          f"ORDER BY item", (request_id,))]

    # ---------------------------------------------------------------- reading
    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM predictions")[0][0])

    def request_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT DISTINCT request_id FROM predictions")}

    def rejected_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM rejected")[0][0])

    def window(self, *, after: int, limit: int, max_per_request: int = 64) -> list[tuple]:
        """The next ``limit`` images with a sequence number above ``after`` (never half a
        request): rows of (at, digit, confidence, feedback or -1, image bytes, probabilities JSON,
        model version, sequence number, request id), in number order."""
        rows = self._query(f"SELECT at, digit, confidence, COALESCE(feedback, -1), image, probs, model_version, seq, "
                           f"request_id FROM predictions WHERE seq > {self.ph} ORDER BY seq "
                           f"LIMIT {int(limit) + max_per_request}", (int(after),))
        if len(rows) <= limit:
            return rows
        last = rows[limit - 1][8]
        end = limit
        while end < len(rows) and rows[end][8] == last:
            end += 1
        return rows[:end]

    def count_labelled_after(self, feedback_seq: int) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM predictions WHERE feedback_seq > {self.ph}",
                               (int(feedback_seq),))[0][0])

    def labelled_after(self, feedback_seq: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Inputs whose true label has a feedback sequence number above ``feedback_seq``: (uint8
        images, labels, the highest sequence number read, number of requests). Sequence numbers commit in order, so reading above
        the last one read misses nothing and repeats nothing."""
        p = self.ph
        rows = self._query(f"SELECT image, feedback, feedback_seq, request_id FROM predictions "
                           f"WHERE feedback_seq > {p} ORDER BY feedback_seq, request_id, item",
                           (int(feedback_seq),))
        if not rows:
            return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8), int(feedback_seq), 0
        x = np.stack([np.frombuffer(bytes(r[0]), np.uint8).reshape(28, 28) for r in rows])
        return (x, np.array([r[1] for r in rows], dtype=np.uint8), int(rows[-1][2]), len({r[3] for r in rows}))

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

    def delete_old(self, *, before: float, checked_through: int, learned_through: int,
                   dry_run: bool = False, batch: int = 5000) -> tuple[int, int]:
        """Retention: delete logged images older than ``before`` (with their shadow answers),
        except those the monitoring has not checked yet (number above ``checked_through``) and
        labelled ones no dataset version holds yet (feedback number above ``learned_through``).
        Returns (deleted, kept back by those two rules).

        In transactions of ``batch`` rows, oldest numbers first: the model server keeps writing
        meanwhile (a SQLite log takes one writer at a time, and 90 days of images in one
        transaction would hold it for minutes); an interrupted run leaves whole batches done."""
        p = self.ph

        def safe(t: str) -> str:
            return f"{t}at < {p} AND {t}seq <= {p} AND ({t}feedback_seq IS NULL OR {t}feedback_seq <= {p})"
        args = (before, int(checked_through), int(learned_through))
        n_old = int(self._query(f"SELECT COUNT(*) FROM predictions WHERE at < {p}", (before,))[0][0])
        n_safe = int(self._query(f"SELECT COUNT(*) FROM predictions WHERE {safe('')}", args)[0][0])
        if dry_run or not n_safe:
            return n_safe, n_old - n_safe

        def delete(conn) -> int:
            cur = conn.cursor()
            top = cur.execute(f"SELECT MAX(seq) FROM (SELECT seq FROM predictions WHERE {safe('')} ORDER BY seq "
                              f"LIMIT {int(batch)}) AS b", args).fetchone()[0]
            if top is None:
                return 0
            upto = (*args, int(top))
            cur.execute("DELETE FROM shadow WHERE EXISTS (SELECT 1 FROM predictions q WHERE q.request_id = "
                        f"shadow.request_id AND q.item = shadow.item AND {safe('q.')} AND q.seq <= {p})", upto)
            cur.execute(f"DELETE FROM predictions WHERE {safe('')} AND seq <= {p}", upto)
            return cur.rowcount
        deleted = 0
        while n := self._transaction(delete):
            deleted += n
        return deleted, n_old - n_safe

    def delete_rejected(self, *, before: float, dry_run: bool = False) -> int:
        p = self.ph
        n = int(self._query(f"SELECT COUNT(*) FROM rejected WHERE at < {p}", (before,))[0][0])
        if n and not dry_run:
            self._tx([(f"DELETE FROM rejected WHERE at < {p}", [(before,)])])
        return n

    def read(self, *, since: float = 0.0, labelled_only: bool = False) -> list[dict]:
        return list(self.iter_rows(since=since, labelled_only=labelled_only))

    def iter_rows(self, *, since: float = 0.0, labelled_only: bool = False, batch: int = 2000) -> Iterator[dict]:
        """Logged images at or after ``since``, in number order, ``batch`` rows per query (an
        export of any size holds one batch in memory)."""
        p = self.ph
        sql = ("SELECT request_id, item, at, model_version, digit, confidence, feedback, probs, image, seq "
               f"FROM predictions WHERE at >= {p} AND seq > {p}" + (" AND feedback IS NOT NULL" if labelled_only else "")
               + f" ORDER BY seq LIMIT {int(batch)}")
        after = 0
        while rows := self._query(sql, (since, after)):
            for rid, item, at, ver, digit, conf, fb, probs, image, _ in rows:
                yield {"request_id": rid, "item": item, "at": at, "model_version": ver, "digit": digit,
                       "confidence": conf, "feedback": fb, "probs": json.loads(probs),
                       "image": np.frombuffer(bytes(image), dtype=np.uint8).reshape(28, 28)}
            after = rows[-1][9]
