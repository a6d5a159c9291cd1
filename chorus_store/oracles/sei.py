"""Sei: 21,907 chromatin profiles and 40 sequence classes from a 4,096 bp window; effects
are computed from histone-equalised profiles with the classes re-projected, as chorus
does (docs/oracles.md, "sei")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chorus_store.errors import RecipeError
from chorus_store.genome.tracks import TrackTable
from chorus_store.oracles.base import Columns, Oracle, OutputHead, sha256_paths
from chorus_store.oracles.common import read_config, read_state_dict, select_device, torch_numerics
from chorus_store.oracles.models.sei import equalize_histones, project_classes

if TYPE_CHECKING:
    from torch import nn

    from chorus_store.recipes import Recipe

__all__ = ["SeiOracle", "load", "find_weights_dir", "WEIGHT_FILES"]

PROFILES, CLASSES = "profiles", "classes"
#: the files of the Sei download the adapter reads, and what each is
WEIGHT_FILES = {
    "sei.pth": "the network's state dict",
    "projvec_targets.npy": "the sequence-class projection",
    "histone_inds.npy": "the histone profiles equalised in variant effects",
    "target.names": "the profile names, in output order",
}
DOWNLOAD_HINT = (
    "download https://zenodo.org/record/4906997/files/sei_model.tar.gz (3.3 GB; chorus "
    "mirrors it as lucapinello/chorus-sei), extract it and pass --weights <dir>/model"
)
#: what the effect step does, recorded in the fingerprint: it changes stored effects
EFFECT_CORRECTION = "histone-equalised ref/alt profiles, classes re-projected (sc_hnorm v1)"
#: model keyword arguments a recipe's [oracle] config may set (tests build tiny instances)
CONFIG_KEYS = ("channels", "spline_df")


def find_weights_dir(path: str | Path) -> Path:
    """The directory holding ``sei.pth``: ``path`` itself or its ``model/`` subfolder.

    Raises
    ------
    RecipeError
        The directory does not exist or lacks one of :data:`WEIGHT_FILES` (all named).
    """
    p = Path(path).expanduser()
    if p.is_file() and p.name == "sei.pth":
        p = p.parent
    if not p.is_dir():
        raise RecipeError(f"Sei weights directory {p} does not exist; {DOWNLOAD_HINT}")
    if not (p / "sei.pth").is_file() and (p / "model" / "sei.pth").is_file():
        p = p / "model"
    missing = [
        f"{name} ({what})" for name, what in WEIGHT_FILES.items() if not (p / name).is_file()
    ]
    if missing:
        raise RecipeError(
            f"Sei weights directory {p} lacks {', '.join(missing)}; it should hold the "
            f"model/ folder of the Sei download: {DOWNLOAD_HINT}"
        )
    return p


class SeiOracle(Oracle):
    """A loaded Sei: the network, the class projection and the histone indices.

    Parameters
    ----------
    network
        The :class:`~chorus_store.oracles.models.sei.Sei` module (weights loaded).
    projection
        ``(>= n_classes, n_profiles)`` rows of ``projvec_targets.npy``.
    histone_inds
        Profile columns equalised in variant effects.
    tracks
        The recipe's track table: which head and column each track index reads, for
        :meth:`effect_inputs`.
    strand_average
        Predict the mean of the forward and reverse-complement strands (selene's
        ``NonStrandSpecific``, what sei-framework and chorus's query do), or the forward
        strand only (chorus's ``build_backgrounds_sei.py``).
    identity
        What identifies the weights (file hashes), for :meth:`describe`.
    """

    joint_tracks = True  # histone equalisation reads every profile of a variant

    def __init__(
        self,
        network: nn.Module,
        projection: np.ndarray,
        histone_inds: np.ndarray,
        *,
        name: str,
        heads: tuple[OutputHead, ...],
        batch_size: int,
        tracks: TrackTable,
        strand_average: bool = True,
        device: str = "auto",
        identity: dict[str, Any] | None = None,
    ) -> None:

        from chorus_store.oracles.models.sei import NonStrandSpecific, Sei

        super().__init__()
        if not isinstance(network, Sei):
            raise TypeError(f"network must be a sei_model.Sei, not {type(network).__name__}")
        self.name = name
        self.heads = tuple(heads)
        self.batch_size = int(batch_size)
        self.model_config: dict[str, Any] = dict(network.config)
        self.input_length = int(self.model_config["sequence_length"])
        self.n_profiles = int(self.model_config["n_genomic_features"])
        self.n_classes = self.head(CLASSES).n_columns
        self.projection = np.asarray(projection)
        self._norm = np.linalg.norm(self.projection, axis=1)
        self.histone_inds = np.asarray(histone_inds, dtype=np.int64)
        self.strand_average = bool(strand_average)
        self.identity = dict(identity or {})
        frame = tracks.frame
        self._track_head = frame["head"].to_numpy(dtype=object)
        self._track_column = frame["column"].to_numpy(dtype=np.int64)
        self.device = select_device(device)
        network = network.to(self.device).eval()
        self.network: nn.Module = NonStrandSpecific(network) if self.strand_average else network

    # ------------------------------------------------------------------ identity
    def describe(self) -> dict[str, Any]:

        return {
            "adapter": "sei",
            "architecture": "chorus_store.oracles.models.sei:Sei",
            "config": self.model_config,
            "strand_average": "mean" if self.strand_average else "forward",
            "n_classes": self.n_classes,
            "effect_correction": EFFECT_CORRECTION,
            **self.identity,
            "numpy": np.__version__,
            **torch_numerics(self.device),
        }

    # ------------------------------------------------------------------ prediction
    def _predict_batch(self, onehot: np.ndarray, columns: Columns) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(onehot).transpose(1, 2).contiguous().to(self.device)  # (B, 4, L)
        with torch.inference_mode():
            profiles = self.network(x).float().cpu().numpy()
        out = {PROFILES: profiles}
        if CLASSES in columns:
            out[CLASSES] = self.project(profiles)
        return out

    def project(self, profiles: np.ndarray) -> np.ndarray:
        """Sequence-class scores ``(n, n_classes)`` of profile vectors ``(n, n_profiles)``."""
        return project_classes(profiles, self.projection, self.n_classes, self._norm)

    # ------------------------------------------------------------------ effects
    def effect_inputs(
        self, ref: np.ndarray, alt: np.ndarray, track_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Histone-equalise each variant's ref and alt profiles; re-project the classes.

        ``ref``/``alt`` are ``(variants, strands, tracks)`` predictions of the tracks
        ``track_idx``. Every selected profile is replaced by its equalised value and
        every selected class by the projection of the equalised profile vector, one
        variant at a time, with chorus's arithmetic (float32 profiles, the projection's
        dtype for classes). Rows not predicted (NaN) stay NaN.

        Raises
        ------
        RecipeError
            The selection has class tracks but not all profiles (a class score projects
            the whole equalised vector), or histone profiles but not all of
            ``histone_inds`` (their total is the correction).
        """
        idx = np.asarray(track_idx, dtype=np.int64)
        heads, cols = self._track_head[idx], self._track_column[idx]
        prof = np.flatnonzero(heads == PROFILES)
        cls = np.flatnonzero(heads == CLASSES)
        prof_cols = cols[prof]
        if not len(cls) and not np.isin(prof_cols, self.histone_inds).any():
            return ref, alt  # nothing the correction changes
        needed = np.arange(self.n_profiles) if len(cls) else self.histone_inds
        missing = np.setdiff1d(needed, prof_cols)
        if len(missing):
            why = (
                "a class score projects the whole equalised profile vector"
                if len(cls)
                else "the histone total of every variant is the correction"
            )
            raise RecipeError(
                f"Sei's variant effects are computed from histone-equalised profiles and "
                f"{why}, but {len(missing)} of the {len(needed)} profiles needed are not "
                f"among the tracks built together (first missing column {int(missing[0])}). "
                f"Give the recipe's [tracks] target_names (Sei's target.names) so the "
                f"track table holds all {self.n_profiles} profiles, and build them together"
            )
        out_ref, out_alt = ref.copy(), alt.copy()
        n = ref.shape[0]
        for s in range(ref.shape[1]):
            full_ref = np.full((n, self.n_profiles), np.nan, dtype=np.float32)
            full_alt = np.full((n, self.n_profiles), np.nan, dtype=np.float32)
            # the statistics are float64 copies of float32 predictions: the cast is exact
            full_ref[:, prof_cols] = ref[:, s, prof]
            full_alt[:, prof_cols] = alt[:, s, prof]
            done = np.isfinite(full_ref[:, needed]).all(axis=1) & np.isfinite(
                full_alt[:, needed]
            ).all(axis=1)
            for i in np.flatnonzero(done):
                eq_ref, eq_alt = equalize_histones(
                    [full_ref[i : i + 1], full_alt[i : i + 1]], self.histone_inds
                )
                out_ref[i, s, prof] = eq_ref[0, prof_cols]
                out_alt[i, s, prof] = eq_alt[0, prof_cols]
                if len(cls):
                    out_ref[i, s, cls] = self.project(eq_ref)[0, cols[cls]]
                    out_alt[i, s, cls] = self.project(eq_alt)[0, cols[cls]]
        return out_ref, out_alt

    def close(self) -> None:
        del self.network


# ---------------------------------------------------------------------- loading
def _model_config(recipe: Recipe, n_profiles: int) -> dict[str, Any]:
    raw = read_config(recipe.oracle.get("config") or {}, what=f"recipe {recipe.name!r}: Sei config")
    unknown = sorted(set(raw) - set(CONFIG_KEYS) - {"sequence_length", "n_genomic_features"})
    if unknown:
        raise RecipeError(
            f"recipe {recipe.name!r}: unknown Sei config keys {unknown}; known: {list(CONFIG_KEYS)}"
        )
    config = {k: raw[k] for k in CONFIG_KEYS if k in raw}
    config["sequence_length"] = recipe.input_length
    config["n_genomic_features"] = n_profiles
    for key in ("sequence_length", "n_genomic_features"):
        if key in raw and int(raw[key]) != config[key]:
            raise RecipeError(
                f"recipe {recipe.name!r}: config {key} = {raw[key]} contradicts the recipe's "
                f"input_length / profiles head ({config[key]})"
            )
    return config


def _check_heads(recipe: Recipe) -> tuple[int, int]:
    names = {h.name: h for h in recipe.heads}
    if set(names) != {PROFILES, CLASSES} or any(not h.is_scalar for h in recipe.heads):
        raise RecipeError(
            f"recipe {recipe.name!r}: Sei has two scalar heads (resolution_bp = 0) named "
            f"{PROFILES!r} and {CLASSES!r}; the recipe declares {sorted(names)}"
        )
    n_profiles, n_classes = names[PROFILES].n_columns, names[CLASSES].n_columns
    if n_profiles < 1 or n_classes < 1:
        raise RecipeError(
            f"recipe {recipe.name!r}: give the Sei heads' n_columns (profiles 21907, "
            f"classes 40); the track table may list only some of them"
        )
    return n_profiles, n_classes


def _read_state_dict(path: Path) -> dict[str, Any]:
    state = read_state_dict(path, what="Sei weights")  # a selene checkpoint is unwrapped
    # the released file is DataParallel(NonStrandSpecific(Sei)): keys "module.model.<name>"
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _read_array(path: Path, what: str) -> np.ndarray:
    try:
        arr: np.ndarray = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{path} ({what}) is not a readable .npy array: {exc}") from exc
    return arr


def _check_profiles(tracks: TrackTable, names_path: Path, n_profiles: int) -> None:
    """The track table's profiles must be the model's: same line at the same column."""
    lines = names_path.read_text().splitlines()
    if len(lines) != n_profiles:
        raise RecipeError(
            f"{names_path} lists {len(lines)} profiles but the recipe's profiles head has "
            f"{n_profiles} columns"
        )
    frame = tracks.frame[tracks.frame["head"] == PROFILES]
    for tid, desc, col in zip(
        frame["track_id"], frame["description"], frame["column"], strict=True
    ):
        if not 0 <= col < n_profiles or str(desc).strip() != lines[col].strip():
            raise RecipeError(
                f"track {tid!r} reads profile column {col}, which the model's {names_path} "
                f"names {lines[col].strip() if 0 <= col < n_profiles else 'nothing'!r}; the "
                f"recipe's [tracks] target_names is not this model's target.names"
            )


def load(recipe: Recipe, *, weights: str | None = None, device: str = "auto") -> SeiOracle:
    """Load Sei from the recipe's ``weights`` (or ``weights``, i.e. ``--weights``).

    Raises
    ------
    RecipeError
        No weights given, files missing, or files that do not fit the recipe (heads,
        config, state dict shapes, projection shape, histone indices, profile names).
    """
    from chorus_store.oracles.models.sei import Sei

    source = weights or recipe.oracle.get("weights")
    if not source:
        raise RecipeError(f"recipe {recipe.name!r} names no Sei weights: {DOWNLOAD_HINT}")
    folder = find_weights_dir(str(source))
    n_profiles, n_classes = _check_heads(recipe)
    config = _model_config(recipe, n_profiles)
    try:
        network = Sei(**config)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe {recipe.name!r}: Sei config {config} is invalid: {exc}") from exc
    try:
        network.load_state_dict(_read_state_dict(folder / "sei.pth"))
    except RuntimeError as exc:
        raise RecipeError(
            f"{folder / 'sei.pth'} does not fit Sei with {config}: {str(exc)[:400]}"
        ) from exc
    projection = _read_array(folder / "projvec_targets.npy", "projection")
    if projection.ndim != 2 or projection.shape[1] != n_profiles or projection.shape[0] < n_classes:
        raise RecipeError(
            f"{folder / 'projvec_targets.npy'} has shape {projection.shape}; Sei needs "
            f"(>= {n_classes} classes, {n_profiles} profiles)"
        )
    histone_inds = _read_array(folder / "histone_inds.npy", "histone indices")
    if histone_inds.dtype == bool and histone_inds.shape == (n_profiles,):
        # a mask selects the same columns in the same (increasing) order as its indices
        histone_inds = np.flatnonzero(histone_inds)
    if (
        histone_inds.ndim != 1
        or not len(histone_inds)
        or not np.issubdtype(histone_inds.dtype, np.integer)
        or histone_inds.min() < 0
        or histone_inds.max() >= n_profiles
    ):
        raise RecipeError(
            f"{folder / 'histone_inds.npy'} must be a non-empty 1-D array of profile "
            f"indices in [0, {n_profiles}) (or a boolean mask of the profiles); got "
            f"{histone_inds.dtype} {histone_inds.shape}"
        )
    tracks = recipe.track_table()
    _check_profiles(tracks, folder / "target.names", n_profiles)
    classes = tracks.frame.loc[tracks.frame["head"] == CLASSES, "column"]
    if len(classes) and not 0 <= classes.min() <= classes.max() < n_classes:
        raise RecipeError(
            f"recipe {recipe.name!r}: the track table's classes read columns up to "
            f"{classes.max()}, but the classes head has {n_classes}"
        )
    strand_average = recipe.oracle.get("strand_average", True)
    if not isinstance(strand_average, bool):
        raise RecipeError(f"recipe {recipe.name!r}: strand_average must be true or false")
    files = [folder / name for name in WEIGHT_FILES]
    return SeiOracle(
        network,
        projection,
        histone_inds,
        name=recipe.name,
        heads=recipe.heads,
        batch_size=recipe.batch_size,
        tracks=tracks,
        strand_average=strand_average,
        device=device,
        identity={"weights_sha256": sha256_paths(*files), "weight_files": sorted(WEIGHT_FILES)},
    )
