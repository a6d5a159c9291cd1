"""Build recipes: one TOML file per oracle under ``builders/<name>/recipe.toml``.

A recipe is data, not code: which adapter loads the model and from where, the input
length and output heads, the track table, the plan (reference set or generated, with its
sampling parameters) and the store layout. A new oracle is one new recipe.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chorus_store.errors import RecipeError
from chorus_store.genome.track_tables import read_tracks
from chorus_store.genome.tracks import TrackTable
from chorus_store.oracles import registry
from chorus_store.oracles.base import Oracle, OutputHead
from chorus_store.plan.sampling import SamplingConfig
from chorus_store.resources import data_dir
from chorus_store.store.layout import Layout

__all__ = ["Recipe", "load_recipe", "list_recipes"]


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``builders/``."""
    return sorted(p.parent.name for p in data_dir("builders").glob("*/recipe.toml"))


def _resolve(base: Path, value: str) -> str:
    """A recipe path: ``~`` and ``$VARS`` expanded, relative to the recipe's folder.

    A path naming an unset variable is kept as written; :func:`require_path` refuses it
    when (and only if) it is used, so a recipe can be listed and planned without, e.g.,
    the weights folder of an oracle it does not load.
    """
    expanded = os.path.expandvars(os.path.expanduser(value))
    if "$" in expanded:
        return value
    p = Path(expanded)
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_oracle_numbers(name: str, oracle: dict[str, Any], heads: list[Any]) -> None:
    """The [oracle] numbers a build relies on, each an integer (or fraction) in range
    (``batch_size = 0`` used to pass the plan and crash the build)."""
    problems: list[str] = []

    def check(key: str, value: Any, lo: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            problems.append(f"{key} = {value!r} (allowed: an integer >= {lo})")

    check("[oracle] input_length", oracle["input_length"], 1)
    check("[oracle] batch_size", oracle.get("batch_size", 8), 1)
    frac = oracle.get("max_n_fraction", 0.5)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
        problems.append(f"[oracle] max_n_fraction = {frac!r} (allowed: a fraction in [0, 1])")
    for i, head in enumerate(heads):
        if not isinstance(head, dict):
            problems.append(f"[[oracle.heads]] #{i + 1} is not a table")
            continue
        where = f"[[oracle.heads]] {head.get('name', f'#{i + 1}')!r}"
        check(f"{where} resolution_bp", head.get("resolution_bp"), 0)
        for key, lo in (("n_bins", 1), ("n_columns", 0), ("n_strands", 1)):
            if key in head:
                check(f"{where} {key}", head[key], lo)
    if problems:
        raise RecipeError(f"recipe {name!r}: " + "; ".join(problems))


def _relocate_shipped(value: Any) -> Any:
    """A stored path into another install's ``builders/`` (the planning machine's) that
    does not exist here, mapped to the same file of this install's ``builders/``; any
    other value as it is. A cluster worker installed elsewhere so finds the shipped
    files (e.g. ChromBPNet's model registry) a stored recipe names."""
    if not isinstance(value, str) or "/builders/" not in value or Path(value).exists():
        return value
    candidate = data_dir("builders") / value.rsplit("/builders/", 1)[1]
    return str(candidate) if candidate.exists() else value


def require_path(value: str, what: str) -> str:
    """``value`` if it names no unset environment variable, else a RecipeError saying which."""
    if "$" in value:
        raise RecipeError(
            f"{what} {value!r} uses an environment variable that is not set; export it "
            f"(e.g. the folder of the model's download) or edit the recipe"
        )
    return value


#: [tracks] keys that are settings, not paths
_TRACK_SETTINGS = ("format", "effects")


def _oracle_section(name: str, oracle: dict[str, Any], base: Path) -> list[Any]:
    """Check ``[oracle]``'s keys and resolve its paths against ``base`` (in place); returns
    its ``[[oracle.heads]]``, taken out of it (their numbers: ``_check_oracle_numbers``)."""
    for key in ("adapter", "input_length"):
        if key not in oracle:
            raise RecipeError(f"recipe {name!r}: [oracle] needs '{key}'")
    for key in ("config", "weights", "registry"):
        if isinstance(oracle.get(key), str):
            oracle[key] = _resolve(base, oracle[key])
    heads_raw = oracle.pop("heads", None)
    if not heads_raw:
        raise RecipeError(f"recipe {name!r}: declare the model's outputs as [[oracle.heads]]")
    return list(heads_raw)


def _tracks_section(name: str, tracks: dict[str, Any], base: Path) -> None:
    """Check ``[tracks]`` and resolve its file paths against ``base`` (in place)."""
    if "table" not in tracks and "format" not in tracks:
        raise RecipeError(f"recipe {name!r}: [tracks] needs 'table' (a TSV) or 'format'")
    for key, value in list(tracks.items()):
        if key not in _TRACK_SETTINGS and isinstance(value, str):
            tracks[key] = _resolve(base, value)


def _plan_section(plan: dict[str, Any], base: Path) -> dict[str, Any]:
    """``[plan]``, its sampling numbers checked at load, its reference set resolved."""
    if isinstance(plan.get("sampling"), dict):
        SamplingConfig.from_dict(dict(plan["sampling"]))
    if isinstance(plan.get("reference_set"), str):
        plan["reference_set"] = _resolve(base, plan["reference_set"])
    return plan


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe. Paths in it are absolute (resolved against the recipe's folder)."""

    name: str
    oracle: dict[str, Any]
    heads: tuple[OutputHead, ...]
    tracks: dict[str, Any]
    plan: dict[str, Any]
    layout: Layout
    source: str = ""
    description: str = ""
    #: the track table as data (a store's ``tracks`` group): when set, :meth:`track_table`
    #: returns it instead of reading the ``[tracks]`` files, which a stored recipe names
    #: by the planning machine's absolute paths
    table: TrackTable | None = field(default=None, compare=False, repr=False)

    # ---------------------------------------------------------------- parsing
    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        base: Path,
        source: str = "",
        table: TrackTable | None = None,
    ) -> Recipe:
        try:
            name = str(data["name"])
            oracle = dict(data["oracle"])
            tracks = dict(data["tracks"])
        except KeyError as exc:
            raise RecipeError(f"recipe {source or name!r} lacks the {exc} section") from exc
        heads_raw = _oracle_section(name, oracle, base)
        _tracks_section(name, tracks, base)
        _check_oracle_numbers(name, oracle, heads_raw)
        plan = _plan_section(dict(data.get("plan", {})), base)
        recipe = cls(
            name=name,
            oracle=oracle,
            heads=tuple(OutputHead.from_dict(h) for h in heads_raw),
            tracks=tracks,
            plan=plan,
            layout=Layout.from_dict(data.get("layout", {}), source=f"recipe {name!r}"),
            source=source,
            description=str(data.get("description", "")),
            table=table,
        )
        return recipe.with_columns()

    def with_columns(self) -> Recipe:
        """Fill each head's n_columns from the track table when the recipe leaves it out."""
        if all(h.n_columns for h in self.heads):
            return self
        frame = self.track_table().frame
        heads = []
        for h in self.heads:
            cols = frame.loc[frame["head"] == h.name, "column"]
            n = h.n_columns or (int(cols.max()) + 1 if len(cols) else 0)
            heads.append(dataclasses.replace(h, n_columns=n))
        return dataclasses.replace(self, heads=tuple(heads))

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, as recorded in a store's attributes."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "oracle": {**self.oracle, "heads": [h.as_dict() for h in self.heads]},
            "tracks": self.tracks,
            "plan": self.plan,
            "layout": self.layout.as_dict(),
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any], *, tracks: TrackTable | None = None) -> Recipe:
        """The recipe a store records; ``tracks`` (the store's track table) is what its
        :meth:`track_table` and the adapters then use, so no track-table file is read."""
        data = {
            **data,
            "oracle": {k: _relocate_shipped(v) for k, v in data["oracle"].items()},
            "tracks": {k: _relocate_shipped(v) for k, v in data["tracks"].items()},
        }
        return cls.from_dict(data, base=Path("/"), source=str(data.get("source", "")), table=tracks)

    def with_track_table(self, tracks: TrackTable) -> Recipe:
        """This recipe with its track table given as data (see :attr:`table`)."""
        return dataclasses.replace(self, table=tracks)

    def select_tracks(
        self, track_ids: list[str] | None = None, layers: list[str] | None = None
    ) -> Recipe:
        """This recipe over a subset of its tracks: those in ``track_ids`` and/or whose
        layer is in ``layers`` (both given: both must hold). Each kept track keeps its
        model output column, so no recipe or column number is copied by hand; the store
        planned from the result holds only these tracks.

        Raises
        ------
        RecipeError
            An id or layer the track table lacks (the message lists some that exist),
            or a selection that keeps no track.
        """
        frame = self.track_table().frame
        keep = pd.Series(True, index=frame.index)
        for column, wanted, what in (("track_id", track_ids, "track"), ("layer", layers, "layer")):
            if not wanted:
                continue
            known = set(frame[column])
            unknown = [w for w in wanted if w not in known]
            if unknown:
                some = ", ".join(sorted(known)[:6])
                raise RecipeError(
                    f"recipe {self.name!r} has no {what} {', '.join(map(repr, unknown[:5]))}"
                    f"{' and more' if len(unknown) > 5 else ''}; its {what}s include {some}"
                )
            keep &= frame[column].isin(wanted)
        if not keep.any():
            raise RecipeError(
                f"recipe {self.name!r}: no track is both in the ids and the layers chosen"
            )
        return self.with_track_table(TrackTable.from_frame(frame.loc[keep]))

    # ---------------------------------------------------------------- parts
    @property
    def input_length(self) -> int:
        return int(self.oracle["input_length"])

    @property
    def max_n_fraction(self) -> float:
        return float(self.oracle.get("max_n_fraction", 0.5))

    @property
    def batch_size(self) -> int:
        return int(self.oracle.get("batch_size", 8))

    @property
    def strands(self) -> list[str]:
        """Labels of the samples a row has per track (``["+", "-"]`` for BPNet; else ``["."]``)."""
        return [str(x) for x in self.oracle.get("strands", ["."])]

    def track_table(self) -> TrackTable:
        """The recipe's track table, resolved (layers, windows, formulas, heads): the
        :attr:`table` it was given, else read from the ``[tracks]`` files."""
        if self.table is not None:
            return self.table
        spec = {
            k: require_path(v, f"[tracks] {k}")
            if k not in _TRACK_SETTINGS and isinstance(v, str)
            else v
            for k, v in self.tracks.items()
        }
        fmt = spec.pop("format", None)
        if fmt is not None:
            return read_tracks(str(fmt), **spec)
        return TrackTable.read_tsv(
            spec["table"],
            heads={h.name: h.resolution_bp for h in self.heads},
            tss_routing=bool(self.plan.get("tss_routing", True)),
        )

    def load_oracle(
        self,
        *,
        weights: str | None = None,
        device: str = "auto",
        tracks: TrackTable | None = None,
    ) -> Oracle:
        """Load the model the recipe names, through the adapter its ``[oracle] adapter``
        names (:mod:`chorus_store.oracles.registry`: built-in or an entry point).

        ``tracks`` (a store's track table) is the table the adapter reads its columns from
        (AlphaGenome, ChromBPNet, Sei, LegNet); without it, the recipe's own.
        """
        if tracks is not None:
            return self.with_track_table(tracks).load_oracle(weights=weights, device=device)
        return registry.load_oracle(self, weights=weights, device=device)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load ``builders/<name>/recipe.toml`` by name, or a recipe file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        candidate = data_dir("builders") / str(name_or_path) / "recipe.toml"
        if not candidate.is_file():
            raise RecipeError(
                f"no recipe named {str(name_or_path)!r}; shipped recipes: {list_recipes()}, "
                f"or pass the path of a recipe.toml"
            )
        path = candidate
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path} is not valid TOML: {exc}") from exc
    return Recipe.from_dict(data, base=path.parent.resolve(), source=str(path.resolve()))
