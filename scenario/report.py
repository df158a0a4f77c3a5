"""The scenario's report: scenario.json, three PNG plots and report.md linking every artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mnistcl.stores import stores
from monitoring.rules import load_config


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _marks(ax, windows: list[dict]) -> None:
    """Alerts (orange, dashed) and promotions (green) on a per-window axis."""
    alerted = promoted = False
    for w in windows:
        if w.get("events"):
            ax.axvline(w["index"], color="tab:orange", ls="--", lw=1, label=None if alerted else "retraining triggered")
            alerted = True
        r = w.get("retrain") or {}
        if (r.get("gate") or {}).get("promoted") or (w.get("judgement") or {}).get("verdict") == "promote":
            ax.axvline(w["index"] + 0.5, color="tab:green", lw=2, alpha=0.7,
                       label=None if promoted else "new champion promoted")
            promoted = True
    bounds = [w["index"] for i, w in enumerate(windows) if i and w["cohort"] != windows[i - 1]["cohort"]]
    for b in bounds:
        ax.axvline(b - 0.5, color="0.8", lw=0.8)


def plot_accuracy(result: dict, out: Path) -> Path:
    plt = _plt()
    ws = result["windows"]
    x = [w["index"] for w in ws]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(x, [w["accuracy"] for w in ws], "o-", label="continual pipeline (served)")
    ax.plot(x, [w["static_accuracy"] for w in ws], "s--", color="tab:red", label=f"static model {result['static_version']}")
    est = [(w["index"], w["estimated_accuracy"]) for w in ws if w.get("estimated_accuracy") is not None]
    if est:
        ax.plot(*zip(*est, strict=True), "x:", color="tab:purple", label="label-free estimate (before feedback)")
    _marks(ax, ws)
    starts = {}
    for w in ws:
        starts.setdefault(w["cohort_name"], w["index"])
    for name, i in starts.items():
        ax.text(i - 0.4, 1.0, name, fontsize=8, va="top", rotation=0, color="0.35")
    ax.set_xlabel("monitoring window (production traffic, in order)")
    ax.set_ylabel("accuracy on the window's digits")
    ax.set_ylim(min(0.3, min(w["static_accuracy"] for w in ws) - 0.05), 1.02)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Production accuracy over time: continual learning vs a model never retrained")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_monitoring(result: dict, out: Path, drift_share: float, low_conf_max: float) -> Path:
    plt = _plt()
    ws = [w for w in result["windows"] if w.get("drift_share") is not None]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    x = [w["index"] for w in ws]
    ax.plot(x, [w["drift_share"] for w in ws], "o-", label="drift: share of features drifted")
    ax.plot(x, [w["low_confidence"] for w in ws], "s-", label="share of predictions with confidence < 0.5")
    ax.axhline(drift_share, color="tab:blue", ls=":", lw=1, label=f"drift threshold {drift_share}")
    ax.axhline(low_conf_max, color="tab:orange", ls=":", lw=1, label=f"low-confidence limit {low_conf_max}")
    _marks(ax, result["windows"])
    ax.set_xlabel("monitoring window")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.set_title("Drift score and low-confidence share per window")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_matrix(result: dict, out: Path) -> Path:
    plt = _plt()
    names = [c["name"] for c in result["cohorts"]]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8), sharey=True)
    for ax, key, title in ((axes[0], "R", "continual pipeline"), (axes[1], "R_static", "static model")):
        R = np.array(result[key])
        im = ax.imshow(R, vmin=0.3, vmax=1.0, cmap="viridis")
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if R[i, j] < 0.75 else "black")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), [f"after {n}" for n in names], fontsize=8)
        ax.set_xlabel("evaluated on cohort (held-out digits)")
        ax.set_title(f"Accuracy matrix R[i][j]: {title}")
    axes[1].tick_params(labelleft=False)  # shared rows: the labels once, on the left
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def _rel(path: str | Path | None, base: Path) -> str:
    if not path:
        return "-"
    p = Path(path)
    try:
        return str(p.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)


def write_report(result: dict[str, Any], out_dir: Path, settings) -> Path:

    cfg = load_config(settings.monitoring_config or None)
    (out_dir / "scenario.json").write_text(json.dumps(result, indent=1, default=str))
    plots = {"accuracy": plot_accuracy(result, out_dir / "accuracy_over_time.png"),
             "monitoring": plot_monitoring(result, out_dir / "monitoring_over_time.png", cfg.drift.drift_share,
                                           cfg.low_confidence_max_share),
             "matrix": plot_matrix(result, out_dir / "accuracy_matrix.png")}
    m, ms = result["metrics"], result["metrics_static"]
    names = [c["name"] for c in result["cohorts"]]
    lines = [
        "# Continual-learning scenario report", "",
        f"{len(names)} cohorts, {result['images']:,} digits in {result['requests']:,} requests through the Seldon "
        f"model server; retraining strategy `{result['strategy']}` via {result['orchestrator']}; "
        f"{result['seconds']:.0f} s in all. Static model: {result['static_version']}; final champion: "
        f"{result['final_champion']}.", "",
        "## Continual-learning metrics", "",
        "| | ACC (mean accuracy over all cohorts after the last update) | BWT (backward transfer) | mean forgetting |",
        "|---|---|---|---|",
        f"| continual pipeline | {m['ACC']:.4f} | {m['BWT']:+.4f} | {m['mean_forgetting']:.4f} |",
        f"| static model | {ms['ACC']:.4f} | {ms['BWT']:+.4f} | {ms['mean_forgetting']:.4f} |", "",
        "Forgetting per cohort (continual): " + ", ".join(f"{n} {f:.3f}" for n, f in zip(names, m["forgetting"], strict=True)),
        "", "## Plots", "",
        f"![accuracy over time]({plots['accuracy'].name})", "",
        f"![drift and low confidence]({plots['monitoring'].name})", "",
        f"![accuracy matrix]({plots['matrix'].name})", "",
        "## Accuracy matrix (continual): R[i][j] = champion after cohort i on cohort j", "",
        "| after \\ on | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, row in enumerate(result["R"]):
        lines.append(f"| {names[i]} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    est = [(w["estimated_accuracy"], w["accuracy"]) for w in result["windows"] if w.get("estimated_accuracy") is not None]
    if est:
        lines += ["", f"Label-free accuracy estimate (before feedback) against the served accuracy: mean absolute error "
                      f"{np.mean([abs(a - b) for a, b in est]):.4f} over {len(est)} windows."]
    lines += ["", "## Windows", "",
              "| window | cohort | served accuracy | estimated (label-free) | static accuracy | drift share | low confidence "
              "| decision | check |",
              "|---|---|---|---|---|---|---|---|---|"]
    for w in result["windows"]:
        folder = w.get("check_folder")
        e = w.get("estimated_accuracy")
        lines.append(f"| {w['index']} | {w['cohort_name']} | {w['accuracy']:.3f} | {'-' if e is None else f'{e:.3f}'} | "
                     f"{w.get('drift_share', float('nan')):.2f} | {w.get('low_confidence') or 0:.2f} | "
                     f"{(', '.join(w.get('events') or []) or w.get('decision') or w['check'])} | "
                     + (f"[report]({_rel(folder, out_dir)}/check.md), [drift]({_rel(w.get('drift_report'), out_dir)})"
                        if folder else "-") + " |")
    lines += ["", "## Retraining and promotions", "",
              "| window | status | candidate | gate verdict | promoted | validation report | Prefect flow run | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for w in result["windows"]:
        r = w.get("retrain")
        if not r:
            continue
        g = r.get("gate") or {}
        lines.append(f"| {w['index']} | {r.get('status')} | {g.get('version', '-')} | "
                     f"{(g.get('verdict', '') + ': ' + g.get('why', '')) if g else r.get('why', '-')} | "
                     f"{(g.get('promoted') or {}).get('version', '-')} | "
                     f"{'[report](' + _rel(g.get('report_md'), out_dir) + ')' if g.get('report_md') else '-'} | "
                     f"{r.get('flow_run', '-')} | {r.get('seconds', 0):.0f} |")
    judged = [(w["index"], w["judgement"]) for w in result["windows"] if (w.get("judgement") or {}).get("verdict")]
    lines += ["", "## Challenger judgements (shadow traffic)", ""]
    if judged:
        lines += ["| window | challenger | champion | labelled images | difference | interval | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for i, j in judged:
            lines.append(f"| {i} | {j['challenger']} | {j['champion']} | {j['n']} | {j['estimate']:+.4f} | "
                         f"[{j['interval'][0]:+.4f}, {j['interval'][1]:+.4f}] | {j['verdict']}: {j['why']} |")
    else:
        lines.append("- none: no candidate was left without enough evidence")
    outbox = sorted(settings.outbox.glob("*.eml")) if settings.outbox.exists() else []
    lines += ["", f"## Alerts ({len(outbox)} emails in the outbox)", ""]
    lines += [f"- [{p.name}]({_rel(p, out_dir)})" for p in outbox] or ["- none"]

    _, reg = stores(settings)
    lines += ["", "## Promotions (registry history of `champion` and `challenger`)", ""]
    for mv in reg.history():
        lines.append(f"- {mv.at} {mv.alias}: {mv.previous or '-'} -> {mv.version or '-'}: {mv.reason}")
    lines += ["", f"Experiments: `mnistcl experiments list`; registry: `mnistcl models list`; events: "
              f"`{_rel(settings.events_log, out_dir)}`; raw numbers: `scenario.json`.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
