"""The Grafana dashboard (monitoring/grafana/mnist-continual.json) is real.

No Grafana installs here (Debian does not package it; PyPI's `grafana` is a placeholder), so: the
JSON is validated against our schema of a dashboard and its Prometheus queries
(monitoring/grafana/dashboard.schema.json, written from Grafana's dashboard model, see
monitoring/grafana/README.md), and every panel's PromQL runs on a real Prometheus that scrapes the real model server and a real Pushgateway, after real
predictions, feedback, a promotion and real monitoring checks (monitoring.check.run_check, which
pushes its gauges itself).

The picture in the docs comes from the same run, made longer:
  MNISTCL_DASHBOARD_PNG=docs/images/grafana-dashboard.png MNISTCL_DASHBOARD_SECONDS=90 \\
      .venv/bin/python -m pytest tests/monitoring/test_grafana_dashboard.py -k prometheus
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
import yaml

from deployment import serve as launch
from deployment.serve import free_port, wait_http_ok
from monitoring.grafana import render
from serving.client import ModelServer, ServerError

GRAFANA = Path(render.__file__).resolve().parent
RULES = GRAFANA.parent / "prometheus" / "rules.yml"
DS = {"type": "prometheus", "uid": "${datasource}"}


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((GRAFANA / "dashboard.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(dashboard: dict) -> list[str]:
    """What our dashboard schema (panels, grid, variables, Prometheus queries) finds wrong."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(dashboard)]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return render.load()


def test_dashboard_passes_the_schema(dashboard):
    assert schema_errors(dashboard) == []


@pytest.mark.parametrize("mistake, where", [
    ("panel too wide", "panels/1/gridPos/w"),
    ("misspelt query field", "panels/1/targets/0"),
    ("unknown variable type", "templating/list/0/type"),
    ("panel without type", "panels/1"),
    ("refresh as a number", "refresh"),
    ("gridPos without h", "panels/1/gridPos"),
])
def test_the_schema_check_catches_mistakes(dashboard, mistake, where):
    bad = copy.deepcopy(dashboard)
    panel = bad["panels"][1]
    assert panel["type"] == "timeseries"
    if mistake == "panel too wide":
        panel["gridPos"]["w"] = 30
    elif mistake == "misspelt query field":
        panel["targets"][0]["legendFromat"] = panel["targets"][0].pop("legendFormat")
    elif mistake == "unknown variable type":
        bad["templating"]["list"][0]["type"] = "prometheus"
    elif mistake == "panel without type":
        del panel["type"]
    elif mistake == "gridPos without h":
        del panel["gridPos"]["h"]
    else:
        bad["refresh"] = 30
    errors = schema_errors(bad)
    assert errors and all(e.startswith(where + ":") for e in errors), (mistake, errors)


def test_dashboard_is_what_grafana_provisions(dashboard):
    """What the schema cannot say: identity, the one variable, the layout, the queries' variables."""
    assert dashboard["uid"] == "mnist-continual" and dashboard["title"] == "mnist-continual: the model"
    assert dashboard["refresh"] == "30s" and dashboard["schemaVersion"] >= 39
    assert dashboard["templating"]["list"] == [{
        "type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
        "current": {"selected": False, "text": "default", "value": "default"}, "hide": 0, "includeAll": False,
        "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False}]
    ps = render.panels(dashboard)
    assert len({p["id"] for p in ps}) == len(ps), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in ps:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in cells, f"{p['title']!r} overlaps {cells[cell]!r}"
            cells[cell] = p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS and p["title"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(set(refs)) == len(refs), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
            # Only Grafana's interval macros: a $job or $namespace would need a variable the dashboard lacks.
            assert render.variables(t["expr"]) <= set(render.MACROS), (p["title"], t["expr"])
    exprs = " ".join(t["expr"] for _, t in render.queries(dashboard))
    for metric in ("mnist_requests_total", "mnist_request_seconds_bucket", "mnist_images_total",
                   "mnist_confidence_bucket", "mnist_low_confidence_total", "mnist_predicted_class_total",
                   "mnist_feedback_total", "mnist_feedback_correct_total", "mnist_shadow_disagreements_total",
                   "mnistcl_drift_share", "mnistcl_window_low_confidence_share", "mnistcl_window_estimated_accuracy",
                   "mnistcl_window_breach", "mnistcl_input_rule_share", "mnistcl_monitor_last_check_timestamp_seconds",
                   "ALERTS"):
        assert metric in exprs, f"no panel shows {metric}"


def test_grafana_macros_expand_as_grafana_expands_them():
    assert render.rate_interval(step_s=2, scrape_s=15) == 60  # 4 x scrape interval
    assert render.rate_interval(step_s=120, scrape_s=15) == 135  # step + scrape interval
    assert render.expand("rate(x[$__rate_interval]) + y[${__range}]", interval_s=2, rate_interval_s=60,
                         range_s=3600) == "rate(x[60s]) + y[3600s]"
    with pytest.raises(ValueError, match="job"):
        render.expand('x{job="$job"}', interval_s=1, rate_interval_s=4, range_s=60)
    assert render.legend("{{endpoint}} {{outcome}}", {"endpoint": "predict", "outcome": "ok"}) == "predict ok"


# ---------------------------------------------------------------- a real Prometheus


class Prometheus:
    """Debian's prometheus on 127.0.0.1: scrapes the given targets every second, evaluates the
    project's alerting rules (so ALERTS exists as on the cluster), keeps its TSDB in ``folder``."""

    def __init__(self, folder: Path, scrape: dict[str, dict]):
        binary = shutil.which("prometheus")
        if not binary:
            pytest.skip("prometheus not installed (apt-get install prometheus)")
        folder.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": job, **cfg} for job, cfg in scrape.items()]}
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = folder / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        if not wait_http_ok(f"{self.url}/-/ready", 60, interval=0.2):
            self.stop()
            pytest.fail(f"Prometheus did not start: {self.log.read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        res = self.query(expr)
        return float(res[0]["value"][1]) if res else None

    def wait_for(self, expr: str, want, timeout: float = 30.0) -> float | None:
        """Poll ``expr`` until ``want(value)``; the last value either way."""
        deadline = time.time() + timeout
        while True:
            v = self.value(expr)
            if (v is not None and want(v)) or time.time() > deadline:
                return v
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _train(x, y, epochs: int, seed: int, export: Path) -> dict:
    import models.torchnet as tn
    from models.common import NullReporter, TrainData

    n = len(x) * 9 // 10
    m = tn.train(TrainData(x[:n], y[:n], x[n:], y[n:]), tn.Config(epochs=epochs, batch_size=32, channels=8, seed=seed),
                 NullReporter())
    return m.export(export)


def _register(reg, files: dict, xv, yv) -> str:
    """A version with the label-free estimator the gate would have fitted on its validation data."""
    from mnistcl.onnx_utils import OnnxModel
    from monitoring.estimate import fit

    est = fit(OnnxModel(files["onnx"]).predict(xv), yv, "atc")
    mv = reg.register(files=files, family="torchnet", config={}, dataset="v1",
                      validation={"metrics": {"estimators": {"atc": est.to_json()}}})
    return mv.id


class Traffic:
    """Clients of the real model server: predictions (ndarray), feedback for every other request,
    and a bad payload now and then; counts what the server answered."""

    def __init__(self, url: str, feedback_token: str):
        self.images, self.labels, self.correct, self.served = 0, 0, 0, set()
        self.server = ModelServer(url, feedback_token=feedback_token)

    def play(self, x: np.ndarray, y: np.ndarray, seconds: float, per_request: int = 8) -> None:
        """Send ``x`` evenly over ``seconds`` (light load: a few requests a second). Any answer
        but 200 fails the test (ServerError), except the bad payloads, which must get a 400."""
        n = len(x) // per_request
        start = time.time()
        for i in range(n):
            xs, ys = x[i * per_request:(i + 1) * per_request], y[i * per_request:(i + 1) * per_request]
            tags = self.server.predict(xs)
            self.images += len(xs)
            self.served.add(tags["model_version"])
            if i % 2 == 0:
                fb = self.server.feedback(tags["request_id"], [int(v) for v in ys])
                self.labels += len(ys)
                self.correct += int(fb["meta"]["tags"]["correct"])
            if i % 10 == 5:
                with pytest.raises(ServerError) as bad:
                    self.server.predict(np.array([[1, 2, 3]]))
                assert bad.value.status == 400
            time.sleep(max(0.0, start + (i + 1) * seconds / n - time.time()))


def _cohorts(x: np.ndarray, seconds: float, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Phases of traffic: MNIST-like handwriting, then the scenario's slanted cohort, then thick
    markers with some photos taken inverted (configs/scenario.yaml's shifts)."""
    from mnistcl.shifts import apply

    def u8(images):
        return np.round(images * 255).astype(np.uint8)

    thick = u8(apply(x, {"thicken": 1}, rng))
    inverted = rng.random(len(x)) < 0.1  # photos of a white sheet: the `inverted` input rule
    thick[inverted] = 255 - thick[inverted]
    phases = [("baseline", x), ("slanted", u8(apply(x, {"slant": 0.45, "rotate": 12}, rng))), ("thick", thick)]
    if seconds >= 60:  # the longer run for the docs: two windows of each
        phases = [p for p in phases for _ in range(2)]
    return phases


@pytest.mark.integration
@pytest.mark.slow  # about a minute: two small models trained, a server, Prometheus, 9 s of traffic
def test_every_panel_query_runs_on_a_real_prometheus(tmp_path, mnist_medium, pushgateway):
    """Real traffic through the model server, real monitoring checks pushing to a real
    Pushgateway, one real Prometheus scraping both: every panel's query is accepted, and each
    panel has data; the pushed gauges read back as the checks computed them."""
    from mnistcl.settings import Settings
    from mnistcl.stores import stores
    from monitoring.check import run_check
    from monitoring.rules import load_config

    if not launch.SERVE_PYTHON.exists():
        pytest.skip("the serving environment is missing: run `make venv-serve`")
    if not shutil.which("prometheus"):
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    # The fixture's Pushgateway keeps nothing from an earlier run: every gauge read below is this run's.
    assert "mnistcl_" not in httpx.get(f"{pushgateway}/metrics", timeout=10).text
    seconds = float(os.environ.get("MNISTCL_DASHBOARD_SECONDS", "9"))
    x, y = mnist_medium["train"]
    xt, yt = mnist_medium["test"]
    s = Settings(home=tmp_path / "home", pushgateway_url=pushgateway)
    ds, reg = stores(s)
    ds.create({"train": (x[:1000], y[:1000]), "test": (xt[:200], yt[:200])}, parent=None, source="test: MNIST")
    champion = _register(reg, _train(x[:1000], y[:1000], 2, 0, tmp_path / "m1"), xt[200:500], yt[200:500])
    challenger = _register(reg, _train(x[:1000], y[:1000], 1, 1, tmp_path / "m2"), xt[200:500], yt[200:500])
    reg.promote(champion, "champion", reason="test")
    reg.promote(challenger, "challenger", reason="test: shadowed")

    rng = np.random.default_rng(0)
    phases = _cohorts(xt[1000:], seconds, rng)
    per_phase = int(min(500, max(120, 4 * 8 * seconds / len(phases))) // 8 * 8)  # ~4 requests/s, 8 digits each
    cfg = replace(load_config(None), window_images=per_phase, min_images=per_phase)
    port, mport = free_port(), free_port()
    server = launch.start(s.store_url, s.predictions_db_path, tmp_path / "cache", tmp_path / "serve.log",
                          port=port, metrics_port=mport, threads=4, poll_s=0.5, timeout=90,
                          feedback_tokens=s.feedback_tokens_value())
    prom = None
    try:
        prom = Prometheus(tmp_path / "prometheus", {
            "mnist-model-server": {"static_configs": [{"targets": [f"127.0.0.1:{mport}"]}], "metrics_path": "/metrics"},
            "pushgateway": {"honor_labels": True, "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}]},
        })
        for job in ("mnist-model-server", "pushgateway"):  # scraped before the first request
            assert prom.wait_for(f'up{{job="{job}"}}', lambda v: v == 1) == 1, prom.query("up")
        started = time.time()
        traffic = Traffic(f"http://127.0.0.1:{port}", s.feedback_token_value())
        checks = []
        with ThreadPoolExecutor(1) as monitor:  # each window's check runs while the next phase plays
            for i, (_, images) in enumerate(phases):
                if i == len(phases) - 1:  # the retrained challenger wins: the server hot-swaps to it
                    reg.promote(challenger, "champion", reason="test: promotion")
                offset = (i * per_phase) % (len(images) - per_phase)
                traffic.play(images[offset:offset + per_phase], yt[1000 + offset:1000 + offset + per_phase],
                             seconds / len(phases))
                checks.append(monitor.submit(run_check, s, cfg, notify=False))
            results = [c.result() for c in checks]
        assert [r.status for r in results] == ["checked"] * len(phases), [r.reasons for r in results]
        assert all(r.metrics_push == "ok" for r in results), [r.metrics_push for r in results]
        assert traffic.served == {champion, challenger}, traffic.served

        # Prometheus holds what the model server's metrics page says once its last flush is in.
        # Not always every image: the Seldon wrapper rewrites the metrics store on each request
        # (an empty update) and can overwrite a concurrent flush, so a few increments are lost.
        for metric, sent in (("mnist_images_total", traffic.images), ("mnist_feedback_total", traffic.labels)):
            page = _exposed(f"http://127.0.0.1:{mport}/metrics", metric)
            assert prom.wait_for(f"sum({metric})", lambda v, page=page: v == page) == page, metric
            assert 0.8 * sent <= page <= sent, (metric, page, sent)
        last = results[-1]
        assert prom.wait_for("max(mnistcl_monitor_last_check_timestamp_seconds)",
                             lambda v: v == last.window_end) == pytest.approx(last.window_end)
        # Every query of every panel, as Grafana would send it (a 30 s $__rate_interval).
        empty = []
        for panel, target in render.queries(render.load()):
            expr = render.expand(target["expr"], interval_s=1, rate_interval_s=30, range_s=time.time() - started)
            if not prom.query(expr) and "ALERTS" not in expr:
                empty.append(f"{panel['title']} / {target['legendFormat']}")
        assert empty == [], "panels without data"
        # ALERTS has a series once an alert condition holds (pending for its `for:`, then firing):
        # the rules file is the one the cluster's PrometheusRule wraps.
        if last.drift.share >= 0.3:
            assert prom.wait_for('count(ALERTS{alertname="MnistInputDrift",prefect_event!=""})', lambda v: v >= 1)

        # The pushed gauges read back as the last check computed them.
        low = next(r.share for r in last.prediction_rules if r.name == "low_confidence")
        assert prom.value("max(mnistcl_drift_share)") == pytest.approx(last.drift.share)
        assert prom.value("max(mnistcl_window_estimated_accuracy)") == pytest.approx(last.estimate["accuracy"])
        assert prom.value("max(mnistcl_window_low_confidence_share)") == pytest.approx(low)
        assert prom.value("max(mnistcl_window_breach)") == int(last.breach)
        # And the live panels carry numbers a person can read.
        rate = render.expand("sum(rate(mnist_images_total[$__rate_interval]))", interval_s=1, rate_interval_s=30, range_s=0)
        assert prom.value(rate) > 0
        acc = prom.value("sum(rate(mnist_feedback_correct_total[1h])) / sum(rate(mnist_feedback_total[1h]))")
        assert 0.3 < acc <= 1.0, (acc, traffic.correct, traffic.labels)

        # The renderer draws the same queries over the run.
        out = Path(os.environ.get("MNISTCL_DASHBOARD_PNG") or tmp_path / "dashboard.png")
        # Drawn as Grafana would query a Prometheus scraping every 5 s: $__rate_interval 20 s, smoother lines.
        counts = render.render(prom.url, out, start=started - 5, end=time.time() + 2, step_s=1, scrape_s=5,
                               subtitle=_subtitle(seconds, phases, champion, challenger))
        assert out.stat().st_size > 50_000
        assert all(n > 0 for n in counts.values()), counts
        assert counts["Images per second, by served model version"] == 2  # the promotion switched the line
    finally:
        if prom is not None:
            prom.stop()
        launch.stop(server)


def _exposed(url: str, metric: str, settle: float = 1.5) -> float:
    """The sum of ``metric`` on a Prometheus text page, once it holds still for ``settle`` s
    (the model server flushes its metrics every 0.5 s)."""
    last, since = None, time.time()
    deadline = time.time() + 30
    while time.time() < deadline:
        text = httpx.get(url, timeout=10).text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith((metric + "{", metric + " ")))
        if total != last:
            last, since = total, time.time()
        elif time.time() - since >= settle:
            break
        time.sleep(0.25)
    return last


def _subtitle(seconds, phases, champion, challenger) -> str:
    names = ", ".join(dict.fromkeys(n for n, _ in phases))
    return (f"Our rendering of this dashboard's queries against a real Prometheus (not a Grafana screenshot): "
            f"{seconds:.0f} s of real traffic through the Seldon model server ({names} handwriting), "
            f"{challenger} shadowed then promoted over {champion}; gauges pushed by real monitoring checks. "
            f"Step 1 s, $__rate_interval 20 s.")


def test_render_cli_refuses_an_unreachable_prometheus(tmp_path):
    with pytest.raises(httpx.HTTPError):
        render.main(["--prometheus", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "x.png"),
                     "--minutes", "1"])
    assert not (tmp_path / "x.png").exists()


def test_render_draws_every_panel_from_prometheus_answers(tmp_path, dashboard):
    """The drawing alone, on answers shaped as Prometheus sends them."""
    now = time.time()
    data = {p["id"]: [render.Series("a", [now - 60 + i for i in range(60)], [0.5 + 0.1 * math.sin(i / 5) for i in range(60)])]
            for p in render.panels(dashboard) if p["type"] != "row"}
    out = render.draw(dashboard, data, tmp_path / "d.png")
    assert out.stat().st_size > 50_000
