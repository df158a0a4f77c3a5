"""The AutoML search space as data: parse it, check it, expand every permutation.

Plain functions, no training framework imported: the CLI validates a grid before anything
heavy starts.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnistcl.settings import read_yaml
from models.common import ParamError, make_config, parse_values

FAMILIES = ("convnet", "vgg", "torchnet")
DEFAULT_SEARCH_SPACE = Path(__file__).resolve().parent.parent / "configs" / "search_space.yaml"


def family_module(family: str):
    if family not in FAMILIES:
        raise ParamError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")
    return importlib.import_module(f"models.{family}")


@dataclass(frozen=True)
class Profile:
    name: str
    train_images: int  # 0 = all
    val_images: int
    epochs: int | None  # None = the family config's own


@dataclass(frozen=True)
class ExperimentSpec:
    family: str
    params: dict[str, Any]  # only the searched values; the rest are config defaults
    config: dict[str, Any]  # the full, typed config

    @property
    def label(self) -> str:
        return f"{self.family} " + " ".join(f"{k}={v}" for k, v in self.params.items())


@dataclass(frozen=True)
class SearchSpace:
    families: dict[str, dict[str, str]]
    profiles: dict[str, Profile]
    max_parallel_trials: int = 4  # fanned out: trial runs in flight at once (each its own process, Job and GPU)
    trial_timeout_s: float = 21600.0  # fanned out: a trial not final by then is cancelled and failed


def load_search_space(path: Path | None = None) -> SearchSpace:
    path = Path(path or DEFAULT_SEARCH_SPACE)
    raw = read_yaml(path, "search space file", ParamError)
    if not isinstance(raw, dict) or not isinstance(raw.get("families"), dict):
        raise ParamError(f"{path}: needs a 'families' mapping (family -> hyperparameter -> values)")
    families: dict[str, dict[str, str]] = {}
    for fam, params in raw["families"].items():
        family_module(fam)  # checks the name
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ParamError(f"{path}: families.{fam} must map hyperparameter names to values")
        families[fam] = {str(k): str(v) for k, v in params.items()}
    profiles = {}
    for name, p in (raw.get("profiles") or {}).items():
        try:
            profiles[name] = Profile(name=name, train_images=int(p.get("train_images", 0)),
                                     val_images=int(p.get("val_images", 1000)),
                                     epochs=None if p.get("epochs") is None else int(p["epochs"]))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ParamError(f"{path}: profile {name!r} is malformed: {exc}") from None
    fanout = raw.get("fanout") or {}
    try:
        parallel = int(fanout.get("max_parallel_trials", SearchSpace.max_parallel_trials))
        timeout = float(fanout.get("trial_timeout_s", SearchSpace.trial_timeout_s))
    except (TypeError, ValueError, AttributeError):
        raise ParamError(f"{path}: fanout.max_parallel_trials and trial_timeout_s must be numbers") from None
    if parallel < 1 or timeout <= 0:
        raise ParamError(f"{path}: fanout.max_parallel_trials must be at least 1 and trial_timeout_s positive "
                         f"(got {parallel}, {timeout})")
    return SearchSpace(families=families, profiles=profiles, max_parallel_trials=parallel, trial_timeout_s=timeout)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["learning_rate=0.001,0.01", ...]`` -> {"learning_rate": "0.001,0.01"}."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParamError(f"--param {item!r}: expected NAME=VALUE[,VALUE...]")
        out[name.strip()] = value.strip()
    return out


def expand(space: SearchSpace, *, families: list[str] | None = None,
           overrides: dict[str, str] | None = None, epochs: int | None = None) -> list[ExperimentSpec]:
    """Every permutation of the comma-separated values, checked before anything trains.

    ``overrides`` replace (or add to) the file's values for each selected family; with several
    families, a name must be valid for all of them.
    """
    fams = families or list(space.families)
    for f in fams:
        family_module(f)
    specs: list[ExperimentSpec] = []
    for fam in fams:
        cfg_cls = family_module(fam).Config
        grid_text = dict(space.families.get(fam, {}))
        grid_text.update(overrides or {})
        grid = {name: parse_values(cfg_cls, name, text, owner=fam) for name, text in grid_text.items()}
        names = list(grid)
        for combo in itertools.product(*(grid[n] for n in names)):
            params = dict(zip(names, combo, strict=True))
            full = dict(params)
            if epochs is not None and "epochs" not in params:
                full["epochs"] = epochs
            cfg = make_config(cfg_cls, full, owner=fam)
            specs.append(ExperimentSpec(family=fam, params=params, config=asdict(cfg)))
    return specs


def profile(space: SearchSpace, name: str) -> Profile:
    if name not in space.profiles:
        raise ParamError(f"unknown profile {name!r}; defined: {', '.join(space.profiles) or 'none'}")
    return space.profiles[name]
