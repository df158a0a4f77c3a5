"""Local Prefect: ``mnistcl prefect up``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cli.app import _fail, _settings, app, console, err

prefect_app = typer.Typer(help="Local Prefect: server, work pools, deployments, worker.", no_args_is_help=True)
app.add_typer(prefect_app, name="prefect")


@prefect_app.command("up")
def prefect_up(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Prefect server port on 127.0.0.1.")] = 4200,
    k8s: Annotated[bool, typer.Option(help="Also create the Kubernetes work pool (GPU job template).")] = True,
) -> None:
    """Bring up local orchestration and keep it running until Ctrl-C: a Prefect server on
    127.0.0.1 (SQLite under <home>/prefect), the work pools mnistcl-local (process) and mnistcl-k8s
    (kubernetes), the deployments train, monitor (every 5 min), retrain (on drift, low
    confidence, dataset updates, weekly) and judge (hourly, on new shadow evidence) from
    prefect.yaml, and a process worker. Ctrl-C or SIGTERM stops the worker and the server.

    Example:

      mnistcl prefect up          # then open http://127.0.0.1:4200
    """
    import signal

    from deployment import orchestrate as orch

    def stop(*_):
        raise KeyboardInterrupt

    # SIGTERM (a supervisor, `kill`) stops everything as Ctrl-C does, from the first moment on.
    signal.signal(signal.SIGTERM, stop)
    settings = _settings(ctx)
    home = settings.home_dir / "prefect"
    api = f"http://127.0.0.1:{port}/api"
    logs = settings.home_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = orch.start_server(home, port, logs / "prefect-server.log")
    procs = [server]
    try:
        console.print(f"starting the Prefect server on http://127.0.0.1:{port} (log {logs / 'prefect-server.log'})")
        if not orch.wait_for_api(api):
            _fail(f"the Prefect server did not start; see {logs / 'prefect-server.log'}")
        orch.create_pools(api, home, kubernetes=k8s)
        console.print("work pools: mnistcl-local (process)" + (", mnistcl-k8s (kubernetes, GPU)" if k8s else ""))
        orch.deploy(api, home)
        console.print("deployments: automl/train, monitor/monitor (every 5 min), retrain/retrain (events + weekly), "
                      "judge/judge (hourly + evidence)")
        # flows announce their events to this server
        # Fanned-out AutoML trials share this worker: each gets its share of the cores.
        import os

        from models.search import load_search_space

        trial_threads = max(1, (os.cpu_count() or 1) // load_search_space().max_parallel_trials)
        procs.append(orch.start_worker(api, home, logs / "prefect-worker.log",
                                       env={"MNISTCL_PREFECT_API_URL": api, "MNISTCL_TRIAL_THREADS": str(trial_threads)}))
        console.print(f"worker on mnistcl-local (log {logs / 'prefect-worker.log'}); UI http://127.0.0.1:{port}; "
                      f"Ctrl-C stops everything")

        while all(p.poll() is None for p in procs):
            time.sleep(1)
        err.print("a Prefect process exited; see the logs in " + str(logs))
    except KeyboardInterrupt:
        pass
    finally:
        from deployment import serve as launch

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping the worker and the server")
        for p in reversed(procs):
            launch.stop(p)


