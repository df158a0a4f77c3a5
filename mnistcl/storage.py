"""Object storage behind one small interface: local files or S3 (through boto3).

Keys are ``/``-separated relative paths. Writes are atomic: a reader sees the whole object
or none of it (local: write to a temporary name, fsync, rename; S3: PUT is atomic).
``put(..., exclusive=True)`` refuses to overwrite, which is how manifests and registry
records are committed exactly once. ``get_versioned`` and ``put(..., if_match=version)`` are a
compare-and-swap (S3: ETag and If-Match; local: a content hash checked under a file lock), which
``update_json`` turns into a read-modify-write that many processes can run at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LINK_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


class StorageError(RuntimeError):
    """A storage operation failed."""


class NotFound(StorageError, KeyError):
    """The key does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(StorageError):
    """An exclusive write found the key already present."""


class Conflict(StorageError):
    """A conditional write (``if_match``) found the object changed or gone since it was read."""


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key:
        raise StorageError(f"invalid storage key {key!r}")
    return key


class Storage(ABC):
    """The interface every backend implements."""

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes, *, exclusive: bool = False, if_match: str | None = None) -> None:
        """``exclusive``: only if absent (else AlreadyExists); ``if_match``: only if the object is
        still the version ``get_versioned`` returned (else Conflict)."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and a token of its version, for ``put(..., if_match=token)``."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def modified(self, key: str) -> float:
        """When the object was last written (epoch seconds)."""

    def describe(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    def link(self, key: str, *, expires_s: int = LINK_SECONDS) -> str:
        """An address a person can open in a browser: a file:// URI for a local folder, a
        presigned HTTPS URL (valid ``expires_s``, at most 7 days) for S3."""

    def put_folder(self, prefix: str, folder: Path) -> dict[str, str]:
        """Every file under ``folder`` written to ``prefix/<relative path>``; returns relative
        path -> key."""
        folder = Path(folder)
        keys = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            keys[rel] = f"{prefix.rstrip('/')}/{rel}"
            self.put(keys[rel], path.read_bytes())
        return keys

    def get_folder(self, prefix: str, dest: Path) -> list[Path]:
        """Every object under ``prefix/`` written below ``dest`` (the inverse of put_folder)."""
        out = []
        base = prefix.rstrip("/") + "/"
        for key in self.list(base):
            rel = key[len(base):]
            path = Path(dest) / _check_key(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.get(key))
            out.append(path)
        return out


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"{self.describe(key)} does not exist") from exc

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, hashlib.sha256(data).hexdigest()

    def put(self, key: str, data: bytes, *, exclusive: bool = False, if_match: str | None = None) -> None:
        if if_match is None:
            return self._put(key, data, exclusive=exclusive)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Conditional writers of one key serialise on a lock file beside it (hidden from list()).
        with open(path.parent / f".{path.name}.cas", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                raise Conflict(f"{self.describe(key)} is gone since it was read") from None
            if current != if_match:
                raise Conflict(f"{self.describe(key)} changed since it was read")
            self._put(key, data, exclusive=False)

    def _put(self, key: str, data: bytes, *, exclusive: bool) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                # link() fails if the target exists: an atomic create-if-absent.
                try:
                    os.link(tmp, path)
                except FileExistsError as exc:
                    raise AlreadyExists(f"{self.describe(key)} already exists") from exc
            else:
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return iter(())
        keys = []
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                keys.append(p.relative_to(self.root).as_posix())
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def link(self, key: str, *, expires_s: int = LINK_SECONDS) -> str:
        return self._path(key).as_uri()

    def modified(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError as exc:
            raise NotFound(f"{self.describe(key)} does not exist") from exc


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Storage(Storage):
    """``s3://bucket/prefix`` through boto3; ``endpoint_url`` for S3-compatible servers."""

    def __init__(self, url: str, endpoint_url: str | None = None, client=None):
        if not url.startswith("s3://"):
            raise StorageError(f"not an s3:// URL: {url!r}")
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"no bucket in {url!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = url.rstrip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            # SigV4 everywhere: presigned links (report links) signed with SigV2 are refused by
            # every region opened since 2014.
            client = boto3.client("s3", endpoint_url=endpoint_url, config=Config(signature_version="s3v4"))
        self.client = client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise NotFound(f"{self.describe(key)} does not exist") from exc
            raise StorageError(f"cannot read {self.describe(key)}: {exc}") from exc
        return obj["Body"].read(), obj["ETag"]

    def put(self, key: str, data: bytes, *, exclusive: bool = False, if_match: str | None = None) -> None:
        from botocore.exceptions import ClientError

        kwargs = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_match is not None:
            kwargs["IfMatch"] = if_match  # S3 conditional writes: 412 if the ETag moved on
            try:
                self.client.put_object(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey", "404"}:
                    raise Conflict(f"{self.describe(key)} changed since it was read") from exc
                raise StorageError(f"cannot write {self.describe(key)}: {exc}") from exc
            return
        if exclusive:
            # S3 conditional writes (If-None-Match: *) make this a create-if-absent.
            # A server that ignores the header still gets the pre-check below.
            if self.exists(key):
                raise AlreadyExists(f"{self.describe(key)} already exists")
            kwargs["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise AlreadyExists(f"{self.describe(key)} already exists") from exc
            raise StorageError(f"cannot write {self.describe(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"cannot stat {self.describe(key)}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                keys.append(obj["Key"][strip:])
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def link(self, key: str, *, expires_s: int = LINK_SECONDS) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=min(int(expires_s), LINK_SECONDS))

    def modified(self, key: str) -> float:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["LastModified"].timestamp()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise NotFound(f"{self.describe(key)} does not exist") from exc
            raise StorageError(f"cannot stat {self.describe(key)}: {exc}") from exc


def update_json(storage: Storage, key: str, change: Callable[[dict], Any], *,
                default: Callable[[], dict], attempts: int = 50) -> Any:
    """Read-modify-write of a JSON document that any number of processes may run at once:
    ``change(doc)`` edits the document in place (and may return a value); the write is a
    compare-and-swap, and on a conflict ``change`` runs again on the fresh document. Returns
    what ``change`` returned on the write that landed."""
    for attempt in range(attempts):
        try:
            raw, version = storage.get_versioned(key)
            doc = json.loads(raw)
        except NotFound:
            raw, doc, version = None, default(), None
        before = json.dumps(doc, sort_keys=True, default=float)
        out = change(doc)
        if version is not None and json.dumps(doc, sort_keys=True, default=float) == before:
            return out  # nothing changed: no write (and no conflict for the others)
        body = json.dumps(doc, indent=1, default=float).encode()
        try:
            storage.put(key, body, exclusive=version is None, if_match=version)
            return out
        except (Conflict, AlreadyExists):
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # another writer won: back off, redo
    raise StorageError(f"{storage.describe(key)}: {attempts} conflicting updates in a row")


def open_storage(url: str, *, s3_endpoint_url: str | None = None) -> Storage:
    """A backend for ``url``: ``s3://bucket/prefix`` or a local folder."""
    if url.startswith("s3://"):
        return S3Storage(url, endpoint_url=s3_endpoint_url)
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"unsupported storage URL {url!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(url.removeprefix("file://"))
