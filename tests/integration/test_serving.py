"""The real Seldon Core wrapper (its own environment, .venv-serve) on 127.0.0.1.

Predictions in every documented payload form, feedback, the prediction log, the metrics
endpoint, a hammer of bad payloads, and a hot swap of the champion under load.
"""

import base64
import json
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from deployment import serve as launch
from deployment.serve import free_port
from mnistcl.images import encode_png
from mnistcl.storage import LocalStorage
from tests.integration.conftest import FEEDBACK_TOKEN, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    with running_server(registry, work, str(work / "pred.db")) as s:
        yield s


def metrics_text(server, needle: str, timeout: float = 10.0) -> str:
    """The metrics page once it shows ``needle`` (metrics are flushed every 0.5 s)."""
    deadline = time.time() + timeout
    while True:
        text = httpx.get(server["metrics"], timeout=10).text
        if needle in text or time.time() > deadline:
            return text
        time.sleep(0.2)


def predict(server, payload, **kw):
    return httpx.post(f"{server['url']}/api/v1.0/predictions", json=payload, timeout=10, **kw)


def feedback(server, body: dict, token: str | None = FEEDBACK_TOKEN):
    return httpx.post(f"{server['url']}/api/v1.0/feedback", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {token}"} if token else None)


def b64png(img):
    return base64.b64encode(encode_png(img)).decode()


def test_binds_loopback_only(server):
    import psutil

    listening = [c.laddr for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == server["port"]]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


def test_predict_every_payload_form(server, mnist_small):
    x, y = mnist_small["test"]
    forms = {
        "ndarray-255": {"data": {"ndarray": x[:4].tolist()}},
        "ndarray-784-01": {"data": {"ndarray": (x[:4].reshape(4, 784) / 255).tolist()}},
        "tensor": {"data": {"tensor": {"shape": [4, 28, 28], "values": x[:4].reshape(-1).tolist()}}},
        "strData": {"strData": ",".join(b64png(i) for i in x[:4])},
        "jsonData": {"jsonData": {"png": [b64png(i) for i in x[:4]]}},
    }
    results = {}
    for name, payload in forms.items():
        r = predict(server, payload)
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        probs = np.asarray(body["data"]["ndarray"])
        assert probs.shape == (4, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
        tags = body["meta"]["tags"]
        assert tags["model_version"] == "m1" and len(tags["request_id"]) == 32
        assert tags["digits"] == probs.argmax(1).tolist()
        results[name] = probs
    for name, probs in results.items():  # every form is the same four digits
        assert np.allclose(probs, results["ndarray-255"], atol=2e-3), name
    one = predict(server, {"binData": b64png(x[0])}).json()
    assert np.allclose(one["data"]["ndarray"][0], results["ndarray-255"][0], atol=2e-3)


def grpc_call(server, *args) -> tuple[int, dict]:
    """The gRPC client in the serving environment (Seldon's protos live there)."""
    import os

    out = subprocess.run([str(launch.SERVE_PYTHON), "-m", "serving.grpc_client", server["grpc"], *map(str, args)],
                         cwd=launch.ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MNISTCL_FEEDBACK_TOKEN": FEEDBACK_TOKEN})
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


def test_grpc_predict_feedback_and_bad_input(server, mnist_small, tmp_path):
    x, y = mnist_small["test"]
    np.save(tmp_path / "x.npy", x[:4])
    rest = np.asarray(predict(server, {"data": {"ndarray": x[:4].tolist()}}).json()["data"]["ndarray"])
    rc, body = grpc_call(server, "predict", tmp_path / "x.npy")
    assert rc == 0, body
    assert np.allclose(np.asarray(body["data"]["ndarray"]), rest, atol=1e-5)
    tags = body["meta"]["tags"]
    assert tags["model_version"] == "m1" and [int(d) for d in tags["digits"]] == rest.argmax(1).tolist()
    rc, fb = grpc_call(server, "feedback", tags["request_id"], *y[:4])
    assert rc == 0 and fb["meta"]["tags"]["labelled"] == 4, fb
    with sqlite3.connect(server["db"]) as c:
        labels = [r[0] for r in c.execute("SELECT feedback FROM predictions WHERE request_id = ? ORDER BY item",
                                          (tags["request_id"],))]
    assert labels == y[:4].tolist()
    np.save(tmp_path / "bad.npy", np.full((1, 28, 28), 300.0))
    rc, err = grpc_call(server, "predict", tmp_path / "bad.npy")
    assert rc == 1 and "values must be in" in err["details"], err
    rc, err = grpc_call(server, "feedback", "nope", 1)
    assert rc == 1 and "nope" in err["details"], err
    rc, body = grpc_call(server, "predict", tmp_path / "x.npy")  # still serving
    assert rc == 0 and body["meta"]["tags"]["request_id"] != tags["request_id"]


def test_feedback_log_and_metrics(server, mnist_small):
    x, y = mnist_small["test"]
    ids = []
    for i in range(5):
        r = predict(server, {"data": {"ndarray": x[i * 3 : i * 3 + 3].tolist()}})
        assert r.status_code == 200
        ids.append(r.json()["meta"]["tags"]["request_id"])
    fb = feedback(server, {
        "request": {"meta": {"tags": {"request_id": ids[0]}}}, "truth": {"data": {"ndarray": y[:3].tolist()}}})
    assert fb.status_code == 200, fb.text
    assert fb.json()["meta"]["tags"]["labelled"] == 3
    with sqlite3.connect(server["db"]) as c:
        logged = {r[0] for r in c.execute("SELECT DISTINCT request_id FROM predictions")}
    assert set(ids) <= logged
    with sqlite3.connect(server["db"]) as c:
        rows = c.execute("SELECT item, feedback, image FROM predictions WHERE request_id = ? ORDER BY item", (ids[0],)).fetchall()
    assert [r[1] for r in rows] == y[:3].tolist()
    assert np.array_equal(np.frombuffer(rows[0][2], np.uint8).reshape(28, 28), x[0])
    bad = feedback(server, {
        "request": {"meta": {"tags": {"request_id": "nope"}}}, "truth": {"data": {"ndarray": [1]}}})
    assert bad.status_code == 400 and "nope" in bad.text
    m = metrics_text(server, "mnist_feedback_correct_total")
    assert "mnist_images_total" in m and 'registry_version="m1"' in m and "mnist_feedback_correct_total" in m
    assert re.search(r'mnist_requests_total\{[^}]*endpoint="predict"[^}]*outcome="ok"', m)
    assert re.search(r'mnist_requests_total\{[^}]*endpoint="feedback"[^}]*outcome="ok"', m)
    assert "mnist_request_seconds_bucket" in m and "mnist_confidence_bucket" in m


BAD = [
    (b"this is not json", "JSON"),
    (json.dumps({"data": {"ndarray": [[1, 2, 3]]}}).encode(), "shape"),
    (json.dumps({"data": {"ndarray": [[[float("nan")] * 28] * 28]}}).encode(), "NaN"),
    (json.dumps({"data": {"ndarray": (np.full((1, 28, 28), 300)).tolist()}}).encode(), "values must be in"),
    (json.dumps({"data": {"ndarray": (np.full((1, 28, 28), -2)).tolist()}}).encode(), "values must be in"),
    (json.dumps({"data": {"ndarray": [["a"] * 784]}}).encode(), "numeric"),
    (json.dumps({"data": {"ndarray": []}}).encode(), "empty"),
    (json.dumps({}).encode(), "empty request"),
    (json.dumps({"binData": "%%%"}).encode(), "base64"),
    (json.dumps({"binData": base64.b64encode(b"\x89PNG broken").decode()}).encode(), "not a PNG"),
    (json.dumps({"data": {"ndarray": np.zeros((65, 784)).tolist()}}).encode(), "limit is 64"),
    (b"[" * 10 + b"1" + b"]" * 10, "JSON object"),
]


def test_bad_payloads_are_400_and_server_keeps_serving(server, mnist_small):
    x, _ = mnist_small["test"]
    before = predict(server, {"data": {"ndarray": x[:2].tolist()}}).json()["data"]["ndarray"]
    with sqlite3.connect(server["db"]) as c:
        rejected_before = c.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
    for _ in range(3):
        for body, needle in BAD:
            r = httpx.post(f"{server['url']}/api/v1.0/predictions", content=body, timeout=10,
                           headers={"content-type": "application/json"})
            assert r.status_code == 400, (needle, r.status_code, r.text[:200])
            assert needle.lower() in r.text.lower(), (needle, r.text[:300])
    after = predict(server, {"data": {"ndarray": x[:2].tolist()}})
    assert after.status_code == 200 and np.allclose(after.json()["data"]["ndarray"], before)
    with sqlite3.connect(server["db"]) as c:
        assert c.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] > rejected_before
    m = metrics_text(server, 'outcome="rejected"')
    assert re.search(r'mnist_requests_total\{[^}]*endpoint="predict"[^}]*outcome="rejected"', m)


def test_hot_swap_under_load(server, registry, mnist_small):
    x, _ = mnist_small["test"]
    seen, errors, stop = [], [], threading.Event()

    def hammer():
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                r = c.post(f"{server['url']}/api/v1.0/predictions", json={"data": {"ndarray": x[:2].tolist()}})
                if r.status_code != 200:
                    errors.append(r.status_code)
                else:
                    seen.append(r.json()["meta"]["tags"]["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    registry.promote("m2", "champion", reason="hot swap test")
    deadline = time.time() + 15
    while time.time() < deadline and (not seen or seen[-1] != "m2"):
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert "m1" in seen and seen[-1] == "m2"
    first_m2 = seen.index("m2")
    after = seen[first_m2 + 20 :]
    assert len(after) >= 10, f"only {len(after)} answers after the swap settled: nothing to check"
    assert all(v == "m2" for v in after), "after the swap the old model must not come back"
    registry.rollback("champion")


def test_challenger_is_shadowed_logged_and_judged(server, registry, mnist_small, tmp_path):
    """A challenger scores every request beside the champion; only the champion answers; both
    answers are logged; the judgement pairs them with the feedback exactly as computing the two
    models' outcomes directly does; retiring the challenger stops the shadow."""
    from mnistcl.predlog import PredictionLog
    from mnistcl.settings import Settings
    from validation import stats
    from validation.gate import GateConfig
    from validation.shadow import judge_challenger, shadow_verdict

    champion = registry.alias("champion")
    challenger = "m2" if champion == "m1" else "m1"
    registry.promote(challenger, "challenger", reason="shadow test", force=True)
    x, y = mnist_small["test"]
    log = PredictionLog(server["db"])
    deadline = time.time() + 15  # the server follows the alias within poll_s
    while time.time() < deadline:
        r = predict(server, {"data": {"ndarray": x[:1].tolist()}}).json()
        if log.paired_outcomes(champion, challenger)[0].size or any(
                row for row in log._query("SELECT 1 FROM shadow WHERE request_id = ?", (r["meta"]["tags"]["request_id"],))):
            break
        time.sleep(0.3)
    since = time.time()
    time.sleep(0.05)
    ids = []
    for i in range(0, 200, 4):
        body = predict(server, {"data": {"ndarray": x[i:i + 4].tolist()}}).json()
        assert body["meta"]["tags"]["model_version"] == champion  # the challenger never answers
        ids.append(body["meta"]["tags"]["request_id"])
        fb = feedback(server, {"request": {"meta": {"tags": {"request_id": ids[-1]}}},
                              "truth": {"data": {"ndarray": y[i:i + 4].tolist()}}})
        assert fb.status_code == 200, fb.text
    shadow_rows = log._query(f"SELECT COUNT(*) FROM shadow WHERE model_version = ? AND request_id IN "
                             f"({', '.join('?' * len(ids))})", (challenger, *ids))
    assert shadow_rows[0][0] == 200
    a, b = log.paired_outcomes(challenger, champion, since=since)
    assert a.size == b.size == 200

    # The same outcomes computed directly from the two models' ONNX files.
    from mnistcl.onnx_utils import OnnxModel

    direct = {v: OnnxModel(registry.fetch(v, "onnx", tmp_path)).predict(x[:200]).argmax(1) == y[:200]
              for v in (challenger, champion)}
    assert (a == direct[challenger]).all() and (b == direct[champion]).all()

    # The judgement sees every labelled image since the challenger was set: exactly these 200.
    settings = Settings(home=tmp_path / "home", storage_url=str(registry.storage.root), predictions_db=server["db"])
    cfg = GateConfig(shadow={"judge_every": 50, "max_images": 400})
    # While a retraining runs, its candidate supersedes the challenger: no judgement, no record,
    # and a check that triggered the retraining announces no evidence.
    from monitoring.state import retrain_lease
    from validation.shadow import announce_evidence

    lock = retrain_lease(settings)
    lock.acquire("test retraining")
    try:
        wait = judge_challenger(settings, cfg)
    finally:
        lock.release()
    assert wait["status"] == "waiting" and "retraining is running" in wait["why"], wait
    assert registry.judgements(challenger) == [] and registry.alias("challenger") == challenger
    assert announce_evidence(settings, cfg, retraining=True) is None
    j = judge_challenger(settings, cfg)
    assert j["status"] == "judged" and j["n"] == 200
    expect = shadow_verdict(cfg, stats.Paired.from_correct(direct[challenger], direct[champion]), 1)
    assert j["verdict"] == expect["verdict"] and registry.judgements(challenger)[-1]["verdict"] == j["verdict"]
    if j["verdict"] == "promote":
        assert registry.alias("champion") == challenger and registry.alias("challenger") is None
        registry.rollback("champion")
    registry.move_alias("challenger", None, reason="end of the shadow test")
    deadline = time.time() + 15  # the shadow is dropped: new requests log no shadow rows
    while time.time() < deadline:
        rid = predict(server, {"data": {"ndarray": x[:1].tolist()}}).json()["meta"]["tags"]["request_id"]
        if not log._query("SELECT 1 FROM shadow WHERE request_id = ?", (rid,)):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the server kept shadowing a retired challenger")


def test_cli_predict_export_and_retrain_data(server, mnist_small, tmp_path, monkeypatch):
    """`mnistcl predict`, `predictions export --format csv`, `data append --from-feedback`."""
    from typer.testing import CliRunner

    from cli import app
    from mnistcl.datasets import DatasetStore

    x, y = mnist_small["test"]
    home = tmp_path / "home"
    monkeypatch.setenv("MNISTCL_HOME", str(home))
    monkeypatch.setenv("MNISTCL_PREDICTIONS_DB", str(server["db"]))
    runner = CliRunner()
    pngs = []
    for i in range(3):
        p = tmp_path / f"d{i}.png"
        p.write_bytes(encode_png(x[20 + i]))
        pngs.append(str(p))
    r = runner.invoke(app, ["predict", *pngs, "--url", server["url"]])
    assert r.exit_code == 0, r.output
    assert "digits:" in r.output and "model m" in r.output
    rid = r.output.split("request ")[-1].split()[0]
    monkeypatch.setenv("MNISTCL_FEEDBACK_TOKEN", FEEDBACK_TOKEN)
    r = runner.invoke(app, ["feedback", rid, *map(str, y[20:23]), "--url", server["url"]])
    assert r.exit_code == 0 and "labelled by tester" in r.output, r.output
    again = runner.invoke(app, ["feedback", rid, *map(str, (y[20:23] + 1) % 10), "--url", server["url"]])
    assert again.exit_code == 1 and "409" in again.output and "written once" in again.output, again.output

    out = tmp_path / "export.csv"
    r = runner.invoke(app, ["predictions", "export", "--format", "csv", "-o", str(out), "--since", "1h"])
    assert r.exit_code == 0, r.output
    import pandas as pd

    df = pd.read_csv(out)
    assert list(df.columns[:7]) == ["request_id", "item", "time", "model_version", "digit", "confidence", "feedback"]
    assert df.shape[1] == 7 + 10 + 784
    mine = df[df.request_id == rid].sort_values("item")
    assert mine.feedback.tolist() == y[20:23].tolist()
    assert np.array_equal(mine.iloc[0, 17:].to_numpy().reshape(28, 28), x[20])

    store = DatasetStore(LocalStorage(home / "store"))
    store.create(mnist_small, parent=None, source="test")
    r = runner.invoke(app, ["data", "append", "--from-feedback", "--eval-fraction", "0.0"])
    assert r.exit_code == 0, r.output
    m = store.manifest("v2")
    assert m.source.startswith("feedback:") and sum(m.counts["train"]) >= 3


def test_prediction_log_on_postgresql(registry, tmp_path, postgres_url, mnist_small):
    """The same server logging to a real PostgreSQL server; export reads it back."""
    from typer.testing import CliRunner

    from cli import app
    from mnistcl.predlog import PredictionLog

    x, y = mnist_small["test"]
    with running_server(registry, tmp_path, postgres_url) as srv:
        ids = []
        for i in range(4):
            r = predict(srv, {"data": {"ndarray": x[i * 2 : i * 2 + 2].tolist()}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["meta"]["tags"]["request_id"])
        fb = feedback(srv, {
            "request": {"meta": {"tags": {"request_id": ids[1]}}}, "truth": {"data": {"ndarray": y[2:4].tolist()}}})
        assert fb.status_code == 200, fb.text
        assert predict(srv, {"data": {"ndarray": [[1, 2]]}}).status_code == 400
    log = PredictionLog(postgres_url)
    assert set(ids) <= log.request_ids() and log.rejected_count() >= 1
    rows = [r for r in log.read() if r["request_id"] == ids[1]]
    assert [r["feedback"] for r in rows] == y[2:4].tolist()
    assert np.array_equal(rows[0]["image"], x[2])
    out = tmp_path / "pg.csv"
    r = CliRunner().invoke(app, ["predictions", "export", "-o", str(out), "--labelled-only"],
                           env={"MNISTCL_PREDICTIONS_DB": postgres_url, "MNISTCL_HOME": str(tmp_path / "h")})
    assert r.exit_code == 0, r.output
    assert ids[1] in out.read_text()


def test_postgresql_restart_under_load(registry, tmp_path, postgres_server, mnist_small):
    """The prediction log's PostgreSQL stopped and started under load: during the outage the
    server answers 503 naming the log and its readiness fails; once the database is back it
    answers 200 within seconds, without a restart; every request answered 200 is in the log."""
    from mnistcl.predlog import PredictionLog
    from tests.pgserver import load_through_outage

    x, _ = mnist_small["test"]
    with running_server(registry, tmp_path, postgres_server.url) as srv:
        r = load_through_outage(srv["url"], postgres_server, {"data": {"ndarray": x[:2].tolist()}},
                                before_s=1.5, outage_s=3.0, after_s=6.0, clients=3)
        metrics = metrics_text(srv, 'outcome="error"')
    assert r["codes"].get("503", 0) > 0 and set(r["codes"]) <= {"200", "503"}, r["codes"]
    assert "prediction log" in r["unavailable_message"] and "not served" in r["unavailable_message"]
    assert 503 in r["ready_during_outage"] and 200 not in r["ready_during_outage"], r["ready_during_outage"]
    assert r["recovery_seconds"] < 5 and r["ok_after_recovery"] >= 10 and r["ready_after"] == [200], r
    assert set(r["ok_ids"]) <= PredictionLog(postgres_server.url).request_ids()
    assert re.search(r'mnist_requests_total\{[^}]*outcome="error"[^}]*\} [1-9]', metrics), "errors not counted"


def _open_log(url, barrier):
    from mnistcl.predlog import PredictionLog

    barrier.wait()
    PredictionLog(url)


def test_postgresql_schema_created_by_many_processes_at_once(postgres_url):
    """Server processes starting together on a fresh database all create the schema without error
    (PostgreSQL's CREATE ... IF NOT EXISTS alone races: a unique violation in pg_type)."""
    import multiprocessing as mp

    import psycopg

    from mnistcl.predlog import PredictionLog

    for attempt in range(3):
        name = f"race_{attempt}_{free_port()}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = postgres_url.rsplit("/", 1)[0] + "/" + name
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_log, args=(url, barrier)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        assert PredictionLog(url).request_ids() == set()


def test_smoke_command(server, tmp_path, monkeypatch):
    """`mnistcl smoke`, the promotion workflow's smoke test, against the real server."""
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    version = httpx.get(f"{server['url']}/health/status", timeout=10).json()["jsonData"]["model_version"]
    ok = runner.invoke(app, ["smoke", "--url", server["url"], "--digits", "24", "--min-accuracy", "0.5",
                             "--expect-version", version])
    assert ok.exit_code == 0 and "smoke test passed" in ok.output, ok.output
    bad = runner.invoke(app, ["smoke", "--url", server["url"], "--digits", "8", "--expect-version", "m999"])
    assert bad.exit_code == 2 and "expected every answer from m999" in bad.output, bad.output
    down = runner.invoke(app, ["smoke", "--url", f"http://127.0.0.1:{free_port()}", "--digits", "4"])
    assert down.exit_code == 2 and "no answer" in down.output


def test_metric_increments_survive_the_wrappers_empty_updates():
    """The wrapper calls update([]) on every request; with Seldon's own store that write-back
    overwrote increments the flush thread had just made (0 of 300 counted in this very race)."""
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    script = """
import threading
from serving.server import atomic_metrics
m = atomic_metrics()
stop = threading.Event()
def empty():
    while not stop.is_set():
        m.update([], "predict")
t = threading.Thread(target=empty); t.start()
for _ in range(300):
    m.update([{"type": "COUNTER", "key": "mnist_images_total", "value": 1}], "predict")
stop.set(); t.join()
print(int(sum(item["value"] for d in dict(m.data).values() for item in d.values())))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(launch.SERVE_PYTHON), "-c", script], cwd=root, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "300"


def test_counted_histograms_expose_what_seldons_timers_did():
    """The component counts its latencies and confidences into Seldon's bins once per flush
    (HISTOGRAM items) instead of one np.histogram per observation in Seldon's store: the exposed
    series are the same numbers Seldon's own TIMER path gives for the same observations."""
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    script = """
import numpy as np
from seldon_core.metrics import SeldonMetrics
from serving.model import MetricsBuffer
from serving.server import atomic_metrics
rng = np.random.default_rng(0)
conf, lat = rng.uniform(0.1, 1.0, 500), rng.exponential(5.0, 40)
items = [{"type": "COUNTER", "key": "mnist_images_total", "value": 1, "tags": {"registry_version": "m1"}}] * 40
items += [{"type": "TIMER", "key": "mnist_request_seconds", "value": float(v), "tags": {"endpoint": "predict"}} for v in lat]
ours, seldon = atomic_metrics(), SeldonMetrics()
for i in range(0, 500, 50):  # one request's confidences at a time
    items.append({"type": "OBSERVATIONS", "key": "mnist_confidence", "value": conf[i:i + 50] * 1e3,
                  "tags": {"registry_version": "m1"}})
for part in (items[:60], items[60:]):  # two flushes
    buf = MetricsBuffer()
    for m in part:
        buf.add("predict", [m])
    ours.update(buf.take()["predict"], "predict")
for m in items:
    if m["type"] == "OBSERVATIONS":
        for v in m["value"]:
            seldon.update([{**m, "type": "TIMER", "value": float(v), "tags": dict(m["tags"])}], "predict")
    else:
        seldon.update([{**m, "tags": dict(m["tags"])}], "predict")
import math, re
def series(store):  # {series without the worker's label: value}
    out = {}
    for line in store.generate_metrics()[0].splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[re.sub(r'worker_id="[^"]*",?', "", name)] = float(value)
    return out
a, b = series(ours), series(seldon)
assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:5]
assert all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a), [(k, a[k], b[k]) for k in a if a[k] != b[k]][:5]
print(len(a), sum('mnist_confidence_bucket' in x for x in a))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(launch.SERVE_PYTHON), "-c", script], cwd=root, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    n, buckets = map(int, out.stdout.split()[-2:])
    assert n > 40 and buckets > 10, out.stdout


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_killed_server_loses_nothing_it_answered(registry, mnist_small, tmp_path, group_commit):
    """SIGKILL to every process of the server (two workers) while 8 clients send requests: each
    request answered 200 before the kill is in the prediction log, with its images. Both ways of
    writing the log: inline (SQLite's default) and group-committed by a writer thread (the
    PostgreSQL default, here on SQLite), whose answers go out only after the commit."""
    import os
    import signal

    from serving.loadgen import KeepAliveClient, drive

    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    db = tmp_path / "pred.db"
    port = free_port()
    proc = launch.start(registry.storage.root, str(db), tmp_path / "cache", tmp_path / "log", port=port,
                        metrics_port=free_port(), workers=2, threads=2, timeout=60,
                        extra_env={"MNISTCL_LOG_GROUP_COMMIT": group_commit})
    x = mnist_small["test"][0]
    payload = json.dumps({"data": {"ndarray": x[:4].tolist()}}).encode()

    def send(client):
        try:
            status, answer = client.request(payload)
        except (OSError, EOFError, ValueError):
            return 0, False, None, True
        ok = status == 200
        return status, ok, json.loads(answer)["meta"]["tags"]["request_id"] if ok else None, status >= 500

    def kill():
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        out = drive(lambda: KeepAliveClient(f"http://127.0.0.1:{port}/api/v1.0/predictions", timeout=5),
                    send, 3.0, 8)
    finally:
        killer.join()
        launch.stop(proc)
    answered = set(out["ids"])
    assert len(answered) > 50 and out["errors_5xx"] > 0, (len(answered), out["codes"])  # it died under load
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT request_id, COUNT(*), SUM(LENGTH(image)) FROM predictions GROUP BY request_id").fetchall()
    logged = {rid: (n, size) for rid, n, size in rows}
    assert answered <= logged.keys(), f"{len(answered - logged.keys())} answered requests missing from the log"
    assert all(logged[rid] == (4, 4 * 784) for rid in answered)


def test_an_answer_waits_for_its_log_commit(registry):
    """The asynchronous front hands the log write to the writer thread and answers only once it
    has committed: held at the commit, no answer goes out; released, a 200 whose rows are in the
    log. A log that fails answers 503 "not served", never a 200. (The kill test above cannot
    catch an early answer: a commit takes a tenth of a millisecond.)"""
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    script = """
import asyncio, json, os, sqlite3, sys, tempfile, threading
import numpy as np
work = tempfile.mkdtemp()
os.environ.update(MNISTCL_STORE_URL=sys.argv[1], MNISTCL_PREDICTIONS_DB=work + "/p.db",
                  MNISTCL_MODEL_CACHE=work + "/cache", MNISTCL_LOG_GROUP_COMMIT="true")
from mnistcl.predlog import LogUnavailable
from serving.model import MnistModel
from serving.server import build_apps
m = MnistModel()
app, _, metrics = build_apps(m, 2_000_000)
m.seldon_metrics = metrics
m.load()
gate, real = threading.Event(), m.predlog._transaction
def held(body):
    gate.wait()
    return real(body)
m.predlog._transaction = held
body = json.dumps({"data": {"ndarray": np.zeros((2, 28, 28), int).tolist()}}).encode()
scope = {"type": "http", "method": "POST", "path": "/api/v1.0/predictions", "raw_path": b"/api/v1.0/predictions",
         "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
async def receive():
    return {"type": "http.request", "body": body, "more_body": False}
async def main():
    sent = []
    async def send(msg):
        sent.append(msg)
    task = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.5)
    before = len(sent)
    gate.set()
    await task
    rid = json.loads(sent[-1]["body"])["meta"]["tags"]["request_id"]
    with sqlite3.connect(work + "/p.db") as c:
        n = c.execute("SELECT COUNT(*) FROM predictions WHERE request_id = ?", (rid,)).fetchone()[0]
    def broken(body):
        raise LogUnavailable("prediction log test.db is unavailable: disk gone")
    m.predlog._transaction = broken
    failed = []
    async def send2(msg):
        failed.append(msg)
    await app(scope, receive, send2)
    print(json.dumps({"before": before, "status": sent[0]["status"], "rows": n, "failed": failed[0]["status"],
                      "failed_info": json.loads(failed[1]["body"])["status"]["info"]}))
asyncio.run(main())
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(launch.SERVE_PYTHON), "-c", script, str(registry.storage.root)], cwd=root,
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == 0 and got["status"] == 200 and got["rows"] == 2, got
    assert got["failed"] == 503 and "not served" in got["failed_info"] and "disk gone" in got["failed_info"], got
