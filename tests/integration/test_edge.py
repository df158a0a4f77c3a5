"""The serving edge under attack: a hostile-input corpus against the real model server (REST
predict, REST feedback, gRPC), SeldonClient itself, and afterwards the server still answers
correctly and the prediction log holds every answered request. The relay's corpus is in
test_prefect_loop.py (it needs the Prefect server); the payload parser's fuzzing in
tests/unit/test_serving_payload.py.
"""

import base64
import io
import json
import socket
import sqlite3
import struct
import subprocess
import zlib

import httpx
import numpy as np
import psutil
import pytest

from deployment import serve as launch
from mnistcl.images import encode_png
from tests.integration.conftest import FEEDBACK_TOKEN, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"
LIMIT = 2_000_000  # serving/server.py --max-bytes default


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("edge")
    with running_server(registry, work, str(work / "pred.db")) as s:
        yield s


# ---------------------------------------------------------------- hostile images
def png(w: int, h: int, mode: str = "L", **save) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG", **save)
    return buf.getvalue()


def image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format=fmt)
    return buf.getvalue()


def lying_png() -> bytes:
    """A 6000x6000 PNG whose header says 28x28 (CRC fixed): the check before decoding passes it,
    Pillow must then stop at 28x28 worth of pixels."""
    big = bytearray(png(6000, 6000))
    big[16:24] = struct.pack(">II", 28, 28)
    big[29:33] = struct.pack(">I", zlib.crc32(bytes(big[12:29])))
    return bytes(big)


def text_bomb_png() -> bytes:
    """A valid 28x28 PNG carrying a zTXt chunk that inflates to 50 MB."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "0" * 50_000_000, zip=True)
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def hostile_pngs() -> dict[str, bytes]:
    return {
        "6000x6000 PNG": png(6000, 6000),
        "30000x30000 PNG header, tiny file": _header_only(30000, 30000),
        "28x2800 PNG": png(28, 2800),
        "JPEG": image_bytes("JPEG"),
        "GIF": image_bytes("GIF"),
        "BMP": image_bytes("BMP"),
        "TIFF": image_bytes("TIFF"),
        "truncated PNG": encode_png(np.zeros((28, 28), np.uint8))[:40],
        "PNG whose header lies about its size": lying_png(),
        "PNG with a 50 MB text chunk": text_bomb_png(),
        "PNG of 70 KB": png(28, 28, pnginfo=_big_text(70_000)),
    }


def _header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _big_text(n: int):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "".join(chr(33 + (i * 7919) % 90) for i in range(n)))
    return info


# ---------------------------------------------------------------- the REST corpus
def rest_cases(x: np.ndarray) -> list[tuple[str, dict, int, str]]:
    """(name, request (method, path, headers, body bytes), expected status, text in the answer)."""
    good = json.dumps({"data": {"ndarray": x[:1].tolist()}}).encode()
    small = '{"data":{"ndarray":[[0]]}}'
    js = {"Content-Type": "application/json"}

    def post(obj=None, raw=None, path=PREDICT, headers=js):
        body = raw if raw is not None else json.dumps(obj).encode()
        return {"method": "POST", "path": path, "headers": headers, "body": body}

    def data(d):
        return post({"data": d})

    img = x[:1].reshape(-1).tolist()
    cases = [
        # method, type, size
        ("GET predict", {"method": "GET", "path": "/predict?json=" + small, "headers": {}, "body": b""}, 405, "POST"),
        ("GET predictions", {"method": "GET", "path": PREDICT, "headers": {}, "body": b""}, 405, ""),
        ("PUT predictions", {**post(raw=good), "method": "PUT"}, 405, ""),
        ("form-encoded predict", post(raw=b"json=" + good, headers={"Content-Type": "application/x-www-form-urlencoded"}),
         415, "application/json"),
        ("multipart predict", post(raw=b"--b\r\nContent-Disposition: form-data; name=\"json\"\r\n\r\n" + good + b"\r\n--b--\r\n",
                                   headers={"Content-Type": "multipart/form-data; boundary=b"}), 415, "application/json"),
        ("text/plain predict", post(raw=good, headers={"Content-Type": "text/plain"}), 415, "application/json"),
        ("no content type", post(raw=good, headers={}), 415, "application/json"),
        ("json in the query string", post(raw=good, path=PREDICT + "?json=" + small), 400, "query parameters"),
        ("URL of 5 KB", post(raw=good, path=PREDICT + "?json=" + good.decode()), 414, "too large"),
        ("body over the limit", post(raw=b" " * (LIMIT + 1)), 413, "limit"),
        ("body five times the limit", post(raw=b"[" * (5 * LIMIT)), 413, "limit"),
        # JSON of any shape
        ("not JSON", post(raw=b"this is not json"), 400, "not valid JSON"),
        ("empty body", post(raw=b""), 400, "empty body"),
        ("invalid UTF-8", post(raw=b'{"data": "\xff\xfe"}'), 400, "UTF-8"),
        ("array nested 100,000 deep", post(raw=b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
        ("object nested 50,000 deep", post(raw=b'{"a":' * 50_000 + b"1" + b"}" * 50_000), 400, "nested too deeply"),
        ("ndarray nested 5,000 deep", post(raw=b'{"data": {"ndarray": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}}"),
         400, "nested too deeply"),
        ("JSON null", post(raw=b"null"), 400, "JSON object"),
        ("JSON string", post(raw=b'"data"'), 400, "JSON object"),
        ("JSON list", post(raw=b"[1, 2]"), 400, "JSON object"),
        ("JSON number 1e999", post(raw=b"1e999"), 400, "JSON object"),
        ("empty object", post({}), 400, "empty request"),
        ("two kinds of data", post({"data": {"ndarray": [img]}, "binData": "AA=="}), 400, "exactly one"),
        ("meta not an object", post({"data": {"ndarray": [img]}, "meta": [1]}), 400, "meta must be an object"),
        ("meta.tags not an object", post({"data": {"ndarray": [img]}, "meta": {"tags": "x"}}), 400, "meta.tags"),
        ("unknown scale", post({"data": {"ndarray": [img]}, "meta": {"tags": {"scale": "0-65535"}}}), 400, "scale"),
        # tensors
        ("tensor with a negative dimension", data({"tensor": {"shape": [-1, 28, 28], "values": img}}), 400, "positive"),
        ("tensor with a zero dimension", data({"tensor": {"shape": [0, 28, 28], "values": []}}), 400, "positive"),
        ("tensor with a float dimension", data({"tensor": {"shape": [1.0, 784], "values": img}}), 400, "positive"),
        ("tensor with a boolean dimension", data({"tensor": {"shape": [True, 784], "values": img}}), 400, "positive"),
        ("tensor with a string dimension", data({"tensor": {"shape": ["1", "784"], "values": img}}), 400, "positive"),
        ("tensor shape of 2^40 values", data({"tensor": {"shape": [1 << 20, 1 << 20], "values": [0]}}), 400, "limit"),
        ("tensor shape not a list", data({"tensor": {"shape": 784, "values": img}}), 400, "positive"),
        ("tensor of four dimensions", data({"tensor": {"shape": [1, 1, 28, 28], "values": img}}), 400, "1 to 3"),
        ("tensor values that do not fit", data({"tensor": {"shape": [2, 784], "values": img}}), 400, "do not fit"),
        ("tensor values nested", data({"tensor": {"shape": [1, 784], "values": [img]}}), 400, "flat list"),
        ("tensor values a string", data({"tensor": {"shape": [1, 784], "values": "0" * 784}}), 400, "must be a list"),
        ("tensor without values", data({"tensor": {"shape": [1, 784]}}), 400, "shape and values"),
        ("ndarray and tensor both", data({"ndarray": [img], "tensor": {"shape": [1, 784], "values": img}}), 400,
         "not both"),
        # ndarrays
        ("ndarray of 65 images", data({"ndarray": np.zeros((65, 784), int).tolist()}), 400, "limit is 64"),
        ("ragged ndarray", data({"ndarray": [img, img[:10]]}), 400, "equal-length"),
        ("ndarray of strings", data({"ndarray": [["a"] * 784]}), 400, "numeric"),
        ("ndarray of objects", data({"ndarray": [[{"a": 1}] * 784]}), 400, "numeric"),
        ("ndarray a string", data({"ndarray": "0" * 784}), 400, "list of rows"),
        ("ndarray of the wrong shape", data({"ndarray": [[1, 2, 3]]}), 400, "shape"),
        ("ndarray with NaN", post(raw=b'{"data": {"ndarray": [[' + b",".join([b"NaN"] * 784) + b"]]}}"), 400, "NaN"),
        ("ndarray with Infinity", post(raw=b'{"data": {"ndarray": [[' + b",".join([b"Infinity"] * 784) + b"]]}}"),
         400, "NaN or infinite"),
        ("ndarray with 10^400", post(raw=b'{"data": {"ndarray": [[1' + b"0" * 400 + b"]]}}"), 400, "numeric"),
        ("values over 255", data({"ndarray": np.full((1, 784), 300).tolist()}), 400, "values must be in"),
        ("negative values", data({"ndarray": np.full((1, 784), -2).tolist()}), 400, "values must be in"),
        ("empty ndarray", data({"ndarray": []}), 400, "empty"),
        # images
        ("binData not base64", post({"binData": "%%%"}), 400, "base64"),
        ("binData not a string", post({"binData": 12}), 400, "base64 string"),
        ("binData of 1 MB base64", post({"binData": "A" * 1_000_000}), 400, "base64 characters"),
        ("strData of 65 images", post({"strData": ",".join(["AAAA"] * 65)}), 400, "limit is 64"),
        ("jsonData png not a list", post({"jsonData": {"png": "AAAA"}}), 400, "jsonData must be"),
        ("jsonData png of numbers", post({"jsonData": {"png": [1, 2]}}), 400, "not a string"),
        ("jsonData of 65 images", post({"jsonData": {"png": ["AAAA"] * 65}}), 400, "limit is 64"),
        # routes this component does not serve
        ("transform-input", post(raw=good, path="/transform-input"), 404, "not found"),
        ("route", post(raw=good, path="/route"), 404, "not found"),
        ("aggregate", post(raw=good, path="/aggregate"), 404, "not found"),
    ]
    for name, raw in hostile_pngs().items():
        needle = {"JPEG": "not a PNG", "GIF": "not a PNG", "BMP": "not a PNG", "TIFF": "not a PNG",
                  "truncated PNG": "not a readable image", "PNG whose header lies about its size": "",
                  "PNG with a 50 MB text chunk": "", "PNG of 70 KB": "at most"}.get(name, "expected 28x28")
        if name == "6000x6000 PNG" and len(raw) > 65_536:
            needle = "base64 characters"
        status = 200 if name == "PNG whose header lies about its size" else 400
        cases.append((f"binData {name}", post({"binData": base64.b64encode(raw).decode()}), status, needle))
    return cases


def feedback_cases(rid: str, labels: list[int]) -> list[tuple[str, dict, int, str]]:
    tok = {"Content-Type": "application/json", "Authorization": f"Bearer {FEEDBACK_TOKEN}"}

    def fb(obj=None, headers=tok, raw=None, path=FEEDBACK):
        return {"method": "POST", "path": path, "headers": headers,
                "body": raw if raw is not None else json.dumps(obj).encode()}

    body = {"request": {"meta": {"tags": {"request_id": rid}}}, "truth": {"data": {"ndarray": labels}}}
    js = {"Content-Type": "application/json"}
    return [
        ("feedback without a token", fb(body, headers=js), 401, "feedback token"),
        ("feedback with a wrong token", fb(body, headers={**js, "Authorization": "Bearer not-the-token-0123"}), 403,
         "not valid"),
        ("feedback with a token of another scheme", fb(body, headers={**js, "Authorization": f"Token {FEEDBACK_TOKEN}"}),
         401, "feedback token"),
        ("feedback with a wrong token in the message",
         fb({**body, "truth": {**body["truth"], "meta": {"tags": {"feedback_token": "guess-guess-guess"}}}}, headers=js),
         403, "not valid"),
        ("feedback with a 20 KB Authorization header", fb(body, headers={**tok, "Authorization": "Bearer " + "x" * 20_000}),
         431, "too large"),
        ("feedback as a form", fb(raw=b"json=" + json.dumps(body).encode(),
                                  headers={**tok, "Content-Type": "application/x-www-form-urlencoded"}), 415, "application/json"),
        ("feedback by GET", {"method": "GET", "path": "/send-feedback?json=" + json.dumps(body), "headers": tok, "body": b""},
         405, ""),
        ("feedback truth not an object", fb({"truth": 5}), 400, "not a Seldon Feedback"),
        ("feedback request a list", fb({"request": [1, 2]}), 400, "not a Seldon Feedback"),
        ("feedback nested 50,000 deep", fb(raw=b'{"request": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001), 400, "nested"),
        ("feedback for an unknown request", fb({**body, "request": {"meta": {"tags": {"request_id": "f" * 32}}}}), 400,
         "no prediction"),
        ("feedback without a request id", fb({"truth": body["truth"]}), 400, "request id"),
        ("feedback labels outside 0-9", fb({**body, "truth": {"data": {"ndarray": [11] * len(labels)}}}), 400, "0-9"),
        ("feedback labels of strings", fb({**body, "truth": {"data": {"ndarray": ["seven"] * len(labels)}}}), 400, "0-9"),
        ("feedback with too few labels", fb({**body, "truth": {"data": {"ndarray": labels[:1]}}}), 400, "labels were given"),
        ("feedback with empty labels", fb({**body, "truth": {"data": {"ndarray": []}}}), 400, "0-9"),
        ("feedback reward NaN", fb(raw=json.dumps({"request": body["request"]}).encode()[:-1] + b', "reward": NaN}'), 400,
         "not a Seldon Feedback"),
        ("feedback without a token carrying 1.9 MB of request data",
         fb({"request": {"data": {"ndarray": [0] * 630_000}}}, headers=js), 401, "feedback token"),
        ("feedback with a gateway's Authorization and the token in the message",
         fb({**body, "truth": {"data": {"ndarray": labels[:1]}, "meta": {"tags": {"feedback_token": FEEDBACK_TOKEN}}}},
            headers={**js, "Authorization": "Bearer the-gateways-own-credential"}), 400, "labels were given"),
    ]


def send(server, case: dict) -> httpx.Response:
    return httpx.request(case["method"], server["url"] + case["path"], content=case["body"] or None,
                         headers=case["headers"], timeout=30)


def server_rss(server) -> dict[int, int]:
    """Resident memory of each of the server's processes (gunicorn's arbiter, its worker, the
    metrics and gRPC processes: all carry the launch command line), in bytes by pid."""
    out = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "serving.server" in cmd and str(server["port"]) in cmd:
            try:
                out[p.pid] = p.memory_info().rss
            except psutil.Error:
                pass
    return out


def grown(before: dict[int, int], now: dict[int, int]) -> int:
    """The most any one process grew, in bytes."""
    return max((now[pid] - before.get(pid, now[pid]) for pid in now), default=0)


def test_hostile_rest_and_grpc_corpus(server, mnist_small, tmp_path):
    """Each hostile request gets the status that names its problem; none gets a 500 or a reset;
    memory stays bounded; afterwards the server answers exactly as before and the log holds every
    request it answered 200, with the feedback written once."""
    x, y = mnist_small["test"]
    reference = httpx.post(server["url"] + PREDICT, json={"data": {"ndarray": x[:4].tolist()}}, timeout=10).json()
    rid = reference["meta"]["tags"]["request_id"]
    rss_before = server_rss(server)
    assert len(rss_before) >= 3, rss_before  # arbiter, worker, metrics (and gRPC)
    seen, failures, worst = 0, [], (0, "")
    for name, case, status, needle in rest_cases(x) + feedback_cases(rid, [int(v) for v in y[:4]]):
        r = send(server, case)
        seen += 1
        worst = max(worst, (grown(rss_before, server_rss(server)), name))
        if r.status_code != status or needle.lower() not in r.text.lower():
            failures.append((name, r.status_code, r.text[:200]))
    for f in failures:
        print("FAIL", f[0], f[1], f[2][:150].replace("\n", " "))
    assert not failures, [f[:2] for f in failures]

    # Write-once feedback: the first labels stick, the same labels again change nothing, different
    # ones are refused with 409 and kept for review with who sent them.
    def fb(labels, headers):
        return httpx.post(server["url"] + FEEDBACK, timeout=10, headers=headers, json={
            "request": {"meta": {"tags": {"request_id": rid}}}, "truth": {"data": {"ndarray": labels}}})

    bearer = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    first = fb([int(v) for v in y[:4]], bearer)
    assert first.status_code == 200 and first.json()["meta"]["tags"]["labeller"] == "tester", first.text
    basic = {"Authorization": "Basic " + base64.b64encode(f"tester:{FEEDBACK_TOKEN}".encode()).decode()}
    assert fb([int(v) for v in y[:4]], basic).status_code == 200  # the same labels, HTTP Basic: no change
    flipped = [(int(v) + 1) % 10 for v in y[:4]]
    conflict = fb(flipped, bearer)
    assert conflict.status_code == 409 and "labels are written once" in conflict.text, conflict.text
    seen += 3

    # gRPC: the same checks, through the real gRPC server.
    import numpy.lib.npyio  # noqa: F401 - np.savez below

    pngs = {f"png_{k}": np.frombuffer(v, np.uint8) for k, v in hostile_pngs().items()
            if k in ("6000x6000 PNG", "30000x30000 PNG header, tiny file", "JPEG", "truncated PNG",
                     "PNG with a 50 MB text chunk")}
    np.savez(tmp_path / "cases.npz", x=x[4:8], y=y[4:8], **pngs)
    (tmp_path / "token").write_text(FEEDBACK_TOKEN)
    out = subprocess.run([str(launch.SERVE_PYTHON), "tests/integration/serving_probe.py", "grpc-corpus", server["grpc"],
                          str(tmp_path / "token"), str(tmp_path / "cases.npz")],
                         cwd=launch.ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    g = json.loads(out.stdout.strip().splitlines()[-1])
    assert g["good"]["code"] == "OK" and g["after"]["code"] == "OK"
    for name, res in g["predict"].items():
        expect = ("RESOURCE_EXHAUSTED" if "size limit" in name else
                  "INTERNAL" if name in ("jsonData nested 200 deep", "jsonData nested 5000 deep") else "INVALID_ARGUMENT")
        assert res["code"] == expect, (name, res)  # the last two: protobuf's own recursion limit
    expected = {"tensor with a negative dimension": "positive", "tensor of 65 images": "limit",
                "tensor with NaN": "NaN", "binData JPEG": "not a PNG", "binData 6000x6000 PNG": "",
                "binData 30000x30000 PNG header, tiny file": "expected 28x28", "message over the size limit": ""}
    for name, needle in expected.items():
        assert needle in g["predict"][name]["details"], (name, g["predict"][name])
    fbk = g["feedback"]
    assert fbk["no token"]["code"] == "UNAUTHENTICATED" and "feedback token" in fbk["no token"]["details"]
    assert fbk["wrong token"]["code"] == "PERMISSION_DENIED" and "not valid" in fbk["wrong token"]["details"]
    assert fbk["valid, token in x-auth-token"]["code"] == "OK", fbk
    assert fbk["the same labels again"]["code"] == "OK"
    assert fbk["different labels afterwards"]["code"] == "ALREADY_EXISTS", fbk
    assert "labels are written once" in fbk["different labels afterwards"]["details"], fbk
    for name in ("unknown request id", "labels outside 0-9", "too few labels", "feedback message without anything"):
        assert fbk[name]["code"] != "OK", (name, fbk[name])
    seen += len(g["predict"]) + len(fbk)

    # Afterwards: the same answer as before, and the log is complete and right.
    again = httpx.post(server["url"] + PREDICT, json={"data": {"ndarray": x[:4].tolist()}}, timeout=10).json()
    assert np.allclose(again["data"]["ndarray"], reference["data"]["ndarray"])
    answered = {rid, g["good"]["request_id"], g["after"]["request_id"], again["meta"]["tags"]["request_id"]}
    with sqlite3.connect(server["db"]) as c:
        logged = {r[0] for r in c.execute("SELECT DISTINCT request_id FROM predictions")}
        labels = [r[0] for r in c.execute("SELECT feedback FROM predictions WHERE request_id = ? ORDER BY item", (rid,))]
        who = {r[0] for r in c.execute("SELECT labeller FROM predictions WHERE request_id = ?", (rid,))}
        conflicts = c.execute("SELECT existing, proposed, labeller FROM feedback_conflicts WHERE request_id = ?",
                              (rid,)).fetchall()
        n_items = c.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert answered <= logged
    # Every accepted request is a logged one: the corpus only added the lying-header PNG (200).
    assert n_items == 4 + 4 + 4 + 4 + 1, n_items
    assert labels == [int(v) for v in y[:4]] and who == {"tester"}
    assert sorted(conflicts) == sorted((int(a), int(b), "tester") for a, b in zip(y[:4], flipped, strict=True))
    assert seen >= 60 + 25, seen
    rest_worst = worst
    worst = max(worst, (grown(rss_before, server_rss(server)), "the gRPC corpus"))
    added = worst[0] / 2**20
    print(f"edge corpus: {seen} cases; the most any server process grew: {added:.1f} MiB (by {worst[1]}; "
          f"over REST {rest_worst[0] / 2**20:.1f} MiB by {rest_worst[1]}); "
          f"processes {sorted(round(v / 2**20) for v in rss_before.values())} MiB before")
    assert added < 200, f"the corpus added {added:.0f} MiB to a server process ({worst[1]})"


def test_oversized_body_is_answered_413_not_reset(server):
    """The client reads a 413 with its message, on a raw socket sending the whole body."""
    body = b"[" * (LIMIT * 3)
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as s:
        s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        s.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
            chunk = s.recv(65536)
            assert chunk, answer[:300]  # closed before the whole answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"payload too large" in answer, answer[:300]


def test_an_endless_header_is_cut_off_as_it_arrives(server, mnist_small):
    """A header that never ends (uvicorn's parser has no limit of its own and would hold it all):
    431 and the connection closed once the head passes about a megabyte, long before the sender
    stops; the server's memory barely moves and it answers the next request."""
    rss_before = server_rss(server)
    sent = 0
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as s:
        s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(64 * 16):  # up to 64 MB
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert sent < 8 * 2**20, sent  # cut off within a few megabytes
    assert answer.startswith(b"HTTP/1.1 431") and b"too large" in answer, answer[:300]
    assert grown(rss_before, server_rss(server)) < 32 * 2**20, (rss_before, server_rss(server))
    r = httpx.post(server["url"] + PREDICT, json={"data": {"ndarray": mnist_small["test"][0][:1].tolist()}}, timeout=10)
    assert r.status_code == 200


def test_routes_and_headers_the_wrapper_would_not_take_are_not_predicted(server, mnist_small):
    """A trailing slash is not the wrapper's route (refused by it, nothing logged); a repeated Authorization
    is judged as the Flask path joins it, never by its last value alone."""
    import sqlite3

    body = json.dumps({"data": {"ndarray": mnist_small["test"][0][:1].tolist()}})
    with sqlite3.connect(server["db"]) as c:
        before = c.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    for path in ("/predict/", "/api/v1.0/predictions/", "/api/v1.0/predictions//"):
        r = httpx.post(server["url"] + path, content=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code in (404, 405), (path, r.status_code, r.text[:200])
    with sqlite3.connect(server["db"]) as c:
        assert c.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == before
    ok = httpx.post(server["url"] + PREDICT, content=body, timeout=10,
                    headers=[("Content-Type", "application/json"), ("Authorization", "Bearer a"),
                             ("Authorization", "Bearer b")])
    assert ok.status_code == 200, ok.text[:200]  # predict is open on this server: both paths answer it


def test_cors_is_off_and_browsers_on_other_sites_are_refused(server):
    """No Access-Control-Allow-Origin on any answer (errors included), preflights fail, and a
    request a browser sends from another site (it always says its Origin) is refused, even the
    'simple' ones a page can send without asking (form, text/plain)."""
    def no_cors(r):
        return "access-control-allow-origin" not in {k.lower() for k in r.headers}

    evil = {"Origin": "https://evil.example"}
    pre = httpx.options(server["url"] + PREDICT, timeout=10, headers={
        **evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code >= 400 and no_cors(pre)
    body = json.dumps({"data": {"ndarray": [[0] * 784]}})
    for ctype in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        r = httpx.post(server["url"] + PREDICT, content=body, timeout=10, headers={**evil, "Content-Type": ctype})
        assert r.status_code == 403 and "cross-origin" in r.text and no_cors(r), (ctype, r.status_code, r.text)
    bad = httpx.post(server["url"] + FEEDBACK, json={"truth": 1}, timeout=10)  # an error answer, no Origin
    assert bad.status_code == 400 and no_cors(bad)
    ok = httpx.post(server["url"] + PREDICT, content=body, timeout=10, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and no_cors(ok)


def test_seldon_client_predicts_and_sends_feedback(server, mnist_small, tmp_path):
    """Seldon's own Python client, REST and gRPC: predictions, feedback with labels (the token in
    the truth's tags, since its feedback call sends no headers), reward-only feedback naming the
    request by puid alone, feedback without a token refused; its microservice API's form bodies
    are refused by design (415)."""
    x, y = mnist_small["test"]
    np.save(tmp_path / "x.npy", x[10:13].astype(np.float64))
    np.save(tmp_path / "y.npy", y[10:13])
    (tmp_path / "token").write_text(FEEDBACK_TOKEN)
    out = subprocess.run([str(launch.SERVE_PYTHON), "tests/integration/serving_probe.py", "seldon-client",
                          server["url"].removeprefix("http://"), server["grpc"], str(tmp_path / "token"),
                          str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         cwd=launch.ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    direct = httpx.post(server["url"] + PREDICT, json={"data": {"ndarray": x[10:13].tolist()}}, timeout=10).json()
    with sqlite3.connect(server["db"]) as c:
        for transport in ("rest", "grpc"):
            r = res[transport]
            assert r["predict_success"] and r["digits"] == direct["meta"]["tags"]["digits"], (transport, r)
            assert r["puid"] == r["request_id"]
            assert r["feedback_success"] and r["labelled"] == 3, (transport, r)
            assert r["reward_success"], (transport, r)
            assert not r["anonymous_success"], (transport, r)
            rows = c.execute("SELECT feedback, labeller FROM predictions WHERE request_id = ? ORDER BY item",
                             (r["request_id"],)).fetchall()
            assert rows == [(int(v), "tester") for v in y[10:13]], rows
            assert c.execute("SELECT reward, labeller FROM rewards WHERE request_id = ?",
                             (r["request_id"],)).fetchall() == [(0.25, "tester")]
    assert not res["microservice"]["success"] and "UNSUPPORTED MEDIA TYPE" in res["microservice"]["msg"].upper()
