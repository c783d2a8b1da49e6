"""Shared fixtures. Tests use the real files in ../shared/data (never modified) and real SQLite files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.catalogue import Catalogue  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402

DATA = find_data_dir(Path(__file__))
if DATA is None:
    raise pytest.UsageError("shared/data not found beside the checkout; set HERDBOOK_DATA")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def catalogue(tmp_path) -> Catalogue:
    cat = Catalogue(tmp_path / "catalogue.sqlite")
    yield cat
    cat.close()


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path, bytes and mtime: any write to the folder changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
        digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()
