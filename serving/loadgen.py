"""A closed-loop load generator: ``concurrency`` threads send requests back to back for
``seconds``. The serving benchmarks drive REST (bench/serve.py) and gRPC (serving/grpc_client.py,
in the serving environment) through it. NumPy and the standard library only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def drive(open_client: Callable[[], Any], send: Callable[[Any], tuple[Any, bool, str | None, bool]],
          seconds: float, concurrency: int) -> dict:
    """``open_client()`` makes one client per thread (closed afterwards if it has ``close``);
    ``send(client)`` makes one request and returns (status code, ok, request id or None, error).
    Latencies count the ok requests; ``errors_5xx`` counts the errors (server errors, no answer)."""
    lat, codes, ids, errors, lock = [], {}, [], [0], threading.Lock()
    stop = time.perf_counter() + seconds

    def worker():
        client = open_client()
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                code, ok, rid, error = send(client)
                dt = time.perf_counter() - t
                with lock:
                    codes[str(code)] = codes.get(str(code), 0) + 1
                    errors[0] += int(error)
                    if ok:
                        lat.append(dt)
                        ids.append(rid)
        finally:
            if hasattr(client, "close"):
                client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": sum(codes.values()), "ok": len(lat), "codes": codes, "errors_5xx": errors[0],
            "rps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat else None, "ids": ids}
