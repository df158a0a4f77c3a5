"""Retention flow: deletes by age what the loop no longer needs (monitoring.retention).

Deployed in prefect.yaml (deployments ``retention`` and ``retention-k8s``) on a daily schedule.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.hooks import alert_on_failure
from mnistcl.settings import load_settings
from monitoring.retention import apply_retention


@flow(name="retention", log_prints=True, persist_result=True, result_serializer="json",
      on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def retention(dry_run: bool = False, config: str | None = None) -> dict:
    """Apply the retention ages of the settings; returns what was removed per kind."""
    out = apply_retention(load_settings(config), dry_run=dry_run)
    get_run_logger().info("retention: removed %s; kept back %s", out["removed"], out["kept_back"])
    return out
