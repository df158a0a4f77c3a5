"""The model registry: immutable model versions with lineage, and atomic alias moves.

Layout in the store (local folder or S3, the same backend as datasets)::

    models/objects/<sha256>              artifacts (ONNX, native weights, reports), content-addressed
    models/versions/m<N>.json            a model version: lineage, metrics, gate report, artifacts
    models/aliases/<alias>/<seq>.json    every alias move, append-only; the highest seq is current
    models/judgements/<version>/<seq>.json  each shadow judgement of a challenger, append-only

An alias move is one exclusive create of the next sequence number. Two promotions at once:
exactly one wins and the other is told (and may retry against the new state). A process killed
mid-move either wrote the whole record or nothing. Every artifact read checks its SHA-256, and
nothing is ever unpickled (ONNX, .keras with safe_mode, safetensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mnistcl.storage import AlreadyExists, NotFound, Storage

VERSIONS = "models/versions/"
OBJECTS = "models/objects/"
ALIASES = "models/aliases/"
JUDGEMENTS = "models/judgements/"
KNOWN_ALIASES = ("champion", "challenger")
_VID = re.compile(r"^m(\d+)$")


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the version, alias or file."""


class Artifact(BaseModel):
    key: str
    sha256: str
    bytes: int
    filename: str


class ModelVersion(BaseModel):
    id: str
    created: str
    family: str
    config: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)  # the searched hyperparameters
    dataset: str
    experiment_id: int | None = None
    sweep: str | None = None
    parent_model: str | None = None  # fine-tuned from this version, if any
    code_revision: str
    metrics: dict[str, Any] = Field(default_factory=dict)  # training-time metrics
    validation: dict[str, Any] | None = None  # the gate report (JSON)
    gate_passed: bool | None = None
    gate_verdict: str | None = None  # promote | challenger | reject (the gate's decision)
    artifacts: dict[str, Artifact]  # "onnx", "native", "report_md", "report_json"
    note: str = ""
    copied_from: dict[str, str] | None = None  # {"store": URL, "version": id}: imported from another registry


class AliasMove(BaseModel):
    alias: str
    seq: int
    version: str | None  # None: alias cleared
    previous: str | None
    at: str
    reason: str
    actor: str = "mnistcl"


def code_revision(cwd: Path | None = None) -> str:
    """The git commit of the code (``+dirty`` when the tree has changes); ``unknown`` outside git."""
    try:
        root = cwd or Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Registry:
    def __init__(self, storage: Storage):
        self.storage = storage

    # ---------------------------------------------------------------- versions
    def ids(self) -> list[str]:
        out = []
        for key in self.storage.list(VERSIONS):
            name = key[len(VERSIONS) :].removesuffix(".json")
            if _VID.match(name):
                out.append(name)
        return sorted(out, key=lambda s: int(s[1:]))

    def get(self, ref: str) -> ModelVersion:
        vid = self.resolve(ref)
        key = f"{VERSIONS}{vid}.json"
        try:
            return ModelVersion.model_validate_json(self.storage.get(key))
        except NotFound:
            raise RegistryError(f"model version {vid!r} does not exist (known: {', '.join(self.ids()) or 'none'})") from None
        except ValueError as exc:
            raise RegistryError(f"model version {vid}: record {key} is corrupt: {exc}") from exc

    def list(self) -> list[ModelVersion]:
        return [self.get(i) for i in self.ids()]

    def resolve(self, ref: str) -> str:
        """A version id (``m3`` or ``3``) or an alias (``champion``) -> version id."""
        if ref in KNOWN_ALIASES:
            cur = self.alias(ref)
            if cur is None:
                raise RegistryError(f"no model is {ref} yet")
            return cur
        if ref.isdigit():
            ref = f"m{ref}"
        if not _VID.match(ref):
            raise RegistryError(f"{ref!r} is neither a model version (m1, m2, ...) nor an alias ({', '.join(KNOWN_ALIASES)})")
        return ref

    def _put_object(self, data: bytes, filename: str) -> Artifact:
        digest = hashlib.sha256(data).hexdigest()
        key = f"{OBJECTS}{digest}"
        if not self.storage.exists(key):
            self.storage.put(key, data)
        return Artifact(key=key, sha256=digest, bytes=len(data), filename=filename)

    def register(self, *, files: dict[str, Path], family: str, config: dict, dataset: str,
                 params: dict | None = None, experiment_id: int | None = None, sweep: str | None = None,
                 metrics: dict | None = None, validation: dict | None = None, gate_passed: bool | None = None,
                 reports: dict[str, str] | None = None, parent_model: str | None = None, note: str = "",
                 gate_verdict: str | None = None) -> ModelVersion:
        """Store artifacts, then the version record last (exclusively): a crash leaves no version."""
        if "onnx" not in files:
            raise RegistryError("a model version needs an ONNX artifact")
        arts = {}
        for kind, path in files.items():
            path = Path(path)
            try:
                arts[kind] = self._put_object(path.read_bytes(), path.name)
            except FileNotFoundError:
                raise RegistryError(f"artifact {kind} file {path} does not exist") from None
        for kind, text in (reports or {}).items():
            arts[kind] = self._put_object(text.encode(), f"validation.{'md' if kind.endswith('md') else 'json'}")
        rev = code_revision()
        return self._allocate(lambda vid: ModelVersion(
            id=vid, created=_now(), family=family, config=config, params=params or {}, dataset=dataset,
            experiment_id=experiment_id, sweep=sweep, parent_model=parent_model, code_revision=rev,
            metrics=metrics or {}, validation=validation, gate_passed=gate_passed, gate_verdict=gate_verdict,
            artifacts=arts, note=note))

    def _allocate(self, make) -> ModelVersion:
        """Write ``make(next id)`` as the version record, exclusively (a racing writer takes the next)."""
        for _ in range(50):
            ids = self.ids()
            mv = make(f"m{int(ids[-1][1:]) + 1 if ids else 1}")
            try:
                self.storage.put(f"{VERSIONS}{mv.id}.json", mv.model_dump_json(indent=2).encode(), exclusive=True)
                return mv
            except AlreadyExists:
                continue
        raise RegistryError("could not allocate a model version id")

    def import_version(self, source: Registry, ref: str, *, source_url: str, dataset: str) -> ModelVersion:
        """Copy a version from another registry (another environment's) into this one, under this
        registry's next id: its artifacts, each checked against its sha256 on the way, then the
        record, which names where it came from. ``dataset`` is this store's version the copy is
        judged and fine-tuned against (the original lineage stays in the source registry)."""
        mv = source.get(ref)
        arts = {kind: self._put_object(source._verified(mv, kind), a.filename)
                for kind, a in mv.artifacts.items()}
        data = mv.model_dump()
        data.update(artifacts=arts, dataset=dataset, parent_model=None, validation=None, gate_passed=None,
                    gate_verdict=None, copied_from={"store": source_url, "version": mv.id})
        return self._allocate(lambda vid: ModelVersion(**{**data, "id": vid, "created": _now()}))

    def artifact_bytes(self, ref: str, kind: str = "onnx") -> bytes:
        return self._verified(self.get(ref), kind)

    def _verified(self, mv: ModelVersion, kind: str) -> bytes:
        """The bytes of ``mv``'s ``kind`` artifact, checked against the record's sha256."""
        if kind not in mv.artifacts:
            raise RegistryError(f"model version {mv.id} has no {kind} artifact (has {', '.join(mv.artifacts)})")
        art = mv.artifacts[kind]
        where = f"artifact {art.filename} ({self.storage.describe(art.key)}) of model version {mv.id}"
        try:
            data = self.storage.get(art.key)
        except NotFound:
            raise RegistryError(f"{where} is missing") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != art.sha256:
            raise RegistryError(f"{where} is corrupt: sha256 {digest[:12]}... != recorded {art.sha256[:12]}...; refusing to load it")
        return data

    def fetch(self, ref: str, kind: str, dest_dir: Path) -> Path:
        """Write a verified artifact to ``dest_dir`` (cached by checksum) and return its path."""
        mv = self.get(ref)
        data = self._verified(mv, kind)
        art = mv.artifacts[kind]
        # The record names the file: never let it name a path (../, /, a hidden file).
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", art.filename or "") or ".." in art.filename:
            raise RegistryError(f"model {mv.id}: artifact {kind} has an unsafe file name {art.filename!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", art.sha256 or ""):
            raise RegistryError(f"model {mv.id}: artifact {kind} has a malformed sha256 {art.sha256!r}")
        out = Path(dest_dir) / art.sha256[:16] / art.filename
        if not (out.exists() and hashlib.sha256(out.read_bytes()).hexdigest() == art.sha256):
            out.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own per writer: several server workers fetch the same model at once.
            tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            tmp.replace(out)
        return out

    # ---------------------------------------------------------------- aliases
    def history(self, alias: str | None = None) -> list[AliasMove]:
        aliases = [alias] if alias else KNOWN_ALIASES
        moves = []
        for a in aliases:
            for key in self.storage.list(f"{ALIASES}{a}/"):
                try:
                    moves.append(AliasMove.model_validate_json(self.storage.get(key)))
                except (NotFound, ValueError) as exc:
                    raise RegistryError(f"alias record {key} is unreadable: {exc}") from exc
        return sorted(moves, key=lambda m: (m.at, m.alias, m.seq))

    def _latest_move(self, alias: str) -> AliasMove | None:
        keys = list(self.storage.list(f"{ALIASES}{alias}/"))
        if not keys:
            return None
        key = max(keys, key=lambda k: int(k.rsplit("/", 1)[1].removesuffix(".json")))
        return AliasMove.model_validate_json(self.storage.get(key))

    def alias(self, alias: str) -> str | None:
        self._check_alias(alias)
        m = self._latest_move(alias)
        return m.version if m else None

    def aliases_of(self, vid: str) -> list[str]:
        return [a for a in KNOWN_ALIASES if self.alias(a) == vid]

    @staticmethod
    def _check_alias(alias: str) -> None:
        if alias not in KNOWN_ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases: {', '.join(KNOWN_ALIASES)}")

    def move_alias(self, alias: str, version: str | None, *, reason: str, expect: str | None | type = ...,
                   actor: str = "mnistcl") -> AliasMove:
        """Point ``alias`` at ``version`` (None clears it) with one exclusive write.

        ``expect``: the version the caller believes is current; if another process moved the
        alias meanwhile, RegistryError is raised instead of silently overwriting its decision.
        """
        self._check_alias(alias)
        if version is not None:
            version = self.get(version).id  # must exist
        latest = self._latest_move(alias)
        current = latest.version if latest else None
        if expect is not ... and expect != current:
            raise RegistryError(f"{alias} moved to {current} meanwhile (expected {expect}); nothing changed")
        seq = (latest.seq + 1) if latest else 1
        move = AliasMove(alias=alias, seq=seq, version=version, previous=current, at=_now(), reason=reason, actor=actor)
        try:
            self.storage.put(f"{ALIASES}{alias}/{seq:08d}.json", move.model_dump_json(indent=2).encode(), exclusive=True)
        except AlreadyExists:
            now = self.alias(alias)
            raise RegistryError(f"another promotion of {alias} happened at the same time (now {now}); nothing changed") from None
        return move

    def promote(self, version: str, alias: str = "champion", *, reason: str, force: bool = False) -> AliasMove:
        mv = self.get(version)
        shadowed = alias == "challenger" and mv.gate_verdict == "challenger"  # not enough evidence yet: shadow it
        if mv.gate_passed is False and not shadowed and not force:
            raise RegistryError(f"model version {mv.id} failed the validation gate; use --force to promote it anyway")
        self._verified(mv, "onnx")  # refuse to serve a corrupt artifact
        current = self.alias(alias)
        return self.move_alias(alias, mv.id, reason=reason, expect=current)

    def rollback(self, alias: str = "champion", to: str | None = None, *, reason: str = "rollback") -> AliasMove:
        """Point ``alias`` back at the version it held before (or at ``to``)."""
        latest = self._latest_move(alias)
        if latest is None or latest.version is None:
            raise RegistryError(f"{alias} has never been set; nothing to roll back")
        target = to or latest.previous  # undo the last move
        if target is None:
            raise RegistryError(f"{alias} has no earlier version to roll back to")
        self.artifact_bytes(target, "onnx")
        return self.move_alias(alias, target, reason=f"{reason} (from {latest.version})", expect=latest.version)

    # ---------------------------------------------------------------- shadow judgements
    def judgements(self, version: str) -> list[dict[str, Any]]:
        """Every judgement recorded for ``version``, oldest first."""
        vid = self.resolve(version)
        keys = sorted(self.storage.list(f"{JUDGEMENTS}{vid}/"))
        return [json.loads(self.storage.get(k)) for k in keys]

    def record_judgement(self, version: str, data: dict[str, Any]) -> int:
        """Append a judgement record with one exclusive create; returns its sequence number. Two
        judges at once: exactly one writes record ``seq``, the other is told."""
        vid = self.resolve(version)
        seq = len(list(self.storage.list(f"{JUDGEMENTS}{vid}/"))) + 1
        try:
            self.storage.put(f"{JUDGEMENTS}{vid}/{seq:06d}.json",
                             json.dumps({**data, "seq": seq, "at": _now()}, default=float).encode(), exclusive=True)
        except AlreadyExists:
            raise RegistryError(f"another judgement of {vid} was recorded at the same time; nothing changed") from None
        return seq

    def alias_set_at(self, alias: str) -> float | None:
        """When the alias was last moved (seconds since the epoch), or None if never."""
        m = self._latest_move(alias)
        return datetime.fromisoformat(m.at).timestamp() if m else None
