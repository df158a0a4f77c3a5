"""A real PostgreSQL server on 127.0.0.1 from the Debian binaries, which a test or a benchmark can
stop and start again (a database restart under load). Used by tests/conftest.py and bench/faults.py."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from deployment.serve import free_port


class PostgresServer:
    """``start()`` initialises a data folder once and starts the server; ``stop()`` shuts it down
    (fast: open connections are terminated, as in a restart or a failover); ``close()`` removes it."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise FileNotFoundError("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.bindir = os.path.dirname(bins[-1])
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.work = tempfile.mkdtemp(prefix="mnistcl-pg-", dir="/tmp")
        os.chmod(self.work, 0o755)
        if self.as_pg:
            shutil.chown(self.work, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run([*self.as_pg, f"{self.bindir}/initdb", "-D", f"{self.work}/data", "--auth=trust", "-U",
                        "postgres"], check=True, capture_output=True)

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_pg, f"{self.bindir}/pg_ctl", "-D", f"{self.work}/data", *args],
                       check=check, capture_output=True)

    def start(self) -> None:
        self._ctl("-l", f"{self.work}/log", "-w", "-o",
                  f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop", check=False)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def load_through_outage(url: str, pg: PostgresServer, body: dict, *, before_s: float, outage_s: float,
                        after_s: float, clients: int = 4) -> dict:
    """Predictions from ``clients`` threads against the model server at ``url`` while ``pg`` (its
    prediction log) is stopped for ``outage_s`` seconds and started again; readiness polled
    alongside. Returns what a reviewer needs: answers by status, a 503's message, readiness during
    the outage, seconds from the database's return to an unbroken run of 200s, and which
    request ids answered 200 (to compare with the log)."""
    import threading
    import time

    import httpx

    answers: list[tuple[float, float, int, str | None, str]] = []  # sent, done, status, request id, text
    ready: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=15) as c:
            while not stop.is_set():
                sent = time.time()
                try:
                    r = c.post(f"{url}/api/v1.0/predictions", json=body)
                    status, text = r.status_code, r.text
                    rid = r.json()["meta"]["tags"]["request_id"] if status == 200 else None
                except httpx.HTTPError as exc:
                    status, text, rid = 0, repr(exc), None
                with lock:
                    answers.append((sent, time.time(), status, rid, text[:400]))

    def probe():
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                try:
                    status = c.get(f"{url}/health/status").status_code
                except httpx.HTTPError:
                    status = 0
                ready.append((time.time(), status))
                time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=probe)]
    for t in threads:
        t.start()
    try:
        time.sleep(before_s)
        pg.stop()
        down = time.time()
        time.sleep(outage_s)
        restarting = time.time()  # pg_ctl polls: the server may accept before start() returns
        pg.start()
        up = time.time()
        time.sleep(after_s)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    codes: dict[str, int] = {}
    for a in answers:
        codes[str(a[2])] = codes.get(str(a[2]), 0) + 1
    late_failures = [a[1] for a in answers if a[2] != 200 and a[0] >= up]
    return {
        "requests": len(answers), "codes": codes,
        "ok_ids": [a[3] for a in answers if a[2] == 200],
        "unavailable_message": next((a[4] for a in answers if a[2] == 503), None),
        "outage_seconds": round(up - down, 2),
        "ready_during_outage": sorted({s for t, s in ready if down + 0.5 < t < restarting}),
        "ready_after": sorted({s for t, s in ready if t > up + (max(late_failures) - up if late_failures else 0) + 1}),
        "recovery_seconds": round(max(0.0, max(late_failures, default=up) - up), 2),
        "ok_after_recovery": sum(1 for a in answers if a[2] == 200 and a[0] >= up),
        # from the start command (PostgreSQL's own start-up included) to the first 200
        "first_ok_after_restart_seconds": round(min((a[1] for a in answers if a[2] == 200 and a[0] >= restarting),
                                                    default=float("nan")) - restarting, 2),
    }
