"""Monitoring state: the window cursor, the breach history (hysteresis), the cooldown, and the
retraining lock, so one noisy window never starts a retraining storm.

Both live in the shared store (the settings' storage: a local folder, or S3 on the cluster, where
every flow run is a fresh pod), never on a pod's disk, and every change is a compare-and-swap
(``mnistcl.storage.update_json``), so any number of processes may check and retrain at once.

- ``decide``: pure; retrain when at least N of the last M windows breached, not while a
  retraining runs, and not within the cooldown after the last one started.
- ``MonitorState``: ``state/monitoring-<log id>.json`` in the store: the cursor counts in one
  prediction log, so each log (production, a scenario's, staging's) has its own.
- ``RetrainLock``: a lease, ``state/retrain-lease.json``: an owner and an expiry, renewed by
  its holder (a heartbeat every third of the lease) for as long as the retraining runs; a second
  retraining that finds it held starts nothing; the lease of a holder that died (a killed pod)
  expires within one lease length (``retrain_lease_seconds``, 10 minutes by default).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnistcl.predlog import PredictionLog
from mnistcl.storage import NotFound, Storage, open_storage, update_json
from monitoring.rules import TriggerConfig

HISTORY = 100
LEASE_SECONDS = 600.0  # a dead holder's lease frees within this; a live one renews every third of it


@dataclass
class Decision:
    retrain: bool
    reason: str


def decide(breaches: list[bool], trig: TriggerConfig, *, now: float, last_retrain_started: float | None,
           retrain_running: bool, drift_share: float | None = None) -> Decision:
    """Retrain when enough recent windows breached (hysteresis: one noisy window is not enough),
    or when this window's drift is overwhelming (``trig.overwhelming_drift`` of the features:
    far beyond what noise does, bench/results/drift.json), never while a retraining runs or
    within the cooldown."""
    recent = breaches[-trig.of_last:]
    hits = sum(recent)
    overwhelming = (trig.overwhelming_drift is not None and drift_share is not None
                    and drift_share >= trig.overwhelming_drift and bool(recent) and recent[-1])
    if hits < trig.breaches and not overwhelming:
        return Decision(False, f"{hits} of the last {len(recent)} windows breached (need {trig.breaches} of {trig.of_last})")
    if retrain_running:
        return Decision(False, "a retraining is already running")
    if last_retrain_started is not None and now - last_retrain_started < trig.cooldown_hours * 3600:
        left = trig.cooldown_hours * 3600 - (now - last_retrain_started)
        return Decision(False, f"in cooldown for another {left / 60:.0f} min after the last retraining")
    if hits < trig.breaches:
        return Decision(True, f"overwhelming drift: {drift_share:.0%} of the features drifted "
                              f"(trigger.overwhelming_drift {trig.overwhelming_drift:g})")
    return Decision(True, f"{hits} of the last {len(recent)} windows breached")


def died(st: dict, *, running: bool) -> bool:
    """The last retraining started, never finished, and nothing runs now: its process died (a
    killed pod). Not when it was itself the retry of one that died (no crash loop)."""
    started = st.get("last_retrain_started")
    return bool(started) and not running and (st.get("last_retrain_finished") or 0) < started \
        and st.get("retry_of_crash") != started


def cooldown_from(st: dict, *, running: bool) -> float | None:
    """When the cooldown counts from: the last retraining's start or the last trigger; a
    retraining that died starts none, nor does the trigger that started it."""
    started = st.get("last_retrain_started")
    times = [t for t in (started, st.get("last_trigger")) if t]
    if died(st, running=running):
        times = [t for t in times if t > started]
    return max(times, default=None)


def _fresh_state(cursor: int = 0) -> dict:
    return {"cursor": cursor, "cursor_at": 0.0, "windows": [], "last_retrain_started": None, "last_retrain_finished": None,
            "retrains": []}


class MonitorState:
    def __init__(self, storage: Storage, log_id: str, start: int = 0):
        """``start``: where a fresh state's cursor begins (a log's baseline: rows from before
        sequence numbers are not checked again)."""
        self.storage = storage
        self.key = f"state/monitoring-{log_id}.json"
        self.start = start

    def update(self, change: Callable[[dict], Any]) -> Any:
        """``change(state)`` edits the state in place; it runs again on the fresh state when another
        process wrote first (so it must not have side effects). Returns what it returned."""
        def bounded(st: dict) -> Any:
            out = change(st)
            st["windows"] = st["windows"][-HISTORY:]
            return out
        return update_json(self.storage, self.key, bounded, default=lambda: _fresh_state(self.start))

    def read(self) -> dict:
        try:
            return {**_fresh_state(self.start), **json.loads(self.storage.get(self.key))}
        except NotFound:
            return _fresh_state(self.start)


class RetrainBusy(RuntimeError):
    """Another retraining holds the lock."""


class RetrainLock:
    """A lease in the shared store: ``acquire`` takes it when it is free, released or expired
    (compare-and-swap, so of two pods at once exactly one gets it); ``release`` frees it only for
    its owner."""

    KEY = "state/retrain-lease.json"

    def __init__(self, storage: Storage, ttl_s: float = LEASE_SECONDS):
        self.storage = storage
        self.ttl_s = float(ttl_s)
        self.owner: str | None = None
        self.lost: str | None = None  # why a renewal failed: another holder took an expired lease
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(self.storage.get(self.KEY))
        except NotFound:
            return None

    def _live(self, info: dict | None, now: float) -> bool:
        return bool(info) and not info.get("released") and info.get("expires", 0) > now

    def holder(self) -> dict | None:
        info = self._read()
        return info if self._live(info, time.time()) else None

    def running(self) -> bool:
        return self.holder() is not None

    def acquire(self, who: str) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        def take(info: dict) -> dict | None:
            now = time.time()
            if self._live(info, now):
                return dict(info)  # held: leave it as it is
            info.clear()
            info.update({"who": who, "owner": owner, "pid": os.getpid(), "started": now,
                         "expires": now + self.ttl_s})
            return None

        held = update_json(self.storage, self.KEY, take, default=dict)
        if held is not None:
            raise RetrainBusy(f"a retraining is already running ({held.get('who')}, owner {held.get('owner')})")
        self.owner, self.lost = owner, None
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(owner,), daemon=True, name="retrain-lease")
        self._beat.start()

    def renew(self, owner: str | None = None) -> bool:
        """Push the expiry one lease length on, if ``owner`` (default: this holder) still holds it."""
        owner = owner or self.owner

        def extend(info: dict) -> bool:
            if info.get("owner") != owner or info.get("released"):
                return False
            info["expires"] = time.time() + self.ttl_s
            info["renewed"] = time.time()
            return True

        return bool(owner) and update_json(self.storage, self.KEY, extend, default=dict)

    def _heartbeat(self, owner: str) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew(owner):
                    self.lost = "the lease was taken by another holder after it expired"
                    return
                self.lost = None
            except Exception as exc:  # noqa: BLE001 - a storage hiccup: try again at the next beat
                self.lost = f"renewal failed: {exc}"

    def release(self) -> None:
        if self.owner is None:
            return
        owner, self.owner = self.owner, None
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
            self._beat = None

        def free(info: dict) -> None:
            if info.get("owner") == owner:
                info.update({"released": True, "released_at": time.time()})

        update_json(self.storage, self.KEY, free, default=dict)


def _storage(settings) -> Storage:
    return open_storage(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url)


def retrain_lease(settings) -> RetrainLock:
    """The retraining lease in the settings' store (one retraining per store at a time)."""
    return RetrainLock(_storage(settings), ttl_s=settings.retrain_lease_seconds)


def monitor_state(settings, plog: PredictionLog | None = None) -> MonitorState:
    """The monitoring state of the settings' prediction log, in the settings' store."""
    plog = plog or PredictionLog(settings.predictions_db_path)
    return MonitorState(_storage(settings), plog.identity(), plog.baseline("seq"))
