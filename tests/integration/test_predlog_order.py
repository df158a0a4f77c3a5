"""Exact cursors on a real PostgreSQL: sequence numbers commit in order (a writer waits for the
one before it), windows never split a request, and a window read from a cursor repeats nothing
and misses nothing."""

import threading
import time

import numpy as np
import psycopg
import pytest

from mnistcl.predlog import PredictionLog

pytestmark = pytest.mark.integration


def _probs(n):
    p = np.full((n, 10), 0.01)
    p[:, 3] = 0.91
    return p


def test_numbers_commit_in_order_and_windows_cover_each_image_once(postgres_url):
    url = postgres_url.rsplit("/", 1)[0] + "/order_" + str(int(time.time() * 1000) % 10**8)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {url.rsplit('/', 1)[1]}")
    log = PredictionLog(url)
    imgs = np.zeros((3, 28, 28), np.float32)
    log.log_predictions("a", "m1", "ndarray", imgs, _probs(3))
    # A writer holding the next numbers (its transaction still open) makes the next writer wait:
    # no row can commit with a higher number before a lower one.
    held = psycopg.connect(url)
    held.execute("UPDATE log_counters SET n = n + 2 WHERE name = 'predictions'")
    done = threading.Event()
    t = threading.Thread(target=lambda: (log.log_predictions("b", "m1", "ndarray", imgs[:2], _probs(2)), done.set()))
    t.start()
    assert not done.wait(1.0), "a later write committed while an earlier number was still open"
    held.commit()
    held.close()
    assert done.wait(10)
    t.join()
    for i in range(40):
        log.log_predictions(f"r{i:02d}", "m1", "ndarray", imgs[: 1 + i % 3], _probs(1 + i % 3))
    seen, cursor = [], 0
    while rows := log.window(after=cursor, limit=7):
        assert len({r[8] for r in rows[-1:]} & {r[8] for r in log.window(after=rows[-1][7], limit=7)}) == 0
        seen += [(r[8], r[7]) for r in rows]
        cursor = rows[-1][7]
    assert len(seen) == len(set(seen)) == log.count()  # every image once
    numbers = [s for _, s in seen]
    assert numbers == sorted(numbers) and numbers[:3] == [1, 2, 3] and numbers[3] == 6  # 4, 5: the held ones
