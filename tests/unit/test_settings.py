import subprocess
import sys

import pytest

from mnistcl.settings import ConfigError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_are_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home_dir == (tmp_path / ".mnistcl").resolve()
    assert s.store_url == str(tmp_path / ".mnistcl" / "store")
    assert s.wandb_mode == "offline"
    assert not (tmp_path / ".mnistcl").exists(), "loading settings must not create folders"


def test_yaml_then_env_override(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("home: /tmp/from-yaml\nstorage_url: s3://bucket/x\nwandb_mode: disabled\n")
    s = load_settings(cfg)
    assert str(s.home) == "/tmp/from-yaml" and s.storage_url == "s3://bucket/x"
    monkeypatch.setenv("MNISTCL_STORAGE_URL", "s3://other/y")
    s = load_settings(cfg)
    assert s.storage_url == "s3://other/y", "environment must beat the YAML file"
    assert s.wandb_mode == "disabled"


def test_config_from_env_var(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("wandb_project: from-env-file\n")
    monkeypatch.setenv("MNISTCL_CONFIG", str(cfg))
    assert load_settings().wandb_project == "from-env-file"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("home: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("wandb_mode: sometimes\n", "wandb_mode"),
    ],
)
def test_bad_config_names_problem(tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_import_has_no_side_effects(tmp_path):
    # Importing the CLI (and so every core module) must create nothing and stay light.
    code = "import sys, cli; print(sorted(m for m in ('tensorflow','torch','prefect') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


def test_shared_state_required_refuses_pod_local_state(tmp_path, monkeypatch):
    """The training image sets MNISTCL_REQUIRE_SHARED_STATE: a Job whose settings would keep state
    on its own disk refuses to start, naming each setting."""
    monkeypatch.setenv("MNISTCL_REQUIRE_SHARED_STATE", "true")
    monkeypatch.setenv("MNISTCL_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert "storage_url" in msg and "MNISTCL_PREDICTIONS_DB=postgresql://" in msg and "experiments_db" in msg
    monkeypatch.setenv("MNISTCL_STORAGE_URL", "s3://bucket/mnistcl")
    monkeypatch.setenv("MNISTCL_PREDICTIONS_DB", "postgresql://app@db/predictions")
    with pytest.raises(ConfigError, match="experiments_db") as exc:
        load_settings()
    assert "predictions_db" not in str(exc.value)
    monkeypatch.setenv("MNISTCL_EXPERIMENTS_DB", "postgresql://app@db/experiments")
    s = load_settings()
    assert s.experiments_location == "postgresql://app@db/experiments" and s.store_url == "s3://bucket/mnistcl"
