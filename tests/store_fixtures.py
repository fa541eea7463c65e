"""The `db` / `con` fixture pair of the tests that fill one store by hand and read it many times.

Filling a store through the real Store API is the slow part, so it is done once per module
(`db`); each test gets its own read-only connection to it (`con`), so no test can change what
the next one reads. A module states only how its store is filled:

    db, con = store_fixtures(_fill, "cost")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest


def store_fixtures(fill: Callable[[Path], None], name: str) -> tuple[Any, Any]:
    """(db, con) fixtures: `fill` writes `<tmp>/<name>N/runs.duckdb` once per module."""

    @pytest.fixture(scope="module")
    def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
        path = tmp_path_factory.mktemp(name) / "runs.duckdb"
        fill(path)
        return path

    @pytest.fixture
    def con(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        with duckdb.connect(str(db), read_only=True) as c:
            yield c

    return db, con
