"""SIGKILL `chorus-store demo` at random moments; the resumed result is byte-identical."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chorus_store import status

CLI = [sys.executable, "-m", "chorus_store.cli"]


def _demo(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "demo", str(directory), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_killed_demo_resumes_to_a_byte_identical_npz(tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    t0 = time.monotonic()
    ref = _demo(reference)
    assert ref.wait() == 0, ref.stderr.read() if ref.stderr else ""
    full = time.monotonic() - t0

    interrupted = tmp_path / "interrupted"
    kills = []
    for _ in range(3):
        delay = rng.uniform(0.3, full * 0.9)
        proc = _demo(interrupted)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(round(delay, 2))
    final = _demo(interrupted)
    _, err = final.communicate()
    assert final.returncode == 0, f"seed {seed}, kills at {kills}: {err}"
    a = (reference / "demo_pertrack.npz").read_bytes()
    b = (interrupted / "demo_pertrack.npz").read_bytes()
    assert a == b, f"seed {seed}, kills at {kills} s"
    st = status(interrupted / "demo.zarr")
    assert all(c["alive"] is not True for c in st.claims)  # only dead processes' leftovers
