"""Fixtures of the plugin's tests: real databases and one shared verifier (a real worker pool)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _sqlreward_helpers import make_concert_db
from rewardsql_sql_reward import SQLVerifier


@pytest.fixture(scope="session")
def db_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dbs")
    make_concert_db(root)
    make_concert_db(root, "concert_copy")
    return root


@pytest.fixture(scope="session")
def verifier(db_root: Path) -> Iterator[SQLVerifier]:
    """One pool of two workers for the session; short timeouts keep hostile tests quick."""
    with SQLVerifier(db_root, timeout=1.5, workers=2) as v:
        yield v
