"""Monitoring state: the window cursor, the breach history (hysteresis), the cooldown, and the
retraining lock, so one noisy window never starts a retraining storm.

- ``decide``: pure; retrain when at least N of the last M windows breached, not while a
  retraining runs, and not within the cooldown after the last one started.
- ``MonitorState``: a JSON file under <home>/monitoring, rewritten atomically under a file lock.
- ``RetrainLock``: an exclusive lock file; a second retraining that finds it held starts nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from monitoring.rules import TriggerConfig

HISTORY = 100
STALE_LOCK_HOURS = 12.0


@dataclass
class Decision:
    retrain: bool
    reason: str


def decide(breaches: list[bool], trig: TriggerConfig, *, now: float, last_retrain_started: float | None,
           retrain_running: bool) -> Decision:
    recent = breaches[-trig.of_last:]
    hits = sum(recent)
    if hits < trig.breaches:
        return Decision(False, f"{hits} of the last {len(recent)} windows breached (need {trig.breaches} of {trig.of_last})")
    if retrain_running:
        return Decision(False, "a retraining is already running")
    if last_retrain_started is not None and now - last_retrain_started < trig.cooldown_hours * 3600:
        left = trig.cooldown_hours * 3600 - (now - last_retrain_started)
        return Decision(False, f"in cooldown for another {left / 60:.0f} min after the last retraining")
    return Decision(True, f"{hits} of the last {len(recent)} windows breached")


class MonitorState:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "state.json"

    @contextmanager
    def update(self):
        """Read-modify-write under an exclusive lock; the file is replaced atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            yield state
            state["windows"] = state["windows"][-HISTORY:]
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, self.path)

    def read(self) -> dict:
        if self.path.exists():
            return json.loads(self.path.read_text())
        return {"cursor": 0.0, "windows": [], "last_retrain_started": None, "last_retrain_finished": None,
                "retrains": []}


class RetrainBusy(RuntimeError):
    """Another retraining holds the lock."""


class RetrainLock:
    def __init__(self, folder: Path, stale_hours: float = STALE_LOCK_HOURS):
        self.path = Path(folder) / "retrain.lock"
        self.stale_s = stale_hours * 3600

    def holder(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if time.time() - info.get("started", 0) > self.stale_s:
            return None
        return info

    def running(self) -> bool:
        return self.holder() is not None

    def acquire(self, who: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = self.holder()
        if holder is None and self.path.exists():  # stale: its process died without releasing
            self.path.unlink(missing_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise RetrainBusy(f"a retraining is already running ({self.holder()})") from None
        with os.fdopen(fd, "w") as fh:
            json.dump({"who": who, "pid": os.getpid(), "started": time.time()}, fh)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
