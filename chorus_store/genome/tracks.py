"""Tracks, layers and the statistic each track is ranked by.

Everything here restates chorus's query-side rules (``chorus/analysis/scorers.py`` and
``background_sampling.py``, spec §4) so that a background is built with exactly the
statistic chorus computes when it ranks a prediction. A background built with any other
statistic is well formed and silently wrong, so these rules live in one place and
builders never re-derive them.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus_store.errors import InputFileError, RecipeError, TrackTableMismatchError
from chorus_store.store.schema import schema

__all__ = [
    "LayerConfig",
    "LAYER_CONFIGS",
    "HISTONE_PATTERNS",
    "SCALAR_RESOLUTION",
    "classify_chip_layer",
    "classify_track_layer",
    "canonical_layer",
    "centered_bin_span",
    "compute_effect",
    "TrackTable",
]

#: ``resolution_bp`` of an output head that returns one value per track (Sei, LegNet).
SCALAR_RESOLUTION = 0


@dataclass(frozen=True)
class LayerConfig:
    """How one regulatory layer is scored (chorus ``LAYER_CONFIGS``, spec §4.1)."""

    name: str
    window_bp: int | None  # None: the whole output (or the gene's exons, for RNA)
    aggregation: str  # "sum" or "mean" over the window's bins
    formula: str  # "log2fc", "logfc" or "diff"
    pseudocount: float
    signed: bool  # signed layers keep the sign of the effect; others rank |effect|

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_bp": self.window_bp,
            "aggregation": self.aggregation,
            "formula": self.formula,
            "pseudocount": self.pseudocount,
            "signed": self.signed,
        }


LAYER_CONFIGS: dict[str, LayerConfig] = {
    c.name: c
    for c in (
        LayerConfig("chromatin_accessibility", 501, "sum", "log2fc", 1.0, False),
        LayerConfig("tf_binding", 501, "sum", "log2fc", 1.0, False),
        LayerConfig("histone_marks", 2001, "sum", "log2fc", 1.0, False),
        LayerConfig("tss_activity", 501, "sum", "log2fc", 1.0, False),
        LayerConfig("gene_expression", None, "mean", "logfc", 0.001, True),
        LayerConfig("promoter_activity", None, "mean", "diff", 0.0, True),
        LayerConfig("splicing", 501, "sum", "log2fc", 1.0, False),
        LayerConfig("regulatory_classification", None, "mean", "diff", 0.0, True),
        LayerConfig("enhancer_activity", None, "mean", "log2fc", 1.0, False),
    )
}

#: The 15 histone-mark patterns chorus searches CHIP descriptions for (spec §3, §4.2).
HISTONE_PATTERNS: tuple[str, ...] = (
    "H2AFZ",
    "H2AZ",
    "H3K4me1",
    "H3K4me2",
    "H3K4me3",
    "H3K9ac",
    "H3K9me1",
    "H3K9me2",
    "H3K9me3",
    "H3K14ac",
    "H3K27ac",
    "H3K27me3",
    "H3K36me3",
    "H3K79me2",
    "H4K20me1",
)

_ASSAY_KEY_TO_LAYER = {
    "DNASE": "chromatin_accessibility",
    "ATAC": "chromatin_accessibility",
    "CHIP_TF": "tf_binding",
    "CHIP_HIST": "histone_marks",
    "CHIP_HISTONE": "histone_marks",
    "CAGE": "tss_activity",
    "PRO_CAP": "tss_activity",
    "PROCAP": "tss_activity",
    "RNA": "gene_expression",
    "RNA_SEQ": "gene_expression",
    "SPLICE": "splicing",
    "SPLICE_SITES": "splicing",
    "SPLICE_SITE_USAGE": "splicing",
    "LENTIMPRA": "promoter_activity",
}

#: The layer scored per gene over its exons (spec §4.5).
GENE_LAYER = "gene_expression"

#: Assays whose summary null skips cCRE positions (CAGE routing, spec §4.4).
TSS_ROUTED_ASSAYS = frozenset({"CAGE", "PRO_CAP", "PROCAP"})


def classify_chip_layer(assay_id: str, description: str = "") -> str:
    """Histone mark or TF for a CHIP track (chorus ``classify_chip_layer``).

    AlphaGenome's ``CHIP_HISTONE/`` / ``CHIP_TF/`` prefix wins when present (#122);
    otherwise any of :data:`HISTONE_PATTERNS` in ``"{assay_id} {description}"``
    (case-insensitive) means histone, and everything else is a TF.
    """
    if assay_id.startswith("CHIP_HISTONE/"):
        return "histone_marks"
    if assay_id.startswith("CHIP_TF/"):
        return "tf_binding"
    text = f"{assay_id} {description}".upper()
    if any(p.upper() in text for p in HISTONE_PATTERNS):
        return "histone_marks"
    return "tf_binding"


def _classify_sei_profile(assay_type: str) -> str:
    a = (assay_type or "").strip()
    if a.lower().replace("-seq", "").replace("_seq", "") in ("dnase", "atac"):
        return "chromatin_accessibility"
    return classify_chip_layer(a, "")


def classify_track_layer(assay_type: str, assay_id: str, description: str = "") -> str:
    """The layer chorus's query path assigns a track (spec §4.2, in chorus's order).

    Returns ``"other"`` for a track chorus cannot score; :class:`TrackTable` refuses
    such tracks, because chorus would silently return no percentile for them.
    """
    if assay_id.startswith("TA#"):
        return _classify_sei_profile(assay_type)
    if assay_type in ("DNASE", "ATAC"):
        return "chromatin_accessibility"
    if assay_type == "CHIP":
        return classify_chip_layer(assay_id, description)
    if assay_type in ("CAGE", "PRO_CAP"):
        return "tss_activity"
    if assay_type == "RNA":
        return "gene_expression"
    if assay_type == "LentiMPRA":
        return "promoter_activity"
    if assay_type in ("Enhancer_DNase", "Enhancer_H3K27ac", "Enhancer_H3K27ac_DNase"):
        return "enhancer_activity"
    if assay_type == "SPLICE_SITES":
        return "splicing"
    if assay_type == "sequence-class":
        return "regulatory_classification"
    return "other"


def canonical_layer(key: str) -> str:
    """Map a builder's assay key (``DNASE``, ``CHIP_HIST``, ...) to a layer name.

    Raises :class:`KeyError` for an unknown key rather than guessing, as chorus does.
    """
    key = str(key or "").strip()
    if key in LAYER_CONFIGS:
        return key
    if key.upper() in _ASSAY_KEY_TO_LAYER:
        return _ASSAY_KEY_TO_LAYER[key.upper()]
    raise KeyError(f"no canonical layer for assay key {key!r}")


def centered_bin_span(
    n_bins: int, window_bp: int | None, resolution_bp: int, centre_bin: int | None = None
) -> tuple[int, int]:
    """``(start, end)`` bins of a ``window_bp`` window centred in ``n_bins`` (spec §4.3).

    ``half = window_bp // (2 * resolution_bp)``; the span ``[centre - half, centre + half + 1)``
    is always odd and clipped to the array. ``window_bp=None`` means the whole array.

    >>> centered_bin_span(896, 501, 128)
    (447, 450)
    """
    if window_bp is None:
        return 0, n_bins
    centre = n_bins // 2 if centre_bin is None else centre_bin
    half = window_bp // (2 * resolution_bp)
    return max(0, centre - half), min(n_bins, centre + half + 1)


_FORMULAS = ("log2fc", "logfc", "diff")


def compute_effect(
    ref: np.ndarray | float, alt: np.ndarray | float, formula: str, pseudocount: float
) -> np.ndarray:
    """Signed effect of ``alt`` against ``ref`` (float64), chorus's three formulas.

    ``log2fc = log2((alt + pc) / (ref + pc))``, ``logfc`` the same in natural log,
    ``diff = alt - ref``. Unsigned layers rank ``abs()`` of this at reduce time.
    """
    ref = np.asarray(ref, dtype=np.float64)
    alt = np.asarray(alt, dtype=np.float64)
    if formula == "diff":
        diff: np.ndarray = alt - ref
        return diff
    if formula not in _FORMULAS:
        raise ValueError(f"unknown effect formula {formula!r}; expected one of {_FORMULAS}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (alt + pseudocount) / (ref + pseudocount)
        out: np.ndarray = np.log2(ratio) if formula == "log2fc" else np.log(ratio)
        return out


# --------------------------------------------------------------------------------------
# Track tables
# --------------------------------------------------------------------------------------

#: Columns of a resolved track table, in storage order, with their dtypes: the store
#: schema's ``tracks`` group (its docs say what each is), ``track`` named ``track_id``
TRACK_COLUMNS: dict[str, str] = {
    ("track_id" if name == "track" else name): spec.dtype
    for name, spec in schema().groups["tracks"].arrays.items()
}


@dataclass(frozen=True)
class TrackTable:
    """The tracks of one oracle, each resolved to its layer and statistic.

    Build one with :meth:`from_metadata` (raw oracle metadata, layers classified by
    chorus's rules) or :meth:`from_frame` (already resolved, e.g. read back from a store).
    """

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in TRACK_COLUMNS if c not in self.frame.columns]
        if missing:
            raise RecipeError(f"track table lacks columns {missing}")
        ids = self.frame["track_id"]
        dup = ids[ids.duplicated()].tolist()
        if dup:
            raise RecipeError(
                f"track ids must be unique (chorus's loader keeps only the last row of a "
                f"duplicated id); duplicated: {dup[:5]}"
            )
        other = self.frame.loc[~self.frame["layer"].isin(list(LAYER_CONFIGS)), "track_id"]
        if len(other):
            raise RecipeError(
                f"{len(other)} track(s) have no scoreable layer (chorus would return no "
                f"percentile for them), e.g. {other.tolist()[:5]}; give them an assay type "
                f"chorus classifies or an explicit 'layer' column"
            )

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_metadata(
        cls,
        meta: pd.DataFrame,
        *,
        heads: Mapping[str, int] | None = None,
        resolution_bp: int | None = None,
        tss_routing: bool = True,
    ) -> TrackTable:
        """Resolve raw metadata into a track table.

        ``meta`` needs ``track_id`` and ``assay_type``; optional columns are
        ``description`` (used by the histone patterns), ``layer`` (an explicit layer
        or builder assay key, mapped by :func:`canonical_layer`), ``head`` (default: the
        only head of ``heads``), ``resolution_bp`` (default: the head's), ``column``
        (default: the row's position among its head's rows) and ``n_strands`` (default 1).
        Window, aggregation, formula, pseudocount and sign come from the layer's
        :data:`LAYER_CONFIGS` entry, so a track is scored with the statistic chorus's query
        uses; a ``formula`` column (with ``pseudocount`` and ``signed``) overrides that
        for recipes that must reproduce a different builder convention.
        """
        if "track_id" not in meta or "assay_type" not in meta:
            raise RecipeError("track metadata needs 'track_id' and 'assay_type' columns")
        meta = meta.reset_index(drop=True).fillna("")
        heads = dict(heads or {})
        default_head = next(iter(heads)) if len(heads) == 1 else ""
        per_head_count: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for rec in meta.to_dict("records"):
            assay_type = str(rec["assay_type"])
            track_id = str(rec["track_id"])
            desc = str(rec.get("description", ""))
            explicit = str(rec.get("layer", ""))
            layer = (
                canonical_layer(explicit)
                if explicit
                else classify_track_layer(assay_type, track_id, desc)
            )
            cfg = LAYER_CONFIGS.get(layer)
            head = str(rec.get("head", "")) or default_head
            res = rec.get("resolution_bp", "")
            if res == "":
                res = heads.get(head, resolution_bp)
            if res is None:
                raise RecipeError(f"track {track_id!r}: no head/resolution_bp given")
            column = rec.get("column", "")
            if column == "":
                column = per_head_count.get(head, 0)
            per_head_count[head] = per_head_count.get(head, 0) + 1
            row = {
                "track_id": track_id,
                "assay_type": assay_type,
                "description": desc,
                "layer": layer,
                "head": head,
                "resolution_bp": int(res),
                "column": int(column),
                "n_strands": int(rec.get("n_strands", "") or 1),
                "window_bp": -1 if cfg is None or cfg.window_bp is None else cfg.window_bp,
                "aggregation": "" if cfg is None else cfg.aggregation,
                "formula": "" if cfg is None else cfg.formula,
                "pseudocount": math.nan if cfg is None else cfg.pseudocount,
                "signed": False if cfg is None else cfg.signed,
                "summary_skip_strata": (
                    "ccre" if tss_routing and assay_type.upper() in TSS_ROUTED_ASSAYS else ""
                ),
            }
            if str(rec.get("formula", "")):
                row["formula"] = str(rec["formula"])
                row["pseudocount"] = float(rec.get("pseudocount", "") or 0.0)
                row["signed"] = str(rec.get("signed", "")).lower() in ("1", "true", "yes")
            rows.append(row)
        return cls.from_frame(pd.DataFrame(rows, columns=list(TRACK_COLUMNS)))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TrackTable:
        frame = frame.loc[:, list(TRACK_COLUMNS)].reset_index(drop=True).copy()
        for col, dtype in TRACK_COLUMNS.items():
            frame[col] = frame[col].astype(object if dtype == "str" else dtype)
            if dtype == "str":
                frame[col] = frame[col].map(lambda v: "" if v is None else str(v))
        return cls(frame)

    @classmethod
    def read_tsv(cls, path: str | Path, **kwargs: Any) -> TrackTable:
        """Read raw track metadata from a TSV and resolve it (see :meth:`from_metadata`)."""
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"track table {path} does not exist")
        try:
            meta = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputFileError(f"track table {path} is not a readable TSV: {exc}") from exc
        return cls.from_metadata(meta, **kwargs)

    # -- views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def track_ids(self) -> list[str]:
        return list(self.frame["track_id"])

    @property
    def layers(self) -> list[str]:
        return list(self.frame["layer"])

    @property
    def signed(self) -> np.ndarray:
        signed: np.ndarray = self.frame["signed"].to_numpy(dtype=bool)
        return signed

    @property
    def gene_tracks(self) -> np.ndarray:
        """Indices of the tracks scored per gene (``gene_expression``, spec §4.5)."""
        return np.flatnonzero(self.frame["layer"].to_numpy() == GENE_LAYER)

    def window_bp(self, i: int) -> int | None:
        w = int(self.frame["window_bp"].iat[i])
        return None if w < 0 else w

    def subset(self, start: int, stop: int) -> TrackTable:
        return TrackTable.from_frame(self.frame.iloc[start:stop])

    def sha256(self, start: int = 0, stop: int | None = None) -> str:
        """Content hash of rows ``start:stop`` (every column, canonical TSV text)."""
        buf = io.StringIO()
        self.frame.iloc[start:stop].to_csv(buf, sep="\t", index=False, lineterminator="\n")
        return hashlib.sha256(buf.getvalue().encode()).hexdigest()

    def is_prefix_of(self, other: TrackTable) -> bool:
        """True if ``other`` is this table with rows appended (an add-tracks change)."""
        n = len(self)
        return len(other) >= n and other.sha256(0, n) == self.sha256()

    def first_difference(self, other: TrackTable) -> str:
        """Where ``other`` first differs from this table: a row and column, or the length."""
        old, new = self.frame, other.frame
        for i in range(min(len(old), len(new))):
            for c in old.columns:
                if str(old[c].iat[i]) != str(new[c].iat[i]):
                    return f"row {i} ({old['track_id'].iat[i]}), column {c!r}"
        return f"length {len(old)} vs {len(new)}"

    def require_same(self, given: TrackTable, *, store: str) -> None:
        """Refuse ``given`` (a recipe's table) unless it is this one (``store``'s), with a
        :class:`TrackTableMismatchError` naming where they differ; a table that extends
        this one is pointed at ``add-tracks``."""
        if given.sha256() == self.sha256():
            return
        if self.is_prefix_of(given):
            raise TrackTableMismatchError(
                f"the recipe's track table has {len(given) - len(self)} track(s) more than "
                f"{store}; add them with `chorus-store add-tracks {store}` (only the "
                f"new tracks are computed), then build"
            )
        raise TrackTableMismatchError(
            f"the recipe's track table differs from {store}'s at "
            f"{self.first_difference(given)}; a store holds one track table. Build a new "
            f"store for the new table."
        )

    def require_extended_by(self, given: TrackTable, *, store: str) -> None:
        """Refuse ``given`` unless it is this table (``store``'s) with rows appended."""
        if not self.is_prefix_of(given):
            raise TrackTableMismatchError(
                f"the recipe's track table does not extend {store}'s (it differs at "
                f"{self.first_difference(given)}); only appending tracks is supported"
            )
