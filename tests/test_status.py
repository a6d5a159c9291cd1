"""``status`` that reads: one line per run holding claims, layers as a table, no reprs."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chorus_store import status
from chorus_store.cli import app
from chorus_store.store import claims as locks
from chorus_store.store.location import Location

runner = CliRunner()
REPR = re.compile(r"[{}\[\]]")  # a dict or list repr in user-facing text


@pytest.fixture()
def other_process() -> Iterator[int]:
    """The pid of a live process of this machine (another run's holder)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _build_claims(group: str, shards: range, track_shards: int) -> list[str]:
    return [f"build/{group}/s{s:06d}-t{t:04d}" for s in shards for t in range(track_shards)]


def test_two_runs_holding_claims_are_two_lines(small_copy: Path, other_process: int) -> None:
    loc = Location.of(small_copy)
    mine = locks.acquire(
        loc,
        _build_claims("baselines", range(0, 5), 3),
        store=loc.url,
        command="chorus-store build S --part baselines",
    )
    theirs = locks.LockSet(
        loc,
        dataclasses.replace(
            locks.Holder.me("chorus-store build S --part variants"), pid=other_process
        ),
    )
    theirs.acquire(_build_claims("variants", range(0, 2), 3) + ["reduce"], store=loc.url)
    try:
        report = status(small_copy)
        assert len(report.claims) == 5 * 3 + 2 * 3 + 1  # one per claim, as before
        runs = {r["pid"]: r for r in report.runs}
        assert len(report.runs) == 2 and set(runs) == {mine.holder.pid, other_process}
        assert runs[mine.holder.pid]["shards"] == {"baselines": 15}
        assert runs[mine.holder.pid]["holds"] == []
        assert runs[other_process]["shards"] == {"variants": 6}
        assert runs[other_process]["holds"] == ["reduce"]
        assert all(r["alive"] is True and r["host"] == socket.gethostname() for r in report.runs)
        assert runs[other_process]["command"] == "chorus-store build S --part variants"

        res = runner.invoke(app, ["status", str(small_copy)], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        lines = res.stdout.splitlines()
        assert not any(line.startswith("claim ") for line in lines)  # not one per shard
        run_lines = [line for line in lines if line.startswith("run: ")]
        assert len(run_lines) == 2
        ours = [line for line in run_lines if f"pid {mine.holder.pid} " in line]
        assert len(ours) == 1 and "holds 15 shards (baselines 15): " in ours[0]
        assert ours[0].endswith("chorus-store build S --part baselines")  # the command, whole
        other = [line for line in run_lines if f"pid {other_process} " in line]
        assert len(other) == 1 and "holds 6 shards (variants 6), reduce: " in other[0]
        assert ", live, " in other[0]

        every = runner.invoke(app, ["status", str(small_copy), "--claims"])
        shard_lines = [line for line in every.stdout.splitlines() if line.startswith("claim ")]
        assert len(shard_lines) == len(report.claims)
        assert "build/variants/s000001-t0002" in every.stdout

        machine = json.loads(runner.invoke(app, ["status", str(small_copy), "--json"]).stdout)
        assert {r["pid"]: sum(r["shards"].values()) for r in machine["runs"]} == {
            mine.holder.pid: 15,
            other_process: 6,
        }
    finally:
        theirs.release()
        mine.release()
    assert status(small_copy).runs == []


def test_a_claim_from_before_leases_still_reads(small_copy: Path, other_process: int) -> None:
    old = {  # what chorus-store wrote before claims had leases: no lease_s
        "host": socket.gethostname(),
        "boot_id": locks._boot_id(),
        "pid": other_process,
        "command": "chorus-store build",
        "started_at": 0.0,
        "run_id": "old-run",
    }
    key = small_copy / locks.LOCK_DIR / "build" / "baselines" / "s000000-t0000.json"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(old))
    (run,) = status(small_copy).runs
    assert run["pid"] == other_process and run["shards"] == {"baselines": 1}
    assert run["command"] == "chorus-store build" and run["run_id"] == "old-run"


def test_a_claim_records_the_whole_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["/usr/local/bin/chorus-store", "build", "s.zarr", "--part", "baselines", "--device",
            "cuda:0"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    holder = locks.Holder.me("chorus-store build s.zarr")
    assert holder.command == "chorus-store build s.zarr --part baselines --device cuda:0"
    monkeypatch.setattr(sys, "argv", ["/x/chorus_store/cli.py", "reduce", "my store.zarr"])
    assert locks.command_line("label") == "chorus-store reduce 'my store.zarr'"
    # a Python caller (a script, a notebook) keeps what the API says it is doing
    monkeypatch.setattr(sys, "argv", ["script.py", "--flag"])
    assert locks.command_line("chorus-store build s.zarr") == "chorus-store build s.zarr"
    assert locks.command_line() == "script.py --flag"


def test_status_and_verify_print_tables_and_lines_not_reprs(
    small_build: tuple[Path, Path], small_copy: Path
) -> None:
    res = runner.invoke(app, ["status", str(small_build[0])], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert not REPR.search(res.stdout), res.stdout
    layers = status(small_build[0]).layers
    for layer, n in layers.items():  # the layers table: one row per layer, with its count
        assert re.search(rf"│ {layer}\s+│ {n}\s+│", res.stdout), layer
    assert "40 tracks" in res.stdout
    ok = runner.invoke(app, ["verify", str(small_copy)])
    assert ok.exit_code == 0 and not REPR.search(ok.stdout)
    shutil.rmtree(small_copy / "baselines" / "summary" / "c" / "0")  # a built shard lost
    bad = runner.invoke(app, ["verify", str(small_copy)])
    assert bad.exit_code == 1 and "damaged data: baselines/summary shard 0" in bad.stdout
    assert not REPR.search(bad.stdout), bad.stdout
