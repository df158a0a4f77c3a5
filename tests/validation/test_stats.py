"""The paired statistics behind the gate, against known answers and against simulation."""

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from validation import stats

pytestmark = pytest.mark.unit


def test_exact_mcnemar_known_answers():
    assert stats.mcnemar_exact(3, 0) == pytest.approx(1 / 8)            # three coin flips all heads
    assert stats.mcnemar_exact(10, 2) == pytest.approx(79 / 4096)       # P(X >= 10), X ~ Bin(12, 1/2)
    assert stats.mcnemar_exact(2, 10, "less") == pytest.approx(79 / 4096)
    assert stats.mcnemar_exact(0, 0) == 1.0                             # no discordant image: no evidence
    assert stats.mcnemar_exact(5, 5, "two-sided") == 1.0


def test_score_statistic_is_mcnemar_at_zero():
    for b, c in [(7, 2), (1, 9), (30, 25)]:
        p = stats.Paired(n=500, b=b, c=c)
        assert stats.score_z(p, 0.0) == pytest.approx((b - c) / math.sqrt(b + c))


@pytest.mark.parametrize("n,b,c", [(100, 3, 0), (120, 0, 4), (300, 10, 25), (10000, 60, 41), (50, 0, 0)])
@pytest.mark.parametrize("theta", [-0.05, -0.01, 0.02, 0.1])
def test_restricted_mle_is_the_constrained_maximum(n, b, c, theta):
    """The closed form (a quadratic) against a numerical maximisation of the same likelihood."""
    p = stats.Paired(n=n, b=b, c=c)
    m = n - b - c

    def nll(q):  # q = P(only the champion right); P(only the candidate right) = q + theta
        return -(m * np.log(1 - theta - 2 * q) + (b * np.log(q + theta) if b else 0) + (c * np.log(q) if c else 0))

    res = optimize.minimize_scalar(nll, bounds=(max(0, -theta) + 1e-12, (1 - theta) / 2 - 1e-12), method="bounded",
                                   options={"xatol": 1e-13})
    assert stats._restricted_q21(p, theta) == pytest.approx(res.x, abs=1e-6)


def test_score_interval_ends_are_where_the_test_rejects():
    p = stats.Paired(n=240, b=12, c=4)
    lo, hi = stats.score_interval(p, 0.90)
    z = sps.norm.ppf(0.95)
    assert stats.score_z(p, lo) == pytest.approx(z, abs=1e-6)
    assert stats.score_z(p, hi) == pytest.approx(-z, abs=1e-6)
    assert lo < p.diff < hi
    # No discordant image: the interval still says how large a difference cannot be excluded.
    lo0, hi0 = stats.score_interval(stats.Paired(n=100, b=0, c=0), 0.90)
    assert lo0 < 0 < hi0 and hi0 - lo0 > 0.02


def _simulate(n, q12, q21, sims, rng):
    cells = rng.multinomial(n, [q12, q21, 1 - q12 - q21], size=sims)
    return [stats.Paired(n=n, b=int(x[0]), c=int(x[1])) for x in cells]


def test_score_interval_covers_the_truth_at_its_level():
    rng = np.random.default_rng(0)
    q12, q21, n = 0.04, 0.02, 200  # the candidate truly 2 points better, few discordant images
    hits = [lo <= q12 - q21 <= hi for lo, hi in (stats.score_interval(p, 0.90) for p in _simulate(n, q12, q21, 1500, rng))]
    assert 0.87 <= np.mean(hits) <= 0.94


def test_forgetting_test_keeps_its_level_and_has_power():
    """H0: the drop is exactly the allowance -> rejected about alpha of the time; a drop four
    times the allowance on a big slice -> nearly always."""
    rng = np.random.default_rng(1)
    allowance = 0.01
    at_margin = _simulate(2000, 0.02, 0.03, 2000, rng)  # true difference -0.01
    rej = np.mean([stats.margin_pvalue(p, -allowance, "less") < 0.05 for p in at_margin])
    assert 0.025 <= rej <= 0.08
    far = _simulate(10000, 0.01, 0.05, 300, rng)        # true difference -0.04
    assert np.mean([stats.margin_pvalue(p, -allowance, "less") < 0.05 for p in far]) > 0.99


def test_weighted_interval_of_one_slice_is_its_score_interval():
    p = stats.Paired(n=300, b=15, c=6)
    est, lo, hi = stats.weighted_interval([p], [1.0], 0.90)
    assert (est, lo, hi) == pytest.approx((p.diff, *stats.score_interval(p, 0.90)))


def test_weighted_pvalue_agrees_with_the_interval():
    slices = [stats.Paired(10000, 40, 35), stats.Paired(240, 14, 4), stats.Paired(240, 9, 7)]
    w = [0.36, 0.32, 0.32]
    p = stats.weighted_pvalue(slices, w, "greater")
    for alpha in (p * 0.9, p * 1.1):
        _, lo, _ = stats.weighted_interval(slices, w, 1 - 2 * alpha)
        assert (lo > 0) == (alpha > p)
    assert stats.weighted_pvalue(slices, w, "less") == pytest.approx(1 - p)
    assert stats.weighted_pvalue([stats.Paired(100, 0, 0)], [1.0]) == 0.5


def test_weighted_pvalue_is_a_probability_for_any_slices_and_weights(monkeypatch):
    """A gate benchmark run crashed in here (brentq: no sign change) on a positive estimate that no
    interval separated from 0 even at alpha near 1/2; that case is 0.5 now."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        k = int(rng.integers(1, 5))
        sl = [stats.Paired(int(n), int(b), int(c)) for n, b, c in
              zip(rng.integers(20, 10000, k), rng.integers(0, 15, k), rng.integers(0, 15, k), strict=True)]
        w = list(rng.dirichlet(np.ones(k)) * (rng.random(k) > 0.2))
        for alt in ("greater", "less"):
            assert 0.0 <= stats.weighted_pvalue(sl, w, alt) <= 1.0
    # the guard itself: a bound that never reaches 0 before alpha = 1/2
    monkeypatch.setattr(stats, "weighted_interval", lambda s, w, confidence: (1e-18, -1e-12, 1e-12))
    assert stats.weighted_pvalue([stats.Paired(400, 3, 2)], [1.0]) == 0.5


def test_weighted_test_rejects_about_alpha_when_nothing_differs():
    rng = np.random.default_rng(2)
    sims = 400
    rej = 0
    for _ in range(sims):
        sl = _simulate(240, 0.03, 0.03, 2, rng) + _simulate(10000, 0.004, 0.004, 1, rng)
        rej += stats.weighted_pvalue(sl, [0.3, 0.3, 0.4], "greater") < 0.05
    assert rej / sims <= 0.08


def test_holm_known_answer():
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.holm([]) == []


def test_pairs_needed_gives_the_power_it_promises():
    delta, psi = 0.04, 0.08
    n = stats.pairs_needed(delta, psi, alpha=0.05, power=0.8)
    rng = np.random.default_rng(3)
    sims = _simulate(n, (psi + delta) / 2, (psi - delta) / 2, 1500, rng)
    power = np.mean([stats.margin_pvalue(p, 0.0, "greater") < 0.05 for p in sims])
    assert 0.74 <= power <= 0.86, (n, power)
    with pytest.raises(ValueError, match="discordance"):
        stats.pairs_needed(0.1, 0.05)


def test_wilson_interval_known_answer():
    lo, hi = stats.wilson_interval(95, 100, 0.95)  # the textbook example
    assert lo == pytest.approx(0.8882, abs=1e-3) and hi == pytest.approx(0.9785, abs=1e-3)
