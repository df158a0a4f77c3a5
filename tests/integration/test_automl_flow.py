"""The AutoML flow end to end on a Prefect test server: worker processes, W&B offline files,
the experiment store and CLI, the leaderboard artifact, the best model's ONNX file."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPACE = """
profiles:
  tiny: {train_images: 300, val_images: 100, epochs: 1}
families:
  convnet: {learning_rate: "0.002", batch_size: "32"}
  vgg: {learning_rate: "0.002", width: "8", batch_size: "32"}
  torchnet: {learning_rate: "0.004,0.00001", batch_size: "32"}
"""


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path, monkeypatch, small_store):
    home = small_store.storage.root.parent
    monkeypatch.setenv("MNISTCL_HOME", str(home))
    monkeypatch.setenv("MNISTCL_WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "space.yaml").write_text(SPACE)
    return home


def test_flow_end_to_end(prefect_server, home, tmp_path):
    import asyncio

    from cli import app
    from flows.train import run_automl

    summary = run_automl(concurrency=2, profile="tiny", search_space=str(tmp_path / "space.yaml"),
                         show_progress=False)
    assert summary["experiments"] == 4 and summary["completed"] == 4, summary["errors"]
    best = summary["best"]
    assert Path(best["onnx_path"]).stat().st_size > 1000
    assert best["val_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in summary["leaderboard"]), abs=1e-4)
    assert json.loads(Path(summary["summary_path"]).read_text())["sweep"] == summary["sweep"]

    # W&B offline: one run folder per experiment, each with its .wandb log
    runs = sorted((home / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 4
    assert all(list(r.glob("*.wandb")) for r in runs)
    # each completed experiment versions its ONNX model as a W&B artifact (in the run's log)
    logs = b"".join(next(r.glob("*.wandb")).read_bytes() for r in runs)
    assert all(f"model-{summary['sweep']}-{row['id']}".encode() in logs for row in summary["leaderboard"])

    # the leaderboard is a Prefect table artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["automl-leaderboard"])))

    arts = asyncio.run(read())
    assert arts and arts[0].type == "table"
    table = arts[0].data if isinstance(arts[0].data, list) else json.loads(arts[0].data)
    assert len(table) == 4

    # the CLI reads the store
    runner = CliRunner()
    r = runner.invoke(app, ["experiments", "list", "--sort", "val_accuracy", "--desc",
                            "--columns", "id,family,val_accuracy,params"])
    assert r.exit_code == 0, r.output
    for row in summary["leaderboard"]:
        assert row["family"] in r.output
    ids = [row["id"] for row in summary["leaderboard"]]
    r = runner.invoke(app, ["experiments", "compare", str(ids[0]), str(ids[-1])])
    assert r.exit_code == 0 and f"#{ids[0]}" in r.output and f"#{ids[-1]}" in r.output
    assert "learning_rate" in r.output and "val_accuracy" in r.output
    r = runner.invoke(app, ["experiments", "show", str(ids[0])])
    assert r.exit_code == 0
    png = home / "experiments" / str(ids[0]) / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["experiments", "list", "--columns", "id,nonsense"])
    assert r.exit_code == 2 and "unknown column" in r.output

    # What another pod needs lies in the shared store: each model under experiments/<sweep>/<id>/,
    # each finished W&B run under wandb/<run>/, and the rows say where.
    from mnistcl.experiments import ExperimentStore
    from mnistcl.settings import load_settings
    from mnistcl.stores import dataset_store

    settings = load_settings()
    storage = dataset_store(settings).storage
    for row in summary["leaderboard"]:
        e = ExperimentStore(settings.experiments_location).get(row["id"]).row
        assert e["artifact_dir"] == f"experiments/{summary['sweep']}/{row['id']}"
        assert storage.get(f"{e['artifact_dir']}/model.onnx") == Path(e["onnx_path"]).read_bytes()
        assert e["wandb_dir"].startswith(storage.url) and "/wandb/offline-run-" in e["wandb_dir"]
    assert json.loads(storage.get(f"experiments/{summary['sweep']}/summary.json"))["sweep"] == summary["sweep"]
    stored = {k.split("/")[1] for k in storage.list("wandb/")}
    assert stored == {r.name for r in runs}
    r = runner.invoke(app, ["experiments", "wandb-pull", str(ids[0]), "--to", str(tmp_path / "pulled")])
    assert r.exit_code == 0, r.output
    pulled = next((tmp_path / "pulled").glob("offline-run-*"))
    assert next(pulled.glob("*.wandb")).read_bytes() == next((runs[0].parent / pulled.name).glob("*.wandb")).read_bytes()
    assert f"wandb sync {pulled}" in " ".join(r.output.split())


def test_median_pruner_stops_a_hopeless_run(home, small_store):
    """Two sound runs finish; a run with a learning rate of 1e-6 is pruned at a checkpoint."""
    from mnistcl.settings import load_settings
    from models.automl import plan_sweep
    from models.train import run_in_worker

    settings = load_settings()
    settings.wandb_mode = "disabled"
    plan = plan_sweep(settings, profile_name="quick", families=["torchnet"],
                      params=["learning_rate=0.004,0.003,0.000001", "batch_size=16", "channels=8"],
                      prune=True, train_images=400)
    # The sweep is shuffled when pruning; run the hopeless one last so two runs have finished.
    payloads = sorted(plan.payloads, key=lambda p: -json.loads(p)["spec"]["params"]["learning_rate"])
    results = [run_in_worker(p) for p in payloads]
    assert [r["status"] for r in results] == ["completed", "completed", "pruned"]
    assert results[2]["onnx_path"] is None  # a pruned run is not exported
    assert results[2]["params"]["learning_rate"] == 1e-6
