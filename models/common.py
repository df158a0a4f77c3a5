"""What every model family shares: the data contract, progress reporting, the trained-model API.

The contract every family honours, natively and in ONNX:
  input  ``image``: float32 (n, 28, 28), pixels scaled to [0, 1] (white digit on black, as MNIST)
  output ``probs``: float32 (n, 10), softmax probabilities
so the gate and the server treat every family alike, whatever framework trained it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 in [0, 1]."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


@dataclass
class TrainData:
    x_train: np.ndarray  # uint8 (n, 28, 28)
    y_train: np.ndarray  # uint8 (n,)
    x_val: np.ndarray
    y_val: np.ndarray
    replayed: np.ndarray | None = None  # bool (n,): rows replayed from earlier data (fine-tuning), else None


@dataclass
class EpochLog:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


class Reporter(Protocol):
    """Receives progress while a model trains (the experiment runner implements it)."""

    def progress(self, step: int, total: int, loss: float) -> None: ...

    def checkpoint(self, index: int, val_accuracy: float) -> bool:
        """A validation accuracy at checkpoint ``index``; return True to stop (pruned)."""
        ...

    def epoch(self, log: EpochLog) -> None: ...


class NullReporter:
    def progress(self, step, total, loss):
        pass

    def checkpoint(self, index, val_accuracy):
        return False

    def epoch(self, log):
        pass


@dataclass
class TrainOutcome:
    history: list[EpochLog] = field(default_factory=list)
    checkpoints: list[float] = field(default_factory=list)  # validation accuracy at each checkpoint
    # Training seconds at each checkpoint, evaluation time excluded (for time-to-accuracy).
    checkpoint_seconds: list[float] = field(default_factory=list)
    pruned: bool = False  # stopped early by the reporter (pruned, or a target was reached)


class TrainClock:
    """Wall time spent training, with evaluation paused."""

    def __init__(self):
        import time

        self._time = time.perf_counter
        self.start = self._time()
        self.paused = 0.0

    def evaluating(self):
        clock = self

        class _Pause:
            def __enter__(self):
                self.t = clock._time()

            def __exit__(self, *exc):
                clock.paused += clock._time() - self.t

        return _Pause()

    def elapsed(self) -> float:
        return self._time() - self.start - self.paused


class TrainedModel(Protocol):
    family: str
    outcome: TrainOutcome

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 or [0, 1] float images (n, 28, 28) -> probabilities (n, 10)."""
        ...

    def param_count(self) -> int: ...

    def export(self, directory: Path) -> dict[str, Path]:
        """Write the native format and ``model.onnx``; return {"native": ..., "onnx": ...}."""
        ...


# ------------------------------------------------------------------ typed configs from text
class ParamError(ValueError):
    """A hyperparameter name or value is invalid; the message names it."""


def _coerce(name: str, text: str, typ) -> object:
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if text in choices:
            return text
        raise ParamError(f"{name}={text!r}: must be one of {', '.join(map(str, choices))}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        typ = args[0]
    try:
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if typ is int:
            return int(text)
        if typ is float:
            v = float(text)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
            return v
        if typ is str:
            return text
    except ValueError:
        raise ParamError(f"{name}={text!r}: not a valid {typ.__name__}") from None
    raise ParamError(f"{name}: unsupported type {typ}")


def config_fields(config_cls) -> dict[str, object]:
    hints = typing.get_type_hints(config_cls, include_extras=False)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def parse_values(config_cls, name: str, text: str, owner: str | None = None) -> list[object]:
    """``"0.001,0.003"`` for field ``name`` -> [0.001, 0.003], typed and checked."""
    fields = config_fields(config_cls)
    if name not in fields:
        raise ParamError(
            f"unknown hyperparameter {name!r} for {owner or config_cls.__name__}; valid names: {', '.join(fields)}"
        )
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(p == "" for p in parts):
        raise ParamError(f"{name}={text!r}: empty value in the comma-separated list")
    values = [_coerce(name, p, fields[name]) for p in parts]
    probe = config_cls()
    for v in values:
        check = getattr(probe, "check", None)
        if check:
            err = check(name, v)
            if err:
                raise ParamError(f"{name}={v!r}: {err}")
    return list(dict.fromkeys(values))  # drop duplicates, keep order


def make_config(config_cls, params: dict[str, object], owner: str | None = None):
    fields = config_fields(config_cls)
    unknown = set(params) - set(fields)
    if unknown:
        raise ParamError(
            f"unknown hyperparameter(s) {', '.join(sorted(unknown))} for {owner or config_cls.__name__}; "
            f"valid names: {', '.join(fields)}"
        )
    return config_cls(**params)


def positive(name: str, value) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        return "must be positive"
    return None
