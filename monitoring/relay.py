"""Alertmanager webhook -> Prefect events. Open-source Prefect has no webhooks; this is the bridge.

Alertmanager POSTs its webhook JSON (version 4) here; every *firing* alert becomes one Prefect
event posted to ``<prefect api>/events``:

  event     the alert's ``prefect_event`` label (e.g. mnistcl.confidence.low), else
            ``mnistcl.alert.<alertname>``
  resource  ``mnistcl.alertmanager.<alertname>`` with the alert's labels as resource labels
  payload   labels, annotations, startsAt, fingerprint, and the receiver

Resolved alerts are acknowledged and not forwarded. A body that is not Alertmanager's JSON gets
a 400 naming the problem; when Prefect cannot be reached the relay answers 502, so Alertmanager
retries. Whoever can reach the relay could otherwise start retrainings, so:
- a token is required (``MNISTCL_RELAY_TOKEN``, or a token file; an empty one refuses to start):
  every POST carries ``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``)
  or gets a 401;
- the body needs a ``Content-Length`` of 0 to ``MAX_BODY`` bytes (411 / 400 / 413 otherwise);
- a connection idle for ``SOCKET_TIMEOUT_S`` is closed, and at most ``MAX_CONNECTIONS`` are served
  at once (slow clients cannot make it start threads without end);
- event names are allow-listed: a ``prefect_event`` label must be one the monitoring raises
  (``EVENTS``), and an alert without one becomes ``mnistcl.alert.<alertname>`` only for a plain
  alert name (letters, digits, ``_``; deployments trigger on none of those).
Events go through Prefect's client (mnistcl.prefect_client, with PREFECT_API_AUTH_STRING when the
server asks for it); `mnistcl monitor relay` starts it, GET /healthz (open, for probes) checks it.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mnistcl.events import MONITORING_EVENTS, make_event
from mnistcl.prefect_client import PrefectError, post_events

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000
TOKEN_ENV = "MNISTCL_RELAY_TOKEN"
SOCKET_TIMEOUT_S = 10
MAX_CONNECTIONS = 32
#: The events an alert may name (what the monitoring raises and prefect.yaml's triggers expect).
EVENTS = MONITORING_EVENTS
_ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class RelayError(ValueError):
    pass


def to_events(body: dict) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise RelayError("expected Alertmanager's webhook JSON: an object with an 'alerts' list")
    events = []
    for i, a in enumerate(body["alerts"]):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            raise RelayError(f"alerts[{i}] has no labels")
        if a.get("status", body.get("status")) != "firing":
            continue
        labels = {str(k): str(v) for k, v in a["labels"].items()}
        name = labels.get("alertname", "unnamed")
        if not _ALERT_NAME.match(name):
            raise RelayError(f"alerts[{i}]: alertname {name[:100]!r} is not a plain name (letters, digits, _)")
        event = labels.get("prefect_event") or f"mnistcl.alert.{name}"
        if "prefect_event" in labels and event not in EVENTS:
            raise RelayError(f"alerts[{i}]: event {event[:100]!r} is not one the relay forwards "
                             f"({', '.join(sorted(EVENTS))})")
        events.append(make_event(
            event, f"mnistcl.alertmanager.{name}",
            {"labels": labels, "annotations": a.get("annotations") or {}, "startsAt": a.get("startsAt"),
             "fingerprint": a.get("fingerprint"), "receiver": body.get("receiver")},
            labels={f"alert.{k}": v for k, v in labels.items() if k != "prefect.resource.id"}))
    return events


def make_handler(prefect_api: str, events_log: Path | None = None, token: str | None = None):
    if not token or not token.strip():
        raise ValueError(f"the relay needs a bearer token ({TOKEN_ENV} or a token file): without one, whoever "
                         "reaches it could start retrainings")
    url = prefect_api.rstrip("/") + "/events"
    expected = f"Bearer {token.strip()}".encode()

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S  # socketserver's StreamRequestHandler sets it on the connection

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") in ("/healthz", ""):
                self._reply(200, {"status": "ok", "prefect_events": url})
            else:
                self._reply(404, {"error": f"no such path {self.path}; POST alerts to /"})

        def do_POST(self):  # noqa: N802
            self.close_connection = True  # one request per connection: nothing left half-read
            if not hmac.compare_digest(self.headers.get("Authorization", "").encode("utf-8", "surrogateescape"),
                                       expected):
                self._reply(401, {"error": "missing or wrong bearer token (Authorization: Bearer <MNISTCL_RELAY_TOKEN>)"})
                return
            raw = self.headers.get("Content-Length")
            if raw is None:
                self._reply(411, {"error": "Content-Length is required"})
                return
            if not raw.strip().isdigit():
                self._reply(400, {"error": f"Content-Length must be a whole number of bytes, not {raw[:40]!r}"})
                return
            length = int(raw)
            if length > MAX_BODY:
                self._reply(413, {"error": f"body of {length:,} bytes; the limit is {MAX_BODY:,}"})
                return
            try:
                data = self.rfile.read(length)
                if len(data) < length:
                    self._reply(400, {"error": f"body ended after {len(data)} of {length} bytes"})
                    return
                body = json.loads(data or b"null")
                events = to_events(body)
            except TimeoutError:
                return  # the client stopped sending: close
            except RecursionError:
                self._reply(400, {"error": "body is not JSON: nested too deeply"})
                return
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._reply(400, {"error": f"body is not JSON: {exc}"})
                return
            except RelayError as exc:
                self._reply(400, {"error": str(exc)})
                return
            if events:
                try:
                    post_events(prefect_api, events)
                except PrefectError as exc:
                    log.warning("could not post %d events: %s", len(events), exc)
                    self._reply(502, {"error": f"Prefect did not take the events: {exc}"})
                    return
                if events_log is not None:
                    with open(events_log, "a") as fh:
                        for e in events:
                            fh.write(json.dumps({**e, "delivered": "prefect", "via": "alertmanager"}) + "\n")
            log.info("relayed %d events: %s", len(events), [e["event"] for e in events])
            self._reply(200, {"relayed": [e["event"] for e in events]})

        def log_message(self, fmt, *args):
            log.debug("relay: " + fmt, *args)

    return Handler


class BoundedServer(ThreadingHTTPServer):
    """At most ``MAX_CONNECTIONS`` connections served at once; more are closed at once (slow clients
    cannot make the relay start threads without end)."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            log.warning("relay: %d connections open, refusing one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(host: str, port: int, prefect_api: str, events_log: Path | None = None,
                token: str | None = None) -> ThreadingHTTPServer:
    return BoundedServer((host, port), make_handler(prefect_api, events_log, token))


def serve(host: str, port: int, prefect_api: str, events_log: Path | None = None, token: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(host, port, prefect_api, events_log, token)
    print(f"relaying Alertmanager webhooks on http://{host}:{port}/ to {prefect_api.rstrip('/')}/events"
          " (bearer token required)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9095)
    ap.add_argument("--prefect-api", required=True)
    ap.add_argument("--token-file", type=Path, help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    a = ap.parse_args()
    token = a.token_file.read_text().strip() if a.token_file else os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise SystemExit(f"no relay token: {a.token_file or TOKEN_ENV} is empty; the relay does not run without one")
    serve(a.host, a.port, a.prefect_api, token=token)
