"""Drift through Evidently on compact features: fires on rotated or thickened digits, stays quiet
on clean held-out MNIST windows; the HTML report is written."""

import dataclasses

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


@pytest.mark.parametrize("method,threshold", [("wasserstein", 0.2), ("ks", 0.05)])
def test_the_direct_statistic_is_evidentlys(mnist_medium, reference, method, threshold):
    """The decision computed on the columns gives Evidently's own numbers, on clean, shifted and
    partly broken windows (infinities and missing values are dropped as Evidently drops them)."""
    from monitoring.drift import evidently_scores

    cfg = DriftConfig(method=method, threshold=threshold)
    rng = np.random.default_rng(6)
    broken = features(window(mnist_medium, 7))
    broken.loc[:9, "slant"] = np.inf
    broken.loc[10:19, "ink"] = np.nan
    for cur in (features(window(mnist_medium, 5)), features(apply(window(mnist_medium, 6), {"rotate": 20}, rng)),
                broken):
        mine = check_drift(reference, cur, cfg)
        theirs = evidently_scores(reference, cur, cfg)
        assert set(mine.scores) == set(theirs) and len(theirs) == 20
        for c, v in theirs.items():
            assert mine.scores[c] == pytest.approx(v, rel=1e-9, abs=1e-12), c
    assert "DIRECT" in check_drift.__globals__ and method in check_drift.__globals__["DIRECT"]


def test_another_method_goes_through_evidently(mnist_medium, reference):
    r = check_drift(reference, features(apply(window(mnist_medium, 8), {"thicken": 1}, np.random.default_rng(8))),
                    DriftConfig(method="psi", threshold=0.1))
    assert r.drifted and len(r.scores) == 20 and r.method == "psi"


def test_bad_windows_are_refused(reference):
    with pytest.raises(ValueError, match="rows in both"):
        check_drift(reference, reference.iloc[:0])
    with pytest.raises(ValueError, match="different feature columns"):
        check_drift(reference, reference.drop(columns=["ink"]))
    with pytest.raises(ValueError, match="unknown settings"):
        DriftConfig.from_dict({"treshold": 0.1})
    with pytest.raises(ValueError, match="drift.report: 'sometimes' is not one of drifted, always, never"):
        DriftConfig.from_dict({"report": "sometimes"})
    nothing = reference.copy()
    nothing["ink"] = np.nan
    with pytest.raises(ValueError, match="feature 'ink' has no finite value in the current window"):
        check_drift(reference, nothing)


def test_only_one_module_imports_evidently():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    hits = [str(p.relative_to(root)) for d in ("mnistcl", "monitoring", "flows", "models", "serving", "bench")
            for p in (root / d).rglob("*.py") if re.search(r"^\s*(from|import) evidently", p.read_text(), re.M)]
    assert hits == ["monitoring/drift.py"]


def _split_test(mnist_medium, n_pool, seed=9):
    x = mnist_medium["test"][0]
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[:n_pool]], x[order[n_pool:]]


def test_learned_handwriting_is_not_drift(mnist_medium, reference):
    """Against MNIST and a production batch of rotated digits the champion was trained on:
    rotated windows are not drift (the batch is nearest), thickened ones are (unlike both),
    clean ones match MNIST and are compared with nothing else."""
    from monitoring.check import Reference, nearest_drift

    cfg = load_config()
    pool, rest = _split_test(mnist_medium, 800)
    rotated = Reference("v2", features(apply(pool, {"rotate": 25}, np.random.default_rng(1))))
    refs = [Reference("v1", reference), rotated]
    pick = rest[np.random.default_rng(5).choice(len(rest), WINDOW, replace=False)]

    r = nearest_drift(refs, features(apply(pick, {"rotate": 25}, np.random.default_rng(2))), cfg)
    assert not r.drifted and r.extra["reference"] == "v2"
    assert r.extra["compared"]["v1"] >= cfg.drift.drift_share > r.extra["compared"]["v2"]

    r = nearest_drift(refs, features(apply(pick, {"thicken": 1}, np.random.default_rng(3))), cfg)
    assert r.drifted and set(r.extra["compared"]) == {"v1", "v2"}
    assert r.share == min(r.extra["compared"].values())

    r = nearest_drift(refs, features(pick), cfg)
    assert not r.drifted and r.extra == {"reference": "v1", "compared": {"v1": r.share}}


def test_the_report_is_written_as_configured(mnist_medium, reference, tmp_path):
    """By default only for a drifted window (against its nearest reference); always or never on
    request. The default page names what drifted, draws every feature and shows digits from the
    window; Evidently's report on request."""
    import base64
    import io
    import re

    from PIL import Image

    from monitoring.check import Reference, nearest_drift

    cfg = load_config()
    refs = [Reference("v1", reference)]
    raw_thick = apply(window(mnist_medium, 12), {"thicken": 1}, np.random.default_rng(12))
    clean, thick = features(window(mnist_medium, 11)), features(raw_thick)
    assert (cfg.drift.report, cfg.drift.report_engine) == ("drifted", "mnistcl")
    assert nearest_drift(refs, clean, cfg, tmp_path / "a").report_html is None
    assert not (tmp_path / "a").exists()
    r = nearest_drift(refs, thick, cfg, tmp_path / "b", images=raw_thick)
    assert r.drifted and r.report_html == str(tmp_path / "b" / "drift.html")
    page = (tmp_path / "b" / "drift.html").read_text()
    assert "the window drifted" in page and f"<b>{len(r.drifted_columns)} of {len(r.scores)}</b>" in page
    assert page.count("<svg") == len(r.scores) and "<script" not in page
    rows = re.findall(r"<tr class='(d?)'><td>([^<]+)</td><td>([^<]+)</td>", page)
    assert [name for _, name, _ in rows] == sorted(r.scores, key=lambda c: -r.scores[c])  # most drifted first
    assert {name for d, name, _ in rows if d} == set(r.drifted_columns)
    grid = Image.open(io.BytesIO(base64.b64decode(re.search(r"base64,([^']+)'", page).group(1))))
    assert grid.size == (16 * 28, 4 * 28)  # 64 digits, evenly spaced through the window
    assert np.array_equal(np.asarray(grid)[:28, :28], np.clip(np.rint(raw_thick[0] * 255), 0, 255).astype(np.uint8))

    always = dataclasses.replace(cfg, drift=DriftConfig(report="always"))
    never = dataclasses.replace(cfg, drift=DriftConfig(report="never"))
    assert nearest_drift(refs, clean, always, tmp_path / "c").report_html == str(tmp_path / "c" / "drift.html")
    assert "the window did not drift" in (tmp_path / "c" / "drift.html").read_text()
    assert nearest_drift(refs, thick, never, tmp_path / "d").report_html is None
    evidently = dataclasses.replace(cfg, drift=DriftConfig(report_engine="evidently"))
    assert nearest_drift(refs, thick, evidently, tmp_path / "e").report_html == str(tmp_path / "e" / "drift.html")
    ev_page = (tmp_path / "e" / "drift.html").read_text()
    assert "root_metric_" in ev_page and "Drift check:" not in ev_page  # Evidently's page, its scripts
    with pytest.raises(ValueError, match="report_engine"):
        DriftConfig.from_dict({"report_engine": "plotly"})


def test_reports_rank_the_most_drifted_first_for_p_value_tests_too(mnist_medium, reference, tmp_path):
    """K-S reads the other way (a small p-value is drift): the page and the check's table put the
    smallest p-values first, and a missing score last."""
    import re

    from monitoring.drift import severity
    from monitoring.drift_html import write_report

    thick = features(apply(window(mnist_medium, 13), {"thicken": 1}, np.random.default_rng(13)))
    r = check_drift(reference, thick, DriftConfig(method="ks", threshold=0.05))
    r.scores["slant"] = float("nan")
    page = write_report(tmp_path / "drift.html", reference, thick, r).read_text()
    assert "a p-value of 0.05 or less" in page
    shown = re.findall(r"<tr class='d?'><td>([^<]+)</td>", page)
    ranked = [c for c in r.scores if c != "slant"]
    assert shown == sorted(ranked, key=lambda c: r.scores[c]) + ["slant"]
    assert severity("ks", 0.01) > severity("ks", 0.2) and severity("wasserstein", 0.3) > severity("wasserstein", 0.1)


def test_references_follow_the_champions_lineage(settings, small_store, mnist_medium):
    """MNIST first, then the champion's production batches newest first, at most
    `reference_batches`, skipping batches too small to compare with."""
    import dataclasses

    from monitoring.check import MIN_BATCH_IMAGES, reference_features

    pool, _ = _split_test(mnist_medium, 1200)
    parent = "v1"
    sizes = {"v2": 300, "v3": MIN_BATCH_IMAGES // 2, "v4": 300, "v5": 300}
    for vid, n in sizes.items():
        batch = pool[:n]
        pool = pool[n:]
        m = small_store.append(batch, np.zeros(n, np.uint8), parent=parent, source=f"test {vid}", eval_fraction=0.0)
        assert m.id == vid
        parent = vid
    cfg = load_config()
    refs, dataset = reference_features(settings, dataclasses.replace(cfg, reference_batches=2))
    assert dataset == "v5" and [r.name for r in refs] == ["v1", "v5", "v4"]
    assert [len(r.frame) for r in refs] == [600, 300, 300]
    refs, _ = reference_features(settings, dataclasses.replace(cfg, reference_batches=5))
    assert [r.name for r in refs] == ["v1", "v5", "v4", "v2"]  # v3 is too small
    refs, _ = reference_features(settings, dataclasses.replace(cfg, reference_batches=0))
    assert [r.name for r in refs] == ["v1"]
    assert (settings.monitoring_dir / "reference" / "v5-train-5000.csv").exists()
