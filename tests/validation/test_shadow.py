"""The error budget across the gate, a sweep's candidates and the shadow's looks."""

import math

import numpy as np
import pytest

from validation import stats
from validation.gate import GateConfig, eval_fraction
from validation.shadow import look_alpha, shadow_verdict

pytestmark = pytest.mark.unit


def test_gate_and_shadow_together_spend_the_one_budget():
    cfg = GateConfig()  # confidence 0.95, half at the gate
    looks = math.ceil(cfg.shadow.max_images / cfg.shadow.judge_every)
    spent = sum(look_alpha(cfg, k, final=False) for k in range(1, looks)) + look_alpha(cfg, looks, final=True)
    assert spent == pytest.approx(cfg.shadow_alpha)
    assert cfg.gate_alpha + cfg.shadow_alpha == pytest.approx(cfg.alpha) == pytest.approx(0.05)


def test_a_sweep_splits_the_gates_share_among_its_candidates():
    one, three = GateConfig(), GateConfig(compared=3)
    assert three.gate_alpha == pytest.approx(one.gate_alpha / 3)
    assert three.shadow_alpha == one.shadow_alpha  # one challenger at a time: its share is unchanged
    assert 3 * three.gate_alpha + three.shadow_alpha <= three.alpha + 1e-12


def test_forced_looks_beyond_the_plan_wait_for_the_last():
    """Judging more often than planned must not spend more error, nor retire before max_images."""
    cfg = GateConfig(shadow={"judge_every": 200, "max_images": 1000})  # 5 looks planned
    rng = np.random.default_rng(0)
    a = rng.random(600) < 0.97
    b = a.copy()
    b[:3] = ~b[:3]
    p = stats.Paired.from_correct(a, b)
    assert shadow_verdict(cfg, p, 4)["alpha_per_look"] == cfg.shadow.interim_alpha
    v = shadow_verdict(cfg, p, 5)  # the 5th look came early, at 600 of 1,000 images
    assert v["verdict"] == "wait" and v["alpha_per_look"] == 0 and "interim looks are spent" in v["why"]
    full = stats.Paired.from_correct(np.ones(1000, bool), np.ones(1000, bool))
    assert shadow_verdict(cfg, full, 9)["verdict"] == "retire"  # at max_images the last look decides


def test_the_held_out_share_is_sized_at_the_gates_own_level():
    cfg = GateConfig().evidence
    need = stats.pairs_needed(cfg.detect, cfg.discordance, GateConfig().gate_alpha, cfg.power)
    assert eval_fraction(3000, cfg, GateConfig().gate_alpha) == pytest.approx(need / 3000)
    assert need > stats.pairs_needed(cfg.detect, cfg.discordance, GateConfig().alpha, cfg.power)
