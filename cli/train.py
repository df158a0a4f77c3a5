"""AutoML training and the experiment store: ``mnistcl train``, ``mnistcl experiments ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import (
    AsJson,
    _fail,
    _fmt,
    _settings,
    _store,
    app,
    console,
    err,
    exp_app,
    json_dumps,
    print_json,
    use_local_prefect,
)
from mnistcl.settings import Settings


@app.command("train")
def train(
    ctx: typer.Context,
    profile: Annotated[str, typer.Option(help="Training profile from the search-space file: quick or full.")] = "quick",
    family: Annotated[
        list[str] | None, typer.Option("--family", "-f", help="Model family (repeatable): convnet, vgg, torchnet. Default: all in the file.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=V1,V2,... replaces the file's values (repeatable)."),
    ] = None,
    prune: Annotated[bool, typer.Option(help="Stop hopeless runs early (median rule, Optuna).")] = False,
    dataset: Annotated[str, typer.Option(help="Dataset version to train on.")] = "latest",
    concurrency: Annotated[int | None, typer.Option(min=1, help="Experiments at once (default: min(2, cores)).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the profile's epochs.")] = None,
    train_images: Annotated[int | None, typer.Option(min=0, help="Override the profile's training images (0 = all).")] = None,
    search_space: Annotated[Path | None, typer.Option(help="Search-space YAML (default configs/search_space.yaml).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only expand and check the grid.")] = False,
    gate: Annotated[
        str, typer.Option(help="Validation gate after training: 'default' (configs/gate.yaml), a YAML path, or 'skip'.")
    ] = "default",
    fanout: Annotated[bool, typer.Option(
        "--fanout", help="Each experiment its own flow run of the automl-trial/trial deployment, run by the "
                         "workers of the process pool (`mnistcl prefect up`): needs a Prefect API.")] = False,
    sweep: Annotated[str | None, typer.Option(help="Resume this sweep: its finished experiments are kept, the rest run.")] = None,
) -> None:
    """Train every permutation of the search space (AutoML) as a Prefect flow.

    Each hyperparameter's comma-separated values are expanded into every permutation; the
    default file yields 18 experiments across the three families. Names and values are checked
    before anything trains. Each experiment is tracked in W&B (offline by default) and the
    local experiment store; the leaderboard is published as a Prefect table artifact.

    Example:

      mnistcl train --profile quick

      mnistcl train --family convnet --param learning_rate=0.001,0.01 --param batch_size=64,128

      mnistcl train --fanout --prune          # trials as separate flow runs; one Optuna study for all
    """
    from mnistcl.datasets import DatasetError
    from models.common import ParamError
    from models.search import expand, load_search_space, parse_overrides
    from models.search import profile as get_profile

    settings = _settings(ctx)
    try:
        space = load_search_space(search_space)
        prof = get_profile(space, profile)
        specs = expand(space, families=family, overrides=parse_overrides(param or []),
                       epochs=epochs if epochs is not None else prof.epochs)
        _store(settings).resolve(dataset)
    except (ParamError, DatasetError) as exc:
        _fail(str(exc))
    if dry_run:
        for i, s in enumerate(specs, 1):
            console.print(f"{i:3d}  {s.label}")
        console.print(f"{len(specs)} experiments (profile {profile})")
        return
    use_local_prefect(settings)
    if fanout and not settings.prefect_api:
        _fail("--fanout needs a Prefect server with the trial deployment and workers: run `mnistcl prefect up` "
              "and set PREFECT_API_URL (or prefect_api_url)")
    from flows.train import run_automl

    console.print(f"training {len(specs)} experiments (profile {profile}, dataset {dataset})")
    summary = run_automl(
        concurrency=concurrency, profile=profile, families=family, params=param, prune=prune,
        dataset=dataset, epochs=epochs, train_images=train_images, gate=gate,
        fanout="automl-trial/trial" if fanout else None, sweep=sweep,
        search_space=str(search_space) if search_space else None,
        config=str(ctx.parent.params.get("config")) if ctx.parent and ctx.parent.params.get("config") else None,
    )
    print_leaderboard(summary)
    print_promotion(summary.get("promotion"))
    if not summary.get("completed"):
        _fail(f"no experiment of the sweep completed ({summary.get('failed', 0)} failed)", code=1)


def print_promotion(promo: dict | None) -> None:
    if not promo:
        return
    colour = {"promote": "green", "challenger": "yellow", "reject": "red"}
    for r in promo["registered"]:
        v = r["verdict"]
        console.print(f"registered {r['version']} (experiment {r['experiment']}, {r['family']}): gate "
                      f"[{colour.get(v, 'white')}]{v}[/{colour.get(v, 'white')}] in {r['gate_seconds']:.1f} s: "
                      f"{r['why']}; report {r['report_md']}", markup=True, highlight=False)
    p, c = promo.get("promoted"), promo.get("challenger")
    if p:
        console.print(f"[bold]{p['alias']}: {p['previous'] or '-'} -> {p['version']}[/bold]")
    elif c:
        console.print(f"[bold]challenger: {c['previous'] or '-'} -> {c['version']}[/bold] (shadowed beside the "
                      f"champion until labelled traffic decides)")
    else:
        console.print(f"nothing promoted; champion stays {promo['champion_before'] or '-'}"
                      + (f" ({promo['promotion_error']})" if promo.get("promotion_error") else ""))


def print_leaderboard(summary: dict) -> None:
    table = Table(title=f"sweep {summary['sweep']}: {summary['completed']} completed, {summary['pruned']} pruned, "
                        f"{summary['failed']} failed in {summary['wall_s']:.0f} s")
    cols = ["rank", "id", "family", "status", "val_accuracy", "wall_s", "param_count", "flops", "params"]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("family", "status", "params") else "left")
    for row in summary["leaderboard"]:
        table.add_row(*[_fmt(row.get(c), c) for c in cols])
    console.print(table)
    if summary["errors"]:
        for i, e in summary["errors"].items():
            err.print(f"[red]experiment {i} failed:[/red] {e}")
    best = summary["best"]
    if best:
        console.print(f"best: experiment {best['id']} ({best['family']}) val accuracy {best['val_accuracy']:.4f}; "
                      f"ONNX {best['onnx_path']}")
    console.print(f"summary: {summary.get('summary_path', '')}")




# ---------------------------------------------------------------------------- experiments
def _exp_store(settings: Settings):
    from mnistcl.experiments import ExperimentStore

    return ExperimentStore(settings.experiments_location)


@exp_app.command("list")
def experiments_list(
    ctx: typer.Context,
    sort: Annotated[str, typer.Option(help="Column to sort by, e.g. val_accuracy, wall_s, flops.")] = "id",
    desc: Annotated[bool, typer.Option("--desc", help="Sort descending.")] = False,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns to show (default: a useful set). 'all' for every one.")
    ] = None,
    sweep: Annotated[str | None, typer.Option(help="Only this sweep ('last' for the newest).")] = None,
    family: Annotated[str | None, typer.Option(help="Only this model family.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status: completed, pruned, failed, running, queued.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    as_json: AsJson = False,
) -> None:
    """List experiments, sortable, with the columns you choose.

    Example:

      mnistcl experiments list --sort val_accuracy --desc --columns id,family,val_accuracy,wall_s,params
    """
    from mnistcl.experiments import COLUMNS, DEFAULT_LIST_COLUMNS

    store = _exp_store(_settings(ctx))
    cols = DEFAULT_LIST_COLUMNS if not columns else COLUMNS if columns == "all" else [c.strip() for c in columns.split(",")]
    bad = [c for c in cols if c not in COLUMNS]
    if bad:
        _fail(f"unknown column(s) {', '.join(bad)}; columns: {', '.join(COLUMNS)}")
    if sort not in COLUMNS:
        _fail(f"cannot sort by {sort!r}; columns: {', '.join(COLUMNS)}")
    if sweep == "last":
        sweeps = store.sweeps()
        sweep = sweeps[-1] if sweeps else None
    rows = store.list(sweep=sweep, family=family, status=status, sort=sort, descending=desc, limit=limit)
    if as_json:
        print_json([{c: e.row.get(c) for c in cols} for e in rows])
        return
    if not rows:
        console.print("no experiments yet: run `mnistcl train --profile quick`")
        return
    table = Table(title=f"{len(rows)} experiments")
    for c in cols:
        table.add_column(c, overflow="fold")
    for e in rows:
        table.add_row(*[_fmt(e.row.get(c), c) for c in cols])
    console.print(table)


@exp_app.command("show")
def experiments_show(
    ctx: typer.Context,
    exp_id: Annotated[int, typer.Argument(help="Experiment id (see `mnistcl experiments list`).")],
    plot: Annotated[Path | None, typer.Option(help="Where to write the loss curve PNG (default: next to the artifacts).")] = None,
    as_json: AsJson = False,
) -> None:
    """Show one experiment: hyperparameters, metrics, history, files; writes its loss curve as PNG.

    Example:

      mnistcl experiments show 3
    """
    from mnistcl.experiments import ExperimentNotFound
    from scenario.plots import plot_history

    settings = _settings(ctx)
    try:
        e = _exp_store(settings).get(exp_id)
    except ExperimentNotFound as exc:
        _fail(str(exc))
    if as_json:
        print_json(e.row)
        return
    table = Table(title=f"experiment {exp_id}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for k, v in e.row.items():
        if k in ("history", "checkpoints"):
            continue
        table.add_row(k, _fmt(v) if k != "params" else json_dumps(v))
    console.print(table)
    hist = e.row.get("history") or []
    if hist:
        h = Table(title="per epoch")
        for c in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
            h.add_column(c, justify="right")
        for row in hist:
            h.add_row(*[_fmt(row[c]) for c in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")])
        console.print(h)
    out = plot or settings.home_dir / "experiments" / str(exp_id) / "loss_curve.png"
    plot_history(e.row, out)
    console.print(f"loss curve: {out}")


@exp_app.command("wandb-pull")
def experiments_wandb_pull(
    ctx: typer.Context,
    exp_id: Annotated[int, typer.Argument(help="Experiment id (see `mnistcl experiments list`).")],
    to: Annotated[Path, typer.Option(help="Folder to put the run in.")] = Path("wandb-runs"),
) -> None:
    """Bring an experiment's offline W&B run back from the shared storage, ready for `wandb sync`.

    Example:

      mnistcl experiments wandb-pull 3 --to runs && wandb sync runs/offline-run-*
    """
    from mnistcl.experiments import ExperimentNotFound
    from mnistcl.stores import dataset_store
    from mnistcl.tracking import pull_run

    settings = _settings(ctx)
    try:
        e = _exp_store(settings).get(exp_id)
    except ExperimentNotFound as exc:
        _fail(str(exc))
    if not e.row.get("wandb_dir"):
        _fail(f"experiment {exp_id} has no W&B run (wandb_mode was disabled)")
    try:
        folder = pull_run(dataset_store(settings).storage, e.row["wandb_dir"], to)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"W&B run: {folder}\nupload it with: wandb sync {folder}")




@exp_app.command("compare")
def experiments_compare(
    ctx: typer.Context,
    exp_ids: Annotated[list[int], typer.Argument(help="Two or more experiment ids.")],
) -> None:
    """Hyperparameters and metrics of several experiments side by side.

    Example:

      mnistcl experiments compare 3 7 12
    """
    from mnistcl.experiments import ExperimentNotFound

    if len(exp_ids) < 2:
        _fail("give at least two experiment ids to compare")
    store = _exp_store(_settings(ctx))
    try:
        exps = [store.get(i) for i in exp_ids]
    except ExperimentNotFound as exc:
        _fail(str(exc))
    names = sorted({k for e in exps for k in (e.row.get("params") or {})})
    table = Table(title="comparison")
    table.add_column("")
    for e in exps:
        table.add_column(f"#{e.row['id']} {e.row['family']}", justify="right")
    for n in names:
        vals = [str((e.row.get("params") or {}).get(n, "(default)")) for e in exps]
        table.add_row(f"[cyan]{n}[/cyan]", *vals)
    for m in ("status", "dataset", "profile", "val_accuracy", "val_loss", "train_loss", "epochs", "wall_s",
              "cpu_s", "peak_rss_mb", "param_count", "flops", "onnx_bytes"):
        vals = [e.row.get(m) for e in exps]
        nums = [v for v in vals if isinstance(v, int | float)]
        best = None
        if nums and m in ("val_accuracy",):
            best = max(nums)
        elif nums and m in ("val_loss", "wall_s", "param_count", "flops"):
            best = min(nums)
        table.add_row(m, *[("[bold green]" + _fmt(v) + "[/bold green]") if v is not None and v == best and len(nums) > 1
                           else _fmt(v) for v in vals])
    console.print(table)
