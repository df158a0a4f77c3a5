"""Two "pods" against one truth: two processes with separate, throw-away homes share one S3
endpoint (moto's server) and one PostgreSQL server, as flow Jobs and model pods do on the
cluster. Nothing they must agree on may live in a home.

- concurrent monitoring checks advance one cursor and see each window once;
- two retraining triggers at once run one retraining;
- every feedback row lands in exactly one dataset version;
- a process killed mid-check or mid-retraining leaves state that the next run continues from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnistcl.predlog import PredictionLog
from mnistcl.settings import Settings
from mnistcl.shifts import apply
from mnistcl.stores import stores
from monitoring.state import RetrainLock, monitor_state
from tests.helpers import seed_champion

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
WINDOW = 100

RETRAIN = """
import json, sys
from mnistcl.settings import load_settings
from retraining.retrain import retrain
out = retrain(load_settings(), reason=sys.argv[1], epochs=1, max_images=800, log=lambda m: print(m, flush=True))
print("RESULT " + json.dumps({k: out.get(k) for k in ("status", "why", "dataset")}), flush=True)
"""


@pytest.fixture
def cluster(tmp_path, s3_endpoint, pg_database, postgres_url, mnist_medium, monkeypatch):
    """The shared stores, seeded by an operator: dataset v1 and a small champion in the bucket."""
    import uuid

    import boto3
    import psycopg

    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                 ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    bucket = f"pods-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    experiments = postgres_url.rsplit("/", 1)[0] + f"/e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {experiments.rsplit('/', 1)[1]}")
    cfg = yaml.safe_load((ROOT / "configs" / "monitoring.yaml").read_text())
    cfg["window"].update(images=WINDOW, min_images=WINDOW)
    cfg["trigger"].update(breaches=1, of_last=1, cooldown_hours=0)
    (tmp_path / "monitoring.yaml").write_text(yaml.safe_dump(cfg))
    shared = {"MNISTCL_STORAGE_URL": f"s3://{bucket}/mnistcl", "MNISTCL_S3_ENDPOINT_URL": s3_endpoint,
              "MNISTCL_PREDICTIONS_DB": pg_database, "MNISTCL_EXPERIMENTS_DB": experiments,
              "MNISTCL_MONITORING_CONFIG": str(tmp_path / "monitoring.yaml"), "MNISTCL_WANDB_MODE": "disabled",
              "MNISTCL_REQUIRE_SHARED_STATE": "true", "MNISTCL_RETRAIN_LEASE_SECONDS": "6"}
    op = Settings(home=tmp_path / "operator", storage_url=shared["MNISTCL_STORAGE_URL"], s3_endpoint_url=s3_endpoint,
                  predictions_db=pg_database, experiments_db=experiments, monitoring_config=shared["MNISTCL_MONITORING_CONFIG"],
                  wandb_mode="disabled")
    files = seed_champion(op, mnist_medium, tmp_path / "export")
    return {"settings": op, "env": shared, "onnx": files["onnx"], "tmp": tmp_path}


def pod(cluster, name: str) -> dict[str, str]:
    """A pod's environment: the shared settings and a home of its own (its scratch disk)."""
    return {**os.environ, **cluster["env"], "MNISTCL_HOME": str(cluster["tmp"] / f"pod-{name}"),
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def start(cluster, name: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", RETRAIN, *args] if args and args[0] != "check" else \
        [str(Path(sys.executable).parent / "mnistcl"), "monitor", "check"]
    return subprocess.Popen(cmd, env=pod(cluster, name), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(p: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


def result(out: str) -> dict:
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def log_traffic(cluster, mnist_medium, n: int, seed: int) -> None:
    """What the model pods do: predict with the champion and log; the bank's clerks label each."""
    import onnxruntime as ort

    xt, yt = mnist_medium["test"]
    idx = np.random.default_rng(seed).choice(np.arange(1000, len(xt)), n, replace=False)
    x = apply(xt[idx], {"rotate": 30}, np.random.default_rng(seed)).astype(np.float32)  # drifted handwriting
    sess = ort.InferenceSession(str(cluster["onnx"]))
    plog = PredictionLog(cluster["settings"].predictions_db_path)
    for i in range(0, n, 10):
        rid = f"s{seed}-{i}"
        plog.log_predictions(rid, "m1", "ndarray", x[i:i + 10], sess.run(None, {"image": x[i:i + 10]})[0])
        plog.add_feedback(rid, [int(v) for v in yt[idx[i:i + 10]]])


def windows(cluster) -> list[dict]:
    return monitor_state(cluster["settings"]).read()["windows"]


def test_two_pods_share_one_truth(cluster, mnist_medium):
    s = cluster["settings"]
    plog = PredictionLog(s.predictions_db_path)
    ds, reg = stores(s)

    # 1. Concurrent checks: 4 windows, two pods checking three times each, at once.
    log_traffic(cluster, mnist_medium, 4 * WINDOW, seed=1)
    outs = []
    for _ in range(8):  # rounds of two checks at once, until both find nothing new
        procs = [start(cluster, name, "check") for name in ("a", "b")]
        outs.append([finish(p) for p in procs])
        if all("waiting for" in o for o in outs[-1]):
            break
    w = windows(cluster)
    assert sum("another check recorded this window first" in o for r in outs for o in r) >= 1  # they did collide
    assert len(w) == 4, (w, outs)
    ends = [x["end"] for x in w]
    assert ends == sorted(set(ends))  # each window once, in order
    assert monitor_state(s).read()["cursor"] == 4 * WINDOW
    stored = {k.split("/")[2] for k in ds.storage.list("reports/checks/")}
    assert len(stored) == 4  # one stored report per window, whichever pod checked it
    assert not any((cluster["tmp"] / f"pod-{n}" / "store").exists() for n in "ab")  # nothing kept at home

    # 2. A pod killed mid-check: the next check (the other pod) continues from the shared cursor.
    log_traffic(cluster, mnist_medium, WINDOW, seed=2)
    p = start(cluster, "a", "check")
    checks = cluster["tmp"] / "pod-a" / "monitoring" / "checks"
    seen = set(checks.iterdir())
    deadline = time.time() + 300
    while time.time() < deadline and not (set(checks.iterdir()) - seen) and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    finish(start(cluster, "b", "check"))
    w = windows(cluster)
    assert len(w) == 5 and monitor_state(s).read()["cursor"] == 5 * WINDOW, w  # window 5 counted once

    # 3. Two retraining triggers at once: one retraining runs, the other starts nothing.
    champion = reg.alias("champion")
    procs = [start(cluster, name, f"trigger from pod {name}") for name in ("a", "b")]
    res = [result(finish(p)) for p in procs]
    ran = [r for r in res if r["status"] != "skipped"]
    assert len(ran) == 1, res
    skipped = next(r for r in res if r["status"] == "skipped")
    assert "already running" in skipped["why"] or "no new labelled data" in skipped["why"], skipped
    versions = [v.id for v in reg.list()]
    assert len(versions) == 2  # the champion and one candidate
    assert ran[0]["dataset"] == "v2"

    # 4. A pod killed mid-retraining: its lease lapses (6 s here, renewed while it lived); the
    # next retraining runs, and no label enters two versions.
    log_traffic(cluster, mnist_medium, WINDOW, seed=3)
    lease = RetrainLock(ds.storage)
    p = start(cluster, "a", "the pod that dies")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        held = lease.holder()
        if held and held["who"].endswith("the pod that dies") and (cluster["tmp"] / "pod-a" / "retrain").exists():
            break
        time.sleep(0.05)
    time.sleep(1.0)  # training has begun
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = result(finish(start(cluster, "b", "right after")))
    assert first["status"] == "skipped" and "already running" in first["why"], first  # its lease still counts
    time.sleep(max(0.0, lease._read()["expires"] - time.time()) + 0.5)
    out = finish(start(cluster, "b", "after the lease lapsed"))
    again = result(out)
    assert again["status"] != "skipped", out[-3000:]
    assert "never finished" in out  # the dead run's start is not taken for a cooldown

    # Exactly once: the versions made from this log's feedback hold disjoint, adjacent number
    # ranges that cover every label given, and as many images as labels.
    log_id, n_labels = plog.identity(), 6 * WINDOW  # labelled in requests of 10: one number per request
    fb = sorted((m for m in ds.list() if m.feedback_log == log_id), key=lambda m: m.feedback_from)
    assert [(m.feedback_from, m.feedback_through) for m in fb][0][0] == 0
    assert all(a.feedback_through == b.feedback_from for a, b in zip(fb, fb[1:], strict=False))
    assert fb[-1].feedback_through == n_labels // 10
    assert sum(sum(sum(c) for c in m.counts.values()) for m in fb) == n_labels  # own images: train + eval
    assert reg.alias("champion") is not None and champion is not None

