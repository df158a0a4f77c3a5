"""The model server's edge: what every request passes before Seldon's wrapper sees it.

REST (a Flask ``before_request`` on the wrapper's own app):
- predict and feedback routes take POST with ``Content-Type: application/json`` only: no GET, no
  form or multipart bodies, no ``?json=`` in the URL (405 / 415 / 400). Those are what a web page
  can send across origins without the browser asking first.
- a body over the limit is a 413 with a message; the body is read and dropped first (up to
  ``DRAIN_FACTOR`` times the limit), so the client reads the answer instead of a reset connection.
- JSON is parsed here, once: malformed or pathologically nested JSON is a 400 naming the problem
  (Python's parser raises RecursionError on deep nesting, which the wrapper answered with a 500).
- CORS is off (the wrapper enables it for every origin) unless origins are configured.
- the credentials a caller presents (``Authorization: Bearer``, Seldon's ``X-Auth-Token``, or HTTP
  Basic with the token as password) are handed to the model in :data:`CALLER`; the model decides
  (serving/model.py: predict and feedback tokens).

The hot path (serving/asgi.py) answers ordinary predict requests itself, with these same
helpers; anything else reaches this Flask edge, so every refusal above is answered by the same
code with the same words.

gRPC: the wrapper's servicer with Predict and SendFeedback reading the same credentials from the
call's metadata (``authorization``, ``x-auth-token``), and answering our refusals with the status
they mean (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ALREADY_EXISTS, UNAVAILABLE; the
wrapper says UNKNOWN for all). Payload checks are the model's own (serving/payload.py), shared by both.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading

import orjson

#: Per request thread: ``token`` is what the caller presented (None: nothing).
CALLER = threading.local()
#: Routes that take a body: the wrapper's predict and feedback aliases.
FEEDBACK_ROUTES = frozenset({"/send-feedback", "/api/v1.0/feedback", "/api/v0.1/feedback"})
PREDICT_ROUTES = frozenset({"/predict", "/api/v1.0/predictions", "/api/v0.1/predictions"})
BODY_ROUTES = FEEDBACK_ROUTES | PREDICT_ROUTES
#: The wrapper's other POST routes: this component is a model, not a router or transformer.
UNUSED_ROUTES = frozenset({"/transform-input", "/transform-output", "/route", "/aggregate"})
#: Read and drop at most this many times the limit before answering 413 (beyond it, close).
DRAIN_FACTOR = 8


class EdgeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def token_from_headers(get) -> str | None:
    """The token a caller presents: ``Authorization: Bearer T``, ``X-Auth-Token: T`` (what
    SeldonClient's call credentials send) or ``Authorization: Basic base64(name:T)`` (what an HTTP
    client sends for ``http://name:T@host``). ``get`` looks a header up, case-insensitively."""
    auth = (get("authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            _, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            return None
        return password if sep and password else None
    return (get("x-auth-token") or "").strip() or None


def status_body(message: str, status: int) -> dict:
    """A refusal as Seldon's wrapper words its errors (``SeldonMicroserviceException.to_dict``)."""
    return {"status": {"status": 1, "info": message, "code": -1,
                       "reason": "MICROSERVICE_BAD_DATA" if status < 500 else "MICROSERVICE_INTERNAL_ERROR"}}


def loads(body: bytes):
    """JSON from a request body, or EdgeError(400) naming the problem. orjson first (5-10x
    faster); what it refuses goes to Python's parser, which decides and names the problem as it
    always has (it also reads NaN, Infinity and integers past 64 bits, which the payload checks
    then refuse by name)."""
    if not body:
        raise EdgeError(400, "bad request: empty body (expected a JSON object)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise EdgeError(400, "bad request: JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise EdgeError(400, f"bad request: body is not UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise EdgeError(400, f"bad request: body is not valid JSON ({exc})") from None


def install(app, *, max_bytes: int, cors_origins: list[str] | None = None) -> None:
    """Put the edge in front of the wrapper's Flask app."""
    from flask import Flask, jsonify, request
    from werkzeug.exceptions import HTTPException

    def reply(message: str, status: int):
        resp = jsonify(status_body(message, status))
        resp.status_code = status
        return resp

    # The wrapper calls flask_cors.CORS(app) for every origin: take out its hook, and its wrappers
    # of Flask's error handling (which put the caller's Origin on every error answer).
    app.after_request_funcs[None] = [f for f in app.after_request_funcs.get(None, [])
                                     if getattr(f, "__name__", "") != "cors_after_request"]
    app.handle_exception = Flask.handle_exception.__get__(app)
    app.handle_user_exception = Flask.handle_user_exception.__get__(app)
    allowed_origins = set(cors_origins or ())
    if cors_origins:
        from flask_cors import CORS

        CORS(app, origins=list(cors_origins), methods=["POST"], allow_headers=["Content-Type", "Authorization"])
    app.config["MAX_CONTENT_LENGTH"] = max_bytes

    @app.before_request
    def edge():
        CALLER.token = token_from_headers(request.headers.get)
        origin = request.headers.get("Origin")
        if origin is not None and origin not in allowed_origins:
            # A browser on another site (browsers always say where a cross-origin request comes from;
            # other clients send no Origin): refused, so no web page can predict or send feedback.
            return reply(f"cross-origin request from {origin[:100]} refused (allowed origins: "
                         f"{', '.join(sorted(allowed_origins)) or 'none'})", 403)
        if request.method == "OPTIONS" and allowed_origins:
            return None  # flask_cors answers the preflight of an allowed origin
        path = request.path.rstrip("/") or "/"
        if path in UNUSED_ROUTES:
            return reply(f"not found: {path} (this component serves predict and feedback)", 404)
        if path not in BODY_ROUTES:
            return None
        try:
            body = check(request, max_bytes)
            if not isinstance(body, dict):
                raise EdgeError(400, f"bad request: the body must be a JSON object, not {type(body).__name__}")
            if path in FEEDBACK_ROUTES:
                body = only_meta(body)
                as_feedback(body)
            request._cached_json = (body, body)  # the wrapper's get_json reads it
        except EdgeError as exc:
            resp = reply(exc.message, exc.status)
            if exc.status == 413:
                resp.headers["Connection"] = "close"
            return resp
        return None

    @app.errorhandler(HTTPException)
    def http_error(e):
        if e.code == 413:
            return reply(f"payload too large: the limit is {max_bytes:,} bytes", 413)
        if e.code and 400 <= e.code < 500:
            return reply(f"bad request: {e.description or e.name}", e.code)
        return reply(f"{e.name}: {e.description}", e.code or 500)


def only_meta(feedback: dict) -> dict:
    """The feedback with its request and response cut down to their ``meta`` (all the model reads:
    the request id tags and puid). An unauthenticated caller could otherwise make the wrapper convert
    a 2 MB request to protobuf and back (pure Python) before the token is checked."""
    out = dict(feedback)
    for part in ("request", "response"):
        msg = out.get(part)
        if isinstance(msg, dict):
            out[part] = {"meta": msg["meta"]} if "meta" in msg else {}
    return out


def as_feedback(body: dict) -> None:
    """EdgeError(400) unless the body is a Seldon Feedback message (the wrapper converts it to the
    proto before our model sees it, and answered a 500 for anything that does not convert)."""
    from seldon_core.utils import json_to_feedback

    try:
        json_to_feedback(body)
    except RecursionError:
        raise EdgeError(400, "bad feedback: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - protobuf's ParseError, or a TypeError on odd shapes
        raise EdgeError(400, f"bad feedback: not a Seldon Feedback message ({type(exc).__name__}: {str(exc)[:200]})") from None


def check(request, max_bytes: int):
    """The request's JSON body after the method, type and size checks."""
    if request.method != "POST":
        raise EdgeError(405, f"method {request.method} not allowed: POST a JSON body")
    if request.args:
        raise EdgeError(400, f"bad request: query parameters are not accepted ({', '.join(sorted(request.args))}); "
                             "POST the message as the JSON body")
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        raise EdgeError(415, f"unsupported content type {ctype or '(none)'}: send Content-Type: application/json")
    length = request.content_length
    if length is not None and length > max_bytes:
        _drain(request, length, max_bytes)
        raise EdgeError(413, f"payload too large: {length:,} bytes; the limit is {max_bytes:,}")
    stream = request.environ.get("wsgi.input")
    if length is None:  # chunked: read one byte past the limit at most
        body = stream.read(max_bytes + 1) if stream is not None else b""
        if len(body) > max_bytes:
            _drain(request, None, max_bytes)
            raise EdgeError(413, f"payload too large: more than the {max_bytes:,}-byte limit")
    else:
        body = stream.read(length) if stream is not None and length else b""
    return loads(body)


def _drain(request, length: int | None, max_bytes: int) -> None:
    """Read and drop what the client is still sending (bounded), so it reads our answer."""
    stream = request.environ.get("wsgi.input")
    if stream is None or (length is not None and length > DRAIN_FACTOR * max_bytes):
        return
    left = DRAIN_FACTOR * max_bytes if length is None else length
    while left > 0:
        chunk = stream.read(min(65536, left))
        if not chunk:
            break
        left -= len(chunk)


def grpc_servicer(user_model, seldon_metrics):
    """Seldon's gRPC servicer with the caller's credentials taken from the call's metadata."""
    from seldon_core.flask_utils import SeldonMicroserviceException
    from seldon_core.wrapper import SeldonModelGRPC

    class EdgeSeldonModelGRPC(SeldonModelGRPC):
        def Predict(self, request_grpc, context):  # noqa: N802 - gRPC's naming
            _from_metadata(context)
            try:
                return super().Predict(request_grpc, context)
            except SeldonMicroserviceException as exc:
                _abort(context, exc)

        def SendFeedback(self, feedback_grpc, context):  # noqa: N802
            _from_metadata(context)
            try:
                return super().SendFeedback(feedback_grpc, context)
            except SeldonMicroserviceException as exc:
                _abort(context, exc)

    return EdgeSeldonModelGRPC(user_model, seldon_metrics)


def _abort(context, exc) -> None:
    """Our REST status as the gRPC status it means (the wrapper answers UNKNOWN for everything)."""
    import grpc

    code = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
            403: grpc.StatusCode.PERMISSION_DENIED, 409: grpc.StatusCode.ALREADY_EXISTS,
            503: grpc.StatusCode.UNAVAILABLE}.get(exc.status_code, grpc.StatusCode.INTERNAL)
    context.abort(code, str(exc.message))


def _from_metadata(context) -> None:
    md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
    CALLER.token = token_from_headers(md.get)
