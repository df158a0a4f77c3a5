"""Paired statistics for two models scored on the same images.

Every image falls in one of four cells: both right, only the candidate right (``b``), only the
champion right (``c``), both wrong. The accuracy difference (candidate minus champion) is
``(b - c) / n``; only the discordant images carry information about it.

  mcnemar_exact(b, c)              exact one-sided McNemar test (binomial on the discordant images)
  score_z(p, theta)                Tango's score statistic for H0: difference = theta (paired)
  score_interval(p, confidence)    Tango's score interval for one slice's difference
  weighted_interval(...)           a weighted sum of independent slices' differences (MOVER)
  holm(pvalues)                    Holm's step-down adjustment for many slices at once
  pairs_needed(delta, discordance) paired sample size for a one-sided test of a difference delta

Tango (1998), "Equivalence test and confidence interval for the difference in proportions for
the paired-sample design", Stat Med 17:891-908; Zou & Donner (2008), "Construction of confidence
limits about effect measures: a general approach" (MOVER), Stat Med 27:1693-1702; Holm (1979);
Connor (1987), "Sample size for testing differences in proportions for the paired-sample
design", Biometrics 43:207-211. Plain NumPy and SciPy: no Prefect, no framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class Paired:
    """The four cells of one slice: ``b`` only the candidate right, ``c`` only the champion."""

    n: int
    b: int
    c: int
    both: int = 0

    @classmethod
    def from_correct(cls, candidate: np.ndarray, champion: np.ndarray) -> Paired:
        cand, champ = np.asarray(candidate, bool), np.asarray(champion, bool)
        if cand.shape != champ.shape:
            raise ValueError(f"paired outcomes need the same images: {cand.shape} vs {champ.shape}")
        return cls(n=int(cand.size), b=int((cand & ~champ).sum()), c=int((~cand & champ).sum()),
                   both=int((cand & champ).sum()))

    @property
    def diff(self) -> float:
        return (self.b - self.c) / self.n if self.n else 0.0

    @property
    def discordant(self) -> int:
        return self.b + self.c

    @property
    def candidate_accuracy(self) -> float:
        return (self.both + self.b) / self.n if self.n else float("nan")

    @property
    def champion_accuracy(self) -> float:
        return (self.both + self.c) / self.n if self.n else float("nan")


def mcnemar_exact(b: int, c: int, alternative: str = "greater") -> float:
    """Exact McNemar p-value: under H0 each discordant image favours either model with
    probability 1/2. ``greater``: the candidate is better; ``less``: worse; ``two-sided``."""
    m = b + c
    if m == 0:
        return 1.0
    if alternative == "greater":
        return float(stats.binom.sf(b - 1, m, 0.5))
    if alternative == "less":
        return float(stats.binom.cdf(b, m, 0.5))
    if alternative == "two-sided":
        return float(min(1.0, 2 * min(stats.binom.sf(b - 1, m, 0.5), stats.binom.cdf(b, m, 0.5))))
    raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")


def _restricted_q21(p: Paired, theta: float) -> float:
    """Maximum-likelihood P(only the champion right) under H0: difference = theta (Tango 1998)."""
    n, b, c = p.n, p.b, p.c
    m = n - b - c
    bb = (b + c) * (1 - theta) - 2 * theta * (m + c)
    cc = c * theta * (1 - theta)
    return (bb + math.sqrt(max(bb * bb + 8 * n * cc, 0.0))) / (4 * n)


def score_z(p: Paired, theta: float) -> float:
    """Tango's score statistic for H0: candidate accuracy - champion accuracy = ``theta``.
    Large and positive when the observed difference is above ``theta``. At ``theta = 0`` it is
    McNemar's (b - c) / sqrt(b + c)."""
    if p.n == 0:
        return 0.0
    q21 = _restricted_q21(p, theta)
    var = p.n * (2 * q21 + theta - theta * theta)
    num = p.b - p.c - p.n * theta
    if var <= 0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def margin_pvalue(p: Paired, theta: float, alternative: str) -> float:
    """One-sided score-test p-value against H0: difference = ``theta``. ``less``: evidence that
    the difference is below ``theta`` (a drop beyond an allowance when ``theta = -allowance``);
    ``greater``: above it."""
    z = score_z(p, theta)
    if alternative == "less":
        return float(stats.norm.cdf(z))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    raise ValueError(f"alternative must be less or greater, not {alternative!r}")


def score_interval(p: Paired, confidence: float = 0.90) -> tuple[float, float]:
    """Tango's two-sided score interval for the paired difference: every theta the score test
    does not reject at 1 - ``confidence``. Never degenerate: with no discordant image at all it
    still says how large a difference the sample cannot exclude."""
    if p.n == 0:
        return (-1.0, 1.0)
    z = stats.norm.ppf(0.5 + confidence / 2)
    d = p.diff
    eps = 1e-12
    lo_end, hi_end = -1 + eps, 1 - eps

    def f(t, target):
        return score_z(p, t) - target

    lo = lo_end if f(lo_end, z) <= 0 else optimize.brentq(f, lo_end, min(d, hi_end), args=(z,), xtol=1e-10)
    hi = hi_end if f(hi_end, -z) >= 0 else optimize.brentq(f, max(d, lo_end), hi_end, args=(-z,), xtol=1e-10)
    return (float(lo), float(hi))


def weighted_interval(slices: list[Paired], weights: list[float], confidence: float = 0.90) -> tuple[float, float, float]:
    """Estimate and two-sided interval of sum_s w_s * difference_s over independent slices.

    MOVER (Zou & Donner 2008): the bounds recovered from each slice's own score interval, so a
    single slice gives back its score interval exactly and small slices keep honest widths."""
    est = float(sum(w * p.diff for p, w in zip(slices, weights, strict=True)))
    lo_sq = hi_sq = 0.0
    for p, w in zip(slices, weights, strict=True):
        if w == 0:
            continue
        lo, hi = score_interval(p, confidence)
        a, b = (w * (p.diff - lo), w * (hi - p.diff)) if w > 0 else (w * (p.diff - hi), w * (lo - p.diff))
        lo_sq += a * a
        hi_sq += b * b
    return est, est - math.sqrt(lo_sq), est + math.sqrt(hi_sq)


def weighted_pvalue(slices: list[Paired], weights: list[float], alternative: str = "greater") -> float:
    """One-sided p-value matching ``weighted_interval``: the level alpha at which the one-sided
    1 - alpha bound reaches 0. ``greater``: evidence the weighted difference is above 0;
    ``less``: below 0. As alpha nears 1/2 the interval shrinks to the estimate, so an estimate on
    the other side of 0 gives one minus the opposite p-value."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be greater or less, not {alternative!r}")
    sign = 1.0 if alternative == "greater" else -1.0
    est = sign * sum(w * p.diff for p, w in zip(slices, weights, strict=True))
    if est == 0:
        return 0.5
    if est < 0:
        return 1.0 - weighted_pvalue(slices, weights, "less" if alternative == "greater" else "greater")

    def bound(alpha: float) -> float:  # the one-sided 1 - alpha bound; > 0 means "shown"
        _, lo, hi = weighted_interval(slices, weights, confidence=1 - 2 * alpha)
        return lo if sign > 0 else -hi

    lo_a, hi_a = 1e-12, 0.5 - 1e-9
    if bound(lo_a) > 0:
        return lo_a
    if bound(hi_a) <= 0:  # a positive estimate no interval separates from 0, even at alpha near 1/2
        return 0.5
    return float(optimize.brentq(bound, lo_a, hi_a, xtol=1e-12))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all the tests at once)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def wilson_interval(k: int, n: int, confidence: float = 0.90) -> tuple[float, float]:
    """Wilson's score interval for one accuracy (k right of n)."""
    if n == 0:
        return (0.0, 1.0)
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def pairs_needed(delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Images a one-sided paired test at level ``alpha`` needs to detect an accuracy difference
    ``delta`` with ``power``, when a share ``discordance`` of the images is discordant (Connor 1987)."""
    if not 0 < delta < 1 or not delta <= discordance <= 1:
        raise ValueError(f"need 0 < delta ({delta}) <= discordance ({discordance}) <= 1")
    za, zb = stats.norm.ppf(1 - alpha), stats.norm.ppf(power)
    n = (za * math.sqrt(discordance) + zb * math.sqrt(discordance - delta * delta)) ** 2 / (delta * delta)
    return int(math.ceil(n))
