"""The AutoML flow: expand the grid, train one task per experiment, pick the best.

Only wiring; the logic is in models.automl and models.train. Two ways to run the experiments:
- in this flow run's own process pool (the default): concurrency bounded by the thread-pool task
  runner, each task waiting on a worker process of this machine;
- fanned out (``fanout="automl-trial/trial"``, or ``trial-k8s`` on Kubernetes): each experiment is
  a flow run of that deployment, which the work pool's workers run as separate processes, or as
  separate Jobs with their own GPU; at most ``fanout.max_parallel_trials`` (configs/search_space.yaml)
  at once. The trials share the Optuna study through the experiment database.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.hooks import alert_on_failure
from mnistcl.settings import load_settings
from models.automl import (
    WorkerPool,
    default_concurrency,
    plan_sweep,
    settle_trial,
    summarise,
    trial_payload,
    write_summary,
)
from validation.promote import validate_register_promote


def check_trial_deployment(name: str) -> None:
    """Before anything is queued: the trial deployment exists and its work pool has a worker that
    was seen in the last minutes (otherwise the trials would wait for their timeout)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ValueError(f"no deployment {name!r}: deploy it (`mnistcl prefect up`, or `prefect deploy --name "
                             f"{name.split('/')[-1]}`) before a fanned-out sweep") from None
        workers = client.read_workers_for_work_pool(dep.work_pool_name)
    recent = [w for w in workers if w.last_heartbeat_time and time.time() - w.last_heartbeat_time.timestamp() < 300]
    if not recent:
        raise ValueError(f"work pool {dep.work_pool_name!r} has no live worker: its trials would never start "
                         f"(start one: prefect worker start --pool {dep.work_pool_name})")


def run_trial(payload: str, exp_id: int, label: str, deployment: str, timeout_s: float) -> dict:
    """One experiment as a flow run of ``deployment`` (a subflow of this sweep's run); its result
    read back from the experiment store once the run is final (a crashed or killed run: the
    experiment is marked failed). A run not final after ``timeout_s`` is cancelled and failed."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    run = run_deployment(name=deployment, parameters={"payload": trial_payload(payload)}, timeout=timeout_s,
                         poll_interval=1, flow_run_name=f"experiment-{exp_id}")
    if not (run.state and run.state.is_final()):
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(message=f"not final after {timeout_s:.0f} s"), force=True)
    ended = run.state.name if run.state else "without a state"
    result = settle_trial(payload, ended)
    get_run_logger().info("#%s %s: %s (flow run %s, %s)", exp_id, label, result["status"], run.name, ended)
    return result


@task(name="train-experiment", task_run_name="experiment-{exp_id}", retries=0)
def train_experiment(payload: str, exp_id: int, label: str) -> dict:
    result = _POOL.submit(payload).result()
    logger = get_run_logger()
    acc = result.get("val_accuracy")
    logger.info("#%s %s: %s, val accuracy %s, %.1f s", exp_id, label, result["status"],
                "n/a" if acc is None else f"{acc:.4f}", result.get("wall_s") or 0.0)
    return result


_POOL: WorkerPool | None = None


@flow(name="automl", log_prints=True, on_failure=[alert_on_failure], on_crashed=[alert_on_failure], task_runner=ThreadPoolTaskRunner(max_workers=default_concurrency()))
def automl(
    profile: str = "quick",
    families: list[str] | None = None,
    params: list[str] | None = None,
    prune: bool = False,
    dataset: str = "latest",
    concurrency: int | None = None,
    epochs: int | None = None,
    train_images: int | None = None,
    search_space: str | None = None,
    config: str | None = None,
    show_progress: bool = True,
    gate: str = "default",
    fanout: str | None = None,
    sweep: str | None = None,
) -> dict:
    """Train every permutation of the search space, publish the leaderboard, then validate the
    best runs against the champion, register them and promote the best passing one.

    ``gate``: "default" (configs/gate.yaml), a path to another gate file, or "skip".
    ``fanout``: the trial deployment ("automl-trial/trial" locally, "automl-trial/trial-k8s" on the
    cluster) to run each experiment as its own flow run; None: this flow run's process pool.
    ``sweep``: an earlier sweep's id to resume (its finished experiments are kept).
    """
    global _POOL
    settings = load_settings(config)
    if fanout:
        check_trial_deployment(fanout)
    plan = plan_sweep(settings, profile_name=profile, families=families, params=params,
                      search_space=search_space, dataset=dataset, prune=prune, epochs=epochs,
                      train_images=train_images, sweep=sweep)
    logger = get_run_logger()
    logger.info("sweep %s: %d experiments on dataset %s (profile %s)", plan.sweep, len(plan.specs),
                plan.dataset_version, profile)
    t0 = time.perf_counter()
    labels = {i: s.label for i, s in zip(plan.exp_ids, plan.specs, strict=True)}
    if fanout:
        # Threads that only wait on the trials' flow runs, as many as may run at once (each with
        # this flow run's context, so the trials show as its subflows).
        with ThreadPoolExecutor(max_workers=plan.max_parallel_trials) as waiters:
            futures = [waiters.submit(contextvars.copy_context().run, run_trial, p, i, labels[i], fanout,
                                      plan.trial_timeout_s)
                       for p, i in zip(plan.payloads, plan.exp_ids, strict=True)]
            results = [f.result() for f in futures]
    else:
        with WorkerPool(concurrency or default_concurrency(), show_progress=show_progress, labels=labels) as pool:
            _POOL = pool
            futures = [train_experiment.submit(p, i, labels[i])
                       for p, i in zip(plan.payloads, plan.exp_ids, strict=True)]
            results = [f.result() for f in futures]
            _POOL = None
    summary = summarise(plan, plan.done + results, time.perf_counter() - t0)
    path = write_summary(settings, summary)
    create_table_artifact(key="automl-leaderboard", table=summary["leaderboard"],
                          description=f"AutoML sweep {plan.sweep} on dataset {plan.dataset_version}")
    best = summary["best"]
    create_markdown_artifact(
        key="automl-summary",
        markdown=(f"# Sweep {plan.sweep}\n\n{summary['completed']} completed, {summary['pruned']} pruned, "
                  f"{summary['failed']} failed in {summary['wall_s']:.0f} s.\n\n"
                  + (f"Best: experiment {best['id']} ({best['family']}, {best['params']}), "
                     f"validation accuracy {best['val_accuracy']:.4f}.\n" if best else "No completed run.\n")
                  + f"\nSummary JSON: `{path}`\n"),
    )
    summary["summary_path"] = str(path)
    if gate != "skip":
        summary["promotion"] = validate_and_promote(settings, summary, None if gate == "default" else gate)
        write_summary(settings, summary)  # again, now with the promotion
    return summary


@task(name="validate-register-promote")
def validate_and_promote(settings, summary: dict, gate_path: str | None) -> dict:
    """The validation gate over the sweep's best runs, then the registry and the alias move."""
    from pathlib import Path

    result = validate_register_promote(settings, summary, gate_path=Path(gate_path) if gate_path else None)
    logger = get_run_logger()
    for r in result["registered"]:
        logger.info("registered %s (experiment %s): gate verdict %s: %s", r["version"], r["experiment"],
                    r["verdict"], r["why"])
    promoted = result.get("promoted") or result.get("challenger")
    if promoted:
        logger.info("%s %s (was %s)", f"promoted to {promoted.get('alias', 'champion')}" if result.get("promoted")
                    else "challenger (shadowed)", promoted["version"], promoted["previous"])
        report = Path(result["reports"][promoted["version"]]).read_text()
    else:
        logger.warning("nothing promoted; champion stays %s", result["champion_before"])
        first = result["registered"][0] if result["registered"] else None
        report = Path(first["report_md"]).read_text() if first else "No candidate was validated."
    create_markdown_artifact(key="validation-report", markdown=report,
                             description="Validation gate report of the promoted (or best) candidate")
    return result


def run_automl(concurrency: int | None = None, fanout: str | None = None, **kwargs) -> dict:
    """Run the flow with as many task threads as worker processes (fanned out, the trials' flow
    runs are waited on by ``fanout.max_parallel_trials`` threads of the flow itself)."""
    if fanout:
        return automl(fanout=fanout, **kwargs)
    c = concurrency or default_concurrency()
    return automl.with_options(task_runner=ThreadPoolTaskRunner(max_workers=c))(concurrency=c, **kwargs)
