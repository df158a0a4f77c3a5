"""The model registry: ``mnistcl models ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import (
    Alias,
    AsJson,
    _fail,
    _fmt,
    _registry,
    _settings,
    _store,
    console,
    json_dumps,
    models_app,
    print_json,
    value,
)


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List model versions with lineage (dataset, experiment), gate result and aliases.

    Example:

      mnistcl models list
    """
    settings = _settings(ctx)
    reg = _registry(settings)
    versions = reg.list()
    if as_json:
        aliases = {a: reg.alias(a) for a in ("champion", "challenger")}
        print_json([{**mv.model_dump(mode="json"), "aliases": [a for a, v in aliases.items() if v == mv.id]}
                    for mv in versions])
        return
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
    as_json: AsJson = False,
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
    if as_json:
        print_json(mv.model_dump(mode="json"))
        return
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


@models_app.command("import")
def models_import(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version (or alias) in the other registry.")],
    from_store: Annotated[str, typer.Option("--from-store", help="The other environment's store URL, e.g. "
                                                                 "s3://my-company-mnistcl-staging/mnistcl/store.")],
    dataset: Annotated[str, typer.Option(help="This store's dataset version the copy is judged against.")] = "latest",
    as_json: AsJson = False,
) -> None:
    """Copy a model version from another environment's registry into this one (staging -> prod):
    its artifacts, checked against their sha256, and its record, under this registry's next id.
    Then `mnistcl models validate <new id>` judges it on this environment's data.

    Example:

      mnistcl models import m7 --from-store s3://my-company-mnistcl-staging/mnistcl/store
    """
    from mnistcl.datasets import DatasetError
    from mnistcl.registry import RegistryError
    from mnistcl.stores import registry

    settings = _settings(ctx)
    reg = _registry(settings)
    if from_store.rstrip("/") == settings.store_url.rstrip("/"):
        _fail(f"--from-store is this environment's own store ({settings.store_url}); nothing to copy")
    try:
        source = registry(settings.model_copy(update={"storage_url": from_store}))
        mv = reg.import_version(source, version, source_url=from_store, dataset=_store(settings).resolve(dataset))
    except (RegistryError, DatasetError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        print_json(mv.model_dump(mode="json"))
        return
    console.print(f"imported {mv.copied_from['version']} from {from_store} as [bold]{mv.id}[/bold] "
                  f"(dataset {mv.dataset}, {len(mv.artifacts)} artifacts)")


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version to promote (m3 or 3).")],
    alias: Annotated[Alias, typer.Option(help="The alias to move.")] = Alias.champion,
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
        move = reg.promote(version, value(alias), reason=reason, force=force)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{value(alias)}: {move.previous or '-'} -> [bold]{move.version}[/bold] (move {move.seq}, {move.reason})")


@models_app.command("unset")
def models_unset(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why; kept in the alias history.")] = "cleared by hand",
) -> None:
    """Clear the challenger alias (the canary predictor goes at the next `deploy render`). The
    champion alias cannot be cleared: the model servers serve it.

    Example:

      mnistcl models unset --reason "canary finished"
    """
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        move = reg.move_alias("challenger", None, reason=reason)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"challenger: {move.previous or '-'} -> - (move {move.seq}, {move.reason})")


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context,
    alias: Annotated[Alias, typer.Option(help="The alias to move back.")] = Alias.champion,
    to: Annotated[str | None, typer.Option(help="Version to go back to (default: the one before).")] = None,
) -> None:
    """Undo the last move of an alias: the previous champion is restored.

    Example:

      mnistcl models rollback
    """
    from mnistcl.registry import RegistryError

    reg = _registry(_settings(ctx))
    try:
        move = reg.rollback(value(alias), to)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{value(alias)}: {move.previous} -> [bold]{move.version}[/bold] ({move.reason})")


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    alias: Annotated[Alias | None, typer.Option(help="Only this alias.")] = None,
    as_json: AsJson = False,
) -> None:
    """Every alias move: when, from which version to which, and why.

    Example:

      mnistcl models history --alias champion
    """
    reg = _registry(_settings(ctx))
    moves = reg.history(value(alias))
    if as_json:
        print_json([m.model_dump(mode="json") for m in moves])
        return
    if not moves:
        console.print("no alias has been set yet")
        return
    t = Table(title="alias history")
    for c in ("when", "alias", "from", "to", "reason"):
        t.add_column(c, overflow="fold")
    for m in moves:
        t.add_row(m.at[:23], m.alias, m.previous or "-", m.version or "-", m.reason)
    console.print(t)
