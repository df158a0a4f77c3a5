"""A closed-loop load generator: ``concurrency`` threads send requests back to back for
``seconds``. The serving benchmarks drive REST (bench/serve.py) and gRPC (serving/grpc_client.py,
in the serving environment) through it. NumPy and the standard library only."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np


def drive(open_client: Callable[[], Any], send: Callable[[Any], tuple[Any, bool, str | None, bool]],
          seconds: float, concurrency: int, probe: Callable[[], None] | None = None) -> dict:
    """``open_client()`` makes one client per thread (closed afterwards if it has ``close``);
    ``send(client)`` makes one request and returns (status code, ok, request id or None, error).
    Latencies count the ok requests; ``errors_5xx`` counts the errors (server errors, no answer).
    ``probe()``, if given, is called once while the load runs (after a second, or half of it)."""
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
    try:
        if probe is not None:
            time.sleep(min(1.0, seconds / 2))
            probe()
    finally:
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    return {"requests": sum(codes.values()), "ok": len(lat), "codes": codes, "errors_5xx": errors[0],
            "rps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat else None, "ids": ids, "wall_s": wall,
            "latencies_s": lat}


class KeepAliveClient:
    """A lean HTTP/1.1 client for load: one keep-alive connection, the request written as bytes
    and the answer read by its Content-Length, no HTTP library in between. httpx spent about 0.5 ms of the 2 shared cores per
    request (0.8 cores at 1,100 requests/s), which the servers under test then lacked; this one
    spends a fraction of that, the same for every server measured."""

    def __init__(self, url: str, timeout: float = 30.0):
        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, b""
        return s

    def request(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to the URL's path; (status, response body)."""
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        msg = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body
        for attempt in (0, 1):  # a keep-alive connection the server closed: once more on a new one
            sock = self.sock or self._connect()
            try:
                sock.sendall(msg)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                if attempt or self.buf:
                    raise
        raise AssertionError("unreachable")

    def _read_more(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._read_more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if b"content-length" not in fields:
            raise ValueError(f"answer without Content-Length ({fields.get(b'transfer-encoding', b'?').decode()})")
        n = int(fields[b"content-length"])
        while len(self.buf) < n:
            self._read_more()
        body, self.buf = self.buf[:n], self.buf[n:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""
