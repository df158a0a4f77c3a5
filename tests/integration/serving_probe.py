"""Run in the serving environment (.venv-serve, which has Seldon's client and protos) by
tests/integration/test_edge.py; prints one JSON object.

  python tests/integration/serving_probe.py grpc-corpus GRPC_TARGET TOKEN_FILE CASES.npz
  python tests/integration/serving_probe.py seldon-client REST_HOSTPORT GRPC_TARGET TOKEN_FILE IMAGES.npy LABELS.npy

grpc-corpus: hostile gRPC requests, each with the status code and details it got.
seldon-client: SeldonClient itself (REST and gRPC, through its gateway API) predicting and sending
feedback with labels, reward-only feedback, and its microservice API (form bodies, refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
import numpy as np
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc
from seldon_core.utils import json_to_feedback, json_to_seldon_message


def stub(target: str):
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64_000_000),
                                                     ("grpc.max_receive_message_length", 64_000_000)])
    return prediction_pb2_grpc.ModelStub(channel)


def tensor(shape, values) -> prediction_pb2.SeldonMessage:
    msg = prediction_pb2.SeldonMessage()
    msg.data.tensor.shape.extend(shape)
    msg.data.tensor.values.extend(values)
    return msg


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_json(depth: int) -> bytes:
    """A SeldonMessage whose jsonData is a Struct nested ``depth`` deep, as bytes (protobuf's pure
    Python implementation takes exponential time to build one as an object)."""
    struct = b""
    for _ in range(depth):
        struct = _field(1, _field(1, b"a") + _field(2, _field(5, struct)))  # fields{"a": Value{struct_value}}
    return _field(6, _field(5, struct))  # SeldonMessage.jsonData = Value{struct_value}


def call(fn, msg, metadata=None) -> dict:
    try:
        out = fn(msg, timeout=30, metadata=metadata)
    except grpc.RpcError as exc:
        return {"code": exc.code().name, "details": exc.details() or ""}
    return {"code": "OK", "tags": json.loads(json.dumps(dict(out.meta.tags), default=str)),
            "request_id": out.meta.tags["request_id"].string_value if "request_id" in out.meta.tags else None}


def grpc_corpus(target: str, token: str, cases: dict) -> dict:
    s = stub(target)
    x = cases["x"].astype(np.float64)
    auth = [("authorization", f"Bearer {token}")]
    good = call(s.Predict, tensor(x.shape, x.reshape(-1)))
    rid = good["request_id"]
    bad_png = {k: bytes(cases[k]) for k in cases.files if k.startswith("png_")}
    predict = {
        "tensor with a negative dimension": tensor([-1, 28, 28], [0.0] * 784),
        "tensor with a zero dimension": tensor([0, 28, 28], []),
        "tensor shape of 2^30 images": tensor([64, 1 << 30], [0.0] * 10),
        "tensor values that do not fit its shape": tensor([2, 28, 28], [0.0] * 784),
        "tensor of four dimensions": tensor([1, 1, 28, 28], [0.0] * 784),
        "tensor with NaN": tensor([1, 28, 28], [float("nan")] * 784),
        "tensor with infinity": tensor([1, 28, 28], [float("inf")] * 784),
        "tensor values over 255": tensor([1, 28, 28], [300.0] * 784),
        "tensor of 65 images": tensor([65, 784], [0.0] * 65 * 784),
        "ragged ndarray": json_to_seldon_message({"data": {"ndarray": [[0] * 784, [0] * 10]}}),
        "ndarray of strings": json_to_seldon_message({"data": {"ndarray": [["a"] * 784]}}),
        "empty message": prediction_pb2.SeldonMessage(),
        "strData that is not base64": json_to_seldon_message({"strData": "%%% not base64 %%%"}),
        "jsonData png that is not a list": json_to_seldon_message({"jsonData": {"png": "abc"}}),
        "meta.tags.scale unknown": json_to_seldon_message({"data": {"ndarray": x[:1].tolist()},
                                                          "meta": {"tags": {"scale": "0-65535"}}}),
        "message over the size limit": tensor([4000, 784], [0.5] * 4000 * 784),
    }
    for name, data in bad_png.items():
        msg = prediction_pb2.SeldonMessage()
        msg.binData = data
        predict[f"binData {name[4:]}"] = msg
    out = {"predict": {name: call(s.Predict, msg) for name, msg in predict.items()}}
    raw = grpc.insecure_channel(target).unary_unary("/seldon.protos.Model/Predict", request_serializer=None,
                                                    response_deserializer=prediction_pb2.SeldonMessage.FromString)
    for depth in (60, 200, 5000):
        out["predict"][f"jsonData nested {depth} deep"] = call(raw, nested_json(depth))

    def fb(request_id, labels, metadata=auth):
        return call(s.SendFeedback, json_to_feedback({"request": {"meta": {"tags": {"request_id": request_id}}},
                                                      "truth": {"data": {"ndarray": labels}}}), metadata)

    n = len(x)
    labels = [int(v) for v in cases["y"]]
    out["feedback"] = {
        "no token": fb(rid, labels, None),
        "wrong token": fb(rid, labels, [("authorization", "Bearer not-the-token-0123456789")]),
        "token of another scheme": fb(rid, labels, [("authorization", f"Token {token}")]),
        "unknown request id": fb("f" * 32, labels),
        "labels outside 0-9": fb(rid, [11] * n),
        "too few labels": fb(rid, labels[:1]),
        "feedback message without anything": call(s.SendFeedback, prediction_pb2.Feedback(), auth),
    }
    out["feedback"]["valid, token in x-auth-token"] = fb(rid, labels, [("x-auth-token", token)])
    out["feedback"]["the same labels again"] = fb(rid, labels)
    out["feedback"]["different labels afterwards"] = fb(rid, [(v + 1) % 10 for v in labels])
    out["after"] = call(s.Predict, tensor(x.shape, x.reshape(-1)))
    out["good"] = good
    return out


def seldon_client(rest: str, grpc_target: str, token: str, x: np.ndarray, y: np.ndarray) -> dict:
    from seldon_core.seldon_client import SeldonClient

    def truth(labels):  # SeldonClient's feedback sends no headers: the token rides in the truth's tags
        return json_to_seldon_message({"data": {"ndarray": [int(v) for v in labels]},
                                       "meta": {"tags": {"feedback_token": token}}})

    out: dict = {}
    for transport, endpoint, payload in (("rest", rest, "ndarray"), ("grpc", grpc_target, "tensor")):
        sc = SeldonClient(gateway="istio", transport=transport, gateway_endpoint=endpoint,
                          deployment_name="mnist-continual", client_return_type="proto")
        p = sc.predict(data=x, payload_type=payload, gateway_prefix="" if transport == "rest" else None)
        res = {"predict_success": p.success, "predict_msg": p.msg}
        if p.success:
            tags = p.response.meta.tags
            res.update(request_id=tags["request_id"].string_value, puid=p.response.meta.puid,
                       digits=[int(v.number_value) for v in tags["digits"].list_value.values])
            f = sc.feedback(prediction_request=p.request, prediction_response=p.response, prediction_truth=truth(y),
                            reward=1.0, gateway_prefix="" if transport == "rest" else None)
            res.update(feedback_success=f.success, feedback_msg=f.msg,
                       labelled=f.response.meta.tags["labelled"].number_value if f.success else None)
            # Reward-only feedback naming the request by Seldon's puid alone (no request id tag).
            by_puid = prediction_pb2.SeldonMessage()
            by_puid.meta.puid = p.response.meta.puid
            by_puid.meta.tags["feedback_token"].string_value = token
            r = sc.feedback(prediction_request=by_puid, reward=0.25,
                            gateway_prefix="" if transport == "rest" else None)
            res.update(reward_success=r.success, reward_msg=r.msg)
            anon = sc.feedback(prediction_request=p.request, prediction_response=p.response,
                               prediction_truth=json_to_seldon_message({"data": {"ndarray": [int(v) for v in y]}}),
                               gateway_prefix="" if transport == "rest" else None)
            res.update(anonymous_success=anon.success, anonymous_msg=str(anon.msg)[:300])
        out[transport] = res
    # The microservice API posts form bodies (json=...), which the edge refuses (415).
    sc = SeldonClient(microservice_endpoint=rest, transport="rest")
    m = sc.microservice(data=x, method="predict", payload_type="ndarray")
    out["microservice"] = {"success": m.success, "msg": str(m.msg)[:300]}
    return out


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "grpc-corpus":
        target, token_file, cases = args
        result = grpc_corpus(target, Path(token_file).read_text().strip(), np.load(cases))
    else:
        rest, target, token_file, images, labels = args
        result = seldon_client(rest, target, Path(token_file).read_text().strip(), np.load(images), np.load(labels))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
