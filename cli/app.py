"""``mnistcl``: the one command-line entry point (the app, its groups and shared helpers).

Settings are loaded once here (``--config`` / ``MNISTCL_*``) and passed down; heavy
libraries (TensorFlow, PyTorch, Prefect) are imported inside the commands that need them,
so ``mnistcl --help`` stays instant.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime
from enum import StrEnum
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
    from mnistcl.stores import dataset_store

    return dataset_store(settings)


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


def _config_arg(ctx: typer.Context) -> str | None:
    root = ctx.find_root()
    return str(root.params["config"]) if root.params.get("config") else None


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


def _parse_since(text: str | None) -> float:
    import re
    import time as _t

    if not text:
        return 0.0
    m = re.fullmatch(r"(\d+)([smhd])", text)
    if m:
        return _t.time() - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        _fail(f"--since {text!r}: use an ISO time (2026-11-28T09:00) or an age like 30m, 6h, 7d")


def _registry(settings: Settings):
    from mnistcl.stores import registry

    return registry(settings)


def json_dumps(v) -> str:

    return json.dumps(v, sort_keys=True)


def use_local_prefect(settings: Settings) -> None:
    """Without a Prefect API, keep Prefect's state (SQLite) inside the home folder."""
    import os

    if settings.prefect_api:
        os.environ["PREFECT_API_URL"] = settings.prefect_api
        from deployment.orchestrate import LOCAL_AUTH_SECRET
        from mnistcl.credentials import secret_path

        local = secret_path(settings.home_dir / "prefect", LOCAL_AUTH_SECRET)  # `mnistcl prefect up`'s server
        if "PREFECT_API_AUTH_STRING" not in os.environ and local.is_file():
            os.environ["PREFECT_API_AUTH_STRING"] = local.read_text().strip()
        return
    os.environ.setdefault("PREFECT_HOME", str(settings.home_dir / "prefect"))
    # A fresh SQLite database is migrated on first start: slow on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class Strategy(StrEnum):
    """How a retraining trains (retraining.retrain.STRATEGIES)."""

    finetune_replay = "finetune-replay"
    full = "full"
    automl = "automl"


class Orchestrator(StrEnum):
    prefect = "prefect"
    local = "local"


class Alias(StrEnum):
    champion = "champion"
    challenger = "challenger"


class ExportFormat(StrEnum):
    csv = "csv"
    npz = "npz"


def value(choice):
    """An enum option's plain string (None stays None), for the stages below."""
    return getattr(choice, "value", choice)


AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def print_json(data) -> None:
    """One JSON document on stdout (no Rich markup, no wrapping), for scripts and jq."""
    print(json.dumps(data, indent=2, default=str, sort_keys=True))


def run() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
