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


def test_posts_to_prefect_events_endpoint(tmp_path):
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        api = f"http://127.0.0.1:{srv.server_port}/api"
        ev = announce(DATASET_UPDATED, "mnistcl.dataset.v3", {"version": "v3"}, prefect_api=api,
                      events_log=tmp_path / "e.jsonl")
    finally:
        srv.shutdown()
    assert ev["delivered"] == "prefect"
    path, body = got[0]
    assert path == "/api/events"
    assert body[0]["event"] == DATASET_UPDATED
    assert body[0]["resource"]["prefect.resource.id"] == "mnistcl.dataset.v3"


def test_unreachable_prefect_is_not_fatal(tmp_path):
    from tests.conftest import free_port

    ev = announce(DATASET_UPDATED, "r", prefect_api=f"http://127.0.0.1:{free_port()}/api",
                  events_log=tmp_path / "e.jsonl", timeout=1)
    assert ev["delivered"] == "local"
