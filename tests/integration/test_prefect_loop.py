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
    mp = pytest.MonkeyPatch()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = orch.start_server(work / "home", port, work / "server.log")
    try:
        if not orch.wait_for_api(api):
            pytest.fail("Prefect server did not start:\n" + (work / "server.log").read_text()[-3000:])
        orch.create_pools(api, work / "home")
        k8s = ["train-k8s", "trial-k8s", "monitor-k8s", "retrain-k8s", "judge-k8s", "retention-k8s"]
        with pytest.raises(ValueError, match="MNISTCL_TRAIN_IMAGE"):  # never the placeholder as an image
            orch.deploy(api, work / "home", k8s, train_image="")
        out = orch.deploy(api, work / "home", ["train", "monitor", "retrain", "judge", "retention", *k8s],
                          train_image=TRAIN_IMAGE)
        # This process's Prefect client (mnistcl.prefect_client, announce) authenticates as the CLI does.
        mp.setenv("PREFECT_API_AUTH_STRING", orch.auth_string(work / "home"))
        yield {"api": api, "home": work / "home", "work": work, "deploy_output": out,
               "http": orch.api_http(api, work / "home")}
    finally:
        mp.undo()
        launch.stop(server, term_wait=30)


TRAIN_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/mnist-continual/train:0a1b2c3"


def deployment(prefect, name):
    deps = prefect["http"].post(f"{prefect['api']}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10).json()
    return next(d for d in deps if d["name"] == name)


def test_deployments_pools_schedules_and_limits(prefect):
    api = prefect["api"]
    # The local server requires its auth string and a CSRF token: without either, nothing is created.
    assert httpx.get(f"{api}/admin/version", timeout=10).status_code == 401
    assert httpx.post(f"{api}/work_pools/filter", json={}, timeout=10).status_code in (401, 403)
    user, _, password = orch.auth_string(prefect["home"]).partition(":")
    no_csrf = httpx.post(f"{api}/flow_runs/filter", json={}, auth=(user, password), timeout=10)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text, no_csrf.text
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200  # the probe stays open
    pools = {p["name"]: p for p in prefect["http"].post(f"{api}/work_pools/filter", json={}).json()}
    assert pools["mnistcl-local"]["type"] == "process" and pools["mnistcl-k8s"]["type"] == "kubernetes"
    tmpl = pools["mnistcl-k8s"]["base_job_template"]
    assert tmpl["variables"]["properties"]["gpu_limit"]["default"] == 1
    retrain = deployment(prefect, "retrain")
    assert retrain["work_pool_name"] == "mnistcl-local"
    assert [s["schedule"].get("cron") for s in retrain["schedules"]] == ["0 3 * * 1"]
    assert retrain["concurrency_limit"] == 1 or (retrain.get("global_concurrency_limit") or {}).get("limit") == 1
    assert (retrain.get("concurrency_options") or {}).get("collision_strategy") == "CANCEL_NEW"
    assert deployment(prefect, "monitor")["schedules"][0]["schedule"]["interval"] == 300
    k8s = deployment(prefect, "retrain-k8s")
    assert k8s["work_pool_name"] == "mnistcl-k8s" and k8s["job_variables"]["gpu_limit"] == 1
    assert {deployment(prefect, f"{n}-k8s")["job_variables"]["image"] for n in ("train", "monitor", "retrain", "judge",
                                                                              "retention")} == {TRAIN_IMAGE}
    judge = deployment(prefect, "judge")  # the challenger's judgement: hourly, and on new shadow evidence
    assert judge["schedules"][0]["schedule"]["interval"] == 3600 and judge["work_pool_name"] == "mnistcl-local"
    assert deployment(prefect, "judge-k8s")["job_variables"]["gpu_limit"] == 0
    retention = deployment(prefect, "retention")  # retention ages applied daily
    assert [s["schedule"].get("cron") for s in retention["schedules"]] == ["30 4 * * *"]
    assert deployment(prefect, "retention-k8s")["job_variables"]["gpu_limit"] == 0
    autos = prefect["http"].post(f"{api}/automations/filter", json={}).json()
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
        arts = prefect["http"].post(f"{api}/artifacts/filter",
                                    json={"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}}).json()
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


def _raw(port: int, data: bytes, *, read: bool = True, timeout: float = 20.0) -> tuple[int | None, bytes]:
    """Send raw bytes to the relay; (HTTP status or None when it closed without one, the body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return None, b""
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):
        return None, raw
    return int(raw.split(b" ", 2)[1]), raw.split(b"\r\n\r\n", 1)[-1]


RELAY_TOKEN = "relay-corpus-token-0123456789"


def relay_cases() -> list[tuple[str, bytes, int | None, str]]:
    """(name, raw request, expected status (None: closed), text in the answer) for the relay."""
    auth = f"Authorization: Bearer {RELAY_TOKEN}\r\n".encode()

    def post(body: bytes, headers: bytes = b"", *, length: bytes | None = None, with_auth: bool = True) -> bytes:
        cl = b"Content-Length: " + (length if length is not None else str(len(body)).encode()) + b"\r\n"
        return (b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n" + (auth if with_auth else b"")
                + headers + (cl if length != b"" else b"") + b"\r\n" + body)

    def alert(labels: dict) -> bytes:
        return json.dumps({"status": "firing", "alerts": [{"status": "firing", "labels": labels}]}).encode()

    ok = {"alertname": "MnistDriftShareHigh", "prefect_event": "mnistcl.drift.detected"}
    return [
        ("no token", post(alert(ok), with_auth=False), 401, "bearer token"),
        ("wrong token", post(alert(ok), with_auth=False).replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer guess\r\n\r\n", 1),
         401, "bearer token"),
        ("token as basic auth", post(alert(ok), b"Authorization: Basic eDp5\r\n", with_auth=False), 401, "bearer"),
        ("negative Content-Length", post(b"{}", length=b"-1"), 400, "whole number"),
        ("non-numeric Content-Length", post(b"{}", length=b"12abc"), 400, "whole number"),
        ("no Content-Length", post(b"", length=b""), 411, "Content-Length is required"),
        ("body over the limit", post(b"", length=b"5000000"), 413, "limit"),
        ("body shorter than its length", post(b"{}", length=b"10") + b"", None, ""),
        ("not JSON", post(b"nope"), 400, "not JSON"),
        ("invalid UTF-8", post(b'{"alerts": "\xff\xfe"}'), 400, "not JSON"),
        ("deeply nested JSON", post(b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
        ("JSON but not Alertmanager's", post(b'{"hello": 1}'), 400, "'alerts' list"),
        ("alert without labels", post(b'{"alerts": [{"status": "firing"}]}'), 400, "no labels"),
        ("event not on the allow-list", post(alert({"alertname": "X", "prefect_event": "prefect.flow-run.Completed"})),
         400, "not one the relay forwards"),
        ("event name of another project", post(alert({"alertname": "X", "prefect_event": "mnistcl.model.promoted"})),
         400, "not one the relay forwards"),
        ("alert name with dots", post(alert({"alertname": "a.b.c"})), 400, "not a plain name"),
        ("alert name too long", post(alert({"alertname": "A" * 500})), 400, "not a plain name"),
        ("GET of an unknown path", b"GET /admin HTTP/1.1\r\nHost: relay\r\n\r\n", 404, "no such path"),
        ("resolved alert only", post(json.dumps({"alerts": [{"status": "resolved", "labels": ok}]}).encode()),
         200, '"relayed": []'),
    ]


def test_relay_hostile_corpus(prefect, tmp_path):
    """Every hostile request to the relay is refused with the status that names it (or the
    connection closed), a silent client is dropped after the socket timeout, an empty token
    refuses to start, and afterwards a real alert still becomes a real Prefect event."""
    from monitoring import relay as relay_mod

    with pytest.raises(ValueError, match="needs a bearer token"):
        make_server("127.0.0.1", free_port(), prefect["api"], token="  ")
    relay = make_server("127.0.0.1", free_port(), prefect["api"], events_log=tmp_path / "events.jsonl",
                        token=RELAY_TOKEN)
    port = relay.server_address[1]
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        results = []
        for name, raw, status, needle in relay_cases():
            got, body = _raw(port, raw, timeout=relay_mod.SOCKET_TIMEOUT_S + 10)
            results.append(name)
            assert got == status, (name, got, body[:300])
            assert needle.encode() in body, (name, body[:300])
        # A client that sends half a request and goes silent is dropped after the socket timeout,
        # and holds up no one meanwhile.
        import socket

        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST / HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer " + RELAY_TOKEN.encode()
                     + b"\r\nContent-Length: 100\r\n\r\n{")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        slow.settimeout(relay_mod.SOCKET_TIMEOUT_S + 10)
        started = time.time()
        assert slow.recv(100) == b""  # closed by the relay, without an answer
        assert time.time() - started < relay_mod.SOCKET_TIMEOUT_S + 5
        slow.close()
        results.append("silent client")
        # After all of it, an alert still arrives in Prefect as its event.
        ok = httpx.post(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {RELAY_TOKEN}"}, timeout=10,
                        json={"status": "firing", "alerts": [{"status": "firing", "labels": {
                            "alertname": "MnistDriftShareHigh", "prefect_event": "mnistcl.drift.detected"}}]})
        assert ok.status_code == 200 and ok.json()["relayed"] == ["mnistcl.drift.detected"], ok.text
        def stored():  # Prefect persists events in batches, a few seconds later
            return prefect["http"].post(f"{prefect['api']}/events/filter", json={
                "filter": {"event": {"name": ["mnistcl.drift.detected"]},
                           "resource": {"id": ["mnistcl.alertmanager.MnistDriftShareHigh"]}}}).json()["total"]
        assert wait_for(stored, timeout=60), "the relayed event never reached Prefect's event store"
        assert len(results) == len(relay_cases()) + 1
    finally:
        relay.shutdown()
        relay.server_close()
