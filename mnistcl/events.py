"""Announcing things that happened (a new dataset version, drift, a promotion).

Every event goes to a local JSON-lines log under the home folder. When a Prefect API is
configured (settings.prefect_api_url or PREFECT_API_URL), it is also posted to Prefect's
events endpoint through Prefect's client (mnistcl.prefect_client, with the server's auth), where
deployment triggers pick it up. This is the one function later stages hook into; Prefect is
imported only when an API is configured, so it is cheap and safe anywhere.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistcl.prefect_client import PrefectError, post_events
from mnistcl.tracking import track_dataset_version

log = logging.getLogger(__name__)

DATASET_UPDATED = "mnistcl.dataset.updated"
# What a monitoring check raises (monitoring/check.py); the Alertmanager relay forwards only these.
DRIFT_DETECTED = "mnistcl.drift.detected"
CONFIDENCE_LOW = "mnistcl.confidence.low"
ACCURACY_LOW = "mnistcl.accuracy.low"
MONITORING_EVENTS = frozenset({DRIFT_DETECTED, CONFIDENCE_LOW, ACCURACY_LOW})


def make_event(name: str, resource_id: str, payload: dict[str, Any] | None = None,
               related: list[dict[str, str]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id, **(labels or {})},
        "related": related or [],
        "payload": payload or {},
    }


def announce(
    name: str,
    resource_id: str,
    payload: dict[str, Any] | None = None,
    *,
    events_log: Path | None = None,
    prefect_api: str | None = None,
    timeout: float = 5.0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record an event locally and, when a Prefect API is given, post it there.

    Returns the event with a ``delivered`` field: ``"prefect"`` or ``"local"``; a Prefect
    API that cannot be reached is logged as a warning and does not fail the caller (the
    dataset version is already committed; the weekly schedule picks it up regardless).
    """
    event = make_event(name, resource_id, payload, labels=labels)
    delivered = "local"
    if prefect_api:
        try:
            post_events(prefect_api, [event], timeout=timeout)
            delivered = "prefect"
        except PrefectError as exc:
            log.warning("could not post event %s: %s", name, exc)
    if events_log is not None:
        events_log.parent.mkdir(parents=True, exist_ok=True)
        with open(events_log, "a") as fh:
            fh.write(json.dumps({**event, "delivered": delivered}) + "\n")
    return {**event, "delivered": delivered}


def announce_dataset_version(manifest, settings, origin: str = "user") -> dict[str, Any]:
    """The hook for a new dataset version: event ``mnistcl.dataset.updated``, and the version as a
    W&B artifact (mnistcl.tracking.track_dataset_version).

    ``origin`` is a resource label: "user" for `mnistcl data ingest/append`, "retrain" for the
    versions the retrain flow makes itself; the retrain deployment triggers on "user" only, so
    a retraining never triggers another one."""
    track_dataset_version(settings, manifest)
    return announce(
        DATASET_UPDATED,
        f"mnistcl.dataset.{manifest.id}",
        {
            "version": manifest.id,
            "parent": manifest.parent,
            "source": manifest.source,
            "n_new_images": manifest.n_images,
            "store": settings.store_url,
        },
        events_log=settings.events_log,
        prefect_api=settings.prefect_api,
        labels={"mnistcl.origin": origin},
    )
