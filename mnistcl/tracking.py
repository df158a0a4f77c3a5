"""The one module that imports Weights & Biases.

Offline by default: runs are written under ``<home>/wandb/`` and, when a run finishes, copied to
the shared storage under ``wandb/<run folder>/`` (on a pod the home is scratch and goes with it);
nothing leaves for W&B itself until ``mnistcl experiments wandb-pull`` brings a run back and
``wandb sync <folder>`` uploads it. ``wandb_mode: online`` with a ``WANDB_API_KEY`` sends them
live; ``disabled`` turns tracking off (tests that do not check it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mnistcl.storage import StorageError
from mnistcl.stores import dataset_store

WANDB_PREFIX = "wandb"  # in the shared storage: one folder per finished run


class Tracker:
    def __init__(self, *, mode: str, root: Path, project: str, name: str, group: str,
                 config: dict[str, Any], tags: list[str] | None = None, job_type: str = "train",
                 storage=None):
        """``storage``: where the finished run's folder is copied (``wandb/<run folder>/``)."""
        self.mode = mode
        self.run = None
        self.dir: str | None = None
        self.storage = storage
        self.stored: str | None = None  # where the run lies in the shared storage once finished
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
        if storage is not None:
            self.stored = storage.describe(self.key)

    @property
    def key(self) -> str:
        return f"{WANDB_PREFIX}/{Path(self.dir).name}"

    @property
    def location(self) -> str | None:
        """What an experiment records: the stored copy when there is one, else the local folder."""
        return self.stored or self.dir

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
            if self.storage is not None:
                try:
                    self.storage.put_folder(self.key, Path(self.dir))
                except (StorageError, OSError) as exc:  # the training result matters more than its trace
                    print(f"warning: W&B run {self.dir} not copied to {self.stored}: {exc}")
                    self.stored = None


def tracker(settings, **kwargs) -> Tracker:
    """A Tracker from the settings: mode, project, <home>/wandb, and the shared storage."""
    storage = None if settings.wandb_mode == "disabled" else dataset_store(settings).storage
    return Tracker(mode=settings.wandb_mode, root=settings.home_dir / "wandb", project=settings.wandb_project,
                   storage=storage, **kwargs)


def pull_run(storage, location: str, dest: Path) -> Path:
    """A run copied to the storage (``location`` as an experiment records it) brought back under
    ``dest``; returns the run's folder, ready for ``wandb sync``."""
    name = location.rstrip("/").rsplit("/", 1)[-1]
    if not name.startswith(("offline-run-", "run-")):
        raise ValueError(f"{location!r} is not a W&B run folder")
    folder = Path(dest) / name
    files = storage.get_folder(f"{WANDB_PREFIX}/{name}", folder)
    if not files:
        raise FileNotFoundError(f"no W&B run {name} in {storage.describe(WANDB_PREFIX)}")
    return folder


def track_dataset_version(settings, manifest) -> None:
    """A dataset version as a W&B artifact (``dataset-v3``, type dataset: its manifest, which
    holds every file's SHA-256 and the lineage), logged by a short run of job type ``dataset``."""
    if settings.wandb_mode == "disabled":
        return
    import json
    import tempfile

    run = tracker(settings, name=f"dataset-{manifest.id}", group="datasets", job_type="dataset",
                  config={"version": manifest.id, "parent": manifest.parent, "source": manifest.source})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        run.log_artifact(f"dataset-{manifest.id}", "dataset", [path],
                         metadata={"parent": manifest.parent, "lineage": manifest.lineage,
                                   "images": manifest.n_images, "source": manifest.source})
        run.finish(0)
