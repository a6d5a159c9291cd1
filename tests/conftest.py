from __future__ import annotations

import os
from pathlib import Path

import pytest

from chorus_store.demo import DemoInputs, make_demo_inputs
from chorus_store.testing.s3 import s3_bucket_fixture, s3_server_fixture

# Exports stamp build_config.stamped_at from SOURCE_DATE_EPOCH when set (reproducible
# builds); with it fixed, two exports of the same content are byte-identical files.
os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")

#: The most test processes ``-n auto`` starts: each imports torch and TensorFlow (~1 GiB)
#: and builds the session fixtures, and the builds inside tests run threads of their own.
MAX_TEST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one test process per core, at most
    :data:`MAX_TEST_WORKERS`."""
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (Linux)
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_TEST_WORKERS))


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

#: ``http://127.0.0.1:PORT`` of a moto S3 server in its own process; the AWS environment
#: variables point every client (and every subprocess) at it.
s3_server = s3_server_fixture(scope="session")
#: A fresh, empty bucket on that server: ``s3://<bucket>``.
s3_bucket = s3_bucket_fixture("s3_server")
