"""Track tables of the seed oracles, from the metadata files each model ships (spec §3).

Each reader returns the oracle's :class:`~chorus_store.genome.tracks.TrackTable` with track ids
exactly as chorus emits them, layers by chorus's classifier, and the output head and
column every track is read from. A recipe names its reader with ``[tracks] format``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from chorus_store.errors import InputFileError, RecipeError
from chorus_store.genome.tracks import TrackTable

__all__ = [
    "READERS",
    "CHROMBPNET_MODELS",
    "LEGNET_CELL_TYPES",
    "enformer_tracks",
    "borzoi_tracks",
    "alphagenome_tracks",
    "chrombpnet_tracks",
    "sei_tracks",
    "legnet_tracks",
]

#: chorus's 9 human ChromBPNet accessibility models: (assay, cell type, ENCODE accession)
CHROMBPNET_MODELS: tuple[tuple[str, str, str], ...] = (
    ("ATAC", "K562", "ENCFF984RAF"), ("ATAC", "HepG2", "ENCFF137WCM"),
    ("ATAC", "GM12878", "ENCFF142IOR"), ("ATAC", "IMR-90", "ENCFF113GSV"),
    ("DNASE", "HepG2", "ENCFF615AKY"), ("DNASE", "IMR-90", "ENCFF515HBV"),
    ("DNASE", "GM12878", "ENCFF673TIN"), ("DNASE", "K562", "ENCFF574YLK"),
    ("DNASE", "H1", "ENCFF138PJQ"),
)  # fmt: skip

#: LegNet's MPRA cell types, one checkpoint each (chorus LEGNET_AVAILABLE_CELLTYPES)
LEGNET_CELL_TYPES = ("K562", "HepG2", "WTC11")


def _read(path: str | Path, what: str, **kwargs: object) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{what} {path} does not exist")
    try:
        frame: pd.DataFrame = pd.read_csv(path, sep="\t", **kwargs)
        return frame
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(f"{what} {path} is not a readable TSV: {exc}") from exc


def _assay(description: pd.Series) -> pd.Series:
    return description.str.split(":", n=1).str[0]


def enformer_tracks(path: str | Path, head: str = "human") -> TrackTable:
    """Enformer's 5,313 human tracks: id = ``identifier``, assay = description prefix."""
    meta = _read(path, "Enformer targets file")
    frame = pd.DataFrame({
        "track_id": meta["identifier"], "assay_type": _assay(meta["description"]),
        "description": meta["description"], "head": head, "resolution_bp": 128,
        "column": meta["index"],
    })  # fmt: skip
    return TrackTable.from_metadata(frame)


def borzoi_tracks(path: str | Path, head: str = "human") -> TrackTable:
    """Borzoi's 7,611 human tracks: stranded identifiers (``CNhs10608+``), column = row."""
    meta = _read(path, "Borzoi targets file", index_col=0)
    frame = pd.DataFrame({
        "track_id": meta["identifier"], "assay_type": _assay(meta["description"]),
        "description": meta["description"], "head": head, "resolution_bp": 32,
        "column": range(len(meta)),
    })  # fmt: skip
    return TrackTable.from_metadata(frame)


def alphagenome_tracks(path: str | Path) -> TrackTable:
    """AlphaGenome's 5,168 real tracks; the 563 ``Padding`` rows are skipped but keep
    their columns, so every track reads ``local_index`` of its OutputType's head."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"AlphaGenome track metadata {path} does not exist")
    meta = pd.DataFrame(json.loads(path.read_text()))
    real = meta[meta["name"] != "Padding"]
    frame = pd.DataFrame({
        "track_id": real["identifier"], "assay_type": real["chorus_type"],
        "description": real["description"], "head": real["output_type"],
        "resolution_bp": real["resolution"], "column": real["local_index"],
    })  # fmt: skip
    return TrackTable.from_metadata(frame)


def alphagenome_head_sizes(path: str | Path) -> dict[str, tuple[int, int]]:
    """Per OutputType: (resolution_bp, columns including padding)."""
    meta = pd.DataFrame(json.loads(Path(path).read_text()))
    grouped = meta.groupby("output_type", sort=False)
    return {str(k): (int(g["resolution"].iat[0]), len(g)) for k, g in grouped}


def chrombpnet_tracks(path: str | Path, head: str = "profile") -> TrackTable:
    """chorus's 753 ChromBPNet tracks: 9 accessibility models, then the BPNet CHIP models
    of the JASPAR table, one per (TF, cell line), first listed wins; two strands each."""
    meta = _read(path, "ChromBPNet JASPAR metadata")
    chip = meta.drop_duplicates(subset=["TF_NAME", "CELL_LINE"], keep="first")
    rows = [(f"{a}:{c}", a, f"{a}:{c}", 1) for a, c, _ in CHROMBPNET_MODELS]
    rows += [
        (f"CHIP:{c}:{t}", "CHIP", f"CHIP:{c}:{t}", 2)
        for c, t in zip(chip["CELL_LINE"], chip["TF_NAME"], strict=True)
    ]
    frame = pd.DataFrame(rows, columns=["track_id", "assay_type", "description", "n_strands"])
    frame["head"], frame["resolution_bp"] = head, 1
    frame["column"] = range(len(frame))
    return TrackTable.from_metadata(frame)


def chrombpnet_models(path: str | Path) -> list[dict[str, str]]:
    """The model behind each ChromBPNet track, in track order (ids, assay, accession/URL)."""
    meta = _read(path, "ChromBPNet JASPAR metadata")
    chip = meta.drop_duplicates(subset=["TF_NAME", "CELL_LINE"], keep="first")
    models = [{"track_id": f"{a}:{c}", "kind": "chrombpnet", "accession": e}
              for a, c, e in CHROMBPNET_MODELS]  # fmt: skip
    models += [
        {"track_id": f"CHIP:{c}:{t}", "kind": "bpnet", "accession": f"{b}.{v}", "url": u}
        for c, t, b, v, u in zip(chip["CELL_LINE"], chip["TF_NAME"], chip["BASE_ID"],
                                 chip["VERSION"], chip["MODEL_URL"], strict=True)
    ]  # fmt: skip
    return models


def sei_tracks(
    target_names: str | Path | None = None,
    seqclass_info: str | Path = "seqclass_info.txt",
    heads: tuple[str, str] = ("profiles", "classes"),
    effects: str = "query",
) -> TrackTable:
    """Sei's 21,907 chromatin profiles (``TA#…``) then its 40 sequence classes (``CA#…``).

    ``target_names`` is Sei's ``target.names`` (``cell | assay | id [| replicate]`` per
    line), shipped with the Sei model download; without it only the 40 classes are built.

    ``effects="query"`` (default) scores each profile by its layer's statistic, what
    chorus's query computes (e.g. unsigned log2fc for histone profiles);
    ``effects="builder"`` reproduces chorus's Sei builder, which stores a signed
    ``alt - ref`` for every row (spec §3, and §10 item 2 on the mismatch).
    """
    if effects not in ("query", "builder"):
        raise RecipeError(f"Sei effects must be 'query' or 'builder', not {effects!r}")
    rows: list[tuple[str, str, str, str, int]] = []
    if target_names is not None:
        path = Path(target_names)
        if not path.is_file():
            raise InputFileError(
                f"Sei target.names {path} does not exist (it ships with the model)"
            )
        for i, line in enumerate(path.read_text().splitlines()):
            parts = line.strip().split(" | ")
            if len(parts) not in (3, 4):
                raise InputFileError(f"{path}:{i + 1}: expected 'cell | assay | id [| rep]'")
            cell, assay, sei_id = parts[:3]
            suffix = f"@{int(parts[3])}" if len(parts) == 4 and int(parts[3]) != 0 else ""
            rows.append((f"TA#{cell}@{assay}@{sei_id}{suffix}", assay, line, heads[0], i))
    classes = _read(seqclass_info, "Sei seqclass_info")
    for i, rec in enumerate(classes.itertuples(index=False)):
        label, name, rank, group = rec[0], rec[1], int(rec[2]), rec[3]
        rows.append((f"CA#{label}@{name}@{group}@{rank}", "sequence-class", str(name), heads[1], i))
    frame = pd.DataFrame(rows, columns=["track_id", "assay_type", "description", "head", "column"])
    frame["resolution_bp"] = 0
    if effects == "builder":
        frame["formula"], frame["pseudocount"], frame["signed"] = "diff", 0.0, "true"
    return TrackTable.from_metadata(frame)


def legnet_tracks(head: str = "activity") -> TrackTable:
    """LegNet's three MPRA cell types; track ids are the bare cell types (chorus #126)."""
    frame = pd.DataFrame({
        "track_id": list(LEGNET_CELL_TYPES), "assay_type": "LentiMPRA",
        "description": [f"LentiMPRA:{c}" for c in LEGNET_CELL_TYPES], "head": head,
        "resolution_bp": 0, "column": range(len(LEGNET_CELL_TYPES)),
    })  # fmt: skip
    return TrackTable.from_metadata(frame)


#: ``[tracks] format`` → reader(recipe's [tracks] table, with its other keys as arguments)
READERS: dict[str, Callable[..., TrackTable]] = {
    "enformer": enformer_tracks,
    "borzoi": borzoi_tracks,
    "alphagenome": alphagenome_tracks,
    "chrombpnet": chrombpnet_tracks,
    "sei": sei_tracks,
    "legnet": legnet_tracks,
}


def read_tracks(fmt: str, **kwargs: object) -> TrackTable:
    if fmt not in READERS:
        raise RecipeError(f"unknown track table format {fmt!r}; known: {sorted(READERS)}")
    return READERS[fmt](**kwargs)
