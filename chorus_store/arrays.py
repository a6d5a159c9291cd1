"""Arrays where the model left them: one namespace for numpy and torch, and the host copy.

The statistics of :mod:`chorus_store.build.records` are written once against the array API
(through ``array-api-compat``), so they run on whatever the oracle returned: numpy arrays,
torch tensors on CPU, or torch tensors on CUDA. Two things need more than the standard:

* moving the small index arrays (sampled bins, exon bins, track columns) to the device of
  a prediction, without stalling the host on the model's stream (:func:`asarray_like`);
* bringing the records back (:class:`HostCopy`): on CUDA into pinned memory with a
  non-blocking copy and an event, so the thread that enqueued the work does not wait for
  it; the thread that needs the numbers waits instead.

Every byte that crosses from a device to the host in a build goes through
:class:`HostCopy`, which counts it in :data:`transferred` (the AlphaGenome test asserts a
build never brings a 1 bp head across).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_numpy_array, is_torch_array

__all__ = [
    "namespace",
    "is_accelerated",
    "as_host_view",
    "asarray_like",
    "HostCopy",
    "Transfers",
    "transferred",
]


def namespace(x: Any) -> Any:
    """The array-API namespace of ``x`` (numpy's or torch's, as array-api-compat wraps them)."""
    return array_namespace(x)


def is_accelerated(x: Any) -> bool:
    """True for an array that lives on an accelerator (anything but host memory)."""
    if is_numpy_array(x):
        return False
    if is_torch_array(x):
        return bool(x.device.type != "cpu")
    return True  # another array library (cupy, jax on a GPU): treat it as a device


def as_host_view(x: Any) -> Any:
    """``x`` as a numpy array when that costs nothing (numpy, torch on CPU), else ``x``."""
    if is_torch_array(x) and x.device.type == "cpu":
        return x.detach().numpy()
    return x


def asarray_like(values: np.ndarray, like: Any) -> Any:
    """``values`` (host numpy) as an array of ``like``'s namespace on ``like``'s device.

    On CUDA the copy goes through pinned memory and is non-blocking: a plain copy from
    pageable memory would make the host wait until the GPU had finished everything queued
    before it (the model's forward pass), which is exactly the wait the pipeline avoids.
    """
    if is_numpy_array(like):
        return values
    if is_torch_array(like):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(values))
        if like.device.type == "cpu":
            return t
        return t.pin_memory().to(like.device, non_blocking=True)
    xp = namespace(like)
    return xp.asarray(values, device=getattr(like, "device", None))


class Transfers:
    """Bytes brought from a device to the host (thread-safe running total)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        self.copies = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += int(nbytes)
            self.copies += 1

    def reset(self) -> None:
        with self._lock:
            self.bytes = 0
            self.copies = 0


#: every device → host copy a build makes (see :class:`HostCopy`)
transferred = Transfers()


class HostCopy:
    """Start bringing ``arrays`` to the host now; :meth:`result` waits and returns numpy.

    numpy arrays pass through. Torch tensors on CPU are counted as a transfer (they are
    what a device would send) and viewed without a copy. On CUDA each tensor is copied
    into a fresh pinned host buffer (torch's caching host allocator reuses them once the
    copy's event has completed) with ``non_blocking=True``, and an event is recorded on
    the current stream: the caller returns at once, :meth:`result` blocks until the copy
    is done.
    """

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        self._event: Any = None
        self._out: dict[str, Any] = {}
        for name, x in arrays.items():
            if x is None or is_numpy_array(x):
                self._out[name] = x
                continue
            transferred.add(_nbytes(x))
            if is_torch_array(x) and x.device.type == "cpu":
                self._out[name] = x.detach()
            elif is_torch_array(x):
                import torch

                host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
                host.copy_(x, non_blocking=True)
                self._out[name] = host
                if self._event is None:
                    self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            else:
                self._out[name] = np.asarray(x)
        if self._event is not None:
            self._event.record()

    def result(self) -> dict[str, Any]:
        """The arrays as numpy, once their copies have landed."""
        if self._event is not None:
            self._event.synchronize()
        return {
            k: (v if v is None or is_numpy_array(v) else v.numpy()) for k, v in self._out.items()
        }


def _nbytes(x: Any) -> int:
    if is_torch_array(x):
        return int(x.numel() * x.element_size())
    return int(np.prod(x.shape)) * int(np.dtype(str(x.dtype).split(".")[-1]).itemsize)
