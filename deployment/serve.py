"""Starting the model server from the main environment: one place for its command line,
its environment variables and the wait until it answers. The CLI, the serving benchmark and
the serving tests all launch it through here; the server itself is serving/server.py and runs
in .venv-serve."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(store_url: str, predictions_db: str, model_cache: Path, *, s3_endpoint_url: str | None = None,
                poll_s: float | None = None, feedback_tokens: str = "", predict_tokens: str = "") -> dict[str, str]:
    """The variables serving/model.py reads, over the current environment. ``feedback_tokens``:
    ``labeller:token`` entries (empty: the server refuses feedback)."""
    env = {**os.environ, "MNISTCL_STORE_URL": str(store_url), "MNISTCL_PREDICTIONS_DB": str(predictions_db),
           "MNISTCL_MODEL_CACHE": str(model_cache), "PYTHONPATH": str(ROOT),
           "MNISTCL_FEEDBACK_TOKENS": feedback_tokens, "MNISTCL_PREDICT_TOKENS": predict_tokens}
    if s3_endpoint_url:
        env["MNISTCL_S3_ENDPOINT_URL"] = s3_endpoint_url
    if poll_s is not None:
        env["MNISTCL_SERVE_POLL_S"] = str(poll_s)
    return env


def command(*, host: str = "127.0.0.1", port: int, metrics_port: int, workers: int = 1, threads: int = 4,
            log_level: str | None = None, grpc_port: int = 0, extra_args: tuple[str, ...] = ()) -> list[str]:
    args = [str(SERVE_PYTHON), "-m", "serving.server", "--host", host, "--port", str(port),
            "--metrics-port", str(metrics_port), "--workers", str(workers), "--threads", str(threads)]
    if grpc_port:
        args += ["--grpc-port", str(grpc_port)]
    return args + (["--log-level", log_level] if log_level else []) + list(extra_args)


def start(store_url: str, predictions_db: str, model_cache: Path, log: Path, *, port: int, metrics_port: int,
          workers: int = 1, threads: int = 4, grpc_port: int = 0, poll_s: float | None = None,
          log_level: str | None = "WARNING", timeout: float = 120.0, feedback_tokens: str = "",
          predict_tokens: str = "", extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
    """Start the model server in its own process group on 127.0.0.1, output to ``log``; return the
    process once it answers (``extra_args`` to serving/server.py, ``extra_env`` over its
    environment). Raises RuntimeError with the log's tail (after stopping it) if it does not answer
    within ``timeout`` seconds."""
    import subprocess

    proc = subprocess.Popen(
        command(port=port, metrics_port=metrics_port, workers=workers, threads=threads, log_level=log_level,
                grpc_port=grpc_port, extra_args=extra_args),
        cwd=ROOT, env={**environment(store_url, predictions_db, model_cache, poll_s=poll_s,
                                     feedback_tokens=feedback_tokens, predict_tokens=predict_tokens),
                       **(extra_env or {})},
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    ready = wait_until_ready(f"http://127.0.0.1:{port}", timeout=timeout, alive=lambda: proc.poll() is None)
    while ready and grpc_port and not _accepts(grpc_port):  # the gRPC process loads its model separately
        if time.time() > deadline:
            ready = False
        time.sleep(0.2)
    if not ready:
        code = proc.poll()
        stop(proc)
        why = f"exited with code {code}" if code is not None else f"did not start within {timeout:.0f} s"
        raise RuntimeError(f"the model server {why}:\n{Path(log).read_text()[-3000:]}")
    return proc


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_http_ok(url: str, timeout: float, interval: float = 0.3, alive=None) -> bool:
    """Poll ``url`` until it answers 200; False after ``timeout`` seconds, or as soon as
    ``alive()`` (if given) says the process that should answer has gone."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline and (alive is None or alive()):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return False


def wait_until_ready(url: str, timeout: float = 60.0, alive=None) -> bool:
    """Poll the model server's ``/health/status`` until it answers 200 (see :func:`wait_http_ok`)."""
    return wait_http_ok(f"{url}/health/status", timeout, alive=alive)


def worker_connections(server_pid: int, port: int) -> dict[int, int]:
    """The server's worker processes (those listening on ``port``; gunicorn's master is the server
    process itself) and the established connections each holds there: how the connections are
    spread (serving/balance.py)."""
    import psutil

    held = {}
    for proc in psutil.Process(server_pid).children(recursive=True):
        try:
            conns = [c for c in proc.net_connections(kind="tcp") if c.laddr and c.laddr.port == port]
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN for c in conns):
            held[proc.pid] = sum(c.status == psutil.CONN_ESTABLISHED for c in conns)
    return held


def stop(proc, term_wait: float = 20.0, kill_wait: float = 10.0) -> None:
    """Stop a process started with ``start_new_session``: its whole group, SIGTERM, then SIGKILL."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
