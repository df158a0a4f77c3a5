"""The gate's decision on planted per-image outcomes: known situations, known verdicts."""

import numpy as np
import pytest

from validation.gate import GateConfig, Measured, Rule, decide, judge
from validation.objective import ObjectiveConfig, traffic_weights

pytestmark = pytest.mark.unit


def outcomes(n: int, right: int, rng, flip: int = 0, base: np.ndarray | None = None) -> np.ndarray:
    """``n`` per-image outcomes with ``right`` correct; with ``base``, a copy of it where ``flip``
    images change (positive: wrong -> right; negative: right -> wrong)."""
    if base is None:
        out = np.zeros(n, bool)
        out[rng.choice(n, right, replace=False)] = True
        return out
    out = base.copy()
    pool = np.flatnonzero(~out if flip > 0 else out)
    out[rng.choice(pool, abs(flip), replace=False)] = flip > 0
    return out


def measured(correct: dict[str, np.ndarray], **metrics) -> Measured:
    acc = {s: float(c.mean()) for s, c in correct.items()}
    newest = list(correct)[-1]
    return Measured({"accuracy": {**acc, "newest": acc[newest]}, "newest_slice": newest,
                     "slices": {s: {"n": len(c)} for s, c in correct.items()}, **metrics}, correct)


WEIGHTS = traffic_weights([("v2", 600), ("v3", 600)], ObjectiveConfig())


@pytest.fixture
def champion():
    rng = np.random.default_rng(0)
    return {"mnist-test": outcomes(10000, 9870, rng), "v2": outcomes(120, 117, rng), "v3": outcomes(240, 190, rng)}


def test_weights_follow_recent_traffic_with_mnist_as_base():
    w = traffic_weights([("v2", 600), ("v3", 600), ("v4", 900)], ObjectiveConfig(window_images=1500, base_weight=0.2))
    assert w["v2"] == 0 and w["v4"] == pytest.approx(0.8 * 900 / 1500) and w["v3"] == pytest.approx(0.8 * 600 / 1500)
    assert w["mnist-test"] == pytest.approx(0.2) and sum(w.values()) == pytest.approx(1)
    assert traffic_weights([], ObjectiveConfig()) == {"mnist-test": 1.0}  # before any production data
    assert traffic_weights([("v2", 300)], ObjectiveConfig(window_images=1500, base_weight=0.2))["mnist-test"] == \
        pytest.approx(0.2 + 0.8 * 1200 / 1500)


def test_identical_candidate_is_never_promoted(champion):
    d = decide(GateConfig(), measured(champion), measured(champion), WEIGHTS)
    assert d["verdict"] == "challenger" and "not enough evidence" in d["reason"]
    assert d["objective"]["estimate"] == 0 and d["objective"]["interval"][0] < 0 < d["objective"]["interval"][1]


def test_clear_win_on_the_new_cohort_is_promoted(champion):
    rng = np.random.default_rng(1)
    cand = {**champion, "v3": outcomes(240, 0, rng, flip=30, base=champion["v3"])}  # +12.5 points on the newest
    d = decide(GateConfig(), measured(cand), measured(champion), WEIGHTS)
    assert d["verdict"] == "promote", d["reason"]
    o = d["objective"]
    assert o["interval"][0] > 0 and o["p_better"] < 0.05
    assert o["estimate"] == pytest.approx(WEIGHTS["v3"] * 30 / 240)


def test_two_images_on_a_small_slice_are_noise_not_forgetting(champion):
    """The case that refused a far better model: a drop of 2 images (1.7 points) on 120."""
    rng = np.random.default_rng(2)
    cand = {"mnist-test": outcomes(10000, 0, rng, flip=30, base=champion["mnist-test"]),
            "v2": outcomes(120, 0, rng, flip=-2, base=champion["v2"]),
            "v3": outcomes(240, 0, rng, flip=40, base=champion["v3"])}
    d = decide(GateConfig(forgetting={"doubt": 0}), measured(cand), measured(champion), WEIGHTS)
    v2 = next(r for r in d["slices"] if r["slice"] == "v2")
    assert v2["difference"] == pytest.approx(-2 / 120) and not v2["forgets"] and v2["p_forgets_holm"] > 0.05
    assert d["verdict"] == "promote", d["reason"]


def test_a_plausible_drop_makes_a_better_candidate_the_challenger(champion):
    """Better on the objective, and the data lean toward a drop beyond the allowance without showing it
    (2 images on 120: p = 0.23, below the default doubt 0.3): shadowed, not promoted, not thrown away."""
    rng = np.random.default_rng(2)
    cand = {"mnist-test": outcomes(10000, 0, rng, flip=30, base=champion["mnist-test"]),
            "v2": outcomes(120, 0, rng, flip=-2, base=champion["v2"]),
            "v3": outcomes(240, 0, rng, flip=20, base=champion["v3"])}  # shown, not overwhelming
    d = decide(GateConfig(), measured(cand), measured(champion), WEIGHTS)
    v2 = next(r for r in d["slices"] if r["slice"] == "v2")
    assert v2["doubtful"] and not v2["forgets"] and 0.2 < v2["p_forgets"] < 0.3
    assert d["objective"]["interval"][0] > 0 and d["objective"]["p_better"] > GateConfig().forgetting.overwhelming
    assert d["verdict"] == "challenger" and "not enough evidence that it keeps v2" in d["reason"], d["reason"]
    # One image on 120 is within the allowance: promoted at once.
    cand["v2"] = outcomes(120, 0, rng, flip=-1, base=champion["v2"])
    assert decide(GateConfig(), measured(cand), measured(champion), WEIGHTS)["verdict"] == "promote"


def test_confident_forgetting_is_refused_even_with_a_win(champion):
    rng = np.random.default_rng(3)
    cand = {"mnist-test": outcomes(10000, 0, rng, flip=-400, base=champion["mnist-test"]),  # -4 points on 10,000
            "v2": champion["v2"], "v3": outcomes(240, 0, rng, flip=45, base=champion["v3"])}
    d = decide(GateConfig(), measured(cand), measured(champion), WEIGHTS)
    assert d["verdict"] == "reject" and "forgets mnist-test" in d["reason"]
    mnist = next(r for r in d["slices"] if r["slice"] == "mnist-test")
    assert mnist["forgets"] and mnist["interval"][1] < -0.01


def test_allowance_is_per_slice_data(champion):
    rng = np.random.default_rng(4)
    cand = {**champion, "mnist-test": outcomes(10000, 0, rng, flip=-60, base=champion["mnist-test"])}  # -0.6 points

    def forgets(cfg):
        return next(r for r in decide(cfg, measured(cand), measured(champion), WEIGHTS)["slices"]
                    if r["slice"] == "mnist-test")["forgets"]

    assert not forgets(GateConfig())  # within the 1-point allowance
    assert forgets(GateConfig(forgetting={"allowance": 0.01, "per_slice": {"mnist-test": 0.002}}))


def test_confidently_worse_is_rejected(champion):
    rng = np.random.default_rng(5)
    cand = {**champion, "v3": outcomes(240, 0, rng, flip=-30, base=champion["v3"])}
    d = decide(GateConfig(forgetting={"allowance": 0.2}), measured(cand), measured(champion), WEIGHTS)
    assert d["verdict"] == "reject" and "worse on the recent traffic mix" in d["reason"]


def test_floor_never_refuses_a_confidently_better_candidate(champion):
    """Champion at 57% on the newest slice, candidate at 78%: a floor of 80% must not refuse it."""
    rng = np.random.default_rng(6)
    champ = {**champion, "v3": outcomes(240, 137, rng)}
    cand = {**champ, "v3": outcomes(240, 0, rng, flip=50, base=champ["v3"])}
    cfg = GateConfig(rules=[Rule(name="min_newest_slice_accuracy", metric="accuracy.newest", threshold=0.80),
                            Rule(name="min_accuracy", metric="accuracy.mnist-test", threshold=0.999)])
    rep = judge(cfg, measured(cand), measured(champ), candidate="c", champion="m1", weights=WEIGHTS)
    floor = next(c for c in rep.checks if c["rule"] == "min_newest_slice_accuracy")
    assert floor["ok"] and floor["note"].startswith("waived: confidently better")
    # The MNIST floor is not waived: the candidate is no better there, so it still refuses.
    assert rep.verdict == "reject" and [v.rule for v in rep.violations] == ["min_accuracy"]


def test_report_shows_estimate_interval_test_and_p_value(champion):
    rep = judge(GateConfig(), measured(champion), measured(champion), candidate="c", champion="m1", weights=WEIGHTS)
    md = rep.to_markdown()
    assert rep.verdict == "challenger" and "not enough evidence" in md
    for needle in ("Tango score", "Holm", "interval", "p (better)", "| v3 |", "weight"):
        assert needle in md, needle
    js = rep.to_json()
    assert js["decision"]["objective"]["interval"] and js["decision"]["slices"][0]["p_forgets_holm"] is not None


def test_dry_run_reports_the_verdict_but_never_blocks(champion):
    rng = np.random.default_rng(7)
    cand = {**champion, "mnist-test": outcomes(10000, 0, rng, flip=-500, base=champion["mnist-test"])}
    rep = judge(GateConfig(mode="dry-run"), measured(cand), measured(champion), candidate="c", champion="m1",
                weights=WEIGHTS)
    assert rep.verdict == "reject" and rep.passed and "would REJECT" in rep.to_markdown()


def test_an_overwhelming_win_is_promoted_despite_a_likely_drop(champion):
    """The scenario's small-and-offset case: +9 points on the objective, 2 images lost on 120."""
    rng = np.random.default_rng(8)
    champ = {**champion, "v3": outcomes(240, 137, rng)}
    cand = {"mnist-test": champion["mnist-test"], "v2": outcomes(120, 0, rng, flip=-2, base=champ["v2"]),
            "v3": outcomes(240, 0, rng, flip=80, base=champ["v3"])}
    d = decide(GateConfig(), measured(cand), measured(champ), WEIGHTS)
    v2 = next(r for r in d["slices"] if r["slice"] == "v2")
    assert v2["doubtful"] and d["objective"]["p_better"] < GateConfig().forgetting.overwhelming
    assert d["verdict"] == "promote" and "outweighs the likely drop on v2" in d["reason"], d["reason"]


def paired(n: int, right: int, only_candidate: int, only_champion: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, champion) outcomes on ``n`` images: the champion right on ``right`` of them; the
    candidate the same, but right on ``only_candidate`` more and wrong on ``only_champion`` of those."""
    champ = np.zeros(n, bool)
    champ[:right] = True
    cand = champ.copy()
    cand[right:right + only_candidate] = True
    cand[:only_champion] = False
    return cand, champ


def two_models(**slices: tuple[int, int, int, int]) -> tuple[Measured, Measured]:
    out = {s: paired(*spec) for s, spec in slices.items()}
    return Measured({}, {s: c for s, (c, _) in out.items()}), Measured({}, {s: h for s, (_, h) in out.items()})


# Seed 0's phone-camera candidate in the scenario, in miniature: 13 of the cohort's digits only it
# reads right, 2 only the champion, while the previous cohort (the mix's largest share) and MNIST
# are noise both ways.
RECENT = traffic_weights([("v2", 700), ("v3", 500)], ObjectiveConfig())


def test_the_traffic_now_claim_promotes_a_win_the_mix_dilutes():
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 25, 25), "v2": (240, 225, 6, 6), "v3": (248, 220, 13, 2)})
    d = decide(GateConfig(), cand, champ, RECENT)
    claim = d["objective"]["claim"]
    assert d["verdict"] == "promote" and claim["by"] == "now", d["reason"]
    assert claim["newest"]["p_better"] == pytest.approx(121 / 2**15)  # P(X >= 13 | 15 discordant, 1/2)
    assert 0.0125 < d["objective"]["p_better"] < 0.05  # the mix alone is not enough
    assert -0.005 < claim["newest"]["mix_lower_bound"]["at_half"] < 0
    assert "the traffic now" in d["reason"] and "McNemar p = 0.00369" in d["reason"]
    only_mix = GateConfig(objective=ObjectiveConfig(current_traffic=False))
    d = decide(only_mix, cand, champ, RECENT)
    assert d["verdict"] == "challenger" and d["objective"]["claim"]["by"] is None


def test_the_traffic_now_claim_needs_the_mix_within_its_margin():
    """The same win on the newest batch, but the previous cohort leans the other way: the mix's
    lower bound falls below -margin, so it is not promoted (the shadow judges it)."""
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 25, 25), "v2": (240, 225, 5, 7), "v3": (248, 220, 13, 2)})
    d = decide(GateConfig(), cand, champ, RECENT)
    claim = d["objective"]["claim"]
    assert d["verdict"] == "challenger" and claim["by"] is None
    assert claim["newest"]["p_better"] < 0.0125 and claim["newest"]["mix_lower_bound"]["at_half"] < -0.005
    assert "not enough evidence" in d["reason"] and "above -0.50%" in d["reason"]
    wide = GateConfig(objective=ObjectiveConfig(margin=0.01))
    assert decide(wide, cand, champ, RECENT)["verdict"] == "promote"


def test_the_two_claims_share_the_gates_error():
    """Hochberg: either claim alone needs half of gate_alpha; both together, the whole of it. A
    mix win at p = 0.018 with nothing shown on the newest batch promoted when the mix was the only
    claim; with two claims it waits as challenger, so a model better at neither is still promoted
    at most gate_alpha of the time."""
    cfg = GateConfig()
    assert cfg.gate_alpha == pytest.approx(0.025)
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 40, 20), "v2": (240, 225, 10, 2), "v3": (248, 220, 3, 3)})
    d = decide(cfg, cand, champ, RECENT)
    assert 0.0125 < d["objective"]["p_better"] < 0.025
    assert d["verdict"] == "challenger" and "p < 0.0125 or both at p < 0.025" in d["reason"], d["reason"]
    only_mix = GateConfig(objective=ObjectiveConfig(current_traffic=False))
    assert decide(only_mix, cand, champ, RECENT)["verdict"] == "promote"
    # both claims between half and the whole of gate_alpha: together they promote
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 25, 25), "v2": (240, 225, 6, 3), "v3": (248, 220, 10, 2)})
    d = decide(cfg, cand, champ, RECENT)
    assert 0.0125 < d["objective"]["p_better"] < 0.025
    assert d["objective"]["claim"]["newest"]["p_better"] == pytest.approx(79 / 2**12)  # 10 of 12 discordant
    assert d["verdict"] == "promote" and d["objective"]["claim"]["by"] == "mix and now", d["reason"]


def test_before_production_data_only_the_mix_is_claimed(champion):
    rng = np.random.default_rng(3)
    base = {"mnist-test": champion["mnist-test"]}
    cand = {"mnist-test": outcomes(10000, 0, rng, flip=60, base=champion["mnist-test"])}
    d = decide(GateConfig(), measured(cand), measured(base), {"mnist-test": 1.0})
    assert d["verdict"] == "promote" and d["objective"]["claim"]["by"] == "mix" and "newest" not in d["objective"]["claim"]


def test_the_traffic_now_claim_alone_needs_half_the_level():
    """Shown at 0.025 (p = 0.0193, the mix's bounds within the margin) but not at 0.0125, with the
    mix not shown: the traffic-now claim alone does not promote (tested at the whole level, it would)."""
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 10, 10), "v2": (240, 225, 2, 2), "v3": (248, 220, 10, 2)})
    d = decide(GateConfig(), cand, champ, RECENT)
    now = d["objective"]["claim"]["newest"]
    assert 0.0125 < now["p_better"] < 0.025 and d["objective"]["p_better"] > 0.025
    assert min(now["mix_lower_bound"].values()) > -0.005
    assert d["verdict"] == "challenger" and d["objective"]["claim"]["by"] is None, d["reason"]


def test_one_claim_alone_has_the_whole_level_before_production_data(champion):
    """Without a production batch the mix is the only claim: p between 0.0125 and 0.025 promotes."""
    cand, champ = two_models(**{"mnist-test": (10000, 9870, 29, 15)})
    d = decide(GateConfig(), cand, champ, {"mnist-test": 1.0})
    assert 0.0125 < d["objective"]["p_better"] < 0.025
    assert d["verdict"] == "promote" and d["objective"]["claim"]["by"] == "mix", d["reason"]
    assert GateConfig().claim_alpha == pytest.approx(0.0125)
    assert GateConfig(objective=ObjectiveConfig(current_traffic=False)).claim_alpha == pytest.approx(0.025)
