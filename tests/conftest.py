from __future__ import annotations

import os
from pathlib import Path

import pytest

from chorus_store.demo import DemoInputs, make_demo_inputs

# Exports stamp build_config.stamped_at from SOURCE_DATE_EPOCH when set (reproducible
# builds); with it fixed, two exports of the same content are byte-identical files.
os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> DemoInputs:
    return make_demo_inputs(tmp_path_factory.mktemp("demo-inputs"))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")
