"""A failed flow run emails the data scientist (the on_failure hook every flow carries)."""

import pytest
from prefect import flow

from flows import judge, monitor, retrain, train
from flows.hooks import alert_on_failure

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_every_flow_carries_the_failure_hooks():
    for f in (train.automl, monitor.monitor, retrain.retrain, judge.judge):
        assert alert_on_failure in f.on_failure_hooks and alert_on_failure in f.on_crashed_hooks, f.name


def test_a_failed_run_emails_over_smtp(prefect_server, smtp_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNISTCL_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("MNISTCL_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("MNISTCL_SMTP_TLS", "none")

    @flow(name="doomed", on_failure=[alert_on_failure])
    def doomed(config: str | None = None):
        raise RuntimeError("the store is unreachable")

    state = doomed(return_state=True)
    assert state.is_failed()
    assert len(smtp_server.messages) == 1
    msg = smtp_server.messages[0]
    body = msg.get_payload(decode=True).decode() if not msg.is_multipart() else msg.get_payload(0).get_payload()
    assert "flow doomed failed" in msg["Subject"].lower()
    assert "the store is unreachable" in body and "'doomed'" in body
