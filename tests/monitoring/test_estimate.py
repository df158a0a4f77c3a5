"""The label-free accuracy estimate on synthetic probabilities with a known accuracy."""

import numpy as np
import pytest

from monitoring import estimate as E

pytestmark = pytest.mark.unit


def calibrated(n, acc, rng, spread=2.0):
    """Probabilities from a model right ``acc`` of the time whose confidence means what it says:
    each image's top probability is drawn, and the label agrees with the top class that often."""
    conf = np.clip(rng.beta(acc * 10 * spread, (1 - acc) * 10 * spread, n), 0.11, 0.9999)
    top = rng.integers(0, 10, n)
    probs = np.full((n, 10), 0.0)
    probs[:] = ((1 - conf) / 9)[:, None]
    probs[np.arange(n), top] = conf
    right = rng.random(n) < conf
    y = np.where(right, top, (top + rng.integers(1, 10, n)) % 10)
    return probs, y


@pytest.mark.parametrize("method", E.METHODS)
def test_each_method_recovers_a_calibrated_models_accuracy(method):
    rng = np.random.default_rng(0)
    pv, yv = calibrated(5000, 0.95, rng)
    est = E.fit(pv, yv, method)
    assert est.temperature == pytest.approx(1.0, abs=0.15)  # already calibrated: no rescaling needed
    pw, yw = calibrated(500, 0.95, rng)
    true = float((pw.argmax(1) == yw).mean())
    assert abs(est.estimate(pw) - true) < 0.03


def test_overconfident_model_is_corrected_by_the_temperature():
    rng = np.random.default_rng(1)
    pv, yv = calibrated(5000, 0.9, rng)
    sharp = E.scaled(pv, 0.4)  # the same model, overconfident: probabilities pushed to the extremes
    raw = float(sharp.max(1).mean())
    est = E.fit(sharp, yv, "confidence")
    assert est.temperature > 1.5
    assert abs(est.estimate(sharp) - 0.9) < abs(raw - 0.9) and abs(est.estimate(sharp) - 0.9) < 0.03


def test_atc_threshold_reproduces_the_validation_accuracy():
    rng = np.random.default_rng(2)
    pv, yv = calibrated(4000, 0.93, rng)
    est = E.fit(pv, yv, "atc")
    assert est.estimate(pv) == pytest.approx(est.validation_accuracy, abs=0.002)


def test_recent_traffic_refit_needs_enough_labels_and_moves_the_estimate():
    rng = np.random.default_rng(3)
    pv, yv = calibrated(4000, 0.97, rng)
    est = E.fit(pv, yv, "atc")
    # New handwriting: the model stays as confident but is right less often.
    pr, _ = calibrated(600, 0.97, rng)
    yr = np.where(rng.random(600) < 0.85, pr.argmax(1), (pr.argmax(1) + 1) % 10)
    assert E.recalibrated(est, pr[:50], yr[:50], min_images=200) is est  # too few labels: unchanged
    refit = E.recalibrated(est, pr[:400], yr[:400], min_images=200)
    assert refit.source == "recent" and refit.fitted_on == 400
    window = pr[400:]
    true = float((window.argmax(1) == yr[400:]).mean())
    assert abs(refit.estimate(window) - true) < abs(est.estimate(window) - true)


def test_estimator_round_trips_through_json_and_refuses_bad_input():
    rng = np.random.default_rng(4)
    pv, yv = calibrated(1000, 0.9, rng)
    est = E.fit(pv, yv, "atc-entropy")
    again = E.Estimator.from_json(est.to_json())
    assert again == est and again.estimate(pv[:100]) == est.estimate(pv[:100])
    with pytest.raises(ValueError, match="unknown estimate method"):
        E.fit(pv, yv, "magic")
    with pytest.raises(ValueError, match="needs labelled validation images"):
        E.fit(pv[:3], yv[:3])
