"""The challenger's judgement flow: the paired test on labelled shadow traffic (validation.shadow).

Deployed in prefect.yaml (deployment ``judge``): triggered by ``mnistcl.challenger.evidence``
(the monitor emits it once ``shadow.judge_every`` new labelled shadow images wait) and on an
hourly schedule. A verdict promotes the challenger to champion or retires it; the model server
follows the aliases (hot swap, shadow dropped).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.hooks import alert_on_failure
from mnistcl.settings import load_settings
from validation.gate import load_gate
from validation.shadow import judge_challenger, to_markdown


@flow(name="judge", log_prints=True, persist_result=True, result_serializer="json",  # read back as the retrain's
      on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def judge(reason: str = "manual", force: bool = False, config: str | None = None) -> dict:
    """Judge the current challenger against the champion on the labelled traffic both scored."""
    import json

    settings = load_settings(config)
    result = judge_challenger(settings, load_gate(), force=force)
    result["reason"] = reason
    get_run_logger().info("challenger judgement: %s", result.get("verdict") or result["status"])
    create_markdown_artifact(key="challenger-judgement", markdown=to_markdown(result),
                             description="The challenger against the champion on labelled shadow traffic")
    return json.loads(json.dumps(result, default=str))
