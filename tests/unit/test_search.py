import pytest
from typer.testing import CliRunner

from models.common import ParamError
from models.search import expand, load_search_space, parse_overrides, profile

pytestmark = pytest.mark.unit


def test_default_grid_has_18_experiments():
    specs = expand(load_search_space())
    assert len(specs) == 18
    assert {s.family for s in specs} == {"convnet", "vgg", "torchnet"}
    assert len({(s.family, tuple(sorted(s.params.items()))) for s in specs}) == 18


def test_override_expands_every_permutation():
    specs = expand(load_search_space(), families=["convnet"],
                   overrides=parse_overrides(["learning_rate=0.001,0.01", "batch_size=64,128"]))
    got = {(s.params["learning_rate"], s.params["batch_size"]) for s in specs}
    assert got == {(0.001, 64), (0.001, 128), (0.01, 64), (0.01, 128)}
    assert all(isinstance(s.config["batch_size"], int) for s in specs)


def test_profile_epochs_apply():
    space = load_search_space()
    specs = expand(space, families=["torchnet"], epochs=profile(space, "quick").epochs)
    assert {s.config["epochs"] for s in specs} == {1}


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["lr=0.1"], "unknown hyperparameter 'lr' for convnet; valid names: learning_rate, batch_size"),
        (["learning_rate=0.1,abc"], "learning_rate='abc': not a valid float"),
        (["batch_size=12.5"], "batch_size='12.5': not a valid int"),
        (["batch_size=64,,128"], "empty value"),
        (["dropout=1.5"], "dropout=1.5: must be in"),
        (["learning_rate=-1"], "must be positive"),
        (["learning_rate"], "expected NAME=VALUE"),
    ],
)
def test_bad_params_name_the_problem(overrides, needle):
    with pytest.raises(ParamError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        expand(load_search_space(), families=["convnet"], overrides=parse_overrides(overrides))


def test_unknown_family_and_profile():
    with pytest.raises(ParamError, match="valid families: convnet, vgg, torchnet"):
        expand(load_search_space(), families=["resnet"])
    with pytest.raises(ParamError, match="unknown profile 'huge'"):
        profile(load_search_space(), "huge")


def test_literal_choices(tmp_path):
    with pytest.raises(ParamError, match="must be one of onecycle, constant"):
        expand(load_search_space(), families=["torchnet"], overrides={"schedule": "cosine"})


def test_cli_rejects_bad_grid_before_training(tmp_path, monkeypatch, small_store):
    from cli import app

    monkeypatch.setenv("MNISTCL_HOME", str(small_store.storage.root.parent))
    r = CliRunner().invoke(app, ["train", "--family", "convnet", "--param", "learnin_rate=0.1"])
    assert r.exit_code == 2
    assert "unknown hyperparameter 'learnin_rate'" in r.output and "learning_rate" in r.output
    assert not (small_store.storage.root.parent / "experiments.db").exists()
    r = CliRunner().invoke(app, ["train", "--dry-run"])
    assert r.exit_code == 0 and "18 experiments" in r.output
