"""Monitoring and retraining: ``mnistcl monitor ...``, ``mnistcl retrain``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import (
    AsJson,
    Strategy,
    _config_arg,
    _fail,
    _settings,
    app,
    console,
    monitor_app,
    print_json,
    use_local_prefect,
    value,
)


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
    if res.status in ("waiting", "skipped"):
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
    console.print(f"report: {res.stored}/check.md; drift report: {res.links.get(Path(d.report_html).name) if d.report_html else '-'}")


@monitor_app.command("status")
def monitor_status(ctx: typer.Context, as_json: AsJson = False) -> None:
    """The breach history, cooldown and whether a retraining is running.

    Example:

      mnistcl monitor status
    """
    from monitoring.state import monitor_state, retrain_lease

    settings = _settings(ctx)
    state, lock = monitor_state(settings), retrain_lease(settings)
    st = state.read()
    holder = lock.holder()
    if as_json:
        print_json({**st, "retraining_running": holder})
        return
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
    mnistcl.alert.<alertname>), posted to <prefect api>/events. Every POST must carry
    `Authorization: Bearer <token>` (401 otherwise): MNISTCL_RELAY_TOKEN, or the token generated
    once into <home>/secrets/relay-token (what monitoring/alertmanager.yml sends).

    Example:

      mnistcl monitor relay --port 9095 --prefect-api http://127.0.0.1:4200/api
    """
    from monitoring.relay import serve

    settings = _settings(ctx)
    api = prefect_api or settings.prefect_api
    if not api:
        _fail("no Prefect API: pass --prefect-api or set PREFECT_API_URL")
    serve(host, port, api, events_log=settings.events_log, token=settings.relay_token_value())


@app.command("retrain")
def retrain_cmd(
    ctx: typer.Context,
    strategy: Annotated[Strategy | None, typer.Option(
        help="finetune-replay (champion + new data + replayed old data), full (from scratch on all data), "
             "automl (the sweep). Default: configs/monitoring.yaml.")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the registry and the report).")] = "manual",
    force: Annotated[bool, typer.Option(help="Ignore the cooldown and retrain even without new data.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: 12 for fine-tuning, the champion's for full).")] = None,
    replay: Annotated[float, typer.Option(min=0, help="Old images replayed per new image when fine-tuning.")] = 2.0,
) -> None:
    """Retrain on newly labelled production data, validate against the champion, promote if it passes.

    Runs as the Prefect `retrain` flow; the deployment in prefect.yaml runs the same flow on
    drift, low confidence, a dataset update or the weekly schedule.

    Example:

      mnistcl retrain --strategy finetune-replay --reason "new cheque scanner"
    """
    settings = _settings(ctx)
    strategy = value(strategy)
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


@monitor_app.command("retention")
def monitor_retention(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    """Delete logged images, rejected payloads, reports, outbox emails and event-log lines older
    than their retention age (settings `retention`, e.g. MNISTCL_RETENTION__REPORTS_DAYS=7).

    Logged images the monitoring has not checked, or whose label no dataset version holds yet,
    are kept whatever their age. The `retention` deployment runs this daily.

    Example:

      mnistcl monitor retention --dry-run
    """
    from monitoring.retention import apply_retention

    out = apply_retention(_settings(ctx), dry_run=dry_run)
    if as_json:
        print_json(out)
        return
    verb = "would remove" if dry_run else "removed"
    for kind, n in out["removed"].items():
        console.print(f"{kind}: {verb} {n}" + (f" (kept back {out['kept_back'][kind]}: still needed)"
                                               if out["kept_back"].get(kind) else ""))
