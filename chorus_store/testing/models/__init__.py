"""Tiny models of every adapter's real architecture, with random weights, written in the
on-disk formats the adapters read, and recipes over them: one module per adapter, named
as the adapter (each has its own ``TINY``, targets and recipe builder). The tests and the
benchmarks build their models here; each module imports its adapter's framework."""
