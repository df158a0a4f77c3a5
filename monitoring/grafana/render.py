"""Draw the Grafana dashboard's panels from a Prometheus, with matplotlib: a picture of what the
dashboard shows, for the docs and for places with no Grafana (none installs here: it is in
neither Debian's repositories nor PyPI).

It is our rendering of the dashboard's own queries, not a Grafana screenshot: each panel of
monitoring/grafana/mnist-continual.json at its gridPos, its targets' PromQL sent to the
Prometheus HTTP API (``/api/v1/query_range``) with Grafana's interval macros expanded as Grafana
expands them, each series named by the target's legendFormat, the unit, min/max and dashed
thresholds of the panel's field config. Timeseries and stat panels; rows as headings.

  python -m monitoring.grafana.render --prometheus http://127.0.0.1:9090 --minutes 30 \\
      --out docs/images/grafana-dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "mnist-continual.json"
GRID_COLUMNS = 24   # Grafana's grid: 24 columns; a grid row is 30 px high plus an 8 px margin
MACROS = ("__rate_interval", "__interval", "__range")  # the built-ins our queries may use
_MACRO = re.compile(r"\$\{?(\w+)\}?")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
           "#37872d", "#fade2a"]  # Grafana's classic palette, in its order
COLOURS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a"}
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


@dataclass
class Series:
    name: str
    times: list[float]
    values: list[float]


def load(path: Path = DASHBOARD) -> dict:
    return json.loads(Path(path).read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, with the panels of collapsed rows after their row."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []) if p.get("type") == "row" else [])
    return out


def queries(dashboard: dict) -> list[tuple[dict, dict]]:
    """(panel, target) for every PromQL target of the dashboard."""
    return [(p, t) for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def variables(expr: str) -> set[str]:
    """The names of the Grafana variables in ``expr`` ($name or ${name})."""
    return set(_MACRO.findall(expr))


def rate_interval(step_s: float, scrape_s: float) -> float:
    """Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval)."""
    return max(step_s + scrape_s, 4 * scrape_s)


def expand(expr: str, *, interval_s: float, rate_interval_s: float, range_s: float) -> str:
    """``expr`` with Grafana's interval macros replaced; any other variable is an error (the
    dashboard's only variable, ``datasource``, picks the data source and never enters a query)."""
    values = {"__interval": interval_s, "__rate_interval": rate_interval_s, "__range": range_s}
    unknown = variables(expr) - set(MACROS)
    if unknown:
        raise ValueError(f"query uses variables this renderer cannot fill: {sorted(unknown)}: {expr}")
    return _MACRO.sub(lambda m: f"{max(1, round(values[m.group(1)]))}s", expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    """A series' name as Grafana builds it from the target's legendFormat."""
    if fmt and fmt != "__auto":
        return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt)
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return labels.get("__name__", "") + ("{" + inner + "}" if inner else "") or "value"


def query_range(prometheus: str, expr: str, start: float, end: float, step_s: float,
                timeout: float = 30.0) -> list[dict]:
    """The ``result`` of Prometheus' /api/v1/query_range; raises RuntimeError with Prometheus'
    own error when the query is refused."""
    import httpx

    r = httpx.get(f"{prometheus.rstrip('/')}/api/v1/query_range", timeout=timeout,
                  params={"query": expr, "start": start, "end": end, "step": step_s})
    body = r.json()
    if r.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def fetch(dashboard: dict, prometheus: str, start: float, end: float, *, step_s: float | None = None,
          scrape_s: float = 15.0) -> dict[int, list[Series]]:
    """Every panel's series over [start, end], by panel id. ``step_s`` defaults to Grafana's
    $__interval for a panel about 1,000 pixels wide; ``scrape_s`` is the data source's scrape
    interval, which Grafana's $__rate_interval needs (15 s: Grafana's and Prometheus' default)."""
    step = step_s or max(1.0, (end - start) / 1000)
    out: dict[int, list[Series]] = {}
    for panel, target in queries(dashboard):
        expr = expand(target["expr"], interval_s=step, rate_interval_s=rate_interval(step, scrape_s),
                      range_s=end - start)
        for res in query_range(prometheus, expr, start, end, step):
            vals = [(float(t), float(v)) for t, v in res["values"]]
            out.setdefault(panel["id"], []).append(
                Series(legend(target.get("legendFormat", ""), res["metric"]),
                       [t for t, _ in vals], [v for _, v in vals]))
    return out


def _format(unit: str, v: float) -> str:
    if v is None or math.isnan(v):
        return "No data"
    if unit == "percentunit":
        return f"{v:.0%}" if abs(v) >= 0.1 else f"{v:.1%}"
    if unit == "s":
        if abs(v) < 1:
            return f"{v * 1e3:.0f} ms"
        return f"{v:.0f} s" if v < 120 else f"{v / 60:.0f} min"
    if unit == "reqps":
        return f"{v:.2g} req/s"
    return f"{v:.3g}"


def _thresholds(defaults: dict) -> list[tuple[float, str]]:
    steps = (defaults.get("thresholds") or {}).get("steps", [])
    return [(s["value"], COLOURS.get(s["color"], s["color"])) for s in steps if s.get("value") is not None]


def _draw_timeseries(ax, panel: dict, series: list[Series], span: tuple[float, float] | None = None) -> None:
    from datetime import datetime

    import matplotlib.dates as mdates
    import matplotlib.ticker as mticker

    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    for i, s in enumerate(series):
        ax.plot([datetime.fromtimestamp(t) for t in s.times], s.values, color=PALETTE[i % len(PALETTE)],
                lw=1.4, label=s.name)
    if (defaults.get("custom", {}).get("thresholdsStyle") or {}).get("mode", "off") != "off":
        shown = ax.get_ylim()
        for value, colour in _thresholds(defaults):  # a threshold far off the data does not squash it
            ax.axhline(value, color=colour, lw=1, ls="--", alpha=0.8)
        near = [v for v, _ in _thresholds(defaults) if v <= shown[1] * 1.5]
        if series:
            ax.set_ylim(min([shown[0], *near]), max([shown[1], *near]))
    lo, hi = defaults.get("min"), defaults.get("max")
    if lo is not None or hi is not None:
        ax.set_ylim(bottom=lo, top=hi)
    elif "axisSoftMin" in defaults.get("custom", {}):
        ax.set_ylim(bottom=min(defaults["custom"]["axisSoftMin"], ax.get_ylim()[0]))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _format(unit, v)))
    if span:  # every panel shows the dashboard's time range, as in Grafana
        ax.set_xlim(datetime.fromtimestamp(span[0]), datetime.fromtimestamp(span[1]))
    seconds = (mdates.num2date(ax.get_xlim()[1]) - mdates.num2date(ax.get_xlim()[0])).total_seconds()
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if seconds <= 900 else "%H:%M"))
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.grid(color=GRID, lw=0.6)
    for side in ax.spines.values():
        side.set_visible(False)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1), fontsize=6.5, frameon=False, labelcolor=TEXT,
                  ncol=min(len(series), 5 if panel["gridPos"]["w"] > 8 or max(len(s.name) for s in series) <= 12
                           else 2), handlelength=1.2, columnspacing=1.0, borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)


def _draw_stat(ax, panel: dict, series: list[Series], span: tuple[float, float] | None = None) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    last = next((v for s in series for v in reversed(s.values) if not math.isnan(v)), float("nan"))
    colour = COLOURS["green"]
    for value, c in _thresholds(defaults):
        if not math.isnan(last) and last >= value:
            colour = c
    ax.set_facecolor(colour if not math.isnan(last) else PANEL)
    ax.text(0.5, 0.45, _format(defaults.get("unit", "short"), last), color="white", fontsize=22,
            ha="center", va="center", transform=ax.transAxes, weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def draw(dashboard: dict, data: dict[int, list[Series]], out: Path, *, subtitle: str = "",
         span: tuple[float, float] | None = None, width_in: float = 18.0) -> Path:
    """The dashboard as a PNG: each panel in its gridPos (24 columns), its title above it;
    ``span``: the time range (start, end) every panel shows (default: its data's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = panels(dashboard)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in ps)
    unit_w = width_in / GRID_COLUMNS
    unit_h = unit_w * 0.5  # a grid row is 38 px, a column about 75 px on a 1,800 px screen
    header = 0.9
    height = rows * unit_h + header
    fig = plt.figure(figsize=(width_in, height), facecolor=BACKGROUND)
    fig.text(0.01, 1 - 0.35 / height, dashboard["title"], color="white", fontsize=15, weight="bold", va="center")
    if subtitle:
        fig.text(0.01, 1 - 0.72 / height, subtitle, color=TEXT, fontsize=8, va="center")
    pad = 0.06  # inches between panels
    for p in ps:
        g = p["gridPos"]
        left, top = g["x"] * unit_w + pad, header + g["y"] * unit_h + pad
        w, h = g["w"] * unit_w - 2 * pad, g["h"] * unit_h - 2 * pad
        if p["type"] == "row":
            fig.text(left / width_in, 1 - (top + h / 2) / height, p.get("title", ""), color="white",
                     fontsize=11, weight="bold", va="center")
            continue
        frame = fig.add_axes((left / width_in, 1 - (top + h) / height, w / width_in, h / height))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for side in frame.spines.values():
            side.set_color(GRID)
        frame.text(0.012, 0.985, p.get("title", ""), color=TEXT, fontsize=8.5, weight="bold", va="top",
                   transform=frame.transAxes)
        plot = p["type"] == "timeseries"
        inner_top, inner_bottom, inner_left = 0.32, 0.5 if plot else 0.1, 0.6 if plot else 0.1
        ax = fig.add_axes(((left + inner_left) / width_in, 1 - (top + h - inner_bottom) / height,
                           (w - inner_left - 0.12) / width_in, (h - inner_top - inner_bottom) / height))
        ax.set_facecolor(PANEL)
        series = data.get(p["id"], [])
        (_draw_stat if p["type"] == "stat" else _draw_timeseries)(ax, p, series, span)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)
    return out


def render(prometheus: str, out: Path, *, start: float, end: float, dashboard: dict | None = None,
           step_s: float | None = None, scrape_s: float = 15.0, subtitle: str = "") -> dict[str, int]:
    """Query and draw; returns the number of series each panel got, by panel title."""
    dashboard = dashboard or load()
    data = fetch(dashboard, prometheus, start, end, step_s=step_s, scrape_s=scrape_s)
    draw(dashboard, data, out, subtitle=subtitle, span=(start, end))
    return {p["title"]: len(data.get(p["id"], [])) for p in panels(dashboard) if p["type"] != "row"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Draw the Grafana dashboard's panels from a Prometheus (our rendering, not Grafana's).",
        epilog="example: python -m monitoring.grafana.render --prometheus http://127.0.0.1:9090 "
               "--minutes 30 --out dashboard.png")
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=60.0, help="time range ending now (default: %(default)s)")
    ap.add_argument("--step", type=float, default=None, help="query step in seconds (default: range / 1000)")
    ap.add_argument("--scrape-interval", type=float, default=15.0,
                    help="the Prometheus scrape interval, for $__rate_interval (default: %(default)s s)")
    args = ap.parse_args(argv)
    end = time.time()
    counts = render(args.prometheus, args.out, start=end - args.minutes * 60, end=end,
                    dashboard=load(args.dashboard), step_s=args.step, scrape_s=args.scrape_interval)
    print(json.dumps({"out": str(args.out), "series": counts}, indent=1))


if __name__ == "__main__":
    main()
