"""The monitoring flow: one check of the next window of production inputs (monitoring.check).

Deployed with an interval schedule (prefect.yaml, deployment ``monitor``). A breach that passes
the hysteresis and cooldown emits ``mnistcl.drift.detected`` / ``mnistcl.confidence.low`` /
``mnistcl.accuracy.low``, which trigger the ``retrain`` deployment. With a challenger in shadow,
enough new labelled shadow traffic emits ``mnistcl.challenger.evidence`` (the ``judge`` deployment).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.hooks import alert_on_failure
from mnistcl.settings import load_settings
from monitoring.check import run_check, to_markdown
from validation.gate import load_gate
from validation.shadow import announce_evidence


@flow(name="monitor", log_prints=True, on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def monitor(config: str | None = None) -> dict:
    """Check the next window; publish the check report and the drift report as artifacts."""
    from pathlib import Path

    settings = load_settings(config)
    res = run_check(settings)
    logger = get_run_logger()
    # A challenger in shadow: is a judgement due? Not when this check triggered a retraining.
    ev = announce_evidence(settings, load_gate(), retraining=bool(res.decision and res.decision.retrain))
    if ev:
        logger.info("challenger %s: %s new labelled shadow images, judgement due (event %s)",
                    ev["payload"]["challenger"], ev["payload"]["new"], ev["delivered"])
    if res.status in ("waiting", "skipped"):
        logger.info("%s", res.reasons[0])
        return res.to_json()
    logger.info("window of %d images: %s; %s", res.n_images, "BREACH" if res.breach else "ok",
                res.decision.reason if res.decision else "")
    create_markdown_artifact(key="monitoring-check", markdown=to_markdown(res),
                             description="Input rules, prediction rules and drift on the last window")
    if res.drift and res.drift.report_html:
        # Presigned HTTPS on S3 (7 days; the object itself stays until retention), file:// locally.
        name = Path(res.drift.report_html).name
        create_link_artifact(key="drift-report", link=res.links.get(name) or Path(res.drift.report_html).resolve().as_uri(),
                             link_text="Drift report",
                             description=f"Drift of the last window; stored at {res.stored}/{name}")
    return res.to_json()
