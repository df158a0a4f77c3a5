"""The prediction log's fault handling without a server: a refused database is a clear
LogUnavailable (naming the database, never its password), at once or on first use."""

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
