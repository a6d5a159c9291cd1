"""The fault-injection kit: StoreFaults fails the N-th matching write, and nothing else."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import zarr

from chorus_store.store.location import Location
from chorus_store.testing.faults import Fault, SimulatedCrash, StoreFaults


def _array(path: Path) -> zarr.Array:  # type: ignore[type-arg]  # zarr.Array[Any] at runtime
    store = Location.of(path).zarr_store(read_only=False)
    return zarr.create_array(store, shape=(4,), chunks=(1,), dtype="f4", fill_value=np.nan)


def test_a_crash_fails_the_nth_matching_write_and_every_later_one(tmp_path: Path) -> None:
    with StoreFaults(Fault("c/*", after=2, kind="crash"), url=tmp_path / "a") as faults:
        arr = _array(tmp_path / "a")
        arr[0] = 1
        arr[1] = 2
        with pytest.raises(SimulatedCrash):
            arr[2] = 3
        with pytest.raises(SimulatedCrash):  # a dead process writes nothing more
            arr.attrs["x"] = 1
    assert faults.written == ["zarr.json", "c/0", "c/1"]
    assert faults.failed == ["c/2", "zarr.json"]
    read = zarr.open_array(tmp_path / "a", mode="r")[:]
    np.testing.assert_array_equal(read, [1, 2, np.nan, np.nan])
    _array(tmp_path / "b")[:] = 5  # outside the block, or at another url: not wrapped


def test_a_full_disk_raises_enospc_and_a_landing_write_lands(tmp_path: Path) -> None:
    with StoreFaults(Fault("c/1", kind="full_disk", lands=True)) as faults:
        arr = _array(tmp_path / "a")
        arr[0] = 1
        with pytest.raises(OSError) as err:
            arr[1] = 2
        assert err.value.errno == errno.ENOSPC
        arr[2] = 3  # only matching keys fail
    assert faults.failed == ["c/1"]
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a", mode="r")[:], [1, 2, 3, np.nan])
