"""Start the Seldon Core Python wrapper for serving.model.MnistModel, bound to 127.0.0.1.

seldon-core-microservice binds 0.0.0.0 unconditionally; this launcher builds the same Flask
apps with the wrapper's own functions (get_rest_microservice, get_metrics_microservice,
UserModelApplication) and binds them where asked: 127.0.0.1 unless --host says otherwise.

  python -m serving.server --port 9000 --metrics-port 6000 --workers 1 --threads 4 [--grpc-port 5000]

The REST port is served by gunicorn with uvicorn's worker class: an event loop per worker process
answers predict requests (serving/asgi.py) and hands everything else to the wrapper's Flask app on
--threads threads. --no-fast-path: the Flask app on gunicorn's threads for everything.

With --grpc-port, the wrapper's own gRPC server (seldon.protos.Model/Predict, SendFeedback)
runs in one more process on the same host, serving the same component class.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
from functools import partial

from serving import edge
from serving.asgi import EdgeASGI
from serving.model import MnistModel
from serving.worker import TABLE

log = logging.getLogger(__name__)


def atomic_metrics(worker_id_func=os.getpid):
    """Seldon's shared metrics store with its update made atomic, and pre-counted histograms.

    The wrapper calls ``update([])`` on every request and Seldon's update reads the worker's
    numbers under the lock, adds, then writes them back under the lock again, so an update between
    the two overwrites another's increments (measured: Prometheus counted 344 of 360 images
    served; one thread counting 300 while another sent empty updates ended at 0). Here an empty
    update does nothing and real ones are serialised from read to write (a second lock: Seldon's
    own is taken twice inside its update and is not reentrant).

    Besides Seldon's COUNTER, GAUGE and TIMER items, ``update`` takes ``HISTOGRAM`` items whose
    value is ``(counts per Seldon bin, sum)``, already counted: what a TIMER would become after one
    observation each, in one addition. Seldon turns each TIMER observation into a histogram of one
    value with ``np.histogram`` (a profile of the server: a tenth of its CPU went there, in bursts
    at every flush); the component counts its confidences and latencies with one ``np.histogram``
    per flush instead (serving/model.py). The series are Seldon's TIMER series, exposed as before."""
    import numpy as np
    from seldon_core.metrics import BINS, SeldonMetrics

    class AtomicSeldonMetrics(SeldonMetrics):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._update_lock = self._manager.Lock()  # shared by the workers, like Seldon's own

        def update(self, custom_metrics, method):
            if not custom_metrics:
                return
            with self._update_lock:
                with self._lock:
                    worker_data = self.data.get(self.worker_id_func(), {})
                for m in custom_metrics:
                    kind = m.get("type", "COUNTER")
                    tags = {**m.get("tags", {}), "method": method}
                    key = ("TIMER" if kind == "HISTOGRAM" else kind, m["key"], SeldonMetrics._generate_tags_key(tags))
                    if kind == "COUNTER":
                        worker_data[key] = {"value": worker_data.get(key, {}).get("value", 0) + m["value"], "tags": tags}
                    elif kind in ("TIMER", "HISTOGRAM"):
                        vals, sumv = worker_data.get(key, {}).get("value", (list(np.zeros(len(BINS) - 1)), 0))
                        if kind == "TIMER":  # milliseconds, as Seldon reads them
                            vals, sumv = SeldonMetrics._update_hist(m["value"] / 1000, vals, sumv)
                        else:  # plain floats: the manager pickles the whole dict at every update
                            counts, total = m["value"]
                            vals, sumv = (np.asarray(vals, np.float64) + np.asarray(counts)).tolist(), sumv + total
                        worker_data[key] = {"value": (vals, sumv), "tags": tags}
                    elif kind == "GAUGE":
                        worker_data[key] = {"value": m["value"], "tags": tags}
                    else:
                        log.error("unknown metrics type: %s", kind)
                with self._lock:
                    self.data[self.worker_id_func()] = worker_data

        def update_reward(self, reward):
            """Off: the wrapper calls it with whatever reward a feedback carries, before the model
            has checked its token (a NaN poisoned the counter for good). Rewards that pass the
            checks are in the prediction log's rewards table."""
            return None

    return AtomicSeldonMetrics(worker_id_func=worker_id_func)


def build_apps(user_object, max_bytes: int, cors_origins: list[str] | None = None, fast_path: bool = True,
               threads: int = 4):
    """The wrapper's REST app behind our edge (serving/edge.py), and its metrics app. With
    ``fast_path`` the REST app is ASGI (serving/asgi.py: ordinary predict requests on the event
    loop, the rest through the Flask app on ``threads`` threads); without it, the Flask app (WSGI)."""
    from seldon_core.wrapper import get_metrics_microservice, get_rest_microservice

    seldon_metrics = atomic_metrics()
    app = get_rest_microservice(user_object, seldon_metrics)
    edge.install(app, max_bytes=max_bytes, cors_origins=cors_origins)
    metrics_app = get_metrics_microservice(seldon_metrics)
    edge.install(metrics_app, max_bytes=max_bytes)  # CORS off there too
    if fast_path:
        app = EdgeASGI(app, user_object, seldon_metrics, max_bytes=max_bytes, threads=threads)
    return app, metrics_app, seldon_metrics


def grpc_server(user_object, seldon_metrics, threads: int, max_bytes: int):
    """Seldon's gRPC services Model and Seldon (Predict, SendFeedback; what the wrapper's
    get_grpc_server registers for a model, and what SeldonClient calls), with the edge's servicer
    (credentials from the call's metadata) and messages limited to ``max_bytes``."""
    from concurrent import futures

    import grpc
    from grpc_reflection.v1alpha import reflection
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    servicer = edge.grpc_servicer(user_object, seldon_metrics)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         options=[("grpc.so_reuseport", 1), ("grpc.max_send_message_length", max_bytes),
                                  ("grpc.max_receive_message_length", max_bytes)])
    prediction_pb2_grpc.add_ModelServicer_to_server(servicer, server)
    prediction_pb2_grpc.add_SeldonServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (*(prediction_pb2.DESCRIPTOR.services_by_name[s].full_name for s in ("Model", "Seldon")),
         reflection.SERVICE_NAME), server)
    return server


def run_grpc(host: str, port: int, threads: int, seldon_metrics, max_bytes: int) -> None:
    """The gRPC server for a fresh MnistModel, bound to host:port."""
    user_object = MnistModel()
    user_object.seldon_metrics = seldon_metrics
    user_object.load()
    server = grpc_server(user_object, seldon_metrics, threads, max_bytes)
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
    ap.add_argument("--cors-origin", action="append", default=[],
                    help="allow browsers on this origin to call predict and feedback (repeatable; default: none)")
    ap.add_argument("--no-fast-path", action="store_true",
                    help="answer predict through the wrapper's Flask route too (for comparison; slower)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    # Behind the header check in mnistcl/images.py: Pillow itself refuses anything over a few digits'
    # worth of pixels in this process (DecompressionBombError above twice this).
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = 64 * 28 * 28

    from seldon_core.gunicorn_utils import (
        StandaloneApplication,
        UserModelApplication,
        post_worker_init,
        worker_exit,
    )


    user_object = MnistModel()
    app, metrics_app, seldon_metrics = build_apps(user_object, args.max_bytes, args.cors_origin,
                                                  fast_path=not args.no_fast_path, threads=args.threads)
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
                 "timeout": 30, "worker_exit": partial(worker_exit, seldon_metrics=seldon_metrics),
                 # uvicorn's event loop in each worker process (the ASGI app); gunicorn's threads without it
                 **(_fast_path_options() if not args.no_fast_path else {})},
    ).run()


def _fast_path_options() -> dict:
    """gunicorn's options for the ASGI workers: their class, and the master freeing a reaped
    worker's slot in the connection table (serving/balance.py)."""
    return {"worker_class": "serving.worker.ModelServerWorker",
            "child_exit": lambda arbiter, worker: TABLE.release(worker.pid)}


if __name__ == "__main__":
    main()
