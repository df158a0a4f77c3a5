"""The one adapter to Prefect's API, through Prefect's own client (``prefect.get_client``).

  post_events(api, events)           events in, where deployment triggers pick them up; raises
                                     PrefectError when Prefect did not take them
  flow_runs(api, deployment)         flow runs of 'flow/deployment', newest first
  wait_for_run(api, run_id, timeout) a flow run once it is final (prefect.flow_runs.wait_for_flow_run)
  run_result(api, run_id, timeout)   ... and its return value, read back from its persisted result

Prefect's client brings what hand-written HTTP calls lack: the server's authentication
(``PREFECT_API_AUTH_STRING`` for a self-hosted server started with ``PREFECT_SERVER_API_AUTH_STRING``,
``PREFECT_API_KEY`` for Prefect Cloud), CSRF tokens when the server enforces them, retries on
429/502/503 and typed objects. Events go through the REST endpoint (``POST /events``) rather than
``prefect.events.emit_event``: emit_event hands the event to a background worker and never says
whether it arrived, and the Alertmanager relay must answer 502 when it did not (Alertmanager then
retries).

The flows whose results are read here (retrain, judge) persist them (``persist_result=True``)
in Prefect's result storage: ``PREFECT_HOME/storage`` by default, the same folder for a worker and
a reader on one machine; on Kubernetes point ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` at shared
storage before reading results from another pod.

Prefect is imported inside the functions, deliberately: it takes about 1.5 s to import, and most
callers (the CLI's --help, a data append without a Prefect API) never talk to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class PrefectError(RuntimeError):
    """Prefect could not be reached, refused the request, or a run gave no result."""


@contextmanager
def _settings(api_url: str, timeout: float | None = None) -> Iterator[None]:
    import os

    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        temporary_settings,
    )

    updates: dict = {PREFECT_API_URL: api_url.rstrip("/")}
    if os.environ.get("PREFECT_API_AUTH_STRING"):  # read now: set after Prefect's settings were loaded
        updates[PREFECT_API_AUTH_STRING] = os.environ["PREFECT_API_AUTH_STRING"]
    if timeout is not None:
        updates[PREFECT_API_REQUEST_TIMEOUT] = timeout
    with temporary_settings(updates=updates):
        yield


def post_events(api_url: str, events: list[dict[str, Any]], *, timeout: float = 10.0) -> None:
    """Post events (Prefect's event JSON) to ``api_url``; PrefectError when they were not taken."""
    import httpx
    from prefect import get_client

    with _settings(api_url, timeout):
        try:
            with get_client(sync_client=True) as client:
                client.request("POST", "/events", json=events).raise_for_status()
        except httpx.HTTPError as exc:
            raise PrefectError(f"Prefect at {api_url} did not take {len(events)} event(s): {exc}") from exc


def flow_runs(api_url: str, deployment: str | None = None, *, limit: int = 200) -> list[Any]:
    """Flow runs (``prefect.client.schemas.objects.FlowRun``), newest first; only those of
    ``deployment`` ('flow/deployment', e.g. 'retrain/retrain') if given, filtered by the server."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, FlowFilter
    from prefect.client.schemas.sorting import FlowRunSort

    filters: dict[str, Any] = {}
    if deployment is not None:
        flow_name, dep_name = deployment.split("/")
        filters = {"flow_filter": FlowFilter(name={"any_": [flow_name]}),
                   "deployment_filter": DeploymentFilter(name={"any_": [dep_name]})}
    with _settings(api_url), get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit, **filters)


async def _wait(run_id: UUID, timeout: float, result: bool) -> tuple[Any, Any]:
    from prefect import get_client
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run

    async with get_client() as client:
        try:
            run = await wait_for_flow_run(run_id, timeout=int(timeout), client=client)
        except FlowRunWaitTimeout as exc:
            raise PrefectError(f"flow run {run_id} did not finish within {timeout:.0f} s") from exc
        if not result:
            return run, None
        if run.state is None or not run.state.is_completed():
            return run, None
        try:
            return run, await run.state.aresult(raise_on_failure=False)
        except Exception as exc:  # noqa: BLE001 - any failure to load a result is one error to the caller
            raise PrefectError(f"flow run {run.name} ({run_id}) completed, but its result could not be read: "
                               f"{exc} (is the flow's result persisted, in storage this process can read?)") from exc


def wait_for_run(api_url: str, run_id: str | UUID, *, timeout: float = 900.0) -> Any:
    """The flow run once it reached a final state; PrefectError after ``timeout`` seconds."""
    with _settings(api_url):
        return asyncio.run(_wait(UUID(str(run_id)), timeout, result=False))[0]


def run_result(api_url: str, run_id: str | UUID, *, timeout: float = 900.0) -> tuple[Any, Any]:
    """(flow run, its return value) once final; the value is None unless the run completed."""
    with _settings(api_url):
        return asyncio.run(_wait(UUID(str(run_id)), timeout, result=True))
