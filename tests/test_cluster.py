"""The build and reduce on a real dask.distributed cluster (a LocalCluster of processes).

The cluster's result must be the one-process result byte for byte: with two workers,
with a worker SIGKILLed mid-build, with the coordinator SIGKILLed mid-build and resumed,
driven from the CLI with ``--scheduler``, and on an object store.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chorus_store import StatusReport, build, export, plan_store, reduce
from chorus_store.build.cluster import gpu_assignment, local_cluster
from chorus_store.demo import DemoInputs
from chorus_store.inspect.status import status
from chorus_store.store.core import DATA_GROUPS, ChorusStore
from chorus_store.testing.models.demo import SMALL_SAMPLING

from .helpers import composition_oracle, plan_small, small_recipe

CLI = [sys.executable, "-m", "chorus_store.cli"]


@pytest.fixture(scope="module")
def client(s3_server: str) -> Iterator[Any]:
    # started after the S3 server: like any worker, these read their object-store
    # credentials and endpoint from their own environment
    with local_cluster(2) as c:
        yield c


def _npz(store: str | Path, out: Path, client: Any | None = None) -> bytes:
    reduce(store, progress=False, **({"scheduler": client} if client is not None else {}))
    return Path(export(store, out=out).path).read_bytes()


def _wait(predicate: Any, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.05)


def _done(store: str | Path) -> int:
    s = ChorusStore.open(store)
    return int(s.read("baselines/done_rows").sum() + s.read("variants/done_rows").sum())


def test_two_workers_build_and_reduce_the_one_process_npz(
    client: Any, tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    report = build(store, scheduler=client, progress=False)
    assert report.rows_built["baselines"] == len(ChorusStore.open(store).positions)
    assert report.tasks > 2
    # every worker took part, and each loaded the model once (not once per task)
    loads = client.run(lambda: len(importlib.import_module("chorus_store.build.cluster")._ORACLES))
    assert sorted(loads.values()) == [1, 1]
    assert _npz(store, tmp_path / "a.npz", client) == small_build[1].read_bytes()
    assert build(store, scheduler=client, progress=False).tasks == 0  # nothing left
    # the dashboard the build prints a link to is served
    import urllib.request

    from chorus_store.scheduler import dashboard_link

    link = dashboard_link(client)
    assert link is not None and urllib.request.urlopen(link, timeout=30).status == 200


def test_a_worker_killed_mid_build_loses_only_its_task(
    client: Any, tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    # a plan four times the small one, so the build is still running when the kill lands
    bigger = {k: v * 4 for k, v in SMALL_SAMPLING.items()}
    recipe = small_recipe(tmp_path, sampling=bigger, layout={"position_shard_rows": 16})
    reference = tmp_path / "one-process.zarr"
    plan_small(reference, demo_inputs, recipe)
    build(reference, progress=False)
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, recipe)
    pids = client.run(os.getpid)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = build(store, scheduler=client, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victim: list[str] = []

    def mid_task() -> bool:  # rows are being written and a worker is running a task
        if not thread.is_alive():
            return True
        busy = [addr for addr, tasks in client.processing().items() if tasks]
        if busy and _done(store) > 0:
            victim.append(busy[0])
            return True
        return False

    _wait(mid_task)
    assert victim, "the build finished before a worker could be killed"
    os.kill(pids[victim[0]], signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert pids[victim[0]] not in client.run(os.getpid).values()
    assert _npz(store, tmp_path / "k.npz") == _npz(reference, tmp_path / "ref.npz")


def test_status_works_while_a_cluster_build_runs(
    client: Any, tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path))
    thread = threading.Thread(target=lambda: build(store, scheduler=client, progress=False))
    thread.start()
    seen: list[StatusReport] = []
    while thread.is_alive():
        seen.append(status(store))
        time.sleep(0.2)
    thread.join()
    during = [s for s in seen if s.claims]
    assert during, "no status call saw the running build"
    assert all(c["alive"] and f"pid {os.getpid()}" in c["holder"] for c in during[0].claims)
    assert status(store).claims == []
    progress = [s.build["baselines"]["cells_done"] for s in seen]
    assert progress == sorted(progress)  # status followed the build as it went
    final = status(store).build["baselines"]
    assert final["cells_done"] == final["cells"] and final["shards_done"] == final["shards"]


def test_the_cli_builds_on_a_remote_scheduler_into_s3(
    client: Any, s3_bucket: str, tmp_path: Path, demo_inputs: DemoInputs,
    small_build: tuple[Path, Path],
) -> None:  # fmt: skip
    url = f"{s3_bucket}/demo.zarr"
    plan_small(url, demo_inputs, small_recipe(tmp_path))
    address = client.scheduler.address
    for cmd in (["build", url, "--scheduler", address], ["reduce", url, "--scheduler", address]):
        run = subprocess.run([*CLI, *cmd], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert "dask dashboard" in run.stderr
    out = f"{s3_bucket}/bg/demo_pertrack.npz"
    subprocess.run([*CLI, "export", url, "--out", out], check=True, capture_output=True)
    from chorus_store.store.location import Location

    assert Location.of(f"{s3_bucket}/bg").get("demo_pertrack.npz") == small_build[1].read_bytes()


def test_a_killed_coordinator_resumes_with_nothing_lost_or_done_twice(
    tmp_path: Path, demo_inputs: DemoInputs, small_build: tuple[Path, Path]
) -> None:
    store = tmp_path / "demo.zarr"
    plan_small(store, demo_inputs, small_recipe(tmp_path, layout={"position_shard_rows": 16}))
    proc = subprocess.Popen(
        [*CLI, "build", str(store), "--workers", "2", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its cluster's processes share its process group
    )
    try:
        _wait(lambda: _done(store) > 0 or proc.poll() is not None, timeout=180)
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator only; its workers are orphaned
        proc.wait()
        time.sleep(2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # then the orphans, as a lost machine would
    s = ChorusStore.open(store)
    # a row shard counts as done when every track of it is (a kill can fall between the
    # done marks of its track shards: then its pending tracks are built again)
    n = len(s.tracks)
    done_before = {g.name: int(s.read(g.done)[:, :n].min(axis=1).sum()) for g in DATA_GROUPS}
    assert 0 < sum(done_before.values()) < len(s.positions) + len(s.variants)
    report = build(store, progress=False)  # one process resumes it
    # exactly the rows not marked done are built, once each; none marked done is redone
    assert report.rows_built == {
        "baselines": len(s.positions) - done_before["baselines"],
        "variants": len(s.variants) - done_before["variants"],
    }
    assert _npz(store, tmp_path / "c.npz") == small_build[1].read_bytes()


def test_an_oracle_object_cannot_be_shipped_to_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        build(tmp_path / "x.zarr", oracle=composition_oracle(), workers=2)


def test_local_cluster_workers_each_get_one_gpu() -> None:
    assert [gpu_assignment(str(i), ["0", "1"]) for i in range(4)] == ["0", "1", "0", "1"]
    assert gpu_assignment("3", ["2"]) == "2"
    assert gpu_assignment("tcp://worker-a", ["0", "1"]) is None  # started by hand
    assert gpu_assignment("0", []) is None  # no GPU: CPU workers


def test_tasks_claim_a_gpu_only_where_workers_advertise_one(client: Any) -> None:
    from chorus_store.build.cluster import _task_resources

    assert _task_resources(client) is None  # these workers advertise no GPU

    class GPUCluster:
        def scheduler_info(self, n_workers: int) -> dict[str, Any]:
            return {"workers": {"a": {"resources": {"GPU": 1}}, "b": {"resources": {}}}}

    assert _task_resources(GPUCluster()) == {"GPU": 1}


def test_a_worker_reading_another_fasta_at_the_path_refuses(
    small_build: tuple[Path, Path], demo_inputs: DemoInputs, tmp_path: Path
) -> None:
    """Workers read the FASTA at the path the coordinator gives; on a machine where that
    path holds another genome, the worker refuses before computing anything."""
    from chorus_store.build.cluster import WorkerSpec, run_task
    from chorus_store.errors import GenomeMismatchError

    other = tmp_path / "other.fa"
    text = demo_inputs.fasta.read_text().splitlines()
    text[1] = "T" + text[1][1:] if not text[1].startswith("T") else "A" + text[1][1:]
    other.write_text("\n".join(text) + "\n")
    store = ChorusStore.open(small_build[0])
    spec = WorkerSpec(
        store=store.url,
        recipe=store.attrs["recipe"],
        fasta=str(other),
        weights=None,
        device="cpu",
        batch_size=None,
        run_id="test-run",
        assembly=store.attrs["genome"].get("assembly"),
        fingerprint=store.attrs["oracle"]["fingerprint"],
    )
    done = store.read("baselines/done_rows").copy()
    with pytest.raises(GenomeMismatchError, match="read on worker"):
        run_task(spec, _a_task(store))
    assert (ChorusStore.open(small_build[0]).read("baselines/done_rows") == done).all()


def _a_task(store: ChorusStore) -> Any:
    """The first row shard, all tracks (the store is built: nothing is pending)."""
    from chorus_store.build.tasks import Task

    n = store.layout.position_shard_rows
    return Task(DATA_GROUPS[0], 0, 0, n, n, tuple(range(len(store.tracks))))


def test_a_task_that_kills_every_worker_it_meets_stops_the_build_clearly(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    import dask

    from chorus_store import load_recipe
    from chorus_store.errors import ClusterError

    from .test_new_oracle import RECIPE

    (tmp_path / "recipe.toml").write_text(
        RECIPE.replace("tests.helpers:gc_window_model", "tests.helpers:dies_in_a_worker")
    )
    (tmp_path / "tracks.tsv").write_text(
        "track_id\tassay_type\tdescription\nGC:one\tDNASE\tDNASE:gc\nAT:two\tCHIP\tCHIP:x:at\n"
    )
    store = tmp_path / "s.zarr"
    plan_store(
        store,
        load_recipe(tmp_path / "recipe.toml"),
        fasta=demo_inputs.fasta,
        ccre=demo_inputs.ccre,
        gtf=demo_inputs.gtf,
    )
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        local_cluster(1) as client,
        pytest.raises(ClusterError, match="killed every worker.*resumes"),
    ):
        build(store, scheduler=client, progress=False)
    assert status(store).claims == []  # the coordinator released its claims
