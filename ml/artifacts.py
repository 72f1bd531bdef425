"""Artefact stores: the S3 key layout, either in S3 or in a local directory.

The local runner and the local SageMaker executor speak only `s3://bucket/key` URIs, exactly as
the jobs do in AWS, and hand them to an `ArtifactStore`. `LocalArtifactStore(root)` keeps each
object at `root/bucket/key`, so a local run leaves the same tree the buckets hold in AWS.
`S3ArtifactStore(client)` is the same interface over a boto3 S3 client (real or moto).

Prefix semantics are S3's: a prefix is a string prefix of the key, not a directory, so
`s3://b/runs/r/processing/train` also matches `.../train_headers/...`. Keeping that behaviour
locally means a request that would pick up sibling objects in AWS does so here too.
"""

from __future__ import annotations

import shutil
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

MODEL_ARCHIVE_NAME = "model.tar.gz"


class ArtifactError(Exception):
    """A URI or object the store cannot serve; the message names the URI."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> S3Uri:
        key = self.key.rstrip("/")
        for part in parts:
            cleaned = part.strip("/")
            key = f"{key}/{cleaned}" if key else cleaned
        return S3Uri(self.bucket, key)


def parse_s3_uri(uri: str) -> S3Uri:
    """Split `s3://bucket/key` into bucket and key (the key may be empty or a prefix)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ArtifactError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ArtifactError(f"S3 URI without a bucket: {uri!r}")
    return S3Uri(bucket, key)


def relative_key(prefix: str, key: str) -> str:
    """Path of `key` under the local directory a prefix is staged into, as SageMaker lays it out.

    An object whose key equals the prefix (an S3Uri naming one file) keeps its file name. Keys
    below a "directory" prefix keep their path below it. A sibling that only shares a string
    prefix (`train` vs `train_headers/x`) keeps its path below the prefix's parent, so it does
    not collide with the objects actually under the prefix.
    """
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    rest = key[len(prefix) :]
    if prefix == "" or prefix.endswith("/") or rest.startswith("/"):
        return rest.lstrip("/")
    parent = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(parent) :]


@runtime_checkable
class ArtifactStore(Protocol):
    """What the executor needs from object storage. URIs are always `s3://bucket/key`."""

    def list_objects(self, uri_prefix: str) -> list[str]:
        """URIs of every object whose key starts with the prefix, sorted by key."""
        ...

    def exists(self, uri: str) -> bool: ...

    def upload_file(self, path: Path, uri: str) -> str: ...

    def download_file(self, uri: str, path: Path) -> Path: ...

    def upload_dir(self, local_dir: Path, uri_prefix: str) -> list[str]: ...

    def download_prefix(self, uri_prefix: str, local_dir: Path) -> list[Path]: ...


class _PrefixOps(ABC):
    """Directory/prefix operations built from the per-object primitives each store implements."""

    @abstractmethod
    def list_objects(self, uri_prefix: str) -> list[str]: ...

    @abstractmethod
    def upload_file(self, path: Path, uri: str) -> str: ...

    @abstractmethod
    def download_file(self, uri: str, path: Path) -> Path: ...

    def upload_dir(self, local_dir: Path, uri_prefix: str) -> list[str]:
        """Upload every file below `local_dir` to `uri_prefix/<relative path>`; returns the URIs."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise ArtifactError(f"cannot upload {local_dir}: not a directory")
        base = parse_s3_uri(uri_prefix)
        uploaded = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = base.join(path.relative_to(local_dir).as_posix())
            uploaded.append(self.upload_file(path, str(target)))
        return uploaded

    def download_prefix(self, uri_prefix: str, local_dir: Path) -> list[Path]:
        """Download every object matching the prefix into `local_dir` (see `relative_key`)."""
        prefix = parse_s3_uri(uri_prefix)
        return self.download_uris(self.list_objects(uri_prefix), prefix.key, local_dir)

    def download_uris(self, uris: Iterable[str], prefix_key: str, local_dir: Path) -> list[Path]:
        """Download the given objects (all under `prefix_key`) into `local_dir`."""
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for uri in uris:
            rel = relative_key(prefix_key, parse_s3_uri(uri).key)
            if not rel or rel.endswith("/"):
                continue  # "folder" placeholder objects hold no data
            paths.append(self.download_file(uri, local_dir / rel))
        return paths


class LocalArtifactStore(_PrefixOps):
    """`s3://bucket/key` <-> `root/bucket/key` on the local file system."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def path_for(self, uri: str) -> Path:
        """Local path of an object (or of a "directory" prefix ending in /)."""
        parsed = parse_s3_uri(uri)
        path = (self.root / parsed.bucket / parsed.key).resolve()
        bucket_root = (self.root / parsed.bucket).resolve()
        if path != bucket_root and bucket_root not in path.parents:
            raise ArtifactError(f"{uri!r} escapes the bucket directory {bucket_root}")
        return path

    def uri_for(self, path: Path) -> str:
        """The S3 URI a local path under the store root stands for."""
        rel = Path(path).resolve().relative_to(self.root)
        bucket, *key = rel.parts
        return f"s3://{bucket}/{'/'.join(key)}"

    def list_objects(self, uri_prefix: str) -> list[str]:
        parsed = parse_s3_uri(uri_prefix)
        bucket_root = self.root / parsed.bucket
        if not bucket_root.is_dir():
            return []
        # Walk only the deepest directory the prefix names, then filter by string prefix.
        directory = parsed.key.rsplit("/", 1)[0] if "/" in parsed.key else ""
        start = bucket_root / directory
        if not start.is_dir():
            return []
        keys: list[str] = []
        for path in start.rglob("*"):
            if path.is_file():
                key = path.relative_to(bucket_root).as_posix()
                if key.startswith(parsed.key):
                    keys.append(key)
        return [f"s3://{parsed.bucket}/{key}" for key in sorted(keys)]

    def exists(self, uri: str) -> bool:
        return self.path_for(uri).is_file()

    def upload_file(self, path: Path, uri: str) -> str:
        target = self.path_for(uri)
        if not parse_s3_uri(uri).key or uri.endswith("/"):
            raise ArtifactError(f"cannot store a file at {uri!r}: the URI names a prefix, not an object")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return uri

    def download_file(self, uri: str, path: Path) -> Path:
        source = self.path_for(uri)
        if not source.is_file():
            raise ArtifactError(f"no such object: {uri} (looked for {source})")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return path

    def read_bytes(self, uri: str) -> bytes:
        return self.path_for(uri).read_bytes()


class S3ArtifactStore(_PrefixOps):
    """The same interface over a boto3 S3 client (real AWS, or moto in tests)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list_objects(self, uri_prefix: str) -> list[str]:
        parsed = parse_s3_uri(uri_prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=parsed.bucket, Prefix=parsed.key):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return [f"s3://{parsed.bucket}/{key}" for key in sorted(keys)]

    def exists(self, uri: str) -> bool:
        parsed = parse_s3_uri(uri)
        response = self.client.list_objects_v2(Bucket=parsed.bucket, Prefix=parsed.key, MaxKeys=1)
        return any(obj["Key"] == parsed.key for obj in response.get("Contents", []))

    def upload_file(self, path: Path, uri: str) -> str:
        parsed = parse_s3_uri(uri)
        self.client.upload_file(str(path), parsed.bucket, parsed.key)
        return uri

    def download_file(self, uri: str, path: Path) -> Path:
        parsed = parse_s3_uri(uri)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(parsed.bucket, parsed.key, str(path))
        return path


def package_model(model_dir: Path, archive: Path) -> Path:
    """Write `model_dir`'s contents at the root of a gzip tar, as SageMaker builds model.tar.gz."""
    model_dir = Path(model_dir)
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


def unpack_model(archive: Path, model_dir: Path) -> list[Path]:
    """Extract a model.tar.gz into `model_dir` (what SageMaker does before starting `serve`).

    The "data" filter refuses absolute paths, `..` and links out of the directory: a model
    archive comes from a bucket, so it is not trusted to write anywhere else.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m.name for m in tar.getmembers() if m.isfile()]
            tar.extractall(model_dir, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ArtifactError(f"cannot unpack model archive {archive}: {error}") from error
    return [model_dir / name for name in members]
