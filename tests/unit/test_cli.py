import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "home"


def all_commands() -> list[list[str]]:
    """Every leaf command of the app, walked from the click tree (so a new command is included)."""
    import typer.main

    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            out.append(path)

    walk(typer.main.get_command(app), [])
    return out


def test_the_walk_finds_every_group():
    groups = {c[0] for c in all_commands()}
    assert {"data", "models", "monitor", "prefect", "scenario", "train", "retrain", "demo"} <= groups
    assert len(all_commands()) >= 28


@pytest.mark.parametrize("cmd", all_commands(), ids=" ".join)
def test_every_command_has_help_with_example(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0 and "Example" in r.output, r.output


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


def test_a_sweep_where_nothing_completes_exits_non_zero(home, mnist_small, monkeypatch):
    """Error path: every experiment failed (the flow is replaced by its failed summary)."""
    import flows.train
    from mnistcl.datasets import DatasetStore
    from mnistcl.storage import LocalStorage

    DatasetStore(LocalStorage(home / "store")).create(mnist_small, parent=None, source="t")
    failed = {"sweep": "s1", "completed": 0, "pruned": 0, "failed": 2, "wall_s": 1.0, "leaderboard": [],
              "errors": {1: "boom", 2: "boom"}, "best": None, "promotion": None}
    monkeypatch.setattr(flows.train, "run_automl", lambda **kw: failed)
    r = runner.invoke(app, ["train", "--profile", "quick", "--family", "torchnet"])
    assert r.exit_code == 1, r.output
    assert "no experiment of the sweep completed (2 failed)" in r.output


def test_list_and_status_commands_speak_json(home, mnist_small):
    import json

    from mnistcl.datasets import DatasetStore
    from mnistcl.storage import LocalStorage

    DatasetStore(LocalStorage(home / "store")).create(mnist_small, parent=None, source="t")
    r = runner.invoke(app, ["data", "list", "--json"])
    assert r.exit_code == 0, r.output
    versions = json.loads(r.output)
    assert [v["id"] for v in versions] == ["v1"] and versions[0]["source"] == "t"
    for cmd in (["models", "list"], ["models", "history"], ["experiments", "list"]):
        r = runner.invoke(app, [*cmd, "--json"])
        assert r.exit_code == 0 and json.loads(r.output) == [], (cmd, r.output)
    r = runner.invoke(app, ["monitor", "status", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["retraining_running"] is None, r.output


def test_choices_are_enums_shown_in_help_and_refused_by_name():
    r = runner.invoke(app, ["retrain", "--help"])
    assert "finetune-replay" in r.output and "automl" in r.output
    r = runner.invoke(app, ["retrain", "--strategy", "bogus"])
    assert r.exit_code == 2 and "bogus" in r.output
    r = runner.invoke(app, ["predictions", "export", "--format", "xls"])
    assert r.exit_code == 2 and "xls" in r.output


def test_the_cli_enum_matches_the_retraining_strategies():
    from cli.app import Strategy
    from retraining.retrain import STRATEGIES

    assert tuple(s.value for s in Strategy) == STRATEGIES
