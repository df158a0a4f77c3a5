"""The one module that imports Weights & Biases.

Offline by default: runs are written under ``<home>/wandb/`` and never leave the machine
(``wandb sync <folder>`` uploads them later). ``wandb_mode: online`` with a ``WANDB_API_KEY``
sends them live; ``disabled`` turns tracking off (tests that do not check it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(self, *, mode: str, root: Path, project: str, name: str, group: str,
                 config: dict[str, Any], tags: list[str] | None = None):
        self.mode = mode
        self.run = None
        self.dir: str | None = None
        if mode == "disabled":
            return
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            mode=mode, dir=str(root), project=project, name=name, group=group, config=config,
            tags=tags or [], reinit="finish_previous",
            settings=wandb.Settings(console="off", x_stats_sampling_interval=2.0),
        )
        self.dir = str(Path(self.run.dir).parent)  # .../wandb/offline-run-<time>-<id>

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in metrics.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
