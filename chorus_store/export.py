"""The export: ``{oracle}_pertrack.npz`` exactly as chorus's ``PerTrackNormalizer`` loads it.

Keys, dtypes and shapes follow spec §6.1 and the checklist of §11; ``build_config`` is the
schema-4 block of §6.2, filled from the store. The arrays are validated before anything
is written (the guards chorus's writer applies, and a few it lacks), then written to a
temporary file, read back, fsynced and renamed into place (an object store: one PUT): a
failed or interrupted export leaves the previous file untouched. The zip entries carry a
fixed timestamp, so the file's bytes depend only on its contents.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from chorus_store._version import __version__
from chorus_store.errors import ExportValidationError, WriteError, os_reason
from chorus_store.genome.tracks import LAYER_CONFIGS
from chorus_store.progress_log import Meter
from chorus_store.reduce import GRID_RULES, active_layers, require_reduced
from chorus_store.reports import ExportReport
from chorus_store.store import claims as locks
from chorus_store.store.core import ChorusStore
from chorus_store.store.location import Location, is_remote
from chorus_store.store.progress import require_complete
from chorus_store.store.schema import npz_contract, schema

__all__ = [
    "export",
    "default_backgrounds_dir",
    "validate_npz",
    "write_npz_atomic",
    "NPZ_SCHEMA_VERSION",
]

#: ``build_config.schema_version`` chorus requires (``MIN_ARTEFACT_SCHEMA``).
NPZ_SCHEMA_VERSION = 4
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

log = logging.getLogger(__name__)


def default_backgrounds_dir() -> Path:
    """The directory chorus reads backgrounds from (spec §6.6).

    chorus's own resolution when chorus is installed; otherwise ``$CHORUS_DATA_DIR/
    backgrounds``, else ``~/.chorus/backgrounds``.
    """
    try:
        from chorus.core.globals import CHORUS_BACKGROUNDS_DIR

        return Path(CHORUS_BACKGROUNDS_DIR)
    except Exception:  # noqa: BLE001 - chorus absent or failing to import: use its rules
        env = os.environ.get("CHORUS_DATA_DIR")
        return (Path(env).expanduser() if env else Path.home() / ".chorus") / "backgrounds"


def _stamped_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.isoformat()


# --------------------------------------------------------------------------------------
# validation (spec §5.6 guards, §11 checklist)
# --------------------------------------------------------------------------------------


def _contract_problem(
    key: str, spec: dict[str, Any], arr: np.ndarray | None, dims: dict[str, int]
) -> str | None:
    """How ``arr`` breaks its entry ``spec`` of the NPZ contract, or None."""
    shape = tuple(dims[d] if isinstance(d, str) else int(d) for d in spec["shape"])
    want = spec["dtype"]
    if arr is None:
        return f"{key} missing (the contract: {want} {shape})"
    ok = arr.dtype.kind == "U" if want == "unicode" else arr.dtype == np.dtype(want)
    if not ok or arr.shape != shape:
        return f"{key} must be {want} {shape}, is {arr.dtype} {arr.shape}"
    return None


def validate_npz(arrays: dict[str, np.ndarray], *, n_points: int = 10_000) -> list[str]:
    """Every way ``arrays`` would break chorus's loader or its writer's guards.

    Keys, dtypes and shapes are the contract's (``schemas/npz-v4.json``); the rules on
    values (unique ids, canonical layers, monotone exact grids) are checked here.
    """
    contract = npz_contract()
    problems: list[str] = []
    ids = arrays.get("track_ids")
    if ids is None or ids.dtype.kind != "U" or ids.ndim != 1:
        return ["track_ids must be a 1-D unicode array"]
    T = len(ids)
    dims = {"track": T, "cdf_point": n_points}
    for key, spec in contract["keys"].items():
        problem = _contract_problem(key, spec, arrays.get(key), dims)
        if problem:
            problems.append(problem)
    problems += _id_and_layer_problems(ids, arrays.get("layers_per_row"))
    for layer in contract["layers"]:
        problems += _layer_problems(arrays, layer, contract["per_layer"], dims)
    problems += _build_config_problems(
        arrays.get("build_config"), int(contract["keys"]["build_config"]["min_schema_version"])
    )
    for key, arr in arrays.items():
        if arr.dtype.kind == "O":
            problems.append(f"{key} is an object array (chorus loads with allow_pickle=False)")
    return problems


def _id_and_layer_problems(ids: np.ndarray, layers: np.ndarray | None) -> list[str]:
    """Track ids unique; every row's layer one chorus knows."""
    problems = []
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(f"track_ids not unique: {uniq[counts > 1][:5].tolist()}")
    if layers is not None and layers.shape == ids.shape:
        bad = sorted(set(layers.tolist()) - set(LAYER_CONFIGS))
        if bad:
            problems.append(f"layers_per_row holds non-canonical layers {bad}")
    return problems


def _build_config_problems(cfg: np.ndarray | None, least: int) -> list[str]:
    """The build config is JSON with an integer schema version chorus accepts."""
    if cfg is None or cfg.shape != (1,):
        return []  # a missing or mis-shaped entry is the contract's problem
    try:
        version = json.loads(str(cfg[0])).get("schema_version")
    except ValueError as exc:
        return [f"build_config is not JSON: {exc}"]
    if not isinstance(version, int) or version < least:
        return [f"build_config.schema_version must be the int {least}"]
    return []


def _layer_problems(
    arrays: dict[str, np.ndarray],
    layer: str,
    per_layer: dict[str, dict[str, Any]],
    dims: dict[str, int],
) -> list[str]:
    """The problems of one layer's grid, counts and retained counts (absent layer: none)."""
    key = f"{layer}_cdfs"
    if key not in arrays:
        return []
    specs = {name.format(layer=layer): spec for name, spec in per_layer.items()}
    shape_problems = [
        p for k, spec in specs.items() if (p := _contract_problem(k, spec, arrays.get(k), dims))
    ]
    if shape_problems:
        return shape_problems
    T, n_points = dims["track"], dims["cdf_point"]
    m, counts_, retained = arrays[key], arrays[f"{layer}_counts"], arrays[f"{layer}_retained"]
    problems = []
    if not np.isfinite(m).all():
        problems.append(f"{key} holds NaN/inf")
    has = counts_ > 0
    if T and has.mean() < 0.5:
        problems.append(
            f"{layer}: only {int(has.sum())} of {T} tracks have samples (< 50%); chorus's "
            f"writer refuses this (a build that dropped every position looks like this)"
        )
    drops = np.diff(m, axis=1) < -1e-6
    bad_rows = np.flatnonzero(drops.any(axis=1) & has)
    if len(bad_rows):
        problems.append(f"{key}: rows {bad_rows[:5].tolist()} are not non-decreasing")
    ids = arrays["track_ids"]
    for i in np.flatnonzero(has & (counts_ < n_points - 2)):
        row = m[i]
        if row[0] != row[-1] and int(np.argmax(row)) == int(counts_[i]) - 1:
            problems.append(
                f"{key}: row {i} ({ids[i]}) reaches its maximum at index {counts_[i] - 1}, "
                f"the shape of a grid padded to width (chorus #143)"
            )
            break
    empty = np.flatnonzero(~has & (m != 0).any(axis=1))
    if len(empty):
        problems.append(f"{key}: rows {empty[:5].tolist()} have count 0 but non-zero values")
    if (retained < counts_).any():
        problems.append(f"{layer}: retained < offered (thinned) rows; exports are exact")
    return problems


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def member_compression(arr: np.ndarray) -> int:
    """How an array is stored in the NPZ: float grids as they are, the rest deflated.

    Deflate gains only ~16 % on the float32 grids (their mantissas are noise to it) for
    ~12 s per 5,313-track grid, most of an Enformer export; track ids, layer names,
    counts and ``build_config`` shrink several-fold for milliseconds. ``np.load`` (chorus's
    loader) reads both kinds of member, and a stored grid loads without inflating.
    """
    return zipfile.ZIP_STORED if arr.dtype.kind == "f" else zipfile.ZIP_DEFLATED


def _write_npz_file(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    """The NPZ container (a zip of ``.npy`` members, fixed timestamps, see
    :func:`member_compression`), read back before it is installed."""
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = member_compression(np.asanyarray(arr))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
    with np.load(tmp, allow_pickle=False) as check:
        if sorted(check.files) != sorted(arrays):
            raise WriteError(f"read-back of {tmp} lacks keys; not installed")


def write_npz_atomic(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an NPZ at ``path`` (a local path or an object-store URL)
    atomically and reproducibly.

    The container ``np.savez_compressed`` writes, but with fixed member timestamps and the
    float arrays stored rather than deflated (:func:`member_compression`), read back and
    checked, then installed whole by :meth:`Location.write_file
    <chorus_store.store.location.Location.write_file>`: readers see the previous file or
    this one. The temporary's name carries the writer's host and pid, so the next export
    removes what a killed one left.
    """
    if is_remote(path):
        parent, name = str(path).rsplit("/", 1)
    else:
        local = Path(path).expanduser().absolute()
        parent, name = str(local.parent), local.name
        with contextlib.suppress(OSError):  # best effort: a read-only dir fails below, named
            remove_stale_partials(local)
    try:
        Location.of(parent).write_file(
            name, lambda tmp: _write_npz_file(tmp, arrays), tag=locks.writer_tag()
        )
    except OSError as exc:
        raise _write_failed(path, exc) from exc


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete ``.{name}.<host>.<pid>.<uuid>.partial`` files beside ``path`` whose writer
    (a pid on this machine) is gone: what a SIGKILLed export leaves. A live writer's
    file, another machine's, and an unnamed older one are kept. Returns those removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        if not locks.left_by_dead_writer(tmp.name[len(path.name) + 2 : -len(".partial")]):
            continue  # its writer is running, or on another machine
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _write_failed(path: Path | str, exc: OSError) -> Exception:
    if isinstance(exc, WriteError):
        return exc
    reason = os_reason(exc)
    return WriteError(
        f"could not write {path}: {reason}. Nothing was replaced (any previous file is "
        f"intact); fix that and re-run `chorus-store export`."
    )


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


def _sampling_block(arrays: dict[str, np.ndarray], layers: tuple[str, ...]) -> dict[str, Any]:
    block = {}
    for layer in layers:
        offered = arrays[f"{layer}_counts"]
        retained = arrays[f"{layer}_retained"]
        block[layer] = {
            "offered": [int(offered.min()), int(offered.max())] if len(offered) else [0, 0],
            "retained": [int(retained.min()), int(retained.max())] if len(retained) else [0, 0],
            "thinned_tracks": int((retained < offered).sum()),
            "mode": "exact",
            "tail_k": None,
        }
    return block


def build_config(
    store: ChorusStore, arrays: dict[str, np.ndarray], layers: tuple[str, ...]
) -> dict[str, Any]:
    """The schema-4 ``build_config`` (spec §6.2) of a store's export."""
    attrs = store.attrs
    genome = attrs["genome"]
    plan = attrs["plan"]
    recipe = attrs["recipe"]
    layer_names = sorted(set(arrays["layers_per_row"].tolist()))
    heads = recipe["oracle"]["heads"]
    binned = [h for h in heads if int(h["resolution_bp"]) != 0]
    signed = arrays["signed_flags"]
    ref = plan.get("reference_set") or {}
    return {
        "schema_version": NPZ_SCHEMA_VERSION,
        "oracle": attrs["oracle"]["name"],
        "n_tracks": int(len(arrays["track_ids"])),
        "genome": genome["assembly"],
        "fai_sha256": genome["fai_sha256"],
        "fasta_sha256_prefix64mb": genome["fasta_sha256_prefix64mb"],
        "stamped_at": _stamped_at(),
        "stamper": f"chorus-store {__version__}",
        "git_sha": f"chorus-store {__version__}",
        "input_length": int(recipe["oracle"]["input_length"]),
        "resolution": int(binned[0]["resolution_bp"]) if binned else None,
        "cdf_points": int(store.layout.n_points),
        "layers_present": layer_names,
        "statistics_per_layer": {L: LAYER_CONFIGS[L].as_dict() for L in layer_names},
        "signed_fraction": round(float(signed.mean()), 4) if len(signed) else 0.0,
        "histone_window_bp": LAYER_CONFIGS["histone_marks"].window_bp,
        "other_window_bp": LAYER_CONFIGS["chromatin_accessibility"].window_bp,
        "sampling": _sampling_block(arrays, layers),
        "reference_sets": {
            "artefact": ref.get("artefact"),
            "artefact_schema": ref.get("artefact_schema"),
            "artefact_sha256": ref.get("file_sha256"),
            "effect_family": plan.get("effect_family"),
            "effect_sha256": plan["variants_sha256"],
            "effect_strata": {k: v["planned"] for k, v in plan["variant_strata"].items()},
            "activity_set": plan.get("activity_set"),
            "activity_sha256": plan["positions_sha256"],
            "activity_strata": {k: v["planned"] for k, v in plan["position_strata"].items()},
            "activity_derivation": plan.get("activity_derivation"),
            "seeds": plan.get("seeds"),
        },
        "notes": [
            "Built by chorus-store: every value of the effect, summary and per-bin nulls is "
            "stored in the Zarr store named below; every grid is an exact order statistic "
            "of all of them (no reservoir, no thinning).",
            "Effect and activity nulls are different reference classes (SNP set vs "
            "position set) and must not be unified.",
            "Percentiles are strictly empirical: above the sampled maximum the value is "
            "clamped. No tail is extrapolated.",
            f"Per-bin draws: {schema().bin_samples} bins per usable position from the whole "
            "output, one independent seeded stream per position (seed 999, row index).",
        ],
        "determinism": {
            "available": True,
            "module": "chorus_store",
            "evidence": "the export depends only on the plan, the model and its numerics "
            "(batch shape, device, framework); tested byte-identical across "
            "interruptions, chunk sizes, batch sizes and worker counts",
        },
        "unified_build": True,
        "build_campaign": f"chorus-store {attrs['plan'].get('name', '')}".strip(),
        "chorus_store": {
            "version": __version__,
            "store_schema": attrs["schema_version"],
            "oracle_fingerprint": attrs["oracle"].get("fingerprint"),
            "tracks_sha256": attrs["tracks"]["sha256"],
            "grid_rules": GRID_RULES,
            "max_n_fraction": plan.get("max_n_fraction"),
            "position_strata": plan["position_strata"],
            "variant_strata": plan["variant_strata"],
        },
    }


def collect_arrays(store: ChorusStore) -> dict[str, np.ndarray]:
    """The NPZ arrays of a fully reduced store, in their file order."""
    layers = active_layers(store)
    tracks = store.tracks
    arrays: dict[str, np.ndarray] = {"track_ids": np.asarray(tracks.track_ids, dtype=str)}
    reads = [
        *((f"{layer}_cdfs", f"reductions/{layer}/grid", np.float32) for layer in layers),
        *((f"{layer}_counts", f"reductions/{layer}/offered", np.int64) for layer in layers),
        *((f"{layer}_retained", f"reductions/{layer}/retained", np.int64) for layer in layers),
    ]
    # the grids are tracks x 10,000 floats per layer: gigabytes for the largest oracles
    with Meter("export", len(reads), unit="arrays") as meter:
        for key, source, dtype in meter.iterate(reads):
            arrays[key] = store.read(source).astype(dtype)
    arrays["signed_flags"] = np.asarray(tracks.signed, dtype=bool)
    arrays["layers_per_row"] = np.asarray(tracks.layers, dtype=str)
    cfg = build_config(store, arrays, layers)
    arrays["build_config"] = np.asarray([json.dumps(cfg, sort_keys=True, default=str)])
    return arrays


def export(
    store_path: str | Path, *, out: str | Path | None = None, force: bool = False
) -> ExportReport:
    """Validate and write ``{oracle}_pertrack.npz`` from a reduced store.

    Parameters
    ----------
    out
        A directory (the file is named ``{oracle}_pertrack.npz`` in it) or a ``.npz`` path.
        Default: :func:`default_backgrounds_dir`, where chorus looks.

        An object-store URL (``s3://bucket/backgrounds/``) uploads it there.
    force
        Write a store of another assembly than hg38 into chorus's backgrounds directory
        (chorus refuses to load it there; refused without ``force``).

    Returns
    -------
    ExportReport
        The file written (``.url``; ``.path`` for a local one), and where a different
        file already in chorus's backgrounds directory was kept (``.moved_aside``).
    """
    t_start = time.perf_counter()
    store = ChorusStore.open(store_path)
    store.validate()
    require_complete(store)
    require_reduced(store)
    log.info(
        "export %s: %d track(s), layers %s",
        store.url,
        len(store.tracks),
        ", ".join(active_layers(store)),
    )
    arrays = collect_arrays(store)
    problems = validate_npz(arrays, n_points=store.layout.n_points)
    if problems:
        raise ExportValidationError(
            f"{store.url}: the export would break chorus's loader contract; nothing was "
            f"written: " + "; ".join(problems)
        )
    name = f"{store.attrs['oracle']['name']}_pertrack.npz"
    if out is not None and is_remote(out):
        url = str(out).rstrip("/")
        url = url if url.endswith(".npz") else f"{url}/{name}"
        write_npz_atomic(url, arrays)
        _log_written(url, arrays, t_start)
        return ExportReport(url)
    target = Path(out).expanduser() if out is not None else default_backgrounds_dir()
    path = target if target.suffix == ".npz" else target / name
    moved = None
    if _is_chorus_dir(path.parent):
        assembly = str(store.attrs["genome"].get("assembly"))
        if assembly != "hg38" and not force:
            raise ExportValidationError(
                f"{store.url} is a {assembly!r} background, and chorus loads only hg38 "
                f"backgrounds from {path.parent}; nothing was written. Write it elsewhere "
                f"(--out DIR), or pass --force to write it there anyway."
            )
        moved = _move_aside(path)
    write_npz_atomic(path, arrays)
    _log_written(str(path), arrays, t_start)
    return ExportReport(str(path), moved)


def _log_written(url: str, arrays: dict[str, np.ndarray], t_start: float) -> None:
    """The export's summary line: what was written, how much, in what time."""
    layers = [key.removesuffix("_cdfs") for key in arrays if key.endswith("_cdfs")]
    size = sum(a.nbytes for a in arrays.values())
    log.info(
        "export: wrote %s: %s tracks x %d layers (%s), %.1f MB of arrays, in %.1f s",
        url,
        f"{len(arrays['track_ids']):,}",
        len(layers),
        ", ".join(layers),
        size / 1e6,
        time.perf_counter() - t_start,
    )


def _is_chorus_dir(directory: Path) -> bool:
    try:
        return directory.resolve() == default_backgrounds_dir().expanduser().resolve()
    except OSError:
        return False


def _move_aside(path: Path) -> Path | None:
    """Keep an existing ``path`` (typically chorus's published NPZ) under a name carrying
    its own ``build_config.stamped_at``, so an export never silently replaces it."""
    if not path.is_file():
        return None
    stamp = ""
    try:
        with np.load(path, allow_pickle=False) as z:
            stamp = str(json.loads(str(z["build_config"][0])).get("stamped_at") or "")
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile):
        pass  # not an NPZ we can read: name it by its modification time
    if not stamp:
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        stamp = mtime.isoformat()
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in stamp).strip("-")
    stem = path.name.removesuffix(".npz")
    aside = path.with_name(f"{stem}.{safe}.npz")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{stem}.{safe}.{n}.npz")
    os.replace(path, aside)
    return aside
