"""Prefect state hooks shared by every flow: a failed or crashed run emails the data scientist.

Attached as ``on_failure`` and ``on_crashed`` in each ``@flow`` (flows/*.py), so a retraining
that dies at 3 a.m. is an email, not a red dot nobody looks at. The email goes the alert path
(monitoring.alerts: SMTP, or the outbox when no server is set or it is down).
"""

from __future__ import annotations

from mnistcl.settings import load_settings
from monitoring.alerts import send


def alert_on_failure(flow, flow_run, state) -> None:
    """Email what failed, how, with which parameters, and where to look."""
    params = dict(flow_run.parameters or {})
    try:
        settings = load_settings(params.get("config"))
    except Exception:  # noqa: BLE001 - a broken settings file must not hide the failure itself
        settings = load_settings(None)
    where = f"{settings.prefect_api.removesuffix('/api')}/runs/flow-run/{flow_run.id}" if settings.prefect_api \
        else f"flow run id {flow_run.id}"
    body = "\n".join([
        f"The Prefect flow run {flow_run.name!r} of flow {flow.name!r} ended {state.type.value}.",
        "",
        f"Message: {state.message or '-'}",
        f"Parameters: {params}",
        f"Started: {flow_run.start_time}",
        f"Details: {where}",
        "",
    ])
    send(f"flow {flow.name} {state.type.value.lower()}: {flow_run.name}", body, settings)
