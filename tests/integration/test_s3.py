"""The S3 backend against a real S3-compatible HTTP endpoint (moto's server) on 127.0.0.1."""

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcl.datasets import DatasetError, DatasetStore
from mnistcl.storage import AlreadyExists, S3Storage
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_env(monkeypatch, s3_endpoint):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"b{free_port()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket, s3_endpoint


def test_dataset_roundtrip_through_s3(s3_env, mnist_small):
    client, bucket, endpoint = s3_env
    store = DatasetStore(S3Storage(f"s3://{bucket}/team/data", endpoint_url=endpoint))
    m1 = store.create(mnist_small, parent=None, source="test")
    x, y = mnist_small["test"]
    m2 = store.append(x[:30], y[:30], parent="v1", source="batch")
    assert store.ids() == ["v1", "v2"]
    # objects really live in the bucket under the prefix
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert "team/data/datasets/versions/v1.json" in keys
    assert all(k.startswith("team/data/datasets/") for k in keys)
    # a fresh client reads back identical arrays
    again = DatasetStore(S3Storage(f"s3://{bucket}/team/data", endpoint_url=endpoint))
    ds = again.load("v2")
    assert np.array_equal(ds.train_x[: len(mnist_small["train"][0])], mnist_small["train"][0])
    assert np.array_equal(ds.test[0], mnist_small["test"][0])
    assert again.manifest("v2") == m2 and again.manifest("v1") == m1


def test_s3_corruption_and_exclusive_manifest(s3_env, mnist_small):
    client, bucket, endpoint = s3_env
    storage = S3Storage(f"s3://{bucket}", endpoint_url=endpoint)
    store = DatasetStore(storage)
    m = store.create(mnist_small, parent=None, source="test")
    with pytest.raises(AlreadyExists):
        storage.put("datasets/versions/v1.json", b"{}", exclusive=True)
    key = m.files["train/labels"].key
    client.put_object(Bucket=bucket, Key=key, Body=b"tampered")
    with pytest.raises(DatasetError, match=r"train/labels .*s3://.* of dataset version v1 is corrupt"):
        store.load("v1")
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(DatasetError, match="is missing"):
        store.verify("v1")


def test_cli_against_s3(s3_env, monkeypatch, tmp_path, mnist_small):
    from cli import app

    _, bucket, endpoint = s3_env
    monkeypatch.setenv("MNISTCL_STORAGE_URL", f"s3://{bucket}/cli")
    monkeypatch.setenv("MNISTCL_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    np.savez(tmp_path / "b.npz", images=mnist_small["test"][0][:20], labels=mnist_small["test"][1][:20])
    # the parent must exist: appending to an empty store fails with a clear message
    r = CliRunner().invoke(app, ["data", "append", str(tmp_path / "b.npz")])
    assert r.exit_code == 2 and "no dataset versions yet" in r.output
    store = DatasetStore(S3Storage(f"s3://{bucket}/cli", endpoint_url=endpoint))
    store.create(mnist_small, parent=None, source="test")
    r = CliRunner().invoke(app, ["data", "append", str(tmp_path / "b.npz")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["data", "list"])
    assert "v2" in r.output and f"s3://{bucket}/cli" in r.output


def _s3_bump(url, endpoint, n):
    import os

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    from mnistcl.storage import S3Storage
    from monitoring.state import MonitorState

    state = MonitorState(S3Storage(url, endpoint_url=endpoint), "log-a")
    for _ in range(n):
        state.update(lambda st: st.update(cursor=st["cursor"] + 1))


def test_shared_state_on_s3_is_compare_and_swap(s3_env):
    """Conditional writes against the S3 endpoint: a stale ETag is a Conflict; 3 processes x 15
    increments of the monitoring cursor all land; the retraining lease goes to one holder."""
    import multiprocessing as mp

    from mnistcl.storage import Conflict
    from monitoring.state import MonitorState, RetrainBusy, RetrainLock

    client, bucket, endpoint = s3_env
    url = f"s3://{bucket}/shared"
    store = S3Storage(url, endpoint_url=endpoint)
    store.put("k.json", b"1")
    _, v1 = store.get_versioned("k.json")
    store.put("k.json", b"2", if_match=v1)
    with pytest.raises(Conflict):
        store.put("k.json", b"3", if_match=v1)
    assert store.get("k.json") == b"2"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_s3_bump, args=(url, endpoint, 15)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert MonitorState(store, "log-a").read()["cursor"] == 45
    a = RetrainLock(store)
    a.acquire("pod a")
    with pytest.raises(RetrainBusy):
        RetrainLock(S3Storage(url, endpoint_url=endpoint)).acquire("pod b")
    a.release()
    RetrainLock(S3Storage(url, endpoint_url=endpoint)).acquire("pod b")


def test_report_links_on_s3_open_without_credentials(s3_env, tmp_path):
    """A report put in the bucket gets a presigned HTTPS link a browser opens as it is: no AWS
    credentials on the reader's side, valid at most 7 days; folders go in and come back whole."""
    import httpx

    client, bucket, endpoint = s3_env
    store = S3Storage(f"s3://{bucket}/p", endpoint_url=endpoint)
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "drift.html").write_text("<html>drift</html>")
    (tmp_path / "check" / "check.md").write_text("# check")
    keys = store.put_folder("reports/checks/20261202T000000-000", tmp_path / "check")
    link = store.link(keys["drift.html"])
    assert link.startswith(endpoint) and "X-Amz-Signature" in link and "X-Amz-Expires=604800" in link
    assert httpx.get(link, timeout=10).text == "<html>drift</html>"
    # (moto does not verify signatures, so a tampered link cannot be shown refused here; AWS refuses it.)
    back = store.get_folder("reports/checks/20261202T000000-000", tmp_path / "back")
    assert sorted(p.name for p in back) == ["check.md", "drift.html"]


def test_a_model_moves_from_the_staging_registry_to_prods(s3_env, mnist_small, tmp_path, monkeypatch):
    """Staging and prod each have their own bucket (Terraform's storage module per environment);
    `mnistcl models import` copies a version across, artifacts checked, under prod's next id."""
    from cli import app
    from mnistcl.registry import Registry

    client, staging_bucket, endpoint = s3_env
    prod_bucket = f"{staging_bucket}p"
    client.create_bucket(Bucket=prod_bucket)
    staging_url, prod_url = f"s3://{staging_bucket}/mnistcl/store", f"s3://{prod_bucket}/mnistcl/store"
    staging = Registry(S3Storage(staging_url, endpoint_url=endpoint))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx model")
    for _ in range(3):
        staging.register(files={"onnx": onnx}, family="torchnet", config={"epochs": 1}, dataset="v4")
    prod_data = DatasetStore(S3Storage(prod_url, endpoint_url=endpoint))
    prod_data.create(mnist_small, parent=None, source="test")
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNISTCL_STORAGE_URL", prod_url)
    monkeypatch.setenv("MNISTCL_S3_ENDPOINT_URL", endpoint)
    r = CliRunner().invoke(app, ["models", "import", "m3", "--from-store", staging_url, "--json"])
    assert r.exit_code == 0, r.output
    prod = Registry(S3Storage(prod_url, endpoint_url=endpoint))
    (mv,) = prod.list()
    assert (mv.id, mv.dataset, mv.copied_from) == ("m1", "v1", {"store": staging_url, "version": "m3"})
    assert prod.artifact_bytes("m1") == b"an onnx model"
    # A tampered artifact in staging is refused on the way, and nothing is registered in prod.
    key = staging.get("m2").artifacts["onnx"].key
    client.put_object(Bucket=staging_bucket, Key=f"mnistcl/store/{key}", Body=b"tampered")
    r = CliRunner().invoke(app, ["models", "import", "m2", "--from-store", staging_url])
    assert r.exit_code == 2 and "corrupt" in r.output
    assert prod.ids() == ["m1"]
    r = CliRunner().invoke(app, ["models", "import", "m1", "--from-store", prod_url])
    assert r.exit_code == 2 and "own store" in r.output
