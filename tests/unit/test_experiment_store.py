import pytest

from mnistcl.experiments import ExperimentNotFound, ExperimentStore

pytestmark = pytest.mark.unit


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """The local default and the cluster's backend: one behaviour."""
    return str(tmp_path / "e.db") if request.param == "sqlite" else request.getfixturevalue("pg_database")


def test_create_update_list_sort(location):
    s = ExperimentStore(location)
    a = s.create("sw1", "convnet", {"learning_rate": 0.001}, dataset="v1", profile="quick")
    b = s.create("sw1", "torchnet", {"learning_rate": 0.004}, dataset="v1", profile="quick")
    c = s.create("sw2", "vgg", {"width": 8}, dataset="v2", profile="quick")
    s.update(a, status="completed", val_accuracy=0.91, history=[{"epoch": 1, "loss": 0.5}])
    s.update(b, status="completed", val_accuracy=0.95)
    s.update(c, status="pruned", val_accuracy=0.40)
    assert [e.id for e in s.list(sort="val_accuracy", descending=True)] == [b, a, c]
    assert [e.id for e in s.list(sweep="sw1")] == [a, b]
    assert s.get(a).history == [{"epoch": 1, "loss": 0.5}]
    assert s.get(a).params == {"learning_rate": 0.001}
    assert s.sweeps() == ["sw1", "sw2"]
    with pytest.raises(ExperimentNotFound):
        s.get(99)
    with pytest.raises(ValueError, match="cannot sort"):
        s.list(sort="bogus; DROP TABLE experiments")
    with pytest.raises(ValueError, match="unknown experiment fields"):
        s.update(a, nonsense=1)
    big = 12_345_678_901  # FLOPs of a large model: beyond a 32-bit integer
    s.update(c, flops=big, macs=big // 2)
    assert ExperimentStore(location).get(c).flops == big  # a second process (a new store) reads it


def test_concurrent_trials_each_get_their_own_id(location):
    """Trials in separate processes (pods) create and update rows at once; the schema is made
    once, every id is distinct."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        ids = sum(pool.starmap(_create_some, [(location, k) for k in range(3)]), [])
    assert len(set(ids)) == 15
    rows = ExperimentStore(location).list(status="completed")
    assert sorted(e.id for e in rows) == sorted(ids) and {e.sweep for e in rows} == {"sw0", "sw1", "sw2"}


def _create_some(location, k):
    s = ExperimentStore(location)
    out = []
    for i in range(5):
        exp_id = s.create(f"sw{k}", "torchnet", {"i": i}, dataset="v1", profile="quick")
        s.update(exp_id, status="completed", val_accuracy=0.9)
        out.append(exp_id)
    return out


def test_the_pruners_study_is_shared_through_the_experiment_database(pg_database, tmp_path):
    """With the experiment store on PostgreSQL, trials in other pods see each other's checkpoints
    (the median rule needs them); locally SQLite in the home serves the processes of one machine.
    A trial whose process died is failed by the sweep, not left running."""
    import multiprocessing as mp

    import optuna

    from models.train import fail_stale_trials, pruning_storage

    local = pruning_storage(str(tmp_path / "e.db"), tmp_path)
    assert isinstance(local, optuna.storages.RDBStorage) and "sqlite" in local.url
    ctx = mp.get_context("spawn")
    for url, home in ((pg_database, tmp_path / "unused"), (str(tmp_path / "e.db"), tmp_path)):
        with ctx.Pool(2) as pool:
            pool.starmap(_finish_trial, [(url, home, 0.9), (url, home, 0.7)])
        study = optuna.load_study(study_name="sw-torchnet", storage=pruning_storage(url, home))
        assert sorted(t.value for t in study.trials) == [0.7, 0.9]
        dead = study.ask()
        dead.set_user_attr("exp_id", 42)
        assert fail_stale_trials(url, home, "sw-torchnet", 42) == 1
        assert optuna.load_study(study_name="sw-torchnet", storage=pruning_storage(url, home)).trials[-1].state \
            == optuna.trial.TrialState.FAIL
    assert not (tmp_path / "unused").exists()


def _finish_trial(url, home, value):
    from models.train import _pruning_trial, pruning_storage

    study, trial = _pruning_trial(pruning_storage(url, home), "sw-torchnet")
    trial.report(value, 0)
    study.tell(trial, value)
