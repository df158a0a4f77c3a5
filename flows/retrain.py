"""The retraining flow: feedback -> dataset version -> train -> gate -> promote (retraining.retrain).

Deployed in prefect.yaml (deployment ``retrain``) with triggers on the events
``mnistcl.drift.detected``, ``mnistcl.confidence.low``, ``mnistcl.accuracy.low`` and
``mnistcl.dataset.updated`` (from users, not from retraining itself) and a weekly cron schedule.
At most one runs at a time: the deployment's concurrency limit, and a lock in the code for
runs started any other way.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.hooks import alert_on_failure
from flows.train import run_automl  # the automl strategy's sweep: a subflow of this one
from mnistcl.settings import load_settings
from monitoring.rules import load_config
from retraining.retrain import retrain as run


# The result is persisted (JSON, in Prefect's result storage): whoever started the run reads it back
# with mnistcl.prefect_client.run_result, as the scenario does.
@flow(name="retrain", log_prints=True, persist_result=True, result_serializer="json",
      on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def retrain(strategy: str | None = None, reason: str = "manual", force: bool = False, epochs: int | None = None,
            replay: float = 2.0, config: str | None = None) -> dict:
    """Retrain on the newly labelled production data with ``strategy`` (finetune-replay, full,
    automl; default from configs/monitoring.yaml), validate against the champion, promote if it passes."""
    from pathlib import Path

    settings = load_settings(config)
    strategy = strategy or load_config(settings.monitoring_config or None).trigger.strategy
    result = run(settings, strategy=strategy, reason=reason, force=force, epochs=epochs, replay=replay,
                 sweep=lambda dataset: run_automl(profile="quick", dataset=dataset, show_progress=False))
    logger = get_run_logger()
    logger.info("retrain %s: %s", strategy, result["status"])
    gate = result.get("gate") or {}
    lines = [f"# Retraining ({strategy}): {result['status']}", "", f"Reason: {reason}", ""]
    if result["status"] == "skipped":
        lines.append(f"Skipped: {result['why']}")
    else:
        lines += [f"Dataset: {result['dataset']} ({result['n_feedback']} new labelled production inputs)",
                  f"Champion before: {result['champion_before']}", ""]
        if gate.get("version"):
            lines += [f"Candidate {gate['version']}: gate {'passed' if gate['passed'] else 'failed'}; "
                      + (f"promoted to {gate['promoted']['alias']}" if gate.get("promoted") else "not promoted"), "",
                      "| slice | candidate | champion |", "|---|---|---|"]
            for s, a in gate["accuracy"].items():
                lines.append(f"| {s} | {a:.4f} | {gate['champion_accuracy'].get(s, float('nan')):.4f} |")
            lines += ["", Path(gate["report_md"]).read_text()]
    create_markdown_artifact(key="retrain-summary", markdown="\n".join(lines),
                             description="What the retraining did and the validation report")
    import json

    return json.loads(json.dumps(result, default=str))  # plain JSON: paths and numpy numbers as text
