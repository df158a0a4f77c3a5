"""The continual-learning scenario and the demo: ``mnistcl scenario run``, ``mnistcl demo``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.app import (
    Orchestrator,
    Strategy,
    _fail,
    _registry,
    _settings,
    app,
    console,
    use_local_prefect,
    value,
)
from cli.data import data_ingest
from cli.models import models_list
from cli.train import train

scenario_app = typer.Typer(help="The continual-learning scenario: simulated cohorts of new users.",
                           no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def scenario_run(
    ctx: typer.Context,
    scenario: Annotated[Path | None, typer.Option(help="Cohorts and schedule (default configs/scenario.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: the home folder's scenario/TIME).")] = None,
    orchestrator: Annotated[Orchestrator, typer.Option(
        help="prefect: events trigger the retrain deployment on a local Prefect server and a worker runs it; "
             "local: the same retraining in-process.")] = Orchestrator.prefect,
    stream_images: Annotated[int | None, typer.Option(min=1, help="Digits each cohort streams (override).")] = None,
    eval_images: Annotated[int | None, typer.Option(min=1, help="Held-out digits per cohort (override).")] = None,
    strategy: Annotated[Strategy | None, typer.Option(help="How retrainings train (override).")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Runs, one per seed from the settings' seed on, each from the "
                                                    "same champion on its own copy of the store; mean and sd.")] = 1,
    results: Annotated[Path | None, typer.Option(help="With --seeds: also write the summary JSON here.")] = None,
) -> None:
    """Stream cohorts of drifting handwriting through the model server, let monitoring alert and
    trigger retraining, promote and hot-swap new champions, then write a report with plots.

    Needs a champion (`mnistcl train`) and the serving environment (`make venv-serve`).

    Examples:

      mnistcl scenario run --orchestrator local --stream-images 500

      mnistcl scenario run --seeds 3 --results bench/results/scenario-seeds.json
    """
    from scenario.simulator import ScenarioError, load_scenario, run_scenario

    settings = _settings(ctx)
    orchestrator, strategy = value(orchestrator), value(strategy)
    try:
        sc = load_scenario(scenario, stream_images=stream_images, eval_images=eval_images, strategy=strategy)
    except ScenarioError as exc:
        _fail(str(exc))
    from deployment import serve as launch
    from mnistcl.registry import RegistryError

    if not launch.SERVE_PYTHON.exists():
        _fail("the serving environment is missing: run `make venv-serve`")
    try:
        _registry(settings).resolve("champion")
    except RegistryError:
        _fail("no champion yet: run `mnistcl train` (or `mnistcl demo`) first")
    use_local_prefect(settings)
    folder = out or settings.home_dir / "scenario" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if seeds > 1:
        from scenario.simulator import run_seeds

        try:
            summary = run_seeds(settings, sc, folder, [settings.seed + i for i in range(seeds)],
                                orchestrator=orchestrator)
        except ScenarioError as exc:
            _fail(str(exc))
        console.rule(f"result over {seeds} seeds")
        console.print(f"ACC {summary['acc_mean']:.4f} +/- {summary['acc_sd']:.4f} (static {summary['static_acc_mean']:.4f}), "
                      f"BWT {summary['bwt_mean']:+.4f} +/- {summary['bwt_sd']:.4f}, promotions "
                      f"{summary['promotions_mean']:.1f} +/- {summary['promotions_sd']:.1f}; drift episodes ending "
                      f"with a better champion: at least {summary['episodes_better_min']} of {summary['episodes']}")
        if results:
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(summary, indent=1, default=float) + "\n")
        console.print(f"per seed: [bold]{folder}/seed-*/report.md[/bold]; summary {folder / 'seeds.json'}")
        return
    result = run_scenario(settings, sc, folder, orchestrator=orchestrator)
    m, ms = result["metrics"], result["metrics_static"]
    console.rule("result")
    console.print(f"ACC {m['ACC']:.4f} (static {ms['ACC']:.4f}), BWT {m['BWT']:+.4f}, mean forgetting "
                  f"{m['mean_forgetting']:.4f}; {sum(r['promoted'] for r in result['retrains'])} promotions from "
                  f"{len(result['retrains'])} retrainings; {result['seconds']:.0f} s")
    console.print(f"report: [bold]{folder / 'report.md'}[/bold] (plots and scenario.json beside it)")


@app.command("demo")
def demo(
    ctx: typer.Context,
    profile: Annotated[str, typer.Option(help="Training profile: quick (minutes on 2 cores) or full.")] = "quick",
    orchestrator: Annotated[Orchestrator, typer.Option(help="Retraining through a local Prefect server (prefect) or in-process (local).")] = Orchestrator.prefect,
) -> None:
    """Run the main job on the embedded defaults, end to end.

    1. ingest MNIST into dataset version v1 (or find it);
    2. train the 18-experiment AutoML grid, gate the best runs, register them, promote a champion;
    3. the continual-learning scenario: cohorts of drifting handwriting through the Seldon model
       server, monitoring alerts (emails in the outbox), retraining triggered through Prefect,
       validated and promoted champions hot-swapped into the server, then a report with plots
       and continual-learning metrics (ACC, BWT, forgetting) against a static model.

    Example:

      mnistcl demo
    """
    settings = _settings(ctx)
    console.rule("1. versioned data")
    ctx.invoke(data_ingest, ctx=ctx, csv_dir=None)
    console.rule("2. AutoML training, validation gate, registry")
    ctx.invoke(train, ctx=ctx, profile=profile, family=None, param=None, prune=False, dataset="latest",
               concurrency=None, epochs=None, train_images=None, search_space=None, dry_run=False, gate="default")
    console.rule("3. the registry")
    ctx.invoke(models_list, ctx=ctx)
    console.rule("4. continual learning: new users, drift, alerts, retraining, promotion")
    folder = settings.home_dir / "scenario" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    ctx.invoke(scenario_run, ctx=ctx, scenario=None, out=folder, orchestrator=orchestrator, stream_images=None,
               eval_images=None, strategy=None, seeds=1, results=None)
    latest = settings.home_dir / "scenario" / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(folder.name)
    console.print(f"\nNext: open {latest / 'report.md'}; `mnistcl models history`; `make prefect-up` for the Prefect UI")
