"""Drift through Evidently on compact features: fires on rotated or thickened digits, stays quiet
on clean held-out MNIST windows; the HTML report is written."""

import numpy as np
import pytest

from mnistcl.shifts import apply
from monitoring.drift import DriftConfig, check_drift
from monitoring.features import features
from monitoring.rules import load_config

pytestmark = pytest.mark.model

WINDOW = 300


@pytest.fixture(scope="module")
def reference(mnist_medium):
    return features(mnist_medium["train"][0])


@pytest.fixture(scope="module")
def cfg() -> DriftConfig:
    return load_config().drift  # the shipped thresholds


def window(mnist_medium, seed):
    x = mnist_medium["test"][0]
    return x[np.random.default_rng(seed).choice(len(x), WINDOW, replace=False)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_on_clean_held_out_windows(mnist_medium, reference, cfg, seed):
    r = check_drift(reference, features(window(mnist_medium, seed)), cfg)
    assert not r.drifted, (r.share, r.drifted_columns)


@pytest.mark.parametrize("shift", [{"rotate": 25}, {"thicken": 1}])
def test_fires_on_rotated_or_thickened_digits(mnist_medium, reference, cfg, shift, tmp_path):
    rng = np.random.default_rng(4)
    x = apply(window(mnist_medium, 4), shift, rng)
    r = check_drift(reference, features(x), cfg, report_html=tmp_path / "drift.html")
    assert r.drifted and r.share >= cfg.drift_share, (r.share, r.scores)
    assert r.n_current == WINDOW and r.n_reference == len(reference)
    html = (tmp_path / "drift.html").read_text()
    assert "<html" in html.lower() and len(html) > 10_000


def test_bad_windows_are_refused(reference):
    with pytest.raises(ValueError, match="rows in both"):
        check_drift(reference, reference.iloc[:0])
    with pytest.raises(ValueError, match="different feature columns"):
        check_drift(reference, reference.drop(columns=["ink"]))
    with pytest.raises(ValueError, match="unknown settings"):
        DriftConfig.from_dict({"treshold": 0.1})


def test_only_one_module_imports_evidently():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    hits = [str(p.relative_to(root)) for d in ("mnistcl", "monitoring", "flows", "models", "serving", "bench")
            for p in (root / d).rglob("*.py") if re.search(r"^\s*(from|import) evidently", p.read_text(), re.M)]
    assert hits == ["monitoring/drift.py"]
