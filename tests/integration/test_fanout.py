"""AutoML trials fanned out as separate flow runs on a real Prefect server: a process work pool
with two workers (each trial its own process), one Optuna study in SQLite shared by all of them,
a trial killed mid-run, and the sweep resumed."""

import os
import signal
import threading
import time

import psutil
import pytest

from deployment import orchestrate as orch
from deployment import serve as launch
from deployment.serve import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TRIAL = "automl-trial/trial"
SPACE = """
profiles:
  tiny: {train_images: 400, val_images: 200, epochs: 3}
families:
  torchnet: {learning_rate: "0.004,0.0005", batch_size: "32", channels: "8,12"}
fanout:
  max_parallel_trials: 2
"""


@pytest.fixture(scope="module")
def fanned_out(tmp_path_factory):
    """A Prefect server with the trial deployment and two process workers, one thread each."""
    work = tmp_path_factory.mktemp("fanout")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = work / "prefect"
    procs = [orch.start_server(home, port, work / "server.log")]
    mp = pytest.MonkeyPatch()
    try:
        if not orch.wait_for_api(api):
            pytest.fail("Prefect server did not start:\n" + (work / "server.log").read_text()[-3000:])
        orch.create_pools(api, home, kubernetes=False)
        orch.deploy(api, home, ["trial"])
        for i in range(2):
            procs.append(orch.start_worker(api, home, work / f"worker-{i}.log", env={"MNISTCL_TRIAL_THREADS": "1"},
                                           limit=1))
        mp.setenv("PREFECT_API_URL", api)
        mp.setenv("PREFECT_API_AUTH_STRING", orch.auth_string(home))
        # Prefect reads its environment once, when first imported (maybe by an earlier test module).
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: orch.auth_string(home)}):
            from prefect import get_client

            deadline = time.time() + 120
            with get_client(sync_client=True) as client:  # both workers have said hello
                while len(client.read_workers_for_work_pool("mnistcl-local")) < 2:
                    assert time.time() < deadline, "the workers never registered"
                    time.sleep(1)
            yield {"api": api, "home": home, "work": work}
    finally:
        mp.undo()
        for p in reversed(procs):
            launch.stop(p, term_wait=30)


@pytest.fixture
def sweep_args(tmp_path, monkeypatch, small_store):
    monkeypatch.setenv("MNISTCL_HOME", str(small_store.storage.root.parent))
    (tmp_path / "space.yaml").write_text(SPACE)
    return {"profile": "tiny", "search_space": str(tmp_path / "space.yaml"), "prune": True, "gate": "skip",
            "show_progress": False}


def _study(home, sweep):
    import optuna

    from models.train import pruning_storage, study_name

    return optuna.load_study(study_name=study_name(sweep, "torchnet"),
                             storage=pruning_storage(str(home / "experiments.db"), home))


def _kill_one_trial(api: str, home, killed: list, stop: threading.Event) -> None:
    """SIGKILL the process of the first trial flow run seen running (found by the flow run id the
    worker puts in its environment)."""
    while not stop.is_set() and not killed:
        with orch.api_http(api, home) as c:
            runs = c.post(f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
                                                           "flows": {"name": {"any_": ["automl-trial"]}}}).json()
        for run in runs:
            for p in psutil.process_iter():
                try:
                    if p.environ().get("PREFECT__FLOW_RUN_ID") == run["id"]:
                        os.kill(p.pid, signal.SIGKILL)
                        killed.append((run["id"], run["parameters"]["payload"]))
                        return
                except (psutil.Error, OSError):
                    continue
        time.sleep(0.3)


def test_trials_fan_out_share_one_study_survive_a_kill_and_resume(fanned_out, sweep_args, small_store):
    import json

    from flows.train import run_automl
    from mnistcl.experiments import ExperimentStore

    home = small_store.storage.root.parent
    exps = ExperimentStore(home / "experiments.db")

    # Refused before anything is queued: a trial deployment that does not exist; a sweep to
    # resume that does not exist.
    with pytest.raises(ValueError, match="no deployment 'automl-trial/nope'"):
        run_automl(fanout="automl-trial/nope", **sweep_args)
    with pytest.raises(Exception, match="no sweep 'sweep-none' to resume"):
        run_automl(fanout=TRIAL, sweep="sweep-none", **sweep_args)

    # The same sweep in the flow's own process pool, then fanned out: the same best model.
    local = run_automl(concurrency=2, **sweep_args)
    fanned = run_automl(fanout=TRIAL, **sweep_args)
    assert fanned["experiments"] == local["experiments"] == 4 and fanned["failed"] == 0, fanned["errors"]
    assert (fanned["best"]["family"], fanned["best"]["params"]) == (local["best"]["family"], local["best"]["params"])
    assert fanned["best"]["val_accuracy"] == pytest.approx(local["best"]["val_accuracy"], abs=0.02)
    rows = exps.list(sweep=fanned["sweep"])
    assert len(rows) == 4 and {r.status for r in rows} <= {"completed", "pruned"}  # each recorded once
    # One study for all trials, written by four processes (two workers, a process per trial); each
    # experiment's end is its trial's state, so the median rule of a later trial saw the earlier ones.
    study = _study(home, fanned["sweep"])
    trials = {t.user_attrs["exp_id"]: t for t in study.trials}
    assert set(trials) == {r.id for r in rows} and len({t.user_attrs["pid"] for t in trials.values()}) == 4
    for r in rows:
        assert trials[r.id].state.name == {"completed": "COMPLETE", "pruned": "PRUNED"}[r.status], r.id
        assert trials[r.id].intermediate_values, r.id  # checkpoints reported to the shared study

    # A trial killed mid-run: the sweep still finishes, that experiment failed, its Optuna trial too.
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_trial, args=(fanned_out["api"], fanned_out["home"], killed, stop),
                              daemon=True)
    killer.start()
    try:
        hurt = run_automl(fanout=TRIAL, **sweep_args)
    finally:
        stop.set()
        killer.join(10)
    assert killed, "no trial was seen running"
    victim = json.loads(killed[0][1])["exp_id"]
    assert hurt["experiments"] == 4 and hurt["failed"] == 1, hurt
    assert "before the experiment finished" in hurt["errors"][victim]
    # Its Optuna trial, if it had asked for one before it died, is failed: none is left running.
    states = {t.user_attrs["exp_id"]: t.state.name for t in _study(home, hurt["sweep"]).trials}
    assert states.get(victim, "FAIL") == "FAIL" and "RUNNING" not in states.values(), states

    # Re-running the sweep resumes it: only the failed experiment runs again, under its own id.
    resumed = run_automl(fanout=TRIAL, sweep=hurt["sweep"], **sweep_args)
    assert resumed["failed"] == 0 and resumed["experiments"] == 4, resumed["errors"]
    rows = exps.list(sweep=hurt["sweep"])
    assert len(rows) == 4 and exps.get(victim).status in ("completed", "pruned")
    assert {r["id"] for r in resumed["leaderboard"]} == {r.id for r in rows}
