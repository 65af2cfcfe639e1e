"""Fixtures of the math tests: one grader (worker processes start once) and the shared data directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.math.datasets import data_dir
from services.math.grading import Grader


@pytest.fixture(scope="session")
def grader() -> Iterator[Grader]:
    with Grader(workers=2, deadline_s=5.0) as shared:
        yield shared


@pytest.fixture(scope="session")
def needs_data() -> None:
    if not data_dir().is_dir():
        pytest.skip(f"the shared math data is not at {data_dir()} (set THINKMESH_DATA_DIR)")
