"""One file-hash reader for every fingerprint (it was written three times)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_store.genome import fasta
from chorus_store.hashing import sha256_file, sha256_paths
from chorus_store.oracles import base
from chorus_store.plan import stage


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=1 << 12), limit=st.none() | st.integers(0, 1 << 13))
def test_sha256_file_is_the_hash_of_the_bytes_or_their_prefix(
    data: bytes, limit: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.bin"
        path.write_bytes(data)
        want = hashlib.sha256(data if limit is None else data[:limit]).hexdigest()
        assert sha256_file(path, limit) == want


def test_sha256_paths_hashes_names_and_bytes_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "b.bin").write_bytes(b"bb")
    (tmp_path / "w" / "a.bin").write_bytes(b"a" * (3 << 20))  # more than one block
    want = hashlib.sha256(b"a.bin\0" + b"a" * (3 << 20) + b"b.bin\0bb").hexdigest()
    assert sha256_paths(tmp_path / "w") == want
    assert sha256_paths(tmp_path / "w" / "a.bin", tmp_path / "w" / "b.bin") == want


def test_the_genome_the_plan_and_the_oracles_use_the_one_reader() -> None:
    assert base.sha256_paths is sha256_paths
    assert fasta.sha256_file is sha256_file and stage.sha256_file is sha256_file  # type: ignore[attr-defined]  # the names the modules import, not re-exports
    assert not hasattr(fasta, "_sha256_file") and not hasattr(stage, "_file_sha256")
