"""A short continual-learning scenario end to end (real model server, monitoring, in-process
retraining, gate, promotion, hot swap), and a sanity check of its report's numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from deployment import serve as launch
from mnistcl.settings import Settings
from mnistcl.stores import stores
from scenario.simulator import ScenarioError, cl_metrics, load_scenario, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = {
    "seed": 3, "stream_images": 400, "eval_images": 200, "digits_per_request": [1, 4],
    "feedback": {"fraction": 0.9, "delay_requests": 5}, "strategy": "finetune-replay",
    "monitoring": {"window": {"images": 200, "min_images": 100}, "trigger": {"breaches": 2, "of_last": 3,
                                                                             "cooldown_hours": 0}},
    "cohorts": [{"name": "baseline", "shifts": {}}, {"name": "rotated", "shifts": {"rotate": 30}},
                {"name": "thick", "shifts": {"thicken": 1}}],
}


def test_cl_metrics_by_hand():
    R = np.array([[0.9, 0.5, 0.4], [0.8, 0.9, 0.5], [0.85, 0.7, 0.95]])
    m = cl_metrics(R)
    assert m["ACC"] == pytest.approx((0.85 + 0.7 + 0.95) / 3)
    assert m["BWT"] == pytest.approx(((0.85 - 0.9) + (0.7 - 0.9)) / 2)
    assert m["forgetting"] == pytest.approx([0.05, 0.2, 0.0])


def test_bad_scenarios_are_refused(tmp_path):
    for bad, needle in [({**SCENARIO, "cohorts": [{"name": "x", "shifts": {"wobble": 1}}]}, "unknown shifts"),
                        ({**SCENARIO, "cohorts": []}, "no cohorts"),
                        ({**SCENARIO, "feedback": {"fraction": 2}}, "fraction"),
                        ({**SCENARIO, "colour": 1}, "unknown fields")]:
        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises(ScenarioError, match=needle):
            load_scenario(p)
    assert len(load_scenario().cohorts) >= 5  # the shipped scenario loads


@pytest.fixture
def system(tmp_path, mnist_medium):
    import models.torchnet as tn
    from models.common import NullReporter, TrainData

    s = Settings(home=tmp_path / "home")
    ds, reg = stores(s)
    (x, y), (xt, yt) = mnist_medium["train"], mnist_medium["test"]
    ds.create({"train": (x, y), "test": (xt[:1000], yt[:1000])}, parent=None, source="test")
    m = tn.train(TrainData(x, y, xt[:300], yt[:300]), tn.Config(epochs=3, channels=8), NullReporter())
    mv = reg.register(files=m.export(tmp_path / "export"), family="torchnet",
                      config=json.loads(json.dumps(m.config.__dict__)), dataset="v1")
    reg.promote(mv.id, "champion", reason="test")
    return s


def test_short_scenario_detects_drift_retrains_promotes_and_reports(system, tmp_path):
    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    p = tmp_path / "scenario.yaml"
    p.write_text(yaml.safe_dump(SCENARIO))
    out = tmp_path / "report"
    result = run_scenario(system, load_scenario(p), out, orchestrator="local", log=lambda m: None)

    for name in ("report.md", "scenario.json", "accuracy_over_time.png", "monitoring_over_time.png",
                 "accuracy_matrix.png"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "accuracy_over_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "scenario.json").read_text())["metrics"] == result["metrics"]
    ws = result["windows"]
    assert result["images"] == 3 * 400 and sum(w["images"] for w in ws) == 1200
    for w in ws:
        assert 0 <= w["accuracy"] <= 1 and 0 <= w["static_accuracy"] <= 1
    R, S = np.array(result["R"]), np.array(result["R_static"])
    assert R.shape == S.shape == (3, 3) and ((R >= 0) & (R <= 1)).all()
    assert np.allclose(S, S[0])  # the static model never changes
    m = result["metrics"]
    assert 0 <= m["ACC"] <= 1 and -1 <= m["BWT"] <= 1

    # At least one drift detected, a retraining triggered by it, and a promoted model that reads
    # the drifted cohort better than the static model.
    assert not ws[0].get("drifted"), "the baseline cohort is not drift"
    triggered = [w for w in ws if w.get("retrain")]
    triggers = {"mnistcl.drift.detected", "mnistcl.confidence.low", "mnistcl.accuracy.low"}
    assert triggered and all(triggers & set(w["events"]) for w in triggered), [w["events"] for w in triggered]
    assert any("mnistcl.drift.detected" in w["events"] for w in triggered), [w["events"] for w in triggered]
    promoted = [w for w in triggered if (w["retrain"].get("gate") or {}).get("promoted")]
    assert promoted, [w["retrain"] for w in triggered]
    first = promoted[0]
    ci = first["cohort"]
    assert R[ci][ci] > S[ci][ci], (R[ci][ci], S[ci][ci])
    assert first["retrain"]["hot_swapped"]
    # Every promotion is the gate's paired verdict: better on the recent traffic mix with confidence,
    # and no slice confidently forgotten beyond its allowance (configs/gate.yaml).
    for w in promoted:
        g = w["retrain"]["gate"]
        assert g["passed"] and g["verdict"] == "promote", g["why"]
        d = json.loads((Path(g["report_md"]).with_name("validation.json")).read_text())["decision"]
        assert d["objective"]["interval"][0] > 0 and not any(r["forgets"] for r in d["slices"])
        assert {r["slice"] for r in d["slices"]} >= {"mnist-test", "v2"}
    # The label-free estimate is shown beside the served accuracy once a gated model serves: the
    # gate fitted its estimator (the test's first champion was registered without the gate).
    gated = [w for w in ws[first["index"] + 1:] if w["check"] == "checked"]
    assert gated and all(w.get("estimated_accuracy") is not None for w in gated)
    assert all(abs(w["estimated_accuracy"] - w["accuracy"]) < 0.25 for w in gated)
    assert all(w.get("estimated_accuracy") is None for w in ws[:first["index"] + 1])
    assert result["final_champion"] != result["static_version"]
    assert any((system.home_dir.parent / "report" / "run" / "outbox").glob("*.eml"))
    report = (out / "report.md").read_text()
    assert "ACC" in report and "BWT" in report and "![accuracy over time](accuracy_over_time.png)" in report
    assert "Label-free accuracy estimate" in report and "## Challenger judgements" in report
