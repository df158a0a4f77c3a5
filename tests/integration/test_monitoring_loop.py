"""The loop without Prefect: logged production traffic -> monitoring check -> email / events ->
retraining from feedback -> gate -> promotion; and the guards (lock, cooldown, hysteresis)."""

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mnistcl.predlog import PredictionLog
from mnistcl.settings import Settings
from mnistcl.shifts import apply
from mnistcl.stores import stores
from models.finetune import finetune
from monitoring.check import DRIFT_DETECTED, run_check
from monitoring.rules import load_config
from monitoring.state import monitor_state, retrain_lease
from tests.helpers import seed_champion

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def champion_home(tmp_path, mnist_medium):
    """A home with dataset v1 (3,000 MNIST training digits + 1,000 test) and a small torchnet champion."""
    s = Settings(home=tmp_path / "home")
    return s, seed_champion(s, mnist_medium, tmp_path / "export")["onnx"]


def log_traffic(settings, onnx_path, images, labels=None, per_request=10, prefix="r"):
    """What the model server does for each request: predict, log; then feedback when labels are given."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path))
    plog = PredictionLog(settings.predictions_db_path)
    x = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    for i in range(0, len(x), per_request):
        rid = f"{prefix}{time.time_ns()}-{i}"
        plog.log_predictions(rid, "m1", "ndarray", x[i:i + per_request], sess.run(None, {"image": x[i:i + per_request]})[0])
        if labels is not None:
            plog.add_feedback(rid, [int(v) for v in labels[i:i + per_request]])


def held_out(mnist_medium, n, seed):
    xt, yt = mnist_medium["test"]
    idx = np.random.default_rng(seed).choice(np.arange(1000, len(xt)), n, replace=False)
    return xt[idx], yt[idx]


def test_inverted_inputs_breach_a_rule_and_email_the_data_scientist(champion_home, mnist_medium, smtp_server,
                                                                     pushgateway):
    """... and the window's gauges reach a real Pushgateway, where Prometheus would scrape them,
    labelled with the environment's namespace (the alert routing on the cluster matches on it)."""
    s, onnx = champion_home
    s = s.model_copy(update={"smtp_host": smtp_server.host, "smtp_port": smtp_server.port, "smtp_tls": "none",
                             "alert_to": "ds@bank.example", "pushgateway_url": pushgateway,
                             "k8s_namespace": "mnist-prod"})
    x, _ = held_out(mnist_medium, 300, 1)
    x = x.copy()
    x[:30] = 255 - x[:30]  # 10% of the window arrives with a white background
    log_traffic(s, onnx, x)
    res = run_check(s)
    by = {r.name: r for r in res.input_rules}
    assert by["inverted"].breached and abs(by["inverted"].share - 0.1) < 1e-9
    assert not by["blank"].breached
    assert len(smtp_server.messages) == 1, [m["Subject"] for m in smtp_server.messages]
    msg = smtp_server.messages[0]
    assert "inverted" in msg["Subject"] and msg["To"] == "ds@bank.example"
    assert "inverted polarity" in msg.get_payload()
    assert f"{res.stored}/check.md" in msg.get_payload(decode=True).decode()  # where it lies, not a pod's path
    assert res.alerts[0]["via"] == "smtp"
    assert (s.monitoring_dir / "metrics.prom").read_text().count('mnistcl_input_rule_share{rule="inverted"} 0.1') == 1
    assert res.metrics_push == "ok"
    scraped = httpx.get(f"{pushgateway}/metrics", timeout=10).text
    group = 'instance="",job="mnistcl_monitor",namespace="mnist-prod"'
    assert f'mnistcl_input_rule_share{{{group},rule="inverted"}} 0.1' in scraped
    assert f'mnistcl_window_breach{{{group}}} {int(res.breach)}' in scraped
    assert f'mnistcl_drift_share{{{group}}} {res.drift.share}' in scraped


def test_clean_traffic_is_quiet_and_alerts_fall_back_to_the_outbox(champion_home, mnist_medium):
    s, onnx = champion_home
    s = s.model_copy(update={"pushgateway_url": "http://127.0.0.1:1"})  # nothing listens there
    x, y = held_out(mnist_medium, 300, 2)
    log_traffic(s, onnx, x, y)
    res = run_check(s)
    assert res.status == "checked" and not res.drift.drifted, res.drift.scores
    # An unreachable Pushgateway is reported, and fails nothing: the textfile and the report are written.
    assert res.metrics_push.startswith("Pushgateway http://127.0.0.1:1 unreachable")
    assert "Metrics not pushed" in (Path(res.folder) / "check.md").read_text()
    assert "mnistcl_drift_share" in (s.monitoring_dir / "metrics.prom").read_text()
    assert not any(r.breached for r in res.input_rules), [(r.name, r.share) for r in res.input_rules]
    # A quiet window gets no drift report (drift.report: drifted); its scores are in check.md.
    assert (s.monitoring_dir / "checks").exists() and res.folder and res.drift.report_html is None
    assert "No drift report for this window" in (Path(res.folder) / "check.md").read_text()
    # The reports lie in the shared storage (a pod's home is scratch), and the links open them.
    storage = stores(s)[0].storage
    stamp = Path(res.folder).name
    assert res.stored == storage.describe(f"reports/checks/{stamp}")
    assert storage.get(f"reports/checks/{stamp}/check.md") == (Path(res.folder) / "check.md").read_bytes()
    assert "drift.html" not in res.links
    assert run_check(s).status == "waiting"  # nothing new since
    # Unreachable SMTP: the alert is written to the outbox instead, never lost.
    from monitoring import alerts
    bad = s.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": 1, "smtp_tls": "none"})
    out = alerts.send("test", "body", bad)
    assert out["via"] == "outbox" and "SMTP 127.0.0.1:1 failed" in out["error"]
    assert (s.outbox / out["path"].split("/")[-1]).read_text().count("test") >= 1


def test_drift_triggers_once_then_retraining_from_feedback_promotes(champion_home, mnist_medium, monkeypatch):
    """Rotated handwriting: the first breach waits (hysteresis), the second triggers (event + email),
    the third is held back by the cooldown; the retrain makes a dataset version from feedback,
    fine-tunes with replay, passes the gate and is promoted; a second retrain while one runs
    starts nothing."""
    s, onnx = champion_home
    decisions = []
    for seed in (3, 4, 5):
        x, y = held_out(mnist_medium, 300, seed)
        xr = apply(x, {"rotate": 30}, np.random.default_rng(seed))
        log_traffic(s, onnx, (xr * 255).round().astype(np.uint8), y)
        res = run_check(s)
        assert res.breach and res.drift.drifted, res.reasons
        # A drifted window's drift report lies in the shared storage, and the links open it.
        stamp = Path(res.folder).name
        assert stores(s)[0].storage.get(f"reports/checks/{stamp}/drift.html") == Path(res.drift.report_html).read_bytes()
        assert b"<!DOCTYPE html>" in Path(res.links["drift.html"].removeprefix("file://")).read_bytes()
        assert res.links["drift.html"] in (Path(res.folder) / "check.md").read_text()
        decisions.append(res.decision.retrain)
        if res.decision.retrain:
            assert [e["event"] for e in res.events] == [DRIFT_DETECTED]
            assert any("retraining triggered" in a["subject"] for a in res.alerts)
        else:
            assert not res.events
    assert decisions == [False, True, False]  # hysteresis 2 of 3; then the breaches that triggered are spent
    events = [json.loads(line) for line in s.events_log.read_text().splitlines()]
    assert [e["event"] for e in events] == [DRIFT_DETECTED]

    state, lock = monitor_state(s), retrain_lease(s)
    lock.acquire("another retraining")
    from retraining.retrain import retrain
    assert retrain(s, reason="while busy")["status"] == "skipped"
    lock.release()

    import retraining.retrain as rt
    seen = []  # what the fine-tuning was given (the real fine-tuning runs)
    monkeypatch.setattr(rt, "finetune", lambda *a, **kw: seen.append((a[3], kw)) or finetune(*a, **kw))
    out = retrain(s, strategy="finetune-replay", reason="drift", epochs=2, force=True)
    ds, reg = stores(s)
    assert out["dataset"] == "v2" and out["n_feedback"] == 900
    # The replayed rows are marked, the new digits and their augmented copies are not, and the
    # fine-tuning distils toward the champion on the marked ones.
    (td, kw), = seen
    assert td.replayed is not None and len(td.replayed) == len(td.y_train) == 540 + 1080 + 1080
    assert int(td.replayed.sum()) == 1080 and kw["distill"] == rt.DISTILL > 0
    new_digits = ds.load("v2").train_x[ds.load("v2").train_origin > 0]
    marked_new = {row.tobytes() for row in td.x_train[~td.replayed]}
    assert {row.tobytes() for row in new_digits} <= marked_new  # every new digit is among the unmarked rows
    m = ds.manifest("v2")
    # The held-out share is sized by the evidence the gate needs (548 pairs), capped at 40% of the batch.
    assert m.parent == "v1" and "feedback" in m.source and sum(m.counts["eval"]) == 360
    gate = out["gate"]
    new = reg.get(gate["version"])
    assert new.parent_model == "m1" and new.dataset == "v2" and "retrain (finetune-replay)" in new.note
    assert gate["accuracy"]["v2"] > gate["champion_accuracy"]["v2"] + 0.05, gate  # it learned the new writing
    assert out["status"] == "promoted" and reg.alias("champion") == gate["version"], gate["violations"]
    assert gate["verdict"] == "promote" and gate["decision"]["objective"]["interval"][0] > 0, gate["why"]
    assert not any(r["forgets"] for r in gate["decision"]["slices"])
    assert new.gate_verdict == "promote" and set(new.validation["metrics"]["estimators"]) == {"confidence", "atc",
                                                                                              "atc-entropy"}
    # replay 2:1, and two augmented copies of each new image (retraining/augment.py)
    assert out["train_images"] == {"new": 540, "replayed": 1080, "replayed_by": "slice", "augmented": 1080,
                                   "val_slice": "v2"}
    st = state.read()
    assert st["last_retrain_started"] and st["last_retrain_finished"] >= st["last_retrain_started"]
    assert not lock.running()
    # W&B (offline): the new dataset version and the retraining's candidate are versioned artifacts.
    logs = b"".join(f.read_bytes() for f in (s.home_dir / "wandb" / "wandb").glob("offline-run-*/*.wandb"))
    assert b"dataset-v2" in logs and f"model-{gate['version']}".encode() in logs
    # Nothing new since: the next one (even outside the cooldown) has nothing to learn from.
    assert retrain(s, reason="again", cooldown_hours=0)["status"] == "skipped"

    # The new champion learned rotated handwriting (batch v2): more of it is no longer drift, while
    # handwriting it has never seen still is.
    x, y = held_out(mnist_medium, 300, 6)
    log_traffic(s, onnx, (apply(x, {"rotate": 30}, np.random.default_rng(6)) * 255).round().astype(np.uint8))
    res = run_check(s)
    assert not res.drift.drifted and res.drift.extra["reference"] == "v2", res.drift.extra
    assert res.drift.extra["compared"]["v1"] >= 0.3 and res.drift.report_html is None
    x, y = held_out(mnist_medium, 300, 7)
    log_traffic(s, onnx, (apply(x, {"thicken": 1.5}, np.random.default_rng(7)) * 255).round().astype(np.uint8))
    res = run_check(s)
    assert res.drift.drifted and set(res.drift.extra["compared"]) == {"v1", "v2"}, res.drift.extra
    assert res.drift.report_html.endswith("drift.html")  # against the nearest of the two


def test_forgetting_candidate_is_refused_through_the_real_retraining(champion_home, mnist_medium):
    """Feedback of inverted digits, fine-tuned on without replay: far better on the newest slice,
    confidently worse on MNIST. The retraining registers it, the gate refuses it by the forgetting
    test (not by noise), and the champion stays."""
    from retraining.retrain import retrain

    s, onnx = champion_home
    x, y = held_out(mnist_medium, 600, 11)
    log_traffic(s, onnx, 255 - x, y)
    out = retrain(s, strategy="finetune-replay", reason="test", epochs=3, replay=0.0, force=True)
    _, reg = stores(s)
    gate = out["gate"]
    assert out["status"] == "rejected" and reg.alias("champion") == "m1" and reg.alias("challenger") is None
    assert gate["verdict"] == "reject" and gate["accuracy"]["v2"] > gate["champion_accuracy"]["v2"] + 0.2
    mnist = next(r for r in gate["decision"]["slices"] if r["slice"] == "mnist-test")
    assert mnist["forgets"] and mnist["p_forgets_holm"] < 0.05 and mnist["interval"][1] < -mnist["allowance"]
    assert any(v.startswith("forgetting: forgets slice mnist-test") for v in gate["violations"]), gate["violations"]
    assert reg.get(gate["version"]).gate_verdict == "reject"
    report = Path(gate["report_md"]).read_text()
    assert "**REJECT**" in report and "| mnist-test |" in report and "**yes**" in report


def test_config_error_is_reported_before_anything_runs(champion_home, tmp_path):
    from monitoring.rules import MonitoringConfigError

    s, _ = champion_home
    bad = tmp_path / "bad.yaml"
    bad.write_text("input_rules:\n  - name: x\n    feature: colour\n    below: 1\n    max_share: 0.1\n")
    with pytest.raises(MonitoringConfigError, match="input rule 'x'"):
        run_check(s.model_copy(update={"monitoring_config": str(bad)}))
    assert load_config().window_images == 500
