"""Shared fixtures. Tests use the real files in ../shared/data (never modified) and real SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.catalogue import Catalogue  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402

DATA = find_data_dir(Path(__file__))
if DATA is None:
    raise pytest.UsageError("shared/data not found beside the checkout; set HERDBOOK_DATA")
DATA = DATA.resolve()  # the importer stores resolved paths; compare like with like


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (tests/postgres_server.py). Without Debian's postgresql
    package the PostgreSQL half of the suite is skipped, except where HERDBOOK_REQUIRE_POSTGRES=1 (CI)."""
    from tests.postgres_server import PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("HERDBOOK_REQUIRE_POSTGRES") == "1":
            pytest.fail("HERDBOOK_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries (apt-get install postgresql)")
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql)")
    server = PostgresServer(binaries)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_catalogue(request, tmp_path):
    """A factory of empty catalogue targets on each backend: a file path for SQLite, a fresh database's URL
    on the session's PostgreSQL server. Tests taking it run once per backend."""
    if request.param == "sqlite":
        return lambda name="catalogue": tmp_path / f"{name}.sqlite"
    server = request.getfixturevalue("postgres_server")
    return lambda name="catalogue": server.new_database()


@pytest.fixture
def catalogue(new_catalogue) -> Catalogue:
    cat = Catalogue(new_catalogue())
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


# Nyala individuals the bundled model never saw in training (its card lists the held-out ones).
def held_out_individuals() -> list[str]:
    from engine.reid import default_model_path

    card = json.loads(default_model_path().with_suffix(".json").read_text())
    return sorted(i.split(":", 1)[1] for i in card["held_out_individuals"] if i.startswith("nyala:"))


def herdbook(*args):
    return subprocess.run([sys.executable, "-m", "herdbook", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="session")
def card_folders(tmp_path_factory, data_dir):
    """A labelled gallery (all but the last encounter of 12 unseen individuals) and a new card (the rest)."""
    root = tmp_path_factory.mktemp("cards")
    gallery, card = root / "gallery", root / "card"
    chosen = 0
    for ind in held_out_individuals():
        files = sorted((data_dir / "nyala/train" / ind).glob("*.jpg"))
        numbers = sorted({f.name.split("_")[0] for f in files if "(1)" not in f.name}, key=int)
        if len(numbers) < 2:
            continue
        for f in files:
            if "(1)" in f.name:
                continue
            target = (card if f.name.split("_")[0] == numbers[-1] else gallery) / ind
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target / f.name)
        chosen += 1
        if chosen == 12:
            break
    return gallery, card


def build(path, gallery, card=None):
    from engine.demo import label_folder_individuals
    from engine.ingest import import_folder

    with Catalogue(path) as cat:
        imp = import_folder(cat, gallery, site="gallery")
        label_folder_individuals(cat, imp.import_id, "nyala")
    if card is not None:
        # nyala photos are already crops of one animal: the user says so, as they would in the Import dialog
        return herdbook(
            "--catalogue", path, "import", card, "--site", "new-card", "--species", "nyala", "--detector", "whole-frame"
        )
    return None


@pytest.fixture
def decision_catalogue(new_catalogue, data_dir) -> Path | str:
    """Five real camera-trap photos with one whole-frame 'animal' detection each: something to decide on
    (an SQLite file, or a PostgreSQL URL: run once on each)."""
    from engine.ingest import import_folder

    path = new_catalogue("decide")
    with Catalogue(path) as cat:
        summary = import_folder(cat, data_dir / "camtraps" / "megadetector", site="test")
        with cat.transaction():
            for row in cat.query("SELECT id, width, height FROM media WHERE import_id = ?", [summary.import_id]):
                cat.add_detection(row["id"], (0, 0, row["width"], row["height"]), source="whole-frame", label="animal")
    return path


def import_placed(cat: Catalogue, card: Path) -> None:
    """Import a camtrapR card and place its deployments (the coordinates and time zone Camtrap DP needs)."""
    from engine.ingest import import_folder

    import_folder(cat, card)
    for row in cat.query("SELECT name FROM deployments"):
        cat.update_deployment(row["name"], latitude=5.1, longitude=117.9, utc_offset="+08:00")


def add_photos(cat: Catalogue, n: int, taken_at=lambda i: "2026-03-01T10:00:00") -> list[int]:
    """``n`` photo rows, one detection each (a derived fixture: rows as the importer and detector write them)."""
    dets = []
    start = cat.db.execute("SELECT count(*) FROM media").fetchone()[0]
    for i in range(start, start + n):
        row = {"path": f"/card/{i}.jpg", "file_name": f"{i}.jpg", "kind": "image", "status": "ok"}
        media = cat.db["media"].insert(row | {"sha256": f"{i:064x}", "taken_at": taken_at(i)}).last_pk
        dets.append(cat.add_detection(media, (0, 0, 1, 1), source="test"))
    return dets


def grow_detections(cat: Catalogue, model: int, vectors) -> list[int]:
    """One photo and detection per vector, each with this model's embedding."""
    with cat.transaction():
        dets = add_photos(cat, len(vectors))
        for det, v in zip(dets, vectors, strict=True):
            cat.db["embeddings"].insert({"detection_id": det, "model_id": model, "vector": v.tobytes()})
    return dets
