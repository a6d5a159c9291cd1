"""Reference genome and annotation readers.

* :class:`Genome` — a FASTA read with pyfaidx: identity (fingerprint), windows, N runs,
  one-hot encoding.
* :func:`read_ccre_bed` — ENCODE SCREEN cCRE BED (pandas).
* :func:`read_gtf` — GENCODE-style GTF features with their attributes (pandas).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyfaidx

from chorus_store.errors import GenomeMismatchError, InputFileError
from chorus_store.hashing import sha256_file

__all__ = [
    "KNOWN_ASSEMBLIES",
    "GenomeFingerprint",
    "Genome",
    "one_hot",
    "read_ccre_bed",
    "read_gtf",
]

#: chr1 length → assembly name, the test chorus's ``require_reference_assembly`` applies.
KNOWN_ASSEMBLIES: dict[int, str] = {248_956_422: "hg38", 249_250_621: "hg19"}

log = logging.getLogger(__name__)

_PREFIX_BYTES = 64 * 1024 * 1024
_HASH_BLOCK = 16 * 1024 * 1024

# (resolved path, size, mtime_ns) -> per-contig sequence sha256: one hash per file state
# and process, so a cluster worker running many tasks of a run hashes its FASTA once
_SEQUENCE_SHA256: dict[tuple[str, int, int], dict[str, str]] = {}
_SEQUENCE_LOCK = threading.Lock()

# One-hot lookup table: A, C, G, T (either case) → one row; anything else → zeros.
_ONE_HOT_LUT = np.zeros((256, 4), dtype=np.float32)
for _i, _b in enumerate("ACGT"):
    _ONE_HOT_LUT[ord(_b), _i] = 1.0
    _ONE_HOT_LUT[ord(_b.lower()), _i] = 1.0


def one_hot(seqs: list[bytes] | bytes) -> np.ndarray:
    """One-hot encode sequences as ``(batch, length, 4)`` float32 in A, C, G, T order.

    Bases other than ACGT (N, IUPAC codes) become all-zero rows, as in chorus.

    >>> one_hot(b"ACGN")[0].tolist()
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    if isinstance(seqs, bytes):
        seqs = [seqs]
    codes = np.frombuffer(b"".join(seqs), dtype=np.uint8).reshape(len(seqs), -1)
    return np.take(_ONE_HOT_LUT, codes, axis=0)  # 3x faster than fancy indexing here


@dataclass(frozen=True)
class GenomeFingerprint:
    """What identifies a reference FASTA (the provenance fields of spec §1.6)."""

    assembly: str
    chr1_length: int | None
    fai_sha256: str
    fasta_sha256_prefix64mb: str
    contigs_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "assembly": self.assembly,
            "chr1_length": self.chr1_length,
            "fai_sha256": self.fai_sha256,
            "fasta_sha256_prefix64mb": self.fasta_sha256_prefix64mb,
            "contigs_sha256": self.contigs_sha256,
        }

    def describe(self) -> str:
        chr1 = "no chr1" if self.chr1_length is None else f"chr1 {self.chr1_length:,} bp"
        return f"{self.assembly} ({chr1}, fai sha256 {self.fai_sha256[:12]}…)"

    def require_same(self, expected: dict[str, Any], *, what: str, fasta: Path) -> None:
        """Raise :class:`GenomeMismatchError` unless this FASTA is ``expected``.

        Compared: the ``.fai`` (names, lengths, layout), chr1's length and the sha256 of the
        first 64 MiB of the file (chorus's provenance fields). This is all a chorus
        reference set records; :meth:`Genome.require_same` also compares every contig's
        sequence where the record has their hashes (a store's does).
        """
        diffs = _fingerprint_differences(self.as_dict(), expected)
        if diffs:
            raise _mismatch(fasta, what, diffs)


def _fingerprint_differences(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between two genome records, in words (empty: the same genome).

    A field absent from ``expected`` (an older record) is not compared."""
    diffs: list[str] = []
    exp_lengths = expected.get("contig_lengths")
    act_lengths = actual.get("contig_lengths")
    if isinstance(exp_lengths, dict) and isinstance(act_lengths, dict):
        only_exp = [k for k in exp_lengths if k not in act_lengths]
        only_act = [k for k in act_lengths if k not in exp_lengths]
        if only_exp:
            diffs.append(f"contig(s) {_few(only_exp)} missing from this FASTA")
        if only_act:
            diffs.append(f"contig(s) {_few(only_act)} not in the expected genome")
        for k, n in exp_lengths.items():
            if k in act_lengths and int(act_lengths[k]) != int(n):
                diffs.append(f"{k} is {int(act_lengths[k]):,} bp here, {int(n):,} bp expected")
    exp_chr1 = expected.get("chr1_length")
    if exp_chr1 is not None and exp_chr1 != actual.get("chr1_length") and not diffs:
        act_chr1 = actual.get("chr1_length")
        diffs.append(
            f"chr1 is {'absent' if act_chr1 is None else f'{act_chr1:,} bp'} here; the expected "
            f"genome is {expected.get('assembly') or 'unknown'} (chr1 {exp_chr1:,} bp)"
        )
    if expected.get("fai_sha256") and expected["fai_sha256"] != actual["fai_sha256"] and not diffs:
        diffs.append(
            f"the .fai differs (sha256 {actual['fai_sha256'][:12]}… here, "
            f"{str(expected['fai_sha256'])[:12]}… expected): other contig names, lengths "
            f"or line layout"
        )
    prefix = expected.get("fasta_sha256_prefix64mb")
    if prefix and prefix != actual["fasta_sha256_prefix64mb"]:
        diffs.append(
            f"the first 64 MiB of the file differ (sha256 "
            f"{actual['fasta_sha256_prefix64mb'][:12]}… here, {str(prefix)[:12]}… expected)"
        )
    return diffs


def _few(names: list[str], n: int = 5) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _mismatch(fasta: Path, what: str, diffs: list[str]) -> GenomeMismatchError:
    return GenomeMismatchError(
        f"{fasta} is not the genome {what} was made on: " + "; ".join(diffs[:6]) + ". "
        f"Pass the FASTA {what} was made from (--fasta), or make a new plan for this genome."
    )


def _open_fasta(path: Path) -> IO[bytes]:
    with path.open("rb") as fh:
        magic = fh.read(2)
    # bgzip is gzip: the .fai offsets are in the decompressed stream (a forward seek
    # of a gzip file decompresses what it skips, so reading in offset order is one pass)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is IO[bytes]
    return path.open("rb")


def _contig_sha256(path: Path, fai: Path) -> dict[str, str]:
    """sha256 of each contig's sequence bytes as in the file (case kept, newlines
    dropped), streamed in blocks in one pass in file order; located through the ``.fai``."""
    records: list[tuple[int, str, int, int, int]] = []
    for line in fai.read_text().splitlines():
        f = line.split("\t")
        records.append((int(f[2]), f[0], int(f[1]), int(f[3]), int(f[4])))
    out: dict[str, str] = {}
    with _open_fasta(path) as fh:
        for offset, name, length, line_bases, line_width in sorted(records):
            full, rest = divmod(length, line_bases) if line_bases else (0, length)
            extent = full * line_width + rest
            fh.seek(offset)
            h = hashlib.sha256()
            seen, header = 0, False
            while extent > 0:
                block = fh.read(min(_HASH_BLOCK, extent))
                if not block:
                    break
                extent -= len(block)
                bases = block.translate(None, b"\r\n")
                seen += len(bases)
                header = header or b">" in bases  # memchr: an index gone stale
                h.update(bases)
            if seen != length or header:
                raise InputFileError(
                    f"FASTA {path}: {name} does not hold the {length:,} bases its index "
                    f"{fai} says (read {seen:,}); the file changed after indexing or its "
                    f"lines are uneven: re-index it (delete {fai.name})"
                )
            out[name] = h.hexdigest()
    return out


class Genome:
    """A reference FASTA, read through pyfaidx.

    Parameters
    ----------
    path
        FASTA file (plain or bgzip). Its ``.fai`` index is built next to it if absent.
    assembly
        Name to record for a genome chorus does not know by its chr1 length (e.g. the
        bundled synthetic demo genome). hg38/hg19 are recognised by chr1 length.
    """

    #: bases read at a time when indexing a chromosome's N runs
    run_block_bp = 1 << 24

    def __init__(self, path: str | Path, *, assembly: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise InputFileError(f"FASTA {self.path} does not exist; pass an existing --fasta")
        try:
            self._ensure_index()
            self._fasta = pyfaidx.Fasta(
                str(self.path), as_raw=True, sequence_always_upper=True, rebuild=False
            )
        except (
            pyfaidx.FastaIndexingError,
            pyfaidx.UnsupportedCompressionFormat,
            ValueError,
            UnicodeDecodeError,
        ) as exc:
            raise InputFileError(
                f"FASTA {self.path} cannot be indexed ({exc}); it must be plain or bgzip "
                f"FASTA with '>' headers and equal-length sequence lines"
            ) from exc
        self.lengths: dict[str, int] = {k: len(v) for k, v in self._fasta.records.items()}
        if not self.lengths:
            raise InputFileError(f"FASTA {self.path} holds no sequences")
        self._assembly_hint = assembly
        self._n_runs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._fingerprint: GenomeFingerprint | None = None

    def _ensure_index(self) -> None:
        """Build the ``.fai`` if missing or older than the FASTA, atomically.

        pyfaidx writes an index in place; a process killed meanwhile would leave a
        truncated index that later reads trust. Building it under a temporary name and
        renaming it into place leaves either no index or a whole one.
        """
        fai = self.fai_path
        if fai.is_file() and fai.stat().st_mtime >= self.path.stat().st_mtime:
            return
        tmp = fai.with_name(f".{fai.name}.{uuid.uuid4().hex}.partial")
        try:
            pyfaidx.Faidx(str(self.path), indexname=str(tmp), rebuild=True).close()
            os.replace(tmp, fai)
        except PermissionError as exc:
            raise InputFileError(
                f"cannot write the index {fai} next to the FASTA ({exc}); index it where it "
                f"is writable (`samtools faidx {self.path}`) or copy the FASTA"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)

    # -- identity ----------------------------------------------------------------------
    @property
    def fai_path(self) -> Path:
        return Path(str(self.path) + ".fai")

    @property
    def fingerprint(self) -> GenomeFingerprint:
        if self._fingerprint is None:
            chr1 = self.lengths.get("chr1")
            assembly = KNOWN_ASSEMBLIES.get(chr1 or -1) or self._assembly_hint or "unknown"
            contigs = "".join(f"{k}\t{v}\n" for k, v in self.lengths.items())
            self._fingerprint = GenomeFingerprint(
                assembly=assembly,
                chr1_length=chr1,
                fai_sha256=sha256_file(self.fai_path),
                fasta_sha256_prefix64mb=sha256_file(self.path, _PREFIX_BYTES),
                contigs_sha256=hashlib.sha256(contigs.encode()).hexdigest(),
            )
        return self._fingerprint

    @property
    def stat_key(self) -> dict[str, Any]:
        """The file's state the cached sequence hashes hold for: path, size, mtime."""
        st = self.path.stat()
        return {"path": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def sequence_sha256(self) -> dict[str, str]:
        """sha256 of every contig's sequence (see :func:`_contig_sha256`): the whole file
        is read once per process and file state (a 3 GB genome: seconds, see README)."""
        key = self.stat_key
        k = (key["path"], key["size"], key["mtime_ns"])
        with _SEQUENCE_LOCK:
            if k not in _SEQUENCE_SHA256:
                _SEQUENCE_SHA256[k] = _contig_sha256(self.path, self.fai_path)
            return dict(_SEQUENCE_SHA256[k])

    def record(self, *, sequence: bool = True) -> dict[str, Any]:
        """The genome's identity as a store records it: :attr:`fingerprint`, the path,
        each contig's length and (``sequence``) sequence sha256, with :attr:`stat_key`
        the hashes hold for, so a resume on an unchanged file need not re-read it."""
        rec: dict[str, Any] = {
            **self.fingerprint.as_dict(),
            "fasta_path": str(self.path),
            "contig_lengths": dict(self.lengths),
        }
        if sequence:
            contigs = self.sequence_sha256()
            rec["contig_sha256"] = contigs
            rec["sequence_sha256"] = hashlib.sha256(
                json.dumps(contigs, sort_keys=True).encode()
            ).hexdigest()
            rec["fasta_stat"] = self.stat_key
        return rec

    def require_same(self, expected: dict[str, Any], *, what: str) -> None:
        """Raise :class:`GenomeMismatchError` unless this FASTA is the genome ``expected``
        (a store's ``genome`` record) describes, naming what differs.

        Beyond :meth:`GenomeFingerprint.require_same`, every contig's sequence is compared
        where ``expected`` has their hashes: the file is hashed unless it is, by path,
        size and mtime, the file the hashes were taken from. A record without them (a
        store planned before they were recorded) is compared on the old fields only.
        """
        diffs = _fingerprint_differences(self.record(sequence=False), expected)
        if diffs:
            raise _mismatch(self.path, what, diffs)
        stored = expected.get("contig_sha256")
        if not isinstance(stored, dict):
            log.warning(
                "%s records no per-contig sequence hashes (planned by an older "
                "chorus-store): only the .fai and the first 64 MiB of %s are checked",
                what,
                self.path,
            )
            return
        if expected.get("fasta_stat") == self.stat_key:
            return
        actual = self.sequence_sha256()
        differ = [k for k, v in stored.items() if k in actual and actual[k] != v]
        if differ:
            raise _mismatch(
                self.path,
                what,
                [
                    f"the sequence of {k} differs (sha256 {actual[k][:12]}… here, "
                    f"{str(stored[k])[:12]}… expected)"
                    for k in differ
                ]
                + ([f"{len(differ) - 6} more contigs differ"] if len(differ) > 6 else []),
            )

    #: an annotation with fewer of its rows on this FASTA's contigs is refused
    min_annotation_share = 0.5

    def require_annotation_contigs(self, chroms: pd.Series, *, what: str) -> None:
        """Refuse an annotation (``what``: "GTF x.gtf (--gtf)") whose rows mostly lie on
        contigs this FASTA does not name, e.g. Ensembl's ``1`` against UCSC's ``chr1``:
        its strata and gene slots would silently be empty. A few rows on contigs the
        FASTA lacks (alt or patch contigs of another release) are allowed."""
        on_fasta = chroms.isin(list(self.lengths))
        if len(chroms) == 0 or on_fasta.mean() >= self.min_annotation_share:
            return
        theirs = list(dict.fromkeys(chroms[~on_fasta]))
        raise InputFileError(
            f"{what} names its contigs {_few(theirs, 3)}, but the FASTA {self.path} names "
            f"{_few(list(self.lengths), 3)}: only {int(on_fasta.sum()):,} of its "
            f"{len(chroms):,} rows are on the FASTA's contigs. Use an annotation with the "
            f"FASTA's contig naming (e.g. add or strip the 'chr' prefix) or the FASTA it "
            f"was made for"
        )

    def require_contigs(self, chroms: Iterable[str], *, what: str) -> None:
        missing = sorted(set(chroms) - set(self.lengths))
        if missing:
            raise GenomeMismatchError(
                f"{what} uses contig(s) {missing[:5]} that {self.path} does not have "
                f"({len(self.lengths)} contigs, e.g. {list(self.lengths)[:3]}); is this the "
                f"right genome?"
            )

    # -- sequence ----------------------------------------------------------------------
    def fetch(self, chrom: str, start: int, end: int) -> bytes:
        """Upper-case bases of 0-based half-open ``[start, end)`` as ASCII bytes."""
        with self._lock:
            seq = self._fasta[chrom][start:end]
        return str(seq).encode("ascii")

    def window(self, chrom: str, pos: int, length: int) -> bytes:
        """The ``length`` bp input window of 1-based ``pos`` (spec §1.5).

        0-based ``[pos - length//2, pos + length//2)``: the base at ``pos`` sits at index
        ``length//2 - 1``, chorus's convention (with its +1 slip at the centre bin).
        """
        half = length // 2
        return self.fetch(chrom, pos - half, pos + half)

    def window_status(self, chrom: str, pos: int, length: int, max_n_fraction: float) -> str:
        """``""`` if the window is usable, else why not (``off_contig``, ``too_many_n``)."""
        half = length // 2
        start, end = pos - half, pos + half
        if start < 0 or end > self.lengths[chrom]:
            return "off_contig"
        if self.n_count(chrom, start, end) > length * max_n_fraction:
            return "too_many_n"
        return ""

    def n_count(self, chrom: str, start: int, end: int) -> int:
        """Number of non-ACGT bases in 0-based ``[start, end)``, from a cached run index."""
        starts, ends, cum = self._runs(chrom)
        i = int(np.searchsorted(ends, start, side="right"))  # first run ending after start
        j = int(np.searchsorted(starts, end, side="left"))  # first run starting at/after end
        if j <= i:
            return 0
        total = int(cum[j] - cum[i])
        total -= max(0, start - int(starts[i]))
        total -= max(0, int(ends[j - 1]) - end)
        return total

    def _runs(self, chrom: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        runs = self._n_runs.get(chrom)
        if runs is None:
            starts: list[np.ndarray] = []
            ends: list[np.ndarray] = []
            length = self.lengths[chrom]
            step = self.run_block_bp
            for off in range(0, length, step):
                codes = np.frombuffer(self.fetch(chrom, off, min(off + step, length)), np.uint8)
                is_acgt = _ONE_HOT_LUT[codes].any(axis=1)
                edges = np.diff(np.concatenate(([1], is_acgt.view(np.int8), [1])))
                starts.append(np.flatnonzero(edges == -1) + off)
                ends.append(np.flatnonzero(edges == 1) + off)
            s = np.concatenate(starts) if starts else np.zeros(0, np.int64)
            e = np.concatenate(ends) if ends else np.zeros(0, np.int64)
            # merge runs split at block boundaries
            if len(s) > 1:
                joined = s[1:] == e[:-1]
                s, e = s[np.r_[True, ~joined]], e[np.r_[~joined, True]]
            cum = np.concatenate(([0], np.cumsum(e - s)))
            runs = (s.astype(np.int64), e.astype(np.int64), cum.astype(np.int64))
            self._n_runs[chrom] = runs
        return runs

    def base(self, chrom: str, pos: int) -> str:
        """Reference base at 1-based ``pos``."""
        return self.fetch(chrom, pos - 1, pos).decode()

    def close(self) -> None:
        self._fasta.close()

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------

_CCRE_CATEGORIES = {"PLS", "pELS", "dELS", "CA-CTCF", "CA-H3K4me3", "CA-TF", "CA", "TF"}


def _require_file(path: str | Path, what: str, flag: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"{what} {path} does not exist; pass an existing {flag}")
    return path


def _header_lines(path: Path) -> int | None:
    """How many lines open the file before its first data row: UCSC ``track`` and
    ``browser`` lines (legal in any BED) and ``#`` comments; None when no data row follows."""
    n = 0
    with _open_text(path) as fh:
        for line in fh:
            if not (_HEADER.match(line) or not line.strip()):
                return n
            n += 1
    return None


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", errors="replace")
    return path.open(errors="replace")


_HEADER = re.compile(r"#|(track|browser)(\s|$)")


def read_ccre_bed(path: str | Path) -> pd.DataFrame:
    """Read an ENCODE SCREEN cCRE BED: ``chrom, start, end, category`` (spec §1.2).

    Columns 1–3 and 6 of the tab-separated, header-less Registry V4 file are used.
    Rows whose category is not a SCREEN class are refused rather than dropped, because a
    file with shifted columns would otherwise sample from nothing.
    """
    path = _require_file(path, "cCRE BED", "--ccre")
    skip = _header_lines(path)
    if skip is None:
        raise InputFileError(f"cCRE BED {path} holds no rows (only header or comment lines)")
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=None,
            skiprows=skip,
            comment="#",
            usecols=[0, 1, 2, 5],
            names=["chrom", "start", "end", "category"],
            dtype={0: str, 5: str},
        )
        df["start"] = pd.to_numeric(df["start"], errors="raise").astype(np.int64)
        df["end"] = pd.to_numeric(df["end"], errors="raise").astype(np.int64)
    except (ValueError, IndexError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputFileError(
            f"cCRE BED {path} is malformed ({exc}); expected the SCREEN Registry V4 layout: "
            f"tab-separated chrom, start, end, accession, accession, category"
        ) from exc
    if df.empty:
        raise InputFileError(f"cCRE BED {path} holds no rows")
    unknown = sorted(set(df["category"].dropna()) - _CCRE_CATEGORIES)
    if unknown or df["category"].isna().any():
        raise InputFileError(
            f"cCRE BED {path}: column 6 must be a SCREEN category "
            f"({sorted(_CCRE_CATEGORIES)}), found {unknown[:5] or 'empty values'}"
        )
    if (df["end"] <= df["start"]).any() or (df["start"] < 0).any():
        raise InputFileError(f"cCRE BED {path}: rows with end <= start or start < 0")
    return df.reset_index(drop=True)


_GTF_ATTRS = ("gene_name", "gene_id", "gene_type", "transcript_id", "transcript_type")


def read_gtf(path: str | Path, features: tuple[str, ...] = ("gene", "exon")) -> pd.DataFrame:
    """Read GTF rows of the given feature types with chorus's attribute columns.

    Returns ``chrom, start, end`` (1-based, inclusive, as in the file), ``strand``,
    ``feature`` and the attributes ``gene_name, gene_id, gene_type, transcript_id,
    transcript_type`` ("" when absent). Gzipped files are read transparently.
    """
    path = _require_file(path, "GTF", "--gtf")
    if _header_lines(path) is None:
        raise InputFileError(
            f"GTF {path} holds no rows (only header or comment lines); pass a GENCODE GTF "
            f"with its gene and exon rows to --gtf"
        )
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=None,
            comment="#",
            usecols=[0, 2, 3, 4, 6, 8],
            names=["chrom", "feature", "start", "end", "strand", "attributes"],
            dtype={0: str, 2: str, 6: str, 8: str},
        )
        df = df[df["feature"].isin(features)].reset_index(drop=True)
        df["start"] = pd.to_numeric(df["start"], errors="raise").astype(np.int64)
        df["end"] = pd.to_numeric(df["end"], errors="raise").astype(np.int64)
    except (ValueError, IndexError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise InputFileError(
            f"GTF {path} is malformed ({exc}); expected 9 tab-separated GTF columns"
        ) from exc
    if df.empty:
        raise InputFileError(f"GTF {path} holds no {'/'.join(features)} rows")
    attrs = df.pop("attributes").fillna("")
    for key in _GTF_ATTRS:
        df[key] = attrs.str.extract(rf'(?:^|;)\s*{key} "([^"]*)"', expand=False).fillna("")
    if (df["gene_name"] == "").all():
        raise InputFileError(f"GTF {path}: no gene_name attributes; is this a GENCODE GTF?")
    return df
