"""A gRPC client for the model server (runs in .venv-serve, which has Seldon's protos).

  python -m serving.grpc_client 127.0.0.1:5000 predict images.npy          # prints the response as JSON
  python -m serving.grpc_client 127.0.0.1:5000 feedback REQUEST_ID 3 1 4   # true labels for a prediction
                                                                          # (token: $MNISTCL_FEEDBACK_TOKEN)
  python -m serving.grpc_client 127.0.0.1:5000 load images.npy --seconds 10 --concurrency 8

Images are sent as a Seldon ``tensor`` (float64 values, shape (n, 28, 28), 0-255 or 0-1).
``load`` prints requests per second, p50/p99 latency, status codes and the request ids
(for the serving benchmark), all as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from serving.loadgen import drive


def message(images: np.ndarray):
    from seldon_core.proto import prediction_pb2

    msg = prediction_pb2.SeldonMessage()
    msg.data.tensor.shape.extend(images.shape)
    msg.data.tensor.values.extend(images.astype(np.float64).reshape(-1))
    return msg


def stub(target: str):
    import grpc
    from seldon_core.proto import prediction_pb2_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 8_000_000),
                                                     ("grpc.max_send_message_length", 8_000_000)])
    return prediction_pb2_grpc.ModelStub(channel)


def to_json(msg) -> dict:
    from seldon_core.utils import seldon_message_to_json

    return seldon_message_to_json(msg)


def load(target: str, images: np.ndarray, seconds: float, concurrency: int) -> dict:
    import grpc

    msg = message(images)

    def send(s):
        try:
            r = s.Predict(msg, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name, False, None, True
        return "OK", True, r.meta.tags["request_id"].string_value, False

    return drive(lambda: stub(target), send, seconds, concurrency)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="host:port of the gRPC server")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict")
    p.add_argument("images", help=".npy file of shape (n, 28, 28)")
    f = sub.add_parser("feedback")
    f.add_argument("request_id")
    f.add_argument("labels", nargs="+", type=int)
    lo = sub.add_parser("load")
    lo.add_argument("images")
    lo.add_argument("--seconds", type=float, default=10)
    lo.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)

    import grpc
    from seldon_core.proto import prediction_pb2

    try:
        if args.cmd == "predict":
            out = to_json(stub(args.target).Predict(message(np.load(args.images)), timeout=30))
        elif args.cmd == "feedback":
            fb = prediction_pb2.Feedback()
            fb.request.meta.tags["request_id"].string_value = args.request_id
            fb.truth.data.ndarray.extend(args.labels)
            token = os.environ.get("MNISTCL_FEEDBACK_TOKEN")
            out = to_json(stub(args.target).SendFeedback(
                fb, timeout=30, metadata=[("authorization", f"Bearer {token}")] if token else None))
        else:
            out = load(args.target, np.load(args.images), args.seconds, args.concurrency)
            out.pop("latencies_s", None)
    except grpc.RpcError as exc:
        print(json.dumps({"error": exc.code().name, "details": exc.details()}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
