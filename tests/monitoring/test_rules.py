"""Monitoring configuration, rules, hysteresis, the retrain lock, features, the relay's mapping,
and the generated configuration files (no servers)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnistcl.storage import LocalStorage
from monitoring import alertmanager, features, relay
from monitoring.rules import (
    DEFAULT_CONFIG,
    MonitoringConfigError,
    TriggerConfig,
    evaluate_input_rules,
    evaluate_prediction_rules,
    load_config,
)
from monitoring.state import RetrainBusy, RetrainLock, cooldown_from, decide, died

pytestmark = pytest.mark.unit


def write(tmp_path, cfg: dict):
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_default_config_loads():
    cfg = load_config()
    assert cfg.source == str(DEFAULT_CONFIG)
    assert {r.name for r in cfg.input_rules} >= {"blank", "inverted", "off_centre", "wrong_size", "unreadable"}
    assert cfg.confidence_below == 0.5 and cfg.trigger.breaches <= cfg.trigger.of_last


@pytest.mark.parametrize("rule, needle", [
    ({"name": "r1", "feature": "nope", "below": 1, "max_share": 0.1}, "feature must be one of"),
    ({"name": "r2", "feature": "ink", "below": 1, "above": 2, "max_share": 0.1}, "exactly one of below"),
    ({"name": "r3", "feature": "ink", "below": 1, "max_share": 2}, "max_share = 2"),
    ({"name": "r4", "feature": "ink", "outside": [3, 1], "max_share": 0.1}, "low < high"),
    ({"name": "r5", "feature": "ink", "below": 1, "max_share": 0.1, "action": "page"}, "action must be"),
    ({"name": "r6", "feature": "ink", "below": 1, "max_share": 0.1, "colour": "red"}, "unknown fields"),
    ({"feature": "ink", "below": 1, "max_share": 0.1}, "needs a name"),
])
def test_bad_rules_name_the_rule_and_field(tmp_path, rule, needle):
    with pytest.raises(MonitoringConfigError, match=needle) as e:
        load_config(write(tmp_path, {"input_rules": [rule]}))
    if "name" in rule:
        assert rule["name"] in str(e.value)


def test_bad_trigger_and_sections(tmp_path):
    with pytest.raises(MonitoringConfigError, match="cannot exceed"):
        load_config(write(tmp_path, {"trigger": {"breaches": 4, "of_last": 3}}))
    with pytest.raises(MonitoringConfigError, match="unknown sections"):
        load_config(write(tmp_path, {"windows": {}}))
    with pytest.raises(MonitoringConfigError, match="strategy"):
        load_config(write(tmp_path, {"trigger": {"strategy": "magic"}}))
    with pytest.raises(MonitoringConfigError, match=r"trigger: cooldown_hours must be a number, got 'soon'"):
        load_config(write(tmp_path, {"trigger": {"cooldown_hours": "soon"}}))
    with pytest.raises(MonitoringConfigError, match=r"reference_batches = -1 is outside"):
        load_config(write(tmp_path, {"reference_batches": -1}))
    with pytest.raises(MonitoringConfigError, match=r"low_confidence: max_share = 1.5 is outside"):
        load_config(write(tmp_path, {"prediction_rules": {"low_confidence": {"max_share": 1.5}}}))
    assert load_config(write(tmp_path, {"reference_batches": 0})).reference_batches == 0
    with pytest.raises(MonitoringConfigError, match=r"trigger: overwhelming_drift = 1.5 is outside"):
        load_config(write(tmp_path, {"trigger": {"overwhelming_drift": 1.5}}))
    assert load_config(write(tmp_path, {"trigger": {"overwhelming_drift": None}})).trigger.overwhelming_drift is None
    assert load_config(write(tmp_path, {"trigger": {"overwhelming_drift": 0.8}})).trigger.overwhelming_drift == 0.8
    with pytest.raises(MonitoringConfigError, match=r"overwhelming_drift \(0.3\) must be above drift.drift_share"):
        load_config(write(tmp_path, {"trigger": {"overwhelming_drift": 0.3}}))


def test_a_user_rule_in_yaml_without_code(tmp_path, mnist_small):
    cfg = load_config(write(tmp_path, {"input_rules": [
        {"name": "italic", "description": "strongly slanted writing", "feature": "slant", "outside": [-0.4, 0.4],
         "max_share": 0.2}]}))
    x = mnist_small["test"][0][:100]
    feats = features.features(x)
    (res,) = evaluate_input_rules(cfg, feats, n_rejected=0)
    assert res.name == "italic" and not res.breached
    from mnistcl.shifts import apply
    slanted = features.features(apply(x, {"slant": 0.6}, np.random.default_rng(0)))
    (res,) = evaluate_input_rules(cfg, slanted, n_rejected=0)
    assert res.breached and res.share > 0.5


def test_features_see_polarity_blank_and_position(mnist_small):
    x = mnist_small["test"][0][:50].astype(np.float32) / 255
    f = features.features(x)
    assert list(f.columns) == features.COLUMNS and len(f) == 50
    assert (f["border"] < 0.05).all() and (features.features(1 - x)["border"] > 0.9).all()
    assert (features.features(np.zeros((3, 28, 28)))["ink_px"] == 0).all()
    shifted = np.zeros_like(x)
    shifted[:, :, 6:] = x[:, :, :-6]  # 6 pixels to the right
    assert np.median(features.features(shifted)["centre_offset"]) > 4 > np.median(f["centre_offset"])
    assert np.allclose(features.features(mnist_small["test"][0][:50]), f)  # uint8 or float: the same


def test_rejected_and_prediction_rules():
    cfg = load_config()
    feats = features.features(np.zeros((100, 28, 28)))
    by = {r.name: r for r in evaluate_input_rules(cfg, feats, n_rejected=20)}
    assert by["unreadable"].breached and abs(by["unreadable"].share - 20 / 120) < 1e-9
    assert by["blank"].breached
    conf = np.r_[np.full(80, 0.9), np.full(20, 0.3)]
    digits = np.zeros(100, int)
    fb = np.r_[np.zeros(60, int), np.ones(40, int)]  # 60% right
    by = {r.name: r for r in evaluate_prediction_rules(cfg, conf, digits, fb)}
    assert by["low_confidence"].breached and by["low_confidence"].share == 0.2
    assert by["feedback_accuracy"].breached and by["feedback_accuracy"].share == 0.6
    few = evaluate_prediction_rules(cfg, conf, digits, np.full(100, -1))
    assert [r.name for r in few] == ["low_confidence"]  # no accuracy rule without labels


@pytest.mark.parametrize("history, running, last, expect", [
    ([True], False, None, False),                        # one noisy window: nothing
    ([True, False, False, True], False, None, False),    # 1 of the last 3
    ([False, True, True], False, None, True),            # 2 of 3
    ([True, True, True], True, None, False),             # a retraining is running
    ([True, True, True], False, -3600, False),           # an hour after the last: still in the 6 h cooldown
    ([True, True, True], False, -7 * 3600, True),        # cooldown over
])
def test_hysteresis_and_cooldown(history, running, last, expect):
    now = time.time()
    d = decide(history, TriggerConfig(breaches=2, of_last=3, cooldown_hours=6), now=now,
               last_retrain_started=None if last is None else now + last, retrain_running=running)
    assert d.retrain is expect, d.reason


@pytest.mark.parametrize("history, share, running, last, expect", [
    ([True], 0.9, False, None, True),                    # one window, most features drifted: retrain now
    ([True], 0.5, False, None, False),                   # a clear drift, but one window: wait for a second
    ([False], 0.9, False, None, False),                  # a share without a breach (never in practice): nothing
    ([True], 0.9, True, None, False),                    # a retraining is running
    ([True], 0.9, False, -3600, False),                  # the cooldown still holds
    ([True], None, False, None, False),                  # no drift measured
])
def test_an_overwhelming_drift_triggers_alone(history, share, running, last, expect):
    now = time.time()
    trig = TriggerConfig(breaches=2, of_last=3, cooldown_hours=6, overwhelming_drift=0.8)
    d = decide(history, trig, now=now, last_retrain_started=None if last is None else now + last,
               retrain_running=running, drift_share=share)
    assert d.retrain is expect, d.reason
    if expect:
        assert d.reason.startswith("overwhelming drift: 90%")
    off = TriggerConfig(breaches=2, of_last=3, cooldown_hours=6)  # unset: hysteresis only
    assert not decide([True], off, now=now, last_retrain_started=None, retrain_running=False, drift_share=1.0).retrain


def test_spent_and_stale_breaches_do_not_trigger_again():
    from monitoring.check import live_breaches

    b = lambda breach, data, **kw: {"breach": breach, "champion_data": data, **kw}  # noqa: E731
    windows = [b(True, "v1"), b(True, "v1", triggered=True), b(True, "v1"), b(False, "v2"), b(True, "v2")]
    assert live_breaches(windows, "v2") == [False, True]    # the champion changed: v1's windows are stale
    assert live_breaches(windows, "v1") == [True]           # only the breach after the trigger is live
    assert live_breaches(windows[:1], "v1") == [True]       # nothing triggered yet
    # A champion whose data was cut before the breaching windows (an older challenger promoted)
    # has not learned them: they stay live. Data cut after them: they are covered, stale.
    t = lambda breach, data, end: {"breach": breach, "champion_data": data, "end": end}  # noqa: E731
    later = [t(True, "v1", 10.0), t(True, "v1", 20.0)]
    assert live_breaches(later, "v2", data_cut=15.0) == [True]
    assert live_breaches(later, "v2", data_cut=5.0) == [True, True]
    assert live_breaches(later, "v2", data_cut=25.0) == []
    cfg = TriggerConfig(breaches=2, of_last=3, cooldown_hours=0)
    assert not decide(live_breaches(windows, "v1"), cfg, now=0, last_retrain_started=None, retrain_running=False).retrain


def test_retrain_lease_is_exclusive_owned_and_expires(tmp_path):
    store = LocalStorage(tmp_path)
    a = RetrainLock(store)
    a.acquire("first")
    assert a.running() and a.holder()["who"] == "first"
    with pytest.raises(RetrainBusy, match="already running"):
        RetrainLock(store).acquire("second")
    RetrainLock(store).release()  # not the owner: nothing happens
    assert a.running()
    a.release()
    assert not a.running()
    # A holder that died without releasing: its lease expires.
    store.put(RetrainLock.KEY, json.dumps({"who": "crashed", "owner": "gone", "expires": time.time() - 1}).encode())
    RetrainLock(store).acquire("after a crash")
    assert RetrainLock(store).holder()["who"] == "after a crash"


def _take_lease(root, barrier, out):
    from mnistcl.storage import LocalStorage
    from monitoring.state import RetrainBusy, RetrainLock

    barrier.wait()
    try:
        RetrainLock(LocalStorage(root)).acquire("racer")
        out.put("got it")
    except RetrainBusy:
        out.put("busy")


def _bump(root, n):
    from mnistcl.storage import LocalStorage
    from monitoring.state import MonitorState

    state = MonitorState(LocalStorage(root), "log-a")
    for _ in range(n):
        state.update(lambda st: st.update(cursor=st["cursor"] + 1))


def test_shared_state_is_compare_and_swap_across_processes(tmp_path):
    """Processes sharing one store: 4 x 25 increments of the cursor all land (none lost to a
    read-modify-write race), and of 6 processes taking the lease at once exactly one gets it."""
    import multiprocessing as mp

    from monitoring.state import MonitorState

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert MonitorState(LocalStorage(tmp_path), "log-a").read()["cursor"] == 100
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_take_lease, args=(str(tmp_path / "lease"), barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(out.get(timeout=10) for _ in procs) == ["busy"] * 5 + ["got it"]


def test_relay_maps_firing_alerts_to_prefect_events():
    body = {"receiver": "prefect-relay", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "MnistLowConfidenceShareHigh", "prefect_event": "mnistcl.confidence.low",
                                        "severity": "warning"}, "annotations": {"summary": "30%"}, "fingerprint": "ab"},
        {"status": "resolved", "labels": {"alertname": "Old"}},
        {"status": "firing", "labels": {"alertname": "MnistPredictLatencyHigh"}}]}
    events = relay.to_events(body)
    assert [e["event"] for e in events] == ["mnistcl.confidence.low", "mnistcl.alert.MnistPredictLatencyHigh"]
    assert events[0]["resource"]["prefect.resource.id"] == "mnistcl.alertmanager.MnistLowConfidenceShareHigh"
    assert events[0]["payload"]["annotations"] == {"summary": "30%"}
    for bad, needle in [({"x": 1}, "alerts"), ({"alerts": [{"status": "firing"}]}, "no labels"), ([], "alerts")]:
        with pytest.raises(relay.RelayError, match=needle):
            relay.to_events(bad)


def test_relay_requires_its_token_from_a_file(tmp_path):
    """`python -m monitoring.relay --token-file` (how the cluster runs it): 401 without the token,
    200 with it; /healthz stays open for the probes."""
    import subprocess
    import sys

    import httpx

    from deployment.serve import free_port, wait_http_ok

    (tmp_path / "token").write_text("t0ken\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitoring.relay", "--port", str(port), "--prefect-api",
                             "http://127.0.0.1:1/api", "--token-file", str(tmp_path / "token")],
                            cwd=Path(relay.__file__).parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_http_ok(f"{url}healthz", 30)
        assert httpx.post(url, json={"alerts": []}, timeout=10).status_code == 401
        assert httpx.post(url, json={"alerts": []}, headers={"Authorization": "Bearer t0ke"}, timeout=10).status_code == 401
        ok = httpx.post(url, json={"alerts": []}, headers={"Authorization": "Bearer t0ken"}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"relayed": []}
    finally:
        proc.terminate()
        proc.wait(10)


def test_generated_files_match_their_generators():
    from pathlib import Path

    from deployment.orchestrate import GPU_TEMPLATE, gpu_job_template

    committed = (Path(alertmanager.__file__).parent / "alertmanager.yml").read_text()
    assert committed == alertmanager.render(), "run: python -m monitoring.alertmanager > monitoring/alertmanager.yml"
    assert json.loads(GPU_TEMPLATE.read_text()) == gpu_job_template(), \
        "run: python -c 'from deployment.orchestrate import write_gpu_template; write_gpu_template()'"
    t = gpu_job_template()
    pod = t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
    assert pod["tolerations"] == "{{ tolerations }}"  # GPU flows by default; see test_infra for the CPU ones
    assert t["variables"]["properties"]["tolerations"]["default"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.skipif(not __import__("shutil").which("promtool"), reason="promtool missing (Debian package prometheus)")
def test_prometheus_rules_pass_promtool_unit_tests():
    import subprocess
    from pathlib import Path

    folder = Path(alertmanager.__file__).parent / "prometheus"
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "rules.test.yml"], cwd=folder, capture_output=True, text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


@pytest.mark.skipif(not __import__("shutil").which("amtool"), reason="amtool missing (Debian package prometheus-alertmanager)")
def test_alertmanager_config_routes_alerts_to_email_and_the_relay():
    import subprocess
    from pathlib import Path

    cfg = str(Path(alertmanager.__file__).parent / "alertmanager.yml")
    assert subprocess.run(["amtool", "check-config", cfg], capture_output=True).returncode == 0

    def route(*labels):
        out = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={cfg}", *labels],
                             capture_output=True, text=True)
        return out.stdout.strip()

    assert route("alertname=MnistInputDrift", "prefect_event=mnistcl.drift.detected") == \
        "prefect-relay,data-scientist-email"
    assert route("alertname=MnistPredictLatencyHigh") == "data-scientist-email"


def test_a_live_holder_renews_its_lease_and_a_dead_ones_lapses(tmp_path):
    """A short lease (0.6 s): renewed every 0.2 s while held, so it outlives its length; a holder
    that stops renewing (a killed pod) loses it within one length."""
    store = LocalStorage(tmp_path)
    a = RetrainLock(store, ttl_s=0.6)
    a.acquire("long retraining")
    first = a.holder()["expires"]
    time.sleep(1.5)
    assert a.holder() is not None and a.holder()["expires"] > first + 0.5 and a.lost is None
    with pytest.raises(RetrainBusy):
        RetrainLock(store, ttl_s=0.6).acquire("second")
    a._stop.set()  # the heartbeat stops, as when the pod is killed
    a._beat.join()
    time.sleep(0.8)
    b = RetrainLock(store, ttl_s=0.6)
    b.acquire("after the holder died")
    assert not a.renew()  # the old holder cannot take it back
    a.owner = None
    b.release()
    assert not b.running()


def test_a_retraining_that_died_starts_no_cooldown_once():
    st = {"last_retrain_started": 100.0, "last_retrain_finished": 50.0, "last_trigger": 99.0}
    assert died(st, running=False) and cooldown_from(st, running=False) is None
    assert not died(st, running=True) and cooldown_from(st, running=True) == 100.0  # still running
    st["last_trigger"] = 120.0  # a trigger after the start is its own
    assert cooldown_from(st, running=False) == 120.0
    st.update(last_trigger=99.0, retry_of_crash=100.0)  # the retry of a crash died too: cooldown holds
    assert not died(st, running=False) and cooldown_from(st, running=False) == 100.0
    st.update(last_retrain_finished=130.0)
    assert not died(st, running=False) and cooldown_from(st, running=False) == 100.0
