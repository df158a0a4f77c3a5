import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcl.cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize("cmd", [
    ["data", "ingest"], ["data", "append"], ["data", "list"], ["data", "show"], ["data", "verify"], ["data", "gc"],
    ["train"], ["experiments", "list"], ["experiments", "show"], ["experiments", "compare"],
    ["models", "list"], ["models", "show"], ["models", "validate"], ["models", "promote"], ["models", "rollback"],
    ["models", "history"], ["serve"], ["predict"], ["predictions", "export"], ["deploy", "render"], ["demo"]])
def test_every_command_has_help_with_example(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0 and "Example" in r.output


def test_empty_list(home):
    r = runner.invoke(app, ["data", "list"])
    assert r.exit_code == 0 and "no dataset versions yet" in r.output


def test_bad_append_leaves_list_unchanged(home, tmp_path, mnist_small):
    from mnistcl.datasets import DatasetStore
    from mnistcl.storage import LocalStorage

    DatasetStore(LocalStorage(home / "store")).create(mnist_small, parent=None, source="t")
    before = runner.invoke(app, ["data", "list"]).output
    x, y = mnist_small["test"]
    np.savez(tmp_path / "bad.npz", images=x[:5], labels=np.array([1, 2, 3, 11, 4]))
    r = runner.invoke(app, ["data", "append", str(tmp_path / "bad.npz")])
    assert r.exit_code == 2
    assert "nothing written" in r.output and "outside 0-9" in r.output
    assert runner.invoke(app, ["data", "list"]).output == before
    np.savez(tmp_path / "good.npz", images=x[:5], labels=y[:5])
    r = runner.invoke(app, ["data", "append", str(tmp_path / "good.npz"), "--note", "ok"])
    assert r.exit_code == 0, r.output
    assert "created dataset version v2" in r.output
    events = (home / "events.jsonl").read_text()
    assert "mnistcl.dataset.updated" in events
    r = runner.invoke(app, ["data", "show", "v2"])
    assert "v1 -> v2" in r.output and "sha256" in r.output


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage_url: [oops")
    r = runner.invoke(app, ["--config", str(cfg), "data", "list"])
    assert r.exit_code == 2 and "not valid YAML" in r.output


def test_show_unknown_version(home):
    r = runner.invoke(app, ["data", "show", "v7"])
    assert r.exit_code == 2 and "does not exist" in r.output
