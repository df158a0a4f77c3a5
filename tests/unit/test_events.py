import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mnistcl.events import DATASET_UPDATED, announce

pytestmark = pytest.mark.unit


def test_local_log_without_prefect(tmp_path):
    ev = announce(DATASET_UPDATED, "mnistcl.dataset.v2", {"version": "v2"}, events_log=tmp_path / "e.jsonl")
    assert ev["delivered"] == "local"
    line = json.loads((tmp_path / "e.jsonl").read_text())
    assert line["event"] == DATASET_UPDATED and line["payload"] == {"version": "v2"}


class FakePrefect:
    """A stand-in for Prefect's API that records what Prefect's client sends: the CSRF token
    request (answered as a server with CSRF protection off does) and the POSTs with their headers."""

    def __init__(self, status: int = 204):
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/api/csrf-token"):
                    body = b'{"detail": "CSRF protection is disabled."}'
                    self.send_response(422)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_POST(self):
                got.append((self.path, dict(self.headers), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = HTTPServer(("127.0.0.1", 0), H)
        self.api = f"http://127.0.0.1:{self.srv.server_port}/api"

    def __enter__(self):
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def test_posts_to_prefect_events_endpoint_with_the_servers_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:pa55")  # a self-hosted server's basic auth
    with FakePrefect() as fake:
        ev = announce(DATASET_UPDATED, "mnistcl.dataset.v3", {"version": "v3"}, prefect_api=fake.api,
                      events_log=tmp_path / "e.jsonl")
    assert ev["delivered"] == "prefect"
    path, headers, body = fake.got[0]
    assert path == "/api/events"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"admin:pa55").decode()
    assert body[0]["event"] == DATASET_UPDATED
    assert body[0]["resource"]["prefect.resource.id"] == "mnistcl.dataset.v3"


def test_refused_events_raise_and_announce_keeps_the_local_record(tmp_path):
    from mnistcl.prefect_client import PrefectError, post_events

    with FakePrefect(status=401) as fake:
        with pytest.raises(PrefectError, match="did not take 1 event"):
            post_events(fake.api, [{"event": "x"}])
        ev = announce(DATASET_UPDATED, "r", prefect_api=fake.api, events_log=tmp_path / "e.jsonl")
    assert ev["delivered"] == "local"
    assert json.loads((tmp_path / "e.jsonl").read_text())["delivered"] == "local"


def test_unreachable_prefect_is_not_fatal(tmp_path):
    from tests.conftest import free_port

    ev = announce(DATASET_UPDATED, "r", prefect_api=f"http://127.0.0.1:{free_port()}/api",
                  events_log=tmp_path / "e.jsonl", timeout=1)
    assert ev["delivered"] == "local"


@pytest.mark.parametrize("prefect_status, relay_status", [(204, 200), (500, 502)])
def test_relay_forwards_through_prefects_client_and_answers_502_when_refused(tmp_path, monkeypatch,
                                                                              prefect_status, relay_status):
    """The relay's events go through Prefect's client (with the server's auth); when Prefect does
    not take them the relay answers 502, so Alertmanager retries, and logs nothing as delivered."""
    import httpx

    from monitoring.relay import make_server

    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:pa55")
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")  # a 5xx is not retried here
    alert = {"status": "firing", "alerts": [{"status": "firing", "labels": {
        "alertname": "MnistDrift", "prefect_event": "mnistcl.drift.detected"}}]}
    with FakePrefect(status=prefect_status) as fake:
        relay = make_server("127.0.0.1", 0, fake.api, events_log=tmp_path / "e.jsonl", token="relay-token-0123456789")
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        try:
            r = httpx.post(f"http://127.0.0.1:{relay.server_address[1]}/", json=alert, timeout=30,
                           headers={"Authorization": "Bearer relay-token-0123456789"})
        finally:
            relay.shutdown()
            relay.server_close()
    assert r.status_code == relay_status, r.text
    path, headers, body = fake.got[0]
    assert path == "/api/events" and body[0]["event"] == "mnistcl.drift.detected"
    assert headers["Authorization"].startswith("Basic ")
    logged = (tmp_path / "e.jsonl").read_text() if (tmp_path / "e.jsonl").exists() else ""
    assert ("mnistcl.drift.detected" in logged) is (relay_status == 200)
