"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def plot_history(row: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = row.get("history") or []
    checks = row.get("checkpoints") or []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    if hist:
        ep = [h["epoch"] for h in hist]
        ax1.plot(ep, [h["loss"] for h in hist], "o-", label="train loss")
        ax1.plot(ep, [h["val_loss"] for h in hist], "s--", label="validation loss")
        ax2.plot(ep, [h["val_accuracy"] for h in hist], "s--", label="validation accuracy (epoch end)")
    if checks:
        n_ep = max(len(hist), 1)
        xs = [n_ep * (i + 1) / len(checks) for i in range(len(checks))]
        ax2.plot(xs, checks, ".-", alpha=0.6, label="validation checkpoints")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    params = " ".join(f"{k}={v}" for k, v in (row.get("params") or {}).items())
    fig.suptitle(f"experiment {row.get('id')} - {row.get('family')} {params}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
