"""A real S3-protocol server (moto) on loopback, for tests and benchmarks of ``s3://`` stores.

Use :func:`s3_server` as a context manager, or :func:`s3_server_fixture` and
:func:`s3_bucket_fixture` to make pytest fixtures of it (see ``tests/conftest.py``).
Needs the ``moto[server]`` and ``boto3`` packages (the ``dev`` extra).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "S3_ENV",
    "create_bucket",
    "s3_bucket_fixture",
    "s3_server",
    "s3_server_fixture",
    "start_s3_server",
]

#: Credentials and region for the loopback server; obstore and boto3 read them from the
#: environment, so every client (and every subprocess) finds the server.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "chorus-test",
    "AWS_SECRET_ACCESS_KEY": "chorus-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


def start_s3_server(log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a moto S3 server in its own process on a free loopback port.

    Parameters
    ----------
    log
        A file that receives the server's request log (one line per request), e.g. to
        count requests; None discards it.

    Returns
    -------
    tuple
        ``(process, endpoint)``, the endpoint as ``http://127.0.0.1:PORT``. The caller
        terminates the process; :func:`s3_server` does that for you.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb") if log is not None else subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the moto S3 server did not start") from None
            time.sleep(0.1)


@contextlib.contextmanager
def s3_server(log: Path | None = None, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """A loopback S3 server for the duration of a ``with`` block; yields its endpoint.

    While the block runs, the AWS environment variables (``env``, :data:`S3_ENV` by
    default, and ``AWS_ENDPOINT_URL``) point every client at the server; on exit they are
    restored and the server stopped.

    Examples
    --------
    >>> with s3_server() as endpoint:  # doctest: +SKIP
    ...     create_bucket(endpoint, "demo")
    ...     plan_store("s3://demo/store.zarr", recipe, fasta=..., ccre=..., gtf=...)
    """
    proc, endpoint = start_s3_server(log)
    variables = {**(S3_ENV if env is None else env), "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
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


def create_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a bucket (a fresh random name by default) on the server; returns ``s3://name``."""
    import boto3

    name = name or "t-" + uuid.uuid4().hex[:20]
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


def s3_server_fixture(scope: Any = "session") -> Callable[[], Iterator[str]]:
    """A pytest fixture of :func:`s3_server`: ``s3_server = s3_server_fixture()`` in a
    ``conftest.py`` gives tests an ``s3_server`` argument holding the endpoint."""
    import pytest

    @pytest.fixture(scope=scope)
    def s3_server_() -> Iterator[str]:
        with s3_server() as endpoint:
            yield endpoint

    return s3_server_


def s3_bucket_fixture(server: str = "s3_server") -> Callable[..., str]:
    """A pytest fixture giving each test a fresh, empty bucket (``s3://<bucket>``) on the
    server fixture named ``server``."""
    import pytest

    @pytest.fixture()
    def s3_bucket_(request: pytest.FixtureRequest) -> str:
        return create_bucket(request.getfixturevalue(server))

    return s3_bucket_
