"""Feedback enters exactly one dataset version: feedback sequence numbers in the prediction log,
the watermark committed with each manifest, one cursor for the CLI and the retraining."""

import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcl.datasets import DatasetError, DatasetStore
from mnistcl.predlog import PredictionLog
from mnistcl.storage import LocalStorage

pytestmark = pytest.mark.data


def _serve(log: PredictionLog, x: np.ndarray, start: int) -> list[str]:
    """Log one single-digit request per image, as the model server does; return the request ids."""
    ids = []
    for i, img in enumerate(x):
        rid = f"r{start + i:05d}"
        probs = np.full((1, 10), 0.01)
        probs[0, i % 10] = 0.91
        log.log_predictions(rid, "m1", "ndarray", img[None].astype(np.float32) / 255.0, probs)
        ids.append(rid)
    return ids


def test_feedback_numbers_commit_in_order_and_resending_changes_nothing(tmp_path, mnist_small):
    log = PredictionLog(tmp_path / "p.db")
    x, y = mnist_small["test"]
    ids = _serve(log, x[:6], 0)
    for rid, label in zip(ids[:4], y[:4], strict=True):
        log.add_feedback(rid, [int(label)])
    imgs, labels, last, n_req = log.labelled_after(0)
    assert (len(labels), n_req, last) == (4, 4, 4) and labels.tolist() == y[:4].tolist()
    assert np.array_equal(imgs[0], x[0])
    log.add_feedback(ids[0], [int(y[0])])  # the same label again: not new
    assert len(log.labelled_after(last)[1]) == 0
    log.add_feedback(ids[5], [int(y[5])])
    new = log.labelled_after(last)
    assert new[1].tolist() == [int(y[5])] and new[2] > last


def test_cli_and_retraining_share_one_cursor(tmp_path, monkeypatch, small_store, mnist_small):
    """`data append --from-feedback` and the retraining's data step take each feedback row once,
    whichever runs, however often; a stale cursor is refused."""
    from cli import app
    from mnistcl.settings import Settings
    from retraining.retrain import prepare_data
    from validation.gate import load_gate

    home = tmp_path / "home"
    settings = Settings(home=home, storage_url=str(small_store.storage.root))
    monkeypatch.setenv("MNISTCL_HOME", str(home))
    monkeypatch.setenv("MNISTCL_STORAGE_URL", str(small_store.storage.root))
    log = PredictionLog(settings.predictions_db_path)
    x, y = mnist_small["test"]
    ids = _serve(log, x[:120], 0)
    for rid, label in zip(ids[:80], y[:80], strict=True):
        log.add_feedback(rid, [int(label)])
    runner = CliRunner()
    r = runner.invoke(app, ["data", "append", "--from-feedback", "--eval-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    v2 = small_store.manifest("v2")
    assert (v2.feedback_from, v2.feedback_through, v2.n_images) == (0, 80, 80)
    again = runner.invoke(app, ["data", "append", "--from-feedback"])
    assert again.exit_code != 0 and "no labelled production inputs that no dataset version holds" in again.output
    assert prepare_data(settings, load_gate()).created is False  # nothing new for the retraining either
    for rid, label in zip(ids[80:], y[80:120], strict=True):
        log.add_feedback(rid, [int(label)])
    prep = prepare_data(settings, load_gate())
    v3 = small_store.manifest(prep.dataset)
    assert prep.created and (v3.feedback_from, v3.feedback_through, v3.n_images) == (80, 120, 40)
    assert small_store.feedback_watermark(log.identity()) == 120
    # Every feedback row in exactly one version: 80 + 40 images, no image twice.
    with pytest.raises(DatasetError, match="already in a dataset version"):
        small_store.append(x[:5], y[:5], parent=None, source="stale", feedback=(log.identity(), 80, 85))
    assert small_store.ids() == ["v1", "v2", "v3"]


def test_a_log_from_before_feedback_numbers_is_numbered_in_order(tmp_path, mnist_small):
    """An existing SQLite log without the column: opened, its labels get numbers in the order they
    came, and the counter continues after them."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE predictions (request_id TEXT NOT NULL, item INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL,
            model_version TEXT NOT NULL, input_kind TEXT NOT NULL, image BLOB NOT NULL, probs TEXT NOT NULL,
            digit INTEGER NOT NULL, confidence DOUBLE PRECISION NOT NULL, feedback INTEGER,
            feedback_at DOUBLE PRECISION, PRIMARY KEY (request_id, item));""")
    img = np.zeros(784, np.uint8).tobytes()
    conn.executemany("INSERT INTO predictions VALUES (?, 0, ?, 'm1', 'ndarray', ?, '[]', 1, 0.9, ?, ?)",
                     [("b", 1.0, img, 7, 20.0), ("a", 2.0, img, 3, 10.0), ("c", 3.0, img, None, None)])
    conn.commit()
    conn.close()
    log = PredictionLog(db)
    _, labels, last, _ = log.labelled_after(0)
    assert labels.tolist() == [3, 7] and last == 2  # in the order the labels came
    log.add_feedback("c", [5])
    assert log.labelled_after(2)[1].tolist() == [5]
    # Labels that existed before the numbers are the log's baseline: taken as handled, not appended
    # again (the old cursor cannot say which were learned); the monitoring starts after old rows.
    assert log.baseline("feedback_seq") == 2 and log.baseline("seq") == 3
    store = DatasetStore(LocalStorage(tmp_path / "s"))
    assert store.feedback_watermark(log.identity(), log.baseline("feedback_seq")) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_feedback_is_written_once_and_conflicts_are_kept(tmp_path, mnist_small, backend, request):
    """A label is written once: the same labels again change nothing, different ones refuse the
    whole feedback (nothing applied) and are kept with who sent them; rewards are their own rows;
    a request is found by Seldon's puid too. On PostgreSQL, two different labels sent at the same
    moment: exactly one wins, the other is a conflict."""
    from concurrent.futures import ThreadPoolExecutor

    from mnistcl.predlog import FeedbackConflict

    location = request.getfixturevalue("pg_database") if backend == "postgresql" else tmp_path / "p.db"
    log = PredictionLog(location)
    x, y = mnist_small["test"]
    probs = np.full((2, 10), 0.1)
    log.log_predictions("r1", "m1", "ndarray", x[:2] / 255.0, probs, puid="seldon-puid-1")
    assert log.find_request("r1") == log.find_request(None, "seldon-puid-1") == log.find_request("zz", "r1") == "r1"
    assert log.find_request("nope", "nope") is None
    log.add_feedback("r1", [3, 4], labeller="alice")
    _, labels, last, _ = log.labelled_after(0)
    assert labels.tolist() == [3, 4] and log.labellers("r1") == ["alice", "alice"]
    log.add_feedback("r1", [3, 4], labeller="bob")  # the same labels: nothing changes, no new number
    assert len(log.labelled_after(last)[1]) == 0 and log.labellers("r1") == ["alice", "alice"]
    with pytest.raises(FeedbackConflict, match="written once"):
        log.add_feedback("r1", [3, 9], labeller="mallory")
    assert log.labelled_after(0)[1].tolist() == [3, 4]
    assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in log.conflicts()] == [("r1", 1, 4, "alice", 9, "mallory")]
    log.add_reward("r1", 0.5, labeller="alice")
    assert [(r[1], r[2], r[3]) for r in log.rewards()] == [("r1", 0.5, "alice")]

    if backend == "postgresql":
        log.log_predictions("r2", "m1", "ndarray", x[:1] / 255.0, probs[:1])
        outcomes = []

        def send(label):
            try:
                PredictionLog(location).add_feedback("r2", [label], labeller=f"l{label}")
                outcomes.append("ok")
            except FeedbackConflict:
                outcomes.append("conflict")
        for _ in range(3):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(send, [1, 2, 1, 2, 1, 2, 1, 2]))
        final = log.labelled_after(0)
        assert len(final[1]) == 3  # r1's two and r2's one: never relabelled
        winner = [r for r in log.read() if r["request_id"] == "r2"][0]["feedback"]
        assert outcomes.count("conflict") == 12 and outcomes.count("ok") == 12, outcomes
        assert winner in (1, 2)


def test_opening_the_log_does_not_wait_for_writes_in_flight(pg_database):
    """PostgreSQL: a process opening the log (its schema step) while another's write is in flight.
    CREATE INDEX IF NOT EXISTS locks the table (SHARE) even when the index exists, so every opening
    waited for the writes in flight and held new ones back; with a feedback transaction holding the
    counter row, the two deadlocked (seen once in CI: one side aborted). Indexes that exist are
    now left alone, and the open completes while the write is still uncommitted."""
    import threading

    import psycopg

    PredictionLog(pg_database).log_predictions("r1", "m1", "ndarray", np.zeros((1, 28, 28)), np.full((1, 10), 0.1))
    opened, errors, done = [], [], threading.Event()

    def open_log():
        try:
            opened.append(PredictionLog(pg_database).find_request("r1"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        done.set()

    with psycopg.connect(pg_database) as writer:  # a feedback write, uncommitted
        writer.execute("UPDATE log_counters SET n = n + 1 WHERE name = 'feedback'")
        writer.execute("UPDATE predictions SET feedback = 1, feedback_seq = 1 WHERE request_id = 'r1'")
        t = threading.Thread(target=open_log)
        t.start()
        finished_first = done.wait(15)  # before the writer commits
        writer.commit()
    t.join(30)
    assert finished_first, "opening the log waited for a write in flight"
    assert not errors and opened == ["r1"], errors
