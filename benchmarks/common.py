"""What the benchmark scripts share: the machine line, and each part in its own process."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {ram:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def run_part(
    script: str, name: str, work: Path, quick: bool, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run part ``name`` of ``script`` in a fresh process (its peak memory is its own);
    the part prints its result as one JSON line."""
    cmd = [sys.executable, script, "--part", name, "--workdir", str(work)]
    res = subprocess.run(
        cmd + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    if res.returncode:
        raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def parse_args(
    doc: str | None, parts: dict[str, Callable[[Path, bool], dict[str, Any]]], only: list[str]
) -> argparse.Namespace | None:
    """The scripts' common options. Runs and prints a ``--part`` itself (returns None)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--part", choices=sorted(parts), help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=only, help="run only this part")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    if args.part:
        print(json.dumps(parts[args.part](args.workdir, args.quick)))
        return None
    return args
