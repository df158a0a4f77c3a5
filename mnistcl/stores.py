"""The two stores every stage shares, opened from the settings: datasets and the model registry
live in one storage backend (a local folder or S3)."""

from __future__ import annotations

from mnistcl.datasets import DatasetStore
from mnistcl.registry import Registry
from mnistcl.storage import open_storage


def stores(settings) -> tuple[DatasetStore, Registry]:
    storage = open_storage(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url)
    return DatasetStore(storage), Registry(storage)


def dataset_store(settings) -> DatasetStore:
    return stores(settings)[0]


def registry(settings) -> Registry:
    return stores(settings)[1]
