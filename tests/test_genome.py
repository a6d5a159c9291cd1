"""FASTA, annotations and one-hot encoding."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyfaidx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_store.errors import GenomeMismatchError, InputFileError
from chorus_store.genome import fasta as genome_module
from chorus_store.genome.fasta import Genome, one_hot, read_ccre_bed, read_gtf


def write_fasta(path: Path, seqs: dict[str, str], width: int = 60) -> Path:
    lines = []
    for name, seq in seqs.items():
        lines.append(f">{name}")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_hot_is_acgt_and_zero_for_others() -> None:
    x = one_hot([b"ACGTN", b"acgtR"])
    assert x.shape == (2, 5, 4) and x.dtype == np.float32
    assert (x[:, :4].argmax(axis=2) == [0, 1, 2, 3]).all()
    assert (x[:, 4] == 0).all()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_n_count_equals_brute_force(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    length = data.draw(st.integers(50, 400))
    bases = data.draw(st.lists(st.sampled_from("ACGTNNn"), min_size=length, max_size=length))
    seq = "".join(bases)
    path = write_fasta(tmp_path_factory.mktemp("fa") / "g.fa", {"c": seq}, width=17)
    g = Genome(path)
    g.run_block_bp = data.draw(st.integers(1, 64))  # runs cross read blocks
    start = data.draw(st.integers(0, length))
    end = data.draw(st.integers(start, length))
    expected = sum(1 for b in seq[start:end].upper() if b not in "ACGT")
    assert g.n_count("c", start, end) == expected


def test_window_convention_and_rejections(tmp_path: Path) -> None:
    seq = "ACGT" * 25 + "N" * 60 + "ACGT" * 25
    g = Genome(write_fasta(tmp_path / "g.fa", {"c": seq}))
    w = g.window("c", 50, 20)  # 0-based [40, 60): the 1-based position 50 is index 9
    assert w == seq[40:60].encode() and w[9:10] == seq[49].encode()
    assert g.window_status("c", 50, 20, 0.5) == ""
    assert g.window_status("c", 5, 20, 0.5) == "off_contig"
    assert g.window_status("c", 251, 20, 0.5) == "off_contig"
    assert g.window_status("c", 130, 20, 0.5) == "too_many_n"


def test_fingerprint_and_assembly_guess(tmp_path: Path) -> None:
    g = Genome(write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 100}), assembly="toy")
    fp = g.fingerprint
    assert fp.assembly == "toy" and fp.chr1_length == 400
    other = Genome(write_fasta(tmp_path / "h.fa", {"chr1": "ACGT" * 101}))
    with pytest.raises(GenomeMismatchError, match=r"chr1 is 404 bp here; .* toy \(chr1 400 bp"):
        other.fingerprint.require_same(fp.as_dict(), what="the plan", fasta=other.path)
    fp.require_same(fp.as_dict(), what="the plan", fasta=g.path)


@settings(max_examples=30, deadline=None)
@given(
    seqs=st.lists(st.text("ACGTNacgtn", min_size=0, max_size=300), min_size=1, max_size=4),
    width=st.integers(1, 80),
    crlf=st.booleans(),
    block=st.integers(1, 64),
)
def test_contig_sha256_hashes_each_contigs_sequence_as_pyfaidx_reads_it(
    tmp_path_factory: pytest.TempPathFactory, seqs: list[str], width: int, crlf: bool, block: int
) -> None:
    named = {f"c{i}": s for i, s in enumerate(seqs) if s} or {"c0": "A"}
    path = write_fasta(tmp_path_factory.mktemp("fa") / "g.fa", named, width=width)
    if crlf:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    old = genome_module._HASH_BLOCK
    genome_module._HASH_BLOCK = block  # blocks end anywhere: inside a line, inside "\r\n"
    try:
        got = genome_module._contig_sha256(path, Genome(path).fai_path)
    finally:
        genome_module._HASH_BLOCK = old
    with pyfaidx.Fasta(str(path), as_raw=True) as fa:  # case kept, as in the file
        expected = {k: hashlib.sha256(str(fa[k][:]).encode()).hexdigest() for k in fa.records}
    assert got == expected


def test_sequence_change_past_the_prefix_names_the_contig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same names, lengths and first bytes (the .fai and the prefix hash agree): only the
    whole-sequence hashes see the change, and the error names the contig and its hashes."""
    monkeypatch.setattr(genome_module, "_PREFIX_BYTES", 64)  # 64 MiB, scaled to the test
    seqs = {"chr1": "ACGT" * 100, "chrY": "ACGT" * 100}
    planned = Genome(write_fasta(tmp_path / "a.fa", seqs))
    record = planned.record()
    masked = Genome(write_fasta(tmp_path / "b.fa", {**seqs, "chrY": "N" * 100 + "ACGT" * 75}))
    masked.fingerprint.require_same(record, what="the store", fasta=masked.path)  # blind
    with pytest.raises(GenomeMismatchError, match=r"the sequence of chrY differs \(sha256 "):
        masked.require_same(record, what="the store")
    planned.require_same(record, what="the store")


def test_sequence_hashes_are_reused_while_path_size_and_mtime_match(tmp_path: Path) -> None:
    g = Genome(write_fasta(tmp_path / "a.fa", {"chr1": "ACGT" * 100}))
    record = g.record()
    genome_module._SEQUENCE_SHA256.clear()
    g.require_same(record, what="the store")
    assert genome_module._SEQUENCE_SHA256 == {}  # the record's hashes were trusted
    st = g.path.stat()
    os.utime(g.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: rehashed
    g.require_same(record, what="the store")
    assert list(genome_module._SEQUENCE_SHA256) == [
        (str(g.path), st.st_size, st.st_mtime_ns + 10**9)
    ]


def test_record_without_sequence_hashes_is_compared_on_the_old_fields(tmp_path: Path) -> None:
    """A store planned before per-contig hashes opens; a different .fai is still refused,
    and the message says what differs rather than describing both genomes alike."""
    g = Genome(write_fasta(tmp_path / "a.fa", {"chr1": "ACGT" * 100}))
    old = g.fingerprint.as_dict()
    g.require_same(old, what="the store")
    relined = Genome(write_fasta(tmp_path / "b.fa", {"chr1": "ACGT" * 100}, width=50))
    with pytest.raises(GenomeMismatchError, match=r"the \.fai differs .*line layout"):
        relined.require_same(old, what="the store")
    longer = Genome(write_fasta(tmp_path / "c.fa", {"chr1": "ACGT" * 100, "chrM": "ACGT"}))
    with pytest.raises(GenomeMismatchError, match=r"contig\(s\) chrM not in the expected"):
        longer.require_same(g.record(), what="the store")


def test_missing_and_malformed_fasta(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        Genome(tmp_path / "absent.fa")
    bad = tmp_path / "bad.fa"
    bad.write_text(">c\nACGT\nAC\nACGT\n")  # ragged lines: cannot be indexed
    with pytest.raises(InputFileError, match="cannot be indexed"):
        Genome(bad)


def test_ccre_bed_reader(tmp_path: Path) -> None:
    p = tmp_path / "c.bed"
    p.write_text("chr1\t100\t300\tEH38D1\tEH38E1\tPLS\nchr2\t5\t50\tEH38D2\tEH38E2\tCA-CTCF\n")
    df = read_ccre_bed(p)
    assert df["category"].tolist() == ["PLS", "CA-CTCF"] and df["start"].dtype == np.int64
    p.write_text("chr1\t100\t300\tPLS\n")  # four columns: no category column
    with pytest.raises(InputFileError, match="malformed"):
        read_ccre_bed(p)
    p.write_text("chr1\t100\t300\tEH\tEH\tenhancer\n")
    with pytest.raises(InputFileError, match="SCREEN category"):
        read_ccre_bed(p)
    p.write_text("chr1\tx\t300\tEH\tEH\tPLS\n")
    with pytest.raises(InputFileError, match="malformed"):
        read_ccre_bed(p)
    with pytest.raises(InputFileError, match="does not exist"):
        read_ccre_bed(tmp_path / "none.bed")


def test_gtf_reader(tmp_path: Path) -> None:
    p = tmp_path / "g.gtf"
    p.write_text(
        "#!header\n"
        'chr1\tX\tgene\t11\t200\t.\t-\t.\tgene_id "G1"; gene_type "protein_coding"; '
        'gene_name "A";\n'
        'chr1\tX\texon\t11\t50\t.\t-\t.\tgene_id "G1"; transcript_id "T1"; gene_name "A";\n'
    )
    df = read_gtf(p)
    assert df["feature"].tolist() == ["gene", "exon"]
    assert df["gene_type"].tolist() == ["protein_coding", ""]
    assert df["transcript_id"].tolist() == ["", "T1"]
    p.write_text("chr1\tX\tgene\n")
    with pytest.raises(InputFileError):
        read_gtf(p)
    p.write_text('chr1\tX\tgene\t1\t5\t.\t+\t.\tgene_id "G1";\n')
    with pytest.raises(InputFileError, match="gene_name"):
        read_gtf(p)
