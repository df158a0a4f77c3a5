"""The orchestrated loop for real on 127.0.0.1: a Prefect server with the deployments of
prefect.yaml (both work pools), a process worker, Alertmanager (the Debian package), a local SMTP
server and the relay. An emitted event creates a retrain flow run that the worker executes; an
alert posted to Alertmanager produces an email and a retrain flow run."""

import json
import os
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from deployment import orchestrate as orch
from deployment import serve as launch
from deployment.serve import free_port
from mnistcl import prefect_client
from mnistcl.events import announce
from monitoring.alertmanager import render
from monitoring.relay import make_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_for(fn, timeout=120.0, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every)
    return None


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    work = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = orch.start_server(work / "home", port, work / "server.log")
    try:
        if not orch.wait_for_api(api):
            pytest.fail("Prefect server did not start:\n" + (work / "server.log").read_text()[-3000:])
        orch.create_pools(api, work / "home")
        k8s = ["train-k8s", "monitor-k8s", "retrain-k8s", "judge-k8s", "retention-k8s"]
        with pytest.raises(ValueError, match="MNISTCL_TRAIN_IMAGE"):  # never the placeholder as an image
            orch.deploy(api, work / "home", k8s, train_image="")
        out = orch.deploy(api, work / "home", ["train", "monitor", "retrain", "judge", "retention", *k8s],
                          train_image=TRAIN_IMAGE)
        yield {"api": api, "home": work / "home", "work": work, "deploy_output": out}
    finally:
        launch.stop(server, term_wait=30)


TRAIN_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/mnist-continual/train:0a1b2c3"


def deployment(api, name):
    deps = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10).json()
    return next(d for d in deps if d["name"] == name)


def test_deployments_pools_schedules_and_limits(prefect):
    api = prefect["api"]
    pools = {p["name"]: p for p in httpx.post(f"{api}/work_pools/filter", json={}, timeout=10).json()}
    assert pools["mnistcl-local"]["type"] == "process" and pools["mnistcl-k8s"]["type"] == "kubernetes"
    tmpl = pools["mnistcl-k8s"]["base_job_template"]
    assert tmpl["variables"]["properties"]["gpu_limit"]["default"] == 1
    retrain = deployment(api, "retrain")
    assert retrain["work_pool_name"] == "mnistcl-local"
    assert [s["schedule"].get("cron") for s in retrain["schedules"]] == ["0 3 * * 1"]
    assert retrain["concurrency_limit"] == 1 or (retrain.get("global_concurrency_limit") or {}).get("limit") == 1
    assert (retrain.get("concurrency_options") or {}).get("collision_strategy") == "CANCEL_NEW"
    assert deployment(api, "monitor")["schedules"][0]["schedule"]["interval"] == 300
    k8s = deployment(api, "retrain-k8s")
    assert k8s["work_pool_name"] == "mnistcl-k8s" and k8s["job_variables"]["gpu_limit"] == 1
    assert {deployment(api, f"{n}-k8s")["job_variables"]["image"] for n in ("train", "monitor", "retrain", "judge",
                                                                              "retention")} == {TRAIN_IMAGE}
    judge = deployment(api, "judge")  # the challenger's judgement: hourly, and on new shadow evidence
    assert judge["schedules"][0]["schedule"]["interval"] == 3600 and judge["work_pool_name"] == "mnistcl-local"
    assert deployment(api, "judge-k8s")["job_variables"]["gpu_limit"] == 0
    retention = deployment(api, "retention")  # retention ages applied daily
    assert [s["schedule"].get("cron") for s in retention["schedules"]] == ["30 4 * * *"]
    assert deployment(api, "retention-k8s")["job_variables"]["gpu_limit"] == 0
    autos = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    expects = sorted(e for a in autos for e in a["trigger"].get("expect", []))
    assert expects.count("mnistcl.drift.detected") == 2 and expects.count("mnistcl.dataset.updated") == 2
    assert expects.count("mnistcl.challenger.evidence") == 2


def small_system(home, mnist_small):
    """Dataset v1 and a champion trained on it: no feedback yet, so a retrain has nothing to learn."""
    import models.torchnet as tn
    from mnistcl.settings import Settings
    from mnistcl.stores import stores
    from models.common import NullReporter, TrainData

    ds, reg = stores(Settings(home=home))
    (x, y), (xt, yt) = mnist_small["train"], mnist_small["test"]
    ds.create({"train": (x, y), "test": (xt, yt)}, parent=None, source="test")
    m = tn.train(TrainData(x, y, xt, yt), tn.Config(epochs=1, channels=8), NullReporter())
    mv = reg.register(files=m.export(home / "export"), family="torchnet", config=json.loads(json.dumps(m.config.__dict__)),
                      dataset="v1")
    reg.promote(mv.id, "champion", reason="test")


def test_event_creates_a_retrain_run_that_a_worker_executes(prefect, tmp_path, mnist_small):
    api = prefect["api"]
    env_home = tmp_path / "mnistcl"
    small_system(env_home, mnist_small)
    os.environ["MNISTCL_HOME"] = str(env_home)
    try:
        worker = orch.start_worker(api, prefect["home"], tmp_path / "worker.log")
    finally:
        del os.environ["MNISTCL_HOME"]
    try:
        ev = announce("mnistcl.drift.detected", "mnistcl.monitor", {"reasons": ["test"]}, prefect_api=api)
        assert ev["delivered"] == "prefect"
        run = wait_for(lambda: next((r for r in prefect_client.flow_runs(api, "retrain/retrain")
                                     if r.parameters.get("reason", "").startswith("mnistcl.drift.detected")), None))
        assert run, "no flow run for the event"
        assert run.parameters["reason"] == "mnistcl.drift.detected from mnistcl.monitor"
        # Prefect's client waits for the run and reads its persisted result back (no artifact parsing).
        done, result = prefect_client.run_result(api, run.id, timeout=240)
        assert done.state.is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
        assert result["status"] == "skipped" and "no new labelled data since the champion m1" in result["why"], result
        arts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}},
                          timeout=10).json()
        summary = next(a for a in arts if a["key"] == "retrain-summary")["data"]
        assert "Skipped: no new labelled data since the champion m1" in summary, summary
        # A dataset version made by the retrain flow itself does not retrigger it; a user's does.
        before = len(prefect_client.flow_runs(api, "retrain/retrain"))
        announce("mnistcl.dataset.updated", "mnistcl.dataset.v7", {"version": "v7"}, prefect_api=api,
                 labels={"mnistcl.origin": "retrain"})
        announce("mnistcl.dataset.updated", "mnistcl.dataset.v8", {"version": "v8"}, prefect_api=api,
                 labels={"mnistcl.origin": "user"})
        v8 = wait_for(lambda: next((r for r in prefect_client.flow_runs(api, "retrain/retrain")
                                    if r.parameters.get("reason", "").endswith("v8")), None))
        assert v8, "no flow run for the user's dataset version"
        # The v7 event was posted first: once the v8 run has finished, a run for v7 would exist.
        assert prefect_client.wait_for_run(api, v8.id, timeout=240).state.is_final()
        reasons = [r.parameters["reason"] for r in prefect_client.flow_runs(api, "retrain/retrain")
                   if "dataset.updated" in r.parameters.get("reason", "")]
        assert reasons == ["mnistcl.dataset.updated: v8"], reasons
        assert len(prefect_client.flow_runs(api, "retrain/retrain")) == before + 1
    finally:
        launch.stop(worker, term_wait=30)


@pytest.mark.skipif(not shutil.which("prometheus-alertmanager") and not shutil.which("alertmanager"),
                    reason="Alertmanager is not installed (Debian package prometheus-alertmanager)")
def test_alertmanager_alert_emails_and_starts_a_retrain_run(prefect, smtp_server, tmp_path):
    api = prefect["api"]
    token = "s3cret-relay-token"
    relay = make_server("127.0.0.1", free_port(), api, events_log=tmp_path / "events.jsonl", token=token)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    am_port = free_port()
    cfg = tmp_path / "alertmanager.yml"
    (tmp_path / "relay-token").write_text(token)
    cfg.write_text(render(smtp_smarthost=f"127.0.0.1:{smtp_server.port}", email_to="ds@bank.example",
                          relay_url=f"http://127.0.0.1:{relay.server_address[1]}/", group_wait="1s",
                          group_interval="2s", relay_token_file=str(tmp_path / "relay-token")))
    check = subprocess.run(["amtool", "check-config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    am = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                          stdout=open(tmp_path / "am.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{am_port}"
        assert wait_for(lambda: _ok(f"{url}/-/ready"), timeout=30), (tmp_path / "am.log").read_text()[-2000:]
        before = {r.id for r in prefect_client.flow_runs(api, "retrain/retrain")}
        alert = [{"labels": {"alertname": "MnistLowConfidenceShareHigh", "prefect_event": "mnistcl.confidence.low",
                             "severity": "warning"},
                  "annotations": {"summary": "30% of predictions have confidence below 0.5"},
                  "startsAt": datetime.now(UTC).isoformat()}]
        r = httpx.post(f"{url}/api/v2/alerts", json=alert, timeout=10)
        assert r.status_code == 200, r.text
        assert wait_for(lambda: smtp_server.messages, timeout=60), (tmp_path / "am.log").read_text()[-2000:]
        msg = smtp_server.messages[0]
        assert "MnistLowConfidenceShareHigh" in msg["Subject"] and msg["To"] == "ds@bank.example"
        run = wait_for(lambda: next((r for r in prefect_client.flow_runs(api, "retrain/retrain") if r.id not in before
                                     and "mnistcl.confidence.low" in r.parameters.get("reason", "")), None), timeout=60)
        assert run, "no retrain flow run from the alert"
        assert run.parameters["reason"] == "mnistcl.confidence.low from mnistcl.alertmanager.MnistLowConfidenceShareHigh"
        relayed = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [e["event"] for e in relayed][:1] == ["mnistcl.confidence.low"]
        # The relay refuses a POST without the token, or what is not Alertmanager's JSON, and keeps serving.
        relay_url = f"http://127.0.0.1:{relay.server_address[1]}/"
        anon = httpx.post(relay_url, json={"alerts": []}, timeout=10)
        assert anon.status_code == 401 and "bearer token" in anon.json()["error"]
        wrong = httpx.post(relay_url, json={"alerts": []}, headers={"Authorization": "Bearer guess"}, timeout=10)
        assert wrong.status_code == 401
        bad = httpx.post(relay_url, content=b"nope", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
        assert httpx.get(f"http://127.0.0.1:{relay.server_address[1]}/healthz", timeout=10).status_code == 200
    finally:
        launch.stop(am, term_wait=15)
        relay.shutdown()
        relay.server_close()


def _ok(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
