"""The artefact stores: S3 URI mapping, prefix semantics, model packaging; local and moto S3."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from ml.artifacts import (
    ArtifactError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    package_model,
    parse_s3_uri,
    relative_key,
    unpack_model,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_s3_uri_splits_bucket_and_key() -> None:
    assert parse_s3_uri("s3://bucket/a/b.csv") == parse_s3_uri("s3://bucket/a/b.csv")
    uri = parse_s3_uri("s3://bucket/runs/r1/")
    assert (uri.bucket, uri.key) == ("bucket", "runs/r1/")
    assert str(uri.join("processing", "train/")) == "s3://bucket/runs/r1/processing/train"
    assert parse_s3_uri("s3://bucket").key == ""


@pytest.mark.parametrize("bad", ["bucket/key", "s3:///key", "https://x/y", ""])
def test_parse_s3_uri_rejects_non_s3(bad: str) -> None:
    with pytest.raises(ArtifactError, match="S3 URI"):
        parse_s3_uri(bad)


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("datasets/default/data.csv", "datasets/default/data.csv", "data.csv"),
        ("runs/r/processing/train/", "runs/r/processing/train/train_data.csv", "train_data.csv"),
        ("runs/r/processing/train", "runs/r/processing/train/train_data.csv", "train_data.csv"),
        ("runs/r/processing/train", "runs/r/processing/train_headers/h.csv", "train_headers/h.csv"),
        ("runs/r/checkpoints/", "runs/r/checkpoints/sub/ckpt.json", "sub/ckpt.json"),
        ("", "top.csv", "top.csv"),
    ],
)
def test_relative_key_follows_the_sagemaker_layout(prefix: str, key: str, expected: str) -> None:
    assert relative_key(prefix, key) == expected


def test_local_store_maps_uris_to_root_bucket_key(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    source = _write(tmp_path / "a.csv", "1,2\n")
    store.upload_file(source, "s3://data/datasets/default/a.csv")
    assert (tmp_path / "store" / "data" / "datasets" / "default" / "a.csv").read_text() == "1,2\n"
    assert store.exists("s3://data/datasets/default/a.csv")
    assert not store.exists("s3://data/datasets/default/b.csv")
    assert store.uri_for(tmp_path / "store" / "data" / "datasets" / "default" / "a.csv") == (
        "s3://data/datasets/default/a.csv"
    )
    assert isinstance(store, ArtifactStore)


def test_local_store_refuses_paths_outside_the_bucket(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="escapes"):
        store.path_for("s3://bucket/../other/x")
    with pytest.raises(ArtifactError, match="prefix"):
        store.upload_file(_write(tmp_path / "f", "x"), "s3://bucket/dir/")


def test_download_of_missing_object_names_it(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match=r"no such object: s3://bucket/missing\.csv"):
        store.download_file("s3://bucket/missing.csv", tmp_path / "out.csv")


def _exercise_prefixes(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "local"
    _write(local / "train" / "train_data.csv", "1,0.5\n")
    _write(local / "train_headers" / "train_data_with_headers.csv", "Label,x\n1,0.5\n")
    _write(local / "test" / "nested" / "test_data.csv", "0,0.1\n")
    uploaded = store.upload_dir(local, "s3://art/runs/r1/processing/")
    assert uploaded == [
        "s3://art/runs/r1/processing/test/nested/test_data.csv",
        "s3://art/runs/r1/processing/train/train_data.csv",
        "s3://art/runs/r1/processing/train_headers/train_data_with_headers.csv",
    ]
    # A prefix is a string prefix, as in S3: without the trailing slash `train` matches its sibling.
    assert store.list_objects("s3://art/runs/r1/processing/train/") == [uploaded[1]]
    assert store.list_objects("s3://art/runs/r1/processing/train") == uploaded[1:]
    assert store.list_objects("s3://art/runs/r2/") == []

    staged = store.download_prefix("s3://art/runs/r1/processing/test/", tmp_path / "staged")
    assert staged == [tmp_path / "staged" / "nested" / "test_data.csv"]
    assert staged[0].read_text() == "0,0.1\n"
    single = store.download_prefix("s3://art/runs/r1/processing/train/train_data.csv", tmp_path / "one")
    assert [p.name for p in single] == ["train_data.csv"]


def test_local_store_prefix_upload_list_download(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    _exercise_prefixes(store, tmp_path)
    assert store.list_objects("s3://no-such-bucket/x") == []


def test_s3_store_has_the_same_semantics_on_moto(tmp_path: Path) -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="art")
        store = S3ArtifactStore(client)
        _exercise_prefixes(store, tmp_path)
        assert store.exists("s3://art/runs/r1/processing/train/train_data.csv")
        assert not store.exists("s3://art/runs/r1/processing/train")


def test_model_package_round_trip_has_files_at_the_archive_root(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    _write(model_dir / "xgboost-model", "{}")
    _write(model_dir / "meta" / "features.json", "[]")
    archive = package_model(model_dir, tmp_path / "out" / "model.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
            "meta/features.json",
            "xgboost-model",
        ]
    unpacked = unpack_model(archive, tmp_path / "serve" / "model")
    assert sorted(p.relative_to(tmp_path / "serve" / "model").as_posix() for p in unpacked) == [
        "meta/features.json",
        "xgboost-model",
    ]
    assert (tmp_path / "serve" / "model" / "xgboost-model").read_text() == "{}"


def test_unpack_refuses_members_that_escape_the_model_dir(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArtifactError, match="cannot unpack"):
        unpack_model(archive, tmp_path / "model")
    assert not (tmp_path / "escaped.txt").exists()


def test_unpack_of_a_corrupt_archive_is_an_artifact_error(tmp_path: Path) -> None:
    archive = _write(tmp_path / "model.tar.gz", "not a tarball")
    with pytest.raises(ArtifactError, match=r"model\.tar\.gz"):
        unpack_model(archive, tmp_path / "model")
