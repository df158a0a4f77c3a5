"""Retention by age, losing nothing the loop still needs: old logged images go unless the
monitoring has not checked them or their label is in no dataset version yet."""

import json
import os
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcl.predlog import PredictionLog
from mnistcl.settings import Settings
from monitoring.retention import apply_retention
from monitoring.state import monitor_state

pytestmark = pytest.mark.unit
DAY = 86400.0


def _age(log: PredictionLog, days: float) -> None:
    """Make every row logged so far ``days`` old (retention reads the logged time)."""
    log._tx([("UPDATE predictions SET at = at - ?", [(days * DAY,)])])


def test_retention_keeps_what_the_loop_still_needs(tmp_path, monkeypatch, small_store, mnist_small):
    home = tmp_path / "home"
    s = Settings(home=home, storage_url=str(small_store.storage.root))
    log = PredictionLog(s.predictions_db_path)
    x, y = mnist_small["test"]
    probs = np.full((1, 10), 0.1)
    for i in range(10):
        log.log_predictions(f"r{i}", "m1", "ndarray", x[i : i + 1] / 255.0, probs,
                            shadow=[("m2", probs)])
    for i in (0, 1, 8):
        log.add_feedback(f"r{i}", [int(y[i])])
    _age(log, 100)  # all 10 are older than the 90 days
    # The monitoring has checked the first 9; the label of r0 is in a dataset version, r1's and r8's not.
    monitor_state(s, log).update(lambda st: st.update(cursor=9))
    small_store.append(x[:1], y[:1], parent=None, source="feedback", eval_fraction=0.0, feedback=(log.identity(), 0, 1))
    (s.monitoring_dir / "checks" / "old").mkdir(parents=True)
    (s.monitoring_dir / "checks" / "new").mkdir(parents=True)
    old = time.time() - 40 * DAY
    os.utime(s.monitoring_dir / "checks" / "old", (old, old))
    s.outbox.mkdir(parents=True)
    (s.outbox / "a.eml").write_text("old alert")
    os.utime(s.outbox / "a.eml", (old, old))
    (s.outbox / "b.eml").write_text("new alert")
    s.events_log.write_text(json.dumps({"event": "e1", "occurred": "2020-01-01T00:00:00+00:00"}) + "\n"
                            + json.dumps({"event": "e2", "occurred": "2999-01-01T00:00:00+00:00"}) + "\n")
    log.log_rejected("predict", "bad payload")
    log._tx([("UPDATE rejected SET at = at - ?", [(40 * DAY,)])])
    # Check reports in the shared storage: named by their window's end (the old one 40 days ago).
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(old))
    for folder in (f"{stamp}-000", time.strftime("%Y%m%dT%H%M%S-000", time.gmtime())):
        small_store.storage.put(f"reports/checks/{folder}/check.md", b"# check")
        small_store.storage.put(f"reports/checks/{folder}/drift.html", b"<html>")

    dry = apply_retention(s, dry_run=True)
    assert dry["removed"]["prediction_images"] == 7 and log.count() == 10  # nothing deleted in a dry run
    out = apply_retention(s)
    # r0 (learned), r2-r7 (checked, unlabelled) go; r1 (label not learned), r8 (ditto), r9 (unchecked) stay.
    assert out["removed"] == {"prediction_images": 7, "rejected": 1, "reports": 1, "stored_reports": 2, "outbox": 1,
                              "events": 1}
    assert [k.split("/")[2] for k in small_store.storage.list("reports/")] == [folder] * 2  # the new one stays
    assert out["kept_back"] == {"prediction_images": 3}
    assert log.request_ids() == {"r1", "r8", "r9"} and log.rejected_count() == 0
    assert len(log.paired_outcomes("m1", "m2")[0]) == 2  # the shadow answers went with their images
    assert [p.name for p in (s.monitoring_dir / "checks").iterdir()] == ["new"]
    assert [p.name for p in s.outbox.iterdir()] == ["b.eml"]
    assert [json.loads(line)["event"] for line in s.events_log.read_text().splitlines()] == ["e2"]


def test_retention_command_and_ages_from_the_environment(tmp_path, monkeypatch):
    from cli import app

    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNISTCL_RETENTION__PREDICTION_IMAGES_DAYS", "never")
    r = CliRunner().invoke(app, ["monitor", "retention", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dry_run"] and "prediction_images" not in out["removed"] and out["removed"]["outbox"] == 0
    monkeypatch.setenv("MNISTCL_RETENTION__REPORTS_DAYS", "-3")
    bad = CliRunner().invoke(app, ["monitor", "retention"])
    assert bad.exit_code != 0 and "reports_days" in bad.output
