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
                 config: dict[str, Any], tags: list[str] | None = None, job_type: str = "train"):
        self.mode = mode
        self.run = None
        self.dir: str | None = None
        if mode == "disabled":
            return
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            mode=mode, dir=str(root), project=project, name=name, group=group, config=config, job_type=job_type,
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

    def log_artifact(self, name: str, type: str, paths: list[Path], *, metadata: dict[str, Any] | None = None,
                     aliases: list[str] | None = None) -> None:
        """Version files in W&B as artifact ``name`` (a model's ONNX, a dataset version's manifest);
        W&B keeps one version per distinct content, so logging the same files again costs nothing."""
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(name, type=type, metadata=metadata or {})
        for p in paths:
            art.add_file(str(p))
        self.run.log_artifact(art, aliases=aliases or [])

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def track_dataset_version(settings, manifest) -> None:
    """A dataset version as a W&B artifact (``dataset-v3``, type dataset: its manifest, which
    holds every file's SHA-256 and the lineage), logged by a short run of job type ``dataset``."""
    if settings.wandb_mode == "disabled":
        return
    import json
    import tempfile

    tracker = Tracker(mode=settings.wandb_mode, root=settings.home_dir / "wandb", project=settings.wandb_project,
                      name=f"dataset-{manifest.id}", group="datasets", job_type="dataset",
                      config={"version": manifest.id, "parent": manifest.parent, "source": manifest.source})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        tracker.log_artifact(f"dataset-{manifest.id}", "dataset", [path],
                             metadata={"parent": manifest.parent, "lineage": manifest.lineage,
                                       "images": manifest.n_images, "source": manifest.source})
        tracker.finish(0)
