"""The model server's HTTP front: an ASGI app in gunicorn's workers (uvicorn's worker class).

An ordinary predict request (POST of JSON to a predict route, a Content-Length within the limit, no
query, no ``Origin``) is answered on the event loop: orjson parses it, the wrapper's own
``seldon_methods.predict`` runs the component (serving/model.py), and the answer goes out once
the prediction log has committed the request's images. The log write is handed to the log's
writer thread (``DEFER_LOG``, mnistcl/logwrites.py GroupCommit), so the loop serves other
requests while it commits, and all the requests waiting share one transaction: nothing is
answered that the log does not hold, and nothing waits on a lock.

Everything else (feedback, health, metadata, every refusal, a body without a length) goes to the
wrapper's Flask app behind the edge (serving/edge.py), run in a thread pool by a2wsgi: the same
code answers it with the same words as before. ``--no-fast-path`` (serving/server.py) serves
everything the old way, on gunicorn's threads (bench/serve.py compares the two).

Why: a profile of the threaded server put more of a request's time in gunicorn's thread
hand-offs, Flask's request and response objects and the GIL than in the model (bench/results/
serve.json, docs/serving.md).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from serving import edge
from serving.model import DEFER_LOG

log = logging.getLogger(__name__)


class EdgeASGI:
    def __init__(self, wsgi_app, user_model, seldon_metrics, *, max_bytes: int, threads: int = 4):
        from a2wsgi import WSGIMiddleware
        from seldon_core import seldon_methods
        from seldon_core.flask_utils import SeldonMicroserviceException

        self.wsgi = WSGIMiddleware(wsgi_app, workers=threads)
        self.user_model, self.seldon_metrics, self.max_bytes = user_model, seldon_metrics, max_bytes
        self._predict, self._seldon_error = seldon_methods.predict, SeldonMicroserviceException

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] == "http" and (refused := _over_limits(scope)):
            return await _reply(send, *refused, close=True)
        headers = dict(scope.get("headers") or ()) if scope["type"] == "http" else {}
        length = self._ordinary(scope, headers)
        if length is None:
            return await self.wsgi(scope, receive, send)
        body = await _read(receive, length)
        if body is None:  # the client went away
            return None
        try:
            request = edge.loads(body)
        except edge.EdgeError:
            request = None
        if not isinstance(request, dict):  # the Flask path answers it, in its words
            return await self.wsgi(scope, _replay(body, receive), send)
        status, response = await self._answer(request, headers)
        return await _reply(send, status, response)

    async def _answer(self, request: dict, headers: dict) -> tuple[int, dict]:
        deferred: list = []
        ctx = DEFER_LOG.set(deferred)
        # A thread-local read by the component in this same synchronous call: nothing else runs between.
        edge.CALLER.token = edge.token_from_headers(lambda name: _header(headers, name))
        try:
            response, status = self._predict(self.user_model, request, self.seldon_metrics), 200
        except self._seldon_error as exc:  # as the wrapper's error handler answers it
            log.error("%s", exc.to_dict())
            response, status = exc.to_dict(), exc.status_code
        except Exception as exc:  # noqa: BLE001 - the wrapper's generic handler: a 500 with the message
            log.exception("predict failed")
            response, status = edge.status_body(str(exc), 500), 500
        finally:
            DEFER_LOG.reset(ctx)
        for d in deferred:
            await _committed(d.pending)
            if d.pending.error is None:
                d.committed()
            else:
                exc = d.failed(d.pending.error)
                log.error("%s", exc.to_dict())
                response, status = exc.to_dict(), exc.status_code
        return status, response

    def _ordinary(self, scope, headers: dict) -> int | None:
        """The body's length when this is a predict POST of JSON within the limit, with no query
        and no Origin; None otherwise."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("query_string"):
            return None
        # Exactly the wrapper's routes (it 404s a trailing slash); one value per header (a repeated
        # Authorization or Content-Type is the Flask path's to judge, as gunicorn joined them);
        # no Expect but 100-continue (gunicorn answered 417).
        if scope["path"] not in edge.PREDICT_ROUTES or b"origin" in headers or len(headers) != len(scope["headers"]):
            return None
        if headers.get(b"expect", b"100-continue").lower() != b"100-continue":
            return None
        ctype = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        length = headers.get(b"content-length", b"")
        if ctype != b"application/json" or not length.isdigit() or b"transfer-encoding" in headers:
            return None
        n = int(length)
        return n if 0 < n <= self.max_bytes else None


#: gunicorn's limits, which uvicorn does not have: the request line, one header, the header count.
LIMIT_REQUEST_LINE, LIMIT_FIELD_SIZE, LIMIT_FIELDS = 4094, 8190, 100


def _over_limits(scope) -> tuple[int, dict] | None:
    """414 / 431 for a request line or headers over gunicorn's limits (what the threaded server
    answered before; uvicorn would accept a URL or a header of any length)."""
    query = scope.get("query_string") or b""
    # "METHOD SP path[?query] SP HTTP/1.1", as gunicorn measures it
    line = len(scope["method"]) + 1 + len(scope.get("raw_path") or scope["path"].encode()) + \
        (1 + len(query) if query else 0) + 9
    if line > LIMIT_REQUEST_LINE:
        return 414, edge.status_body(f"request line too large: {line:,} bytes; the limit is {LIMIT_REQUEST_LINE:,} "
                            "(POST the message as the JSON body)", 414)
    headers = scope.get("headers") or ()
    if len(headers) > LIMIT_FIELDS:
        return 431, edge.status_body(f"request header fields too large: {len(headers)} headers; the limit is "
                                     f"{LIMIT_FIELDS}", 431)
    for name, value in headers:
        if len(name) + 2 + len(value) + 2 > LIMIT_FIELD_SIZE:  # "Name: value" CRLF
            return 431, edge.status_body(f"request header fields too large: {name.decode('latin-1')[:40]} is "
                                         f"{len(value):,} bytes; the limit is {LIMIT_FIELD_SIZE:,}", 431)
    return None


async def _reply(send, status: int, response: dict, close: bool = False) -> None:
    out = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"connection", b"close")] if close else headers})
    await send({"type": "http.response.body", "body": out})


def _header(headers: dict, name: str) -> str | None:
    value = headers.get(name.lower().encode())
    return value.decode("latin-1") if value is not None else None


async def _read(receive, length: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not msg.get("more_body") or size > length:
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """``receive`` with the body already read given back first."""
    given = False

    async def again():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _committed(pending) -> None:
    """Wait, without blocking the loop, until the log's writer thread has finished this write."""
    if pending.done.is_set():
        return
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def wake():
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

    pending.on_done(wake)
    await fut


async def _lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
