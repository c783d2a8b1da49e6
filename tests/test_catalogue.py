"""The catalogue file: schema version and migrations, append-only decision log, undo, bad files."""

from __future__ import annotations

import sqlite3

import pytest

from engine.catalogue import SCHEMA_VERSION, Catalogue, CatalogueError


def test_new_catalogue_is_wal_with_foreign_keys_and_schema_version(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        assert cat.version == SCHEMA_VERSION
        assert cat.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cat.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        media_columns = set(cat.db["media"].columns_dict)
        assert {
            "path",
            "sha256",
            "taken_at",
            "latitude",
            "longitude",
            "camera_make",
            "camera_model",
            "error",
        } <= media_columns
        with pytest.raises(sqlite3.IntegrityError):
            cat.db["detections"].insert({"media_id": 999, "source": "manual"})
    with Catalogue(tmp_path / "c.sqlite") as again:  # reopening migrates nothing twice
        assert again.db["schema_version"].count == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        cat.db["schema_version"].insert({"version": SCHEMA_VERSION + 1, "applied_at": "2030-01-01"})
    with pytest.raises(CatalogueError, match="newer"):
        Catalogue(tmp_path / "c.sqlite")


def test_other_sqlite_database_is_refused_untouched(tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE birds (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogueError, match="not a Herdbook catalogue"):
        Catalogue(other)
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["birds"]


def test_decision_log_is_append_only_and_undo_restores(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        media = (
            cat.db["media"].insert({"path": "/x.jpg", "file_name": "x.jpg", "kind": "image", "status": "ok"}).last_pk
        )
        det = cat.add_detection(media, (1, 2, 3, 4), source="manual")
        a, b = cat.ensure_individual("A", "nyala"), cat.ensure_individual("B", "nyala")
        cat.confirm(det, a, who="ann")
        assert cat.sighting_of(det)["individual_id"] == a
        cat.confirm(det, b, who="ann")  # a later confirmation supersedes
        assert cat.sighting_of(det)["individual_id"] == b
        cat.undo_last(who="ann")
        assert cat.sighting_of(det)["individual_id"] == a
        cat.reject(det, a, who="bob")
        assert cat.sighting_of(det) is None
        cat.undo_last(who="bob")
        assert cat.sighting_of(det)["individual_id"] == a
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            cat.db.execute("UPDATE assignments SET who = 'mallory'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            cat.db.execute("DELETE FROM assignments")
        log = cat.query("SELECT status, who FROM assignments ORDER BY id")
        assert [r["status"] for r in log] == ["confirmed", "confirmed", "undo", "rejected", "undo"]


def test_damaged_catalogue_gives_a_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    Catalogue(path).close()
    raw = bytearray(path.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # wreck the first page's b-tree after the header
    path.write_bytes(bytes(raw))
    with pytest.raises(CatalogueError, match="c.sqlite"):
        Catalogue(path)


def test_a_version_1_catalogue_is_migrated_forward_with_its_data(tmp_path):
    import sqlite_utils

    from engine.catalogue import MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite_utils.Database(path)
    db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
    MIGRATIONS[1](db)
    db["schema_version"].insert({"version": 1, "applied_at": "2026-01-01"})
    db["media"].insert({"path": "/card/a.jpg", "file_name": "a.jpg", "kind": "image", "status": "ok", "sha256": "ab"})
    db.close()
    with Catalogue(path) as cat:
        assert cat.version == SCHEMA_VERSION
        assert cat.db["media"].get(1)["sha256"] == "ab"
        assert "media_stages" in cat.db.table_names()
        assert {"model_id", "proposal"} <= set(cat.db["assignments"].columns_dict)
