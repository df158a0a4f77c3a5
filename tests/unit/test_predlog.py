"""The prediction log's fault handling without a server: a refused database is a clear
LogUnavailable (naming the database, never its password), at once or on first use."""

import time

import numpy as np
import pytest

from deployment.serve import free_port
from mnistcl.predlog import LogUnavailable, PredictionLog, redact

pytestmark = pytest.mark.unit


def test_redact_hides_the_password_only():
    assert redact("postgresql://app:s3cr%40t@db:5432/log") == "postgresql://app:***@db:5432/log"
    assert redact("postgresql://app@db:5432/log") == "postgresql://app@db:5432/log"
    assert redact("/var/lib/predictions.db") == "/var/lib/predictions.db"


def test_refused_postgresql_is_log_unavailable():
    url = f"postgresql://app:topsecret@127.0.0.1:{free_port()}/log"
    with pytest.raises(LogUnavailable, match=r"127\.0\.0\.1.*unavailable") as err:
        PredictionLog(url)
    assert "topsecret" not in str(err.value)
    lazy = PredictionLog(url, connect=False)  # the server's way: construct now, fail on use
    with pytest.raises(LogUnavailable):
        lazy.ping()
    with pytest.raises(LogUnavailable):
        lazy.log_rejected("predict", "bad payload")


def test_retention_deletes_in_batches_and_keeps_what_is_unchecked(tmp_path):
    """Old rows go in transactions of ``batch`` rows (the server keeps writing between them);
    rows above the monitoring's cursor stay, with their shadow answers."""
    log = PredictionLog(tmp_path / "p.db")
    probs = np.full((1, 10), 0.1)
    for i in range(10):
        log.log_predictions(f"r{i}", "m1", "ndarray", np.zeros((1, 28, 28)), probs, shadow=[("m2", probs)])
    log._tx([("UPDATE predictions SET at = at - ?", [(1000.0,)])])
    calls = []
    real = log._transaction
    log._transaction = lambda body: calls.append(1) or real(body)
    assert log.delete_old(before=time.time(), checked_through=8, learned_through=0, batch=3) == (8, 2)
    assert len(calls) == 4  # 3 + 3 + 2, then one that finds nothing
    assert log.request_ids() == {"r8", "r9"}
    assert log._query("SELECT COUNT(*) FROM shadow")[0][0] == 2
