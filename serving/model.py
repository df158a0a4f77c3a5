"""The Seldon Core Python component: the registry's champion through ONNX Runtime.

Configured by environment variables (this runs in its own container / environment):
  MNISTCL_STORE_URL        registry storage: a folder or s3://bucket/prefix (required)
  MNISTCL_S3_ENDPOINT_URL  S3-compatible endpoint, if any
  MNISTCL_SERVE_ALIAS      which alias to serve (default champion)
  MNISTCL_SHADOW_ALIAS     which alias scores every request beside it, answering nothing (default:
                           the other of champion / challenger; empty: none). Both answers are logged,
                           so the challenger is judged on labelled live traffic (validation/shadow.py)
  MNISTCL_PREDICTIONS_DB   prediction log: a SQLite file (default ./predictions.db) or postgresql:// URL
  MNISTCL_LOG_GROUP_COMMIT auto (default: on for PostgreSQL, off for SQLite), true or false: concurrent
                           requests' predictions written by one thread, many per transaction
  MNISTCL_SERVE_MAX_IMAGES images per request (default 64)
  MNISTCL_SERVE_POLL_S     how often to check the alias for a new model (default 2 s)
  MNISTCL_MODEL_CACHE      where verified ONNX files are cached (default ./model-cache)
  MNISTCL_FEEDBACK_TOKENS  who may send feedback: ``labeller:token`` entries (comma or newline separated;
                           or a file named by MNISTCL_FEEDBACK_TOKENS_FILE). None: feedback is refused
  MNISTCL_PREDICT_TOKENS   the same for predict (empty: predict is open). The two lists are separate: a
                           feedback token does not open predict, nor the reverse
"""

from __future__ import annotations

import contextvars
import gc
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistcl.credentials import parse_tokens, who
from mnistcl.onnx_utils import OnnxModel
from mnistcl.predlog import FeedbackConflict, LogUnavailable, Pending, PredictionLog, is_postgres
from mnistcl.registry import Registry
from mnistcl.storage import open_storage
from serving.edge import CALLER, EdgeError
from serving.payload import PayloadError, parse

log = logging.getLogger(__name__)
LOW_CONFIDENCE = 0.5


@dataclass
class DeferredLog:
    """A prediction whose log write is still committing (serving/asgi.py answers it once it is):
    ``committed()`` records the request as served; ``failed(exc)`` records it as an error and
    returns the exception to answer with (a 503 when the log is unavailable, as the blocking
    path answers)."""

    pending: Pending
    committed: object
    failed: object


#: Set by the asynchronous server for the request it runs: predict_raw hands its log write over
#: (a list to append a DeferredLog to) instead of waiting for the commit on the event loop.
DEFER_LOG: contextvars.ContextVar[list | None] = contextvars.ContextVar("mnistcl_defer_log", default=None)


class LoadedModel(OnnxModel):
    """The champion (or the shadowed challenger) as the server holds it: its registry version and
    the one ONNX Runtime wrapper; requests arrive already scaled to [0, 1]."""

    def __init__(self, version: str, path: Path):
        super().__init__(path, threads=1)
        self.version = version


class MnistModel:
    """Seldon's Python wrapper calls predict_raw / send_feedback_raw / health_status / metrics."""
    def __init__(self):
        self.store_url = os.environ.get("MNISTCL_STORE_URL", "")
        self.alias = os.environ.get("MNISTCL_SERVE_ALIAS", "champion")
        self.shadow_alias = os.environ.get("MNISTCL_SHADOW_ALIAS",
                                           "challenger" if self.alias == "champion" else "champion")
        self.max_images = int(os.environ.get("MNISTCL_SERVE_MAX_IMAGES", "64"))
        self.poll_s = float(os.environ.get("MNISTCL_SERVE_POLL_S", "2"))
        self.cache = Path(os.environ.get("MNISTCL_MODEL_CACHE", "model-cache"))
        self.db_path = os.environ.get("MNISTCL_PREDICTIONS_DB", "predictions.db")
        self.model: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.predlog: PredictionLog | None = None
        self._watcher: threading.Thread | None = None
        self.seldon_metrics = None  # set by serving/server.py: the wrapper's shared metrics store
        self._metrics = MetricsBuffer()
        self.flush_s = float(os.environ.get("MNISTCL_METRICS_FLUSH_S", "0.5"))
        self.group_commit = _group_commit(os.environ.get("MNISTCL_LOG_GROUP_COMMIT", "auto"), self.db_path)
        self.feedback_tokens = _tokens("MNISTCL_FEEDBACK_TOKENS")
        self.predict_tokens = _tokens("MNISTCL_PREDICT_TOKENS")

    # ---------------------------------------------------------------- lifecycle
    def _registry(self):

        if not self.store_url:
            raise RuntimeError("MNISTCL_STORE_URL is not set: the server needs the model registry")
        return Registry(open_storage(self.store_url, s3_endpoint_url=os.environ.get("MNISTCL_S3_ENDPOINT_URL")))

    def load(self) -> None:
        """Per worker (after gunicorn forks): open the log, load the alias, watch it."""
        # readiness reports a database down; concurrent requests' predictions share a transaction
        if self.predlog is None:  # once: a load retried after a failure starts no second checkpointer
            self.predlog = PredictionLog(self.db_path, connect=False, group_commit=self.group_commit,
                                         background_checkpoint=True)
        reg = self._registry()
        version = reg.resolve(self.alias)
        self.model = LoadedModel(version, reg.fetch(version, "onnx", self.cache))
        log.info("serving %s = %s", self.alias, version)
        self._load_shadow(reg)
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="alias-watcher")
        self._watcher.start()
        threading.Thread(target=self._flush_metrics, daemon=True, name="metrics-flush").start()
        # Everything loaded so far (libraries, the model) out of the collector's sight: full
        # collections then walk only what requests allocate (p99 at 16 digits x 8 clients
        # 24-26 ms instead of 30-32 ms, bench notes in docs/serving.md).
        gc.freeze()

    def _flush_metrics(self) -> None:
        """Hand buffered metrics to Seldon's store every flush_s seconds.

        Seldon's store ships the worker's whole metrics dict through a multiprocessing manager
        on every update; doing that per request halved throughput (bench/serve.py). One update
        per method per flush keeps the numbers exact, at most flush_s late. The buffer folds each
        request's metrics in as they are recorded (MetricsBuffer), so a flush holds the GIL for
        a fraction of a millisecond (merging half a second's items there held it for 5-10 ms,
        measured as a stall of every 230th request).
        """
        while True:
            time.sleep(self.flush_s)
            if self.seldon_metrics is None:
                continue
            for method, items in self._metrics.take().items():
                try:
                    self.seldon_metrics.update(items, method)
                except Exception as exc:  # noqa: BLE001 - metrics must never break serving
                    log.warning("could not update metrics: %s", exc)

    def _load_shadow(self, reg) -> None:
        """Follow the shadow alias: load its model beside the served one, or drop it when cleared."""
        if not self.shadow_alias:
            return
        version = reg.alias(self.shadow_alias)
        if version is None or (self.model and version == self.model.version):
            if self.shadow is not None:
                log.info("shadow %s cleared (was %s)", self.shadow_alias, self.shadow.version)
            self.shadow = None
        elif self.shadow is None or self.shadow.version != version:
            self.shadow = LoadedModel(version, reg.fetch(version, "onnx", self.cache))
            log.info("shadow %s = %s: scores every request, answers none", self.shadow_alias, version)

    def _watch(self) -> None:
        """Hot swap: load a new alias target next to the old one, then switch the reference.

        Requests in flight keep the session they started with; none is dropped."""
        reg = self._registry()
        while True:
            time.sleep(self.poll_s)
            try:
                version = reg.alias(self.alias)
                if version and self.model and version != self.model.version:
                    new = LoadedModel(version, reg.fetch(version, "onnx", self.cache))
                    old, self.model = self.model, new
                    log.info("hot swap: %s %s -> %s", self.alias, old.version, version)
                self._load_shadow(reg)
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                log.warning("alias check failed, still serving %s: %s", self.model and self.model.version, exc)

    # ---------------------------------------------------------------- endpoints
    def _record(self, endpoint: str, outcome: str, started: float, extra: list[dict] | None = None) -> None:
        """Request count and latency by endpoint and outcome, labelled by registry version."""
        if self.seldon_metrics is None:
            return
        tags = {"endpoint": endpoint, "outcome": outcome,
                "registry_version": self.model.version if self.model else "none"}
        items = [{"type": "COUNTER", "key": "mnist_requests_total", "value": 1, "tags": dict(tags)},
                 {"type": "TIMER", "key": "mnist_request_seconds", "value": (time.perf_counter() - started) * 1e3,
                  "tags": dict(tags)}, *(extra or [])]
        self._metrics.add(endpoint, items)

    def predict_raw(self, request):
        started = time.perf_counter()
        if self.model is None:
            self.load()
        is_proto = not isinstance(request, dict) and hasattr(request, "DESCRIPTOR")
        if self.predict_tokens and who(self.predict_tokens, getattr(CALLER, "token", None)) is None:
            self._log_rejected("predict", "no valid predict token")
            self._record("predict", "unauthorized", started)
            raise refused(401, "predict needs a predict token (Authorization: Bearer <token>)")
        try:
            if is_proto:
                request = proto_to_request(request)
            images, kind = parse(request, max_images=self.max_images)
        except PayloadError as exc:
            self._log_rejected("predict", str(exc))
            self._record("predict", "rejected", started)
            raise bad_request(f"bad request: {exc}") from None
        model, shadow = self.model, self.shadow  # one model for the whole request, even if a swap happens now
        probs = model.predict(images)
        shadowed = [(shadow.version, shadow.predict(images))] if shadow and shadow.version != model.version else None
        request_id = uuid.uuid4().hex
        puid = _puid(request)
        deferred = DEFER_LOG.get()
        try:
            pending = self.predlog.log_predictions(request_id, model.version, kind, images, probs, shadow=shadowed,
                                                   puid=puid, wait=deferred is None)
        except LogUnavailable as exc:  # nothing is answered that the log does not hold
            raise self._log_failed(started, exc) from None
        digits = probs.argmax(1)
        conf = probs.max(1)
        extra = self._predict_metrics(model.version, digits, conf)
        if shadowed:
            tags = {"registry_version": model.version, "shadow_version": shadowed[0][0]}
            extra += [{"type": "COUNTER", "key": "mnist_shadow_images_total", "value": int(len(digits)), "tags": tags},
                      {"type": "COUNTER", "key": "mnist_shadow_disagreements_total",
                       "value": int((shadowed[0][1].argmax(1) != digits).sum()), "tags": dict(tags)}]
        if pending is None:
            self._record("predict", "ok", started, extra)
        else:
            deferred.append(DeferredLog(pending, lambda: self._record("predict", "ok", started, extra),
                                        lambda exc: self._log_failed(started, exc)))
        response = {
            "data": {"names": [str(d) for d in range(10)], "ndarray": probs.round(6).tolist()},
            "meta": {
                "puid": puid or request_id,
                "tags": {
                    "request_id": request_id,
                    "model_version": model.version,
                    "digits": digits.tolist(),
                    "confidence": conf.astype(np.float64).round(6).tolist(),
                    "low_confidence": (conf < LOW_CONFIDENCE).tolist(),
                },
            },
        }
        if is_proto:  # gRPC: the wrapper returns what we return, so answer in kind
            from seldon_core.utils import json_to_seldon_message

            return json_to_seldon_message(response)
        return response

    def _log_failed(self, started: float, exc: Exception) -> Exception:
        """What a prediction the log could not hold is answered with: 503 when the log is
        unavailable, 500 for anything else; never a 200."""
        self._record("predict", "error", started)
        if isinstance(exc, LogUnavailable):
            return unavailable(f"{exc}; the prediction was not served, retry later")
        log.error("prediction log write failed: %r", exc)
        return seldon_error(500, f"the prediction could not be logged ({type(exc).__name__}); it was not served")

    def _predict_metrics(self, version: str, digits: np.ndarray, conf: np.ndarray) -> list[dict]:
        tags = {"registry_version": version}  # "model_version" is a label Seldon sets itself
        out = [{"type": "COUNTER", "key": "mnist_images_total", "value": int(len(digits)), "tags": tags},
               {"type": "COUNTER", "key": "mnist_low_confidence_total", "value": int((conf < LOW_CONFIDENCE).sum()),
                "tags": tags}]
        for d, n in enumerate(np.bincount(digits, minlength=10).tolist()):
            if n:
                out.append({"type": "COUNTER", "key": "mnist_predicted_class_total", "value": n,
                            "tags": {**tags, "digit": str(d)}})
        # Seldon's TIMER is a histogram over log-spaced bins (value in ms, exposed / 1000):
        # a confidence c is recorded as c * 1000, so the exposed buckets read as confidence.
        out.append({"type": "OBSERVATIONS", "key": "mnist_confidence", "value": np.asarray(conf, np.float64) * 1e3,
                    "tags": dict(tags)})
        return out

    def send_feedback_raw(self, feedback):
        """Feedback, as Seldon defines it: ``{"request": ..., "response": ..., "truth": {"data":
        {"ndarray": [labels]}}, "reward": r}``. The request is found by ``meta.tags.request_id`` in
        the request or the response (our answers carry it), else by Seldon's ``meta.puid``. Labels
        are written once (a different second label: 409, kept for review); feedback without a
        truth is a reward, recorded as such. Every feedback needs a feedback token: from the
        call's credentials (serving/edge.py) or, for clients that cannot set headers (SeldonClient's
        feedback), ``truth.meta.tags.feedback_token`` / ``request.meta.tags.feedback_token``."""
        from seldon_core.utils import json_to_seldon_message

        started = time.perf_counter()
        if self.model is None:
            self.load()
        fb = feedback if isinstance(feedback, dict) else _feedback_parts(feedback)
        try:
            labeller = self._labeller(fb)
            ids = _feedback_ids(fb)
            request_id = self.predlog.find_request(*ids)
            if request_id is None:
                ids = [i for i in ids if i]
                raise KeyError(f"no prediction with request id {ids[0]!r}" if ids else
                               "feedback needs the prediction's request id: request.meta.tags.request_id or the "
                               "response's meta.tags.request_id / meta.puid")
            labels = _truth(fb)
            if labels is None:  # reward-only feedback (Seldon's reward, no labels)
                reward = fb.get("reward", 0.0)
                if not isinstance(reward, (int, float)) or isinstance(reward, bool) or not np.isfinite(reward):
                    raise PayloadError(f"reward must be a finite number, got {reward!r}")
                self.predlog.add_reward(request_id, float(reward), labeller)
                self._record("feedback", "reward", started)
                return json_to_seldon_message({"meta": {"tags": {"request_id": request_id, "reward": float(reward),
                                                                 "labelled": 0}}})
            pairs = self.predlog.add_feedback(request_id, labels, labeller)
        except LogUnavailable as exc:
            self._record("feedback", "error", started)
            raise unavailable(f"{exc}; the feedback was not recorded, send it again later") from None
        except EdgeError as exc:
            self._log_rejected("feedback", exc.message)
            self._record("feedback", "unauthorized", started)
            raise refused(exc.status, exc.message) from None
        except FeedbackConflict as exc:
            self._log_rejected("feedback", str(exc))
            self._record("feedback", "conflict", started)
            raise refused(409, f"conflict: {exc}") from None
        except (PayloadError, KeyError, ValueError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            self._log_rejected("feedback", msg)
            self._record("feedback", "rejected", started)
            raise bad_request(f"bad feedback: {msg}") from None

        correct = sum(p == t for p, t in pairs)
        tags = {"registry_version": self.model.version}
        self._record("feedback", "ok", started, [
            {"type": "COUNTER", "key": "mnist_feedback_total", "value": len(pairs), "tags": dict(tags)},
            {"type": "COUNTER", "key": "mnist_feedback_correct_total", "value": correct, "tags": dict(tags)}])
        # The wrapper's feedback route expects a SeldonMessage proto back.
        return json_to_seldon_message({"data": {"ndarray": [[correct, len(pairs)]]},
                "meta": {"tags": {"request_id": request_id, "correct": correct, "labelled": len(pairs),
                                  "labeller": labeller}}})

    def _labeller(self, fb: dict) -> str:
        """Who sends this feedback: the holder of the token presented (EdgeError 401/403 without one)."""
        if not self.feedback_tokens:
            raise EdgeError(403, "feedback is closed: the server has no feedback tokens (MNISTCL_FEEDBACK_TOKENS)")
        presented = [getattr(CALLER, "token", None)] + [
            _tags(fb.get(part)).get("feedback_token") for part in ("truth", "request")]
        presented = [t for t in presented if isinstance(t, str) and t]
        if not presented:
            raise EdgeError(401, "feedback needs a feedback token (Authorization: Bearer <token>, or "
                               "truth.meta.tags.feedback_token)")
        for token in presented:  # a gateway's own Authorization header must not hide the message's token
            name = who(self.feedback_tokens, token)
            if name is not None:
                return name
        raise EdgeError(403, "the feedback token is not valid")

    def _log_rejected(self, endpoint: str, reason: str) -> None:
        """Keep a rejected payload's reason; with the log down the client still gets its 400."""
        try:
            self.predlog.log_rejected(endpoint, reason)
        except LogUnavailable as exc:
            log.warning("rejected %s request not logged: %s", endpoint, exc)

    def health_status(self):
        """The readiness probe (/health/status): a model loaded and the prediction log answering,
        so a pod that cannot log is taken out of the Service instead of failing requests."""
        if self.model is None:
            raise unavailable("no model loaded")
        try:
            self.predlog.ping()
        except LogUnavailable as exc:
            raise unavailable(str(exc)) from None
        return {"model_version": self.model.version}

    def init_metadata(self):
        return {"name": "mnist-continual", "versions": [self.model.version if self.model else "unloaded"],
                "platform": "onnxruntime",
                "inputs": [{"messagetype": "ndarray", "schema": {"shape": [28, 28]}}],
                "outputs": [{"messagetype": "ndarray", "schema": {"shape": [10]}}]}


def _group_commit(setting: str, db_path: str) -> bool:
    """``MNISTCL_LOG_GROUP_COMMIT``: true, false, or auto (the default): on for PostgreSQL, where a
    write is a network round trip the event loop should not wait on, off for SQLite, where a
    commit takes microseconds and handing it to a writer thread cost more than it saved
    (bench/results/serve.json: serve-log-modes)."""
    value = setting.strip().lower()
    if value == "auto":
        return is_postgres(db_path)
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"MNISTCL_LOG_GROUP_COMMIT must be true, false or auto, not {setting!r}")


def _tokens(env: str) -> dict[str, str]:
    """A token list from ``env`` or the file named by ``env``_FILE ({} when neither is set)."""
    path = os.environ.get(f"{env}_FILE")
    text = Path(path).read_text() if path else os.environ.get(env, "")
    return parse_tokens(text, what=f"{env}_FILE ({path})" if path else env)


def _feedback_parts(feedback) -> dict:
    """A gRPC Feedback as the dict send_feedback_raw reads: the request's and response's meta only,
    the truth and the reward (the request's images are never converted)."""
    from google.protobuf import json_format

    out: dict = {"reward": feedback.reward}
    for part in ("request", "response"):
        msg = getattr(feedback, part)
        if msg.HasField("meta"):
            out[part] = {"meta": json_format.MessageToDict(msg.meta)}
    if feedback.HasField("truth"):
        out["truth"] = json_format.MessageToDict(feedback.truth)
    return out


def _meta(message) -> dict:
    meta = message.get("meta") if isinstance(message, dict) else None
    return meta if isinstance(meta, dict) else {}


def _tags(message) -> dict:
    tags = _meta(message).get("tags")
    return tags if isinstance(tags, dict) else {}


def _puid(request: dict) -> str | None:
    puid = _meta(request).get("puid")
    return str(puid)[:128] if isinstance(puid, str) and puid else None


def _feedback_ids(fb: dict) -> tuple[str | None, str | None]:
    """(request id, puid) named by a feedback: the request's tags, then the response's, then the puids."""
    rid = _tags(fb.get("request")).get("request_id") or _tags(fb.get("response")).get("request_id")
    puids = [_meta(fb.get(part)).get("puid") for part in ("response", "request")]
    puid = next((p for p in puids if isinstance(p, str) and p), None)
    return (str(rid) if isinstance(rid, (str, int)) and rid != "" else None), puid


def _truth(fb: dict) -> list[int] | None:
    """The true labels (truth.data.ndarray, or a tensor's values), or None for reward-only feedback."""
    truth = fb.get("truth")
    if truth is None or truth == {}:
        return None
    data = truth.get("data") if isinstance(truth, dict) else None
    if not isinstance(data, dict):
        raise PayloadError("truth must be {\"data\": {\"ndarray\": [labels]}}")
    raw = data.get("ndarray")
    if raw is None and isinstance(data.get("tensor"), dict):
        raw = data["tensor"].get("values")
    if not isinstance(raw, list):
        raise PayloadError("truth needs data.ndarray (or data.tensor.values) with the true label(s)")
    try:
        labels = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise PayloadError(f"truth labels must be whole numbers 0-9, got {str(raw)[:100]}") from None
    if labels.size == 0 or labels.size > 4096 or not np.all(np.isin(labels, np.arange(10))):
        raise PayloadError(f"truth labels must be whole numbers 0-9, got {str(raw)[:100]}")
    return [int(v) for v in labels]


def seldon_error(status: int, message: str) -> Exception:
    """Seldon's exception with our status (the REST answer; its str() carries the message, which
    gRPC puts in the status details)."""
    from seldon_core.flask_utils import SeldonMicroserviceException

    reason = {400: "MICROSERVICE_BAD_DATA", 409: "MICROSERVICE_CONFLICT", 500: "MICROSERVICE_INTERNAL_ERROR",
              503: "MICROSERVICE_UNAVAILABLE"}.get(status, "MICROSERVICE_UNAUTHORIZED")
    exc = SeldonMicroserviceException(message, status_code=status, reason=reason)
    exc.args = (message,)
    return exc


def refused(status: int, message: str) -> Exception:
    """A 401, 403 or 409."""
    return seldon_error(status, message)


def bad_request(message: str) -> Exception:
    return seldon_error(400, message)


def unavailable(message: str) -> Exception:
    """The server is up but cannot do its work now (503)."""
    return seldon_error(503, message)


def proto_to_request(msg) -> dict:
    """A gRPC SeldonMessage as the dict parse() reads, without a JSON round trip for tensors.

    The tensor's repeated double goes straight to NumPy; PNG bytes are re-encoded as base64
    (what JSON clients send); ndarray and jsonData go through protobuf's JSON mapping."""
    import base64

    from google.protobuf import json_format

    out: dict = {}
    if msg.HasField("meta"):
        out["meta"] = json_format.MessageToDict(msg.meta)
    which = msg.WhichOneof("data_oneof")
    if which == "data":
        which_data = msg.data.WhichOneof("data_oneof")
        if which_data == "tensor":
            t = msg.data.tensor
            out["data"] = {"tensor": {"shape": list(t.shape),
                                      "values": np.fromiter(t.values, dtype=np.float64, count=len(t.values))}}
        else:
            out["data"] = json_format.MessageToDict(msg.data)
    elif which == "binData":
        out["binData"] = base64.b64encode(msg.binData).decode()
    elif which == "strData":
        out["strData"] = msg.strData
    elif which == "jsonData":
        out["jsonData"] = json_format.MessageToDict(msg.jsonData)
    return out


class MetricsBuffer:
    """Metrics folded in as they are recorded, taken as Seldon store items once per flush:
    counters with the same method, key and tags summed; TIMER values (one each, ms) and
    OBSERVATIONS (many) of a series counted into Seldon's histogram bins with one ``np.histogram``
    per series (a ``HISTOGRAM`` item: the counts and the sum in seconds, what Seldon's TIMER
    stores; serving/server.py adds it in one go)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[tuple, list] = {}
        self._observations: dict[tuple, list] = {}

    def add(self, method: str, items: list[dict]) -> None:
        with self._lock:
            for m in items:
                tags = m.get("tags", {})
                k = (method, m["key"], tuple(sorted(tags.items())))
                if m.get("type", "COUNTER") == "COUNTER":
                    if k in self._counters:
                        self._counters[k][0] += m["value"]
                    else:
                        self._counters[k] = [m["value"], tags]
                elif k in self._observations:
                    self._observations[k][0].append(m["value"])
                else:
                    self._observations[k] = [[m["value"]], tags]

    def take(self, bins=None) -> dict[str, list[dict]]:
        """Everything added since the last take, as store items by method (``bins``: Seldon's)."""
        if bins is None:
            from seldon_core.metrics import BINS as bins

        with self._lock:
            counters, self._counters = self._counters, {}
            observations, self._observations = self._observations, {}
        out: dict[str, list[dict]] = {}
        for (method, key, _), (value, tags) in counters.items():
            out.setdefault(method, []).append({"type": "COUNTER", "key": key, "value": value, "tags": dict(tags)})
        for (method, key, _), (values, tags) in observations.items():
            v = np.concatenate([np.atleast_1d(np.asarray(x, np.float64)) for x in values]) / 1000.0
            out.setdefault(method, []).append({"type": "HISTOGRAM", "key": key, "tags": dict(tags),
                                               "value": (np.histogram(v, bins)[0].tolist(), float(v.sum()))})
        return out
