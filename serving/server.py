"""Start the Seldon Core Python wrapper for serving.model.MnistModel, bound to 127.0.0.1.

seldon-core-microservice binds 0.0.0.0 unconditionally; this launcher builds the same Flask
apps with the wrapper's own functions (get_rest_microservice, get_metrics_microservice,
UserModelApplication) and binds them where asked: 127.0.0.1 unless --host says otherwise.

  python -m serving.server --port 9000 --metrics-port 6000 --workers 1 --threads 4 [--grpc-port 5000]

With --grpc-port, the wrapper's own gRPC server (seldon.protos.Model/Predict, SendFeedback)
runs in one more process on the same host, serving the same component class.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
from functools import partial

from serving.model import MnistModel


def _json_errors(app, max_bytes: int) -> None:
    """Every client error is a 400 with a JSON message naming the problem (never a 500)."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    def reply(message: str, status: int = 400):
        resp = jsonify({"status": {"status": 1, "info": message, "code": -1, "reason": "MICROSERVICE_BAD_DATA"}})
        resp.status_code = status
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e):
        return reply(f"bad request: payload larger than the {max_bytes:,}-byte limit")

    @app.errorhandler(HTTPException)
    def http_error(e):
        if e.code and 400 <= e.code < 500:
            return reply(f"bad request: {e.description or e.name} (expected a JSON body)")
        return reply(f"{e.name}: {e.description}", e.code or 500)

    app.config["MAX_CONTENT_LENGTH"] = max_bytes


def atomic_metrics(worker_id_func=os.getpid):
    """Seldon's shared metrics store with its update made atomic. The wrapper calls
    ``update([])`` on every request; Seldon's update reads the worker's numbers under the lock,
    adds, then writes them back under the lock again, so an update between the two overwrites
    another's increments (measured: Prometheus counted 344 of 360 images served; one thread
    counting 300 while another sent empty updates ended at 0). Here an empty update does nothing
    and real ones are serialised from read to write (a second lock: Seldon's own is taken
    twice inside its update and is not reentrant)."""
    from seldon_core.metrics import SeldonMetrics

    class AtomicSeldonMetrics(SeldonMetrics):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._update_lock = self._manager.Lock()  # shared by the workers, like Seldon's own

        def update(self, custom_metrics, method):
            if not custom_metrics:
                return
            with self._update_lock:
                super().update(custom_metrics, method)

    return AtomicSeldonMetrics(worker_id_func=worker_id_func)


def build_apps(user_object, max_bytes: int):
    from seldon_core.wrapper import get_metrics_microservice, get_rest_microservice

    seldon_metrics = atomic_metrics()
    app = get_rest_microservice(user_object, seldon_metrics)
    _json_errors(app, max_bytes)
    return app, get_metrics_microservice(seldon_metrics), seldon_metrics


def run_grpc(host: str, port: int, threads: int, seldon_metrics, max_bytes: int) -> None:
    """The wrapper's gRPC server (get_grpc_server) for a fresh MnistModel, bound to host:port."""
    from seldon_core.wrapper import get_grpc_server

    user_object = MnistModel()
    user_object.seldon_metrics = seldon_metrics
    user_object.load()
    server = get_grpc_server(user_object, seldon_metrics, num_threads=threads,
                             annotations={"seldon.io/grpc-max-message-size": str(max_bytes)})
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    server.wait_for_termination()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 only in a container)")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--metrics-port", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--grpc-port", type=int, default=0, help="also serve Seldon's gRPC API here (0: off)")
    ap.add_argument("--grpc-threads", type=int, default=8)
    ap.add_argument("--max-bytes", type=int, default=2_000_000, help="largest request body accepted")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level)

    from seldon_core.gunicorn_utils import (
        StandaloneApplication,
        UserModelApplication,
        post_worker_init,
        worker_exit,
    )


    user_object = MnistModel()
    app, metrics_app, seldon_metrics = build_apps(user_object, args.max_bytes)
    user_object.seldon_metrics = seldon_metrics  # the component records request metrics itself
    # No control socket: gunicorn 23+ would put one per server in ~/.gunicorn, shared by every server.
    common = {"loglevel": args.log_level.lower(), "post_worker_init": post_worker_init, "keepalive": 2,
              "control_socket_disable": True}
    metrics = mp.Process(target=lambda: StandaloneApplication(
        metrics_app, options={**common, "bind": f"{args.host}:{args.metrics_port}", "workers": 1}).run(), daemon=True)
    metrics.start()
    if args.grpc_port:
        # Forked before gunicorn starts any worker or gRPC channel (grpc/grpc#16001).
        mp.Process(target=run_grpc, args=(args.host, args.grpc_port, args.grpc_threads, seldon_metrics, args.max_bytes),
                   daemon=True, name="grpc").start()
    UserModelApplication(
        app, user_object, False, None, "MnistModel",
        options={**common, "bind": f"{args.host}:{args.port}", "workers": args.workers, "threads": args.threads,
                 "timeout": 30, "worker_exit": partial(worker_exit, seldon_metrics=seldon_metrics)},
    ).run()


if __name__ == "__main__":
    main()
