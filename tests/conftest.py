from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chorus_store.demo import DemoInputs, make_demo_inputs

# Exports stamp build_config.stamped_at from SOURCE_DATE_EPOCH when set (reproducible
# builds); with it fixed, two exports of the same content are byte-identical files.
os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> DemoInputs:
    return make_demo_inputs(tmp_path_factory.mktemp("demo-inputs"))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def small_build(session_dir: Path, demo_inputs: DemoInputs) -> tuple[Path, Path]:
    """A finished small demo build (store, NPZ), made once; tests must not modify it."""
    from .helpers import run_all, small_recipe

    root = session_dir / "small"
    root.mkdir()
    store = root / "demo.zarr"
    npz = root / "demo_pertrack.npz"
    run_all(store, demo_inputs, small_recipe(root), npz)
    return store, npz


@pytest.fixture()
def small_copy(small_build: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the finished small store, free to modify."""
    import shutil

    dst = tmp_path / "demo.zarr"
    shutil.copytree(small_build[0], dst)
    return dst


# --------------------------------------------------------------------------------------
# a real S3-protocol server (moto) on loopback, for the object-store tests
# --------------------------------------------------------------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "chorus-test",
    "AWS_SECRET_ACCESS_KEY": "chorus-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server in its own process; the AWS
    environment variables point every client (and every subprocess) at it."""
    from .helpers import start_s3_server

    proc, endpoint = start_s3_server()
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def s3_bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the loopback S3 server; returns ``s3://<bucket>``."""
    import boto3

    name = "t-" + uuid.uuid4().hex[:20]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"
