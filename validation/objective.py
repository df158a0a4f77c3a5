"""The gate's objective: expected accuracy on the recent traffic mix.

Each evaluation slice stands for the traffic it was drawn from: MNIST test for the long-run
base of users who write like MNIST, and each labelled production batch (a dataset version) for
the traffic of its time. The recent traffic is the last ``window_images`` labelled production
images, newest batch first; a batch's weight is its share of that window. Until production
data fills the window, the rest of it is MNIST's; MNIST always keeps at least ``base_weight``,
so the long-run base is never traded away for the newest cohort.

  traffic_weights([("v2", 600), ("v3", 500)], ObjectiveConfig())  ->  {"mnist-test": ..., "v2": ..., "v3": ...}
"""

from __future__ import annotations

from pydantic import BaseModel, Field

BASE_SLICE = "mnist-test"


class ObjectiveConfig(BaseModel):
    window_images: int = Field(default=1500, gt=0, description="labelled production images that count as recent")
    base_weight: float = Field(default=0.2, ge=0.0, le=1.0, description="MNIST's least share of the objective")
    current_traffic: bool = Field(default=True, description=(
        "a second claim that also promotes: confidently better on the newest labelled batch (the traffic now) "
        "and no worse than ``margin`` on the mix; the gate's error is shared by the two claims (Hochberg)"))
    margin: float = Field(default=0.005, ge=0.0, lt=1.0, description=(
        "how much lower on the recent mix the current-traffic claim tolerates (a one-sided bound)"))


def traffic_weights(batches: list[tuple[str, int]], cfg: ObjectiveConfig, base: str = BASE_SLICE) -> dict[str, float]:
    """Weights per slice (summing to 1) from ``batches``: (slice name, labelled images in that
    batch), oldest first. Slices outside the window get weight 0 but stay in the result."""
    left = cfg.window_images
    shares: dict[str, float] = {}
    for name, n in reversed(batches):
        take = min(max(n, 0), left)
        shares[name] = take / cfg.window_images
        left -= take
    unfilled = left / cfg.window_images
    weights = {base: cfg.base_weight + (1 - cfg.base_weight) * unfilled}
    for name, _ in batches:
        weights[name] = (1 - cfg.base_weight) * shares[name]
    return weights
