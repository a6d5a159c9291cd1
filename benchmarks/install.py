"""Install each extra into a fresh virtual environment and check what it brings.

For every extra (and the core install with none) this makes a new venv, times
``pip install "<project>[extra]"``, measures the venv's size, lists the distributions
it got, refuses two TensorFlows or a compiled-from-source package the extra does not
need, and runs the extra's smoke command (the demo for ``demo``; the adapter found and
its framework imported for an oracle; the one-line "pip install chorus-store[demo]"
error for the core install). It prints one table and, with ``--json``, one JSON line.

torch: an extra asks for ``torch>=2.4``, which on a machine without torch installs
whatever build pip finds. Pass ``--torch torch==2.13.0`` (the default) to install the
CPU build this machine holds beside it, as a user with their own CUDA build would have
theirs.

    python benchmarks/install.py                   # every extra, about 15 minutes here
    python benchmarks/install.py --extras core,demo
    python benchmarks/install.py --extras demo --pin numpy==1.26.4   # the numpy floor
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: per extra: the Python run in its venv to show it works (exit 0), or for "core" the
#: one-line error the demo must give without torch
SMOKE: dict[str, str] = {
    "core": "",  # the CLI's demo, checked for its one-line error instead
    "demo": "",  # the demo itself
    "legnet": "from chorus_store.oracles.registry import find_adapter; find_adapter('legnet'); import torch",
    "sei": "from chorus_store.oracles.registry import find_adapter; find_adapter('sei'); import torch, scipy.interpolate",
    "enformer": "from chorus_store.oracles.registry import find_adapter; find_adapter('enformer'); import enformer_pytorch",
    "enformer-tf": "from chorus_store.oracles.registry import find_adapter; find_adapter('enformer'); import tensorflow",
    "borzoi": "from chorus_store.oracles.registry import find_adapter; find_adapter('borzoi'); import borzoi_pytorch",
    "alphagenome": "from chorus_store.oracles.registry import find_adapter; find_adapter('alphagenome'); import alphagenome_pytorch",
    "chrombpnet": "from chorus_store.oracles.models.chrombpnet import keras, chrombpnet_architecture; keras(); chrombpnet_architecture(filters=4, n_dil_layers=1)",
    "chrombpnet-torch": "from chorus_store.oracles.registry import find_adapter; find_adapter('chrombpnet'); import bpnetlite",
    "report": "import matplotlib",
    "cluster": "import bokeh, distributed",
}

#: extras that pull torch (and so get the --torch pin beside them)
WITH_TORCH = {"demo", "legnet", "sei", "enformer", "borzoi", "alphagenome", "chrombpnet-torch"}

#: packages built from source that only these extras may bring
FROM_SOURCE_ONLY_IN = {"macs3": {"chrombpnet-torch"}}


@dataclass
class Installed:
    extra: str
    seconds: float
    megabytes: float
    n_packages: int
    brings: list[str]  # the notable distributions, beyond the core install's
    ok: bool
    problem: str = ""


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _distributions(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    return {d["name"].lower(): d["version"] for d in json.loads(out.stdout)}


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def _smoke(extra: str, python: Path, work: Path) -> str:
    """The extra's check; returns a problem, or ""."""
    cli = [str(python), "-m", "chorus_store"]
    if extra in ("core", "demo"):
        res = subprocess.run(cli + ["demo", str(work / "demo-out")], capture_output=True, text=True)
        if extra == "demo":
            return "" if res.returncode == 0 else f"the demo failed: {res.stderr[-800:]}"
        want = 'pip install "chorus-store[demo]"'
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        if res.returncode != 2 or len(lines) != 1 or want not in lines[0]:
            return f"the core install's demo should fail in one line naming [demo]: {res.stderr[-800:]}"
        return ""
    res = subprocess.run([str(python), "-c", SMOKE[extra]], capture_output=True, text=True)
    return "" if res.returncode == 0 else f"smoke check failed: {res.stderr[-800:]}"


def _problems(extra: str, dists: dict[str, str]) -> list[str]:
    found = []
    tfs = [d for d in ("tensorflow", "tensorflow-cpu", "tf-keras", "tf_keras") if d in dists]
    if {"tensorflow", "tensorflow-cpu"} <= set(dists):
        found.append(f"two TensorFlows: {tfs}")
    for package, allowed in FROM_SOURCE_ONLY_IN.items():
        if package in dists and extra not in allowed:
            found.append(f"{package} (built from source) came with [{extra}]")
    return found


def install(
    extra: str, torch: str, python: str, core: set[str], pins: tuple[str, ...] = ()
) -> tuple[Installed, set[str]]:
    with tempfile.TemporaryDirectory(prefix=f"install-{extra}-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        py = _venv_python(venv)
        spec = str(ROOT) if extra == "core" else f"{ROOT}[{extra}]"
        wanted = [spec, *([torch] if extra in WITH_TORCH and torch else []), *pins]
        start = time.perf_counter()
        res = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *wanted], capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if res.returncode:
            return Installed(extra, seconds, 0, 0, [], False, res.stderr[-800:]), set()
        dists = _distributions(py)
        problems = _problems(extra, dists) + [p for p in [_smoke(extra, py, Path(tmp))] if p]
        notable = sorted(
            f"{name} {dists[name]}"
            for name in set(dists) - core - {"chorus-store"}
            if name in _NOTABLE
        )
        return (
            Installed(
                extra,
                seconds,
                _size_mb(venv),
                len(dists),
                notable,
                not problems,
                "; ".join(problems),
            ),
            set(dists),
        )


#: what the table names when an extra brings it (the rest are their dependencies)
_NOTABLE = {
    "torch", "tensorflow", "tensorflow-cpu", "keras", "tf-keras", "scipy", "enformer-pytorch",
    "borzoi-pytorch", "alphagenome-pytorch", "bpnet-lite", "macs3", "transformers",
    "matplotlib", "bokeh", "h5py", "jupyter", "ipykernel", "pyarrow", "polars", "numba",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default=",".join(SMOKE), help="comma-separated, or 'core'")
    parser.add_argument("--torch", default="torch==2.13.0", help="installed beside torch extras")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venvs")
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        help="a requirement installed beside every extra, e.g. numpy==1.26.4 (the declared floor)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    unknown = [e for e in extras if e not in SMOKE]
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; known: {', '.join(SMOKE)}")
    results: list[Installed] = []
    core: set[str] = set()
    for extra in ["core", *[e for e in extras if e != "core"]]:
        result, dists = install(extra, args.torch, args.python, core, tuple(args.pin))
        if extra == "core":
            core = dists
            if "core" not in extras:
                continue
        results.append(result)
        print(
            f"{extra:17s} {result.seconds:6.0f} s {result.megabytes:8.0f} MB "
            f"{result.n_packages:4d} dists  {'ok' if result.ok else 'FAIL'}  "
            f"{', '.join(result.brings)}{'  ' + result.problem if result.problem else ''}",
            flush=True,
        )
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    if not all(r.ok for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
