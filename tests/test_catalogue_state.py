"""Schema 5: the sighting and review-queue tables that a trigger keeps from the append-only decision log must
say, after every kind of decision, what the log itself says (derived here independently, by the schema-1 view
definitions); the queue is read a page at a time in photo-time order."""

from __future__ import annotations

import json
import random

import sqlite_utils

from engine.catalogue import MIGRATIONS, SCHEMA_VERSION, Catalogue
from engine.pipeline import iter_open_suggestions, open_count, open_suggestions
from tests.conftest import add_photos

# The oracle: the state as schema 1 derived it from the log, with no stored state at all.
DERIVED_SIGHTINGS = """
WITH eff AS (SELECT a.* FROM assignments a WHERE a.status IN ('confirmed', 'rejected')
             AND NOT EXISTS (SELECT 1 FROM assignments u WHERE u.status = 'undo' AND u.undoes = a.id))
SELECT e.detection_id, e.individual_id FROM eff e
WHERE e.status = 'confirmed'
  AND e.id = (SELECT max(x.id) FROM eff x WHERE x.detection_id = e.detection_id AND x.status = 'confirmed')
  AND NOT EXISTS (SELECT 1 FROM eff r WHERE r.detection_id = e.detection_id AND r.individual_id = e.individual_id
                  AND r.status = 'rejected' AND r.id > e.id)
ORDER BY e.detection_id"""
DERIVED_OPEN = """
WITH eff AS (SELECT a.* FROM assignments a WHERE a.status IN ('confirmed', 'rejected')
             AND NOT EXISTS (SELECT 1 FROM assignments u WHERE u.status = 'undo' AND u.undoes = a.id))
SELECT DISTINCT a.detection_id FROM assignments a WHERE a.status = 'suggested'
  AND NOT EXISTS (SELECT 1 FROM eff e WHERE e.detection_id = a.detection_id) ORDER BY a.detection_id"""


def _state(cat: Catalogue) -> tuple[list, list]:
    sightings = [tuple(r) for r in cat.db.execute("SELECT detection_id, individual_id FROM sightings ORDER BY 1")]
    queue = [r[0] for r in cat.db.execute("SELECT detection_id FROM review_queue ORDER BY 1")]
    return sightings, queue


def _derived(db) -> tuple[list, list]:
    """The oracle's state of a catalogue's database (sqlite-utils or sqlite3)."""
    return [tuple(r) for r in db.execute(DERIVED_SIGHTINGS)], [r[0] for r in db.execute(DERIVED_OPEN)]


def _photos(cat: Catalogue, n: int) -> list[int]:
    return add_photos(cat, n, taken_at=lambda i: f"2026-03-{1 + (7 * i) % 28:02d}T10:00:00")  # not in detection order


def _suggest(cat: Catalogue, det: int, individuals: list[int], model: int, new: bool = False) -> None:
    for rank, ind in enumerate(individuals, 1):
        note = json.dumps({"appearance": 0.8, "gallery_detection": None})
        cat.record(det, ind, "suggested", "model", score=0.9 - rank / 10, rank=rank, model_id=model, note=note)
    if new:
        cat.record(det, None, "suggested", "model", score=0.2, rank=0, model_id=model, proposal="new-1")


def test_state_tables_say_what_the_log_says_after_every_decision(new_catalogue):
    rng = random.Random(5)
    with Catalogue(new_catalogue("c")) as cat:
        model = cat.ensure_model("reid", "1", "reid")
        dets = _photos(cat, 12)
        inds = [cat.ensure_individual(code, "nyala") for code in "ABCD"]
        for det in dets[:9]:
            _suggest(cat, det, rng.sample(inds, 3), model, new=det % 3 == 0)
        assert _state(cat) == _derived(cat.db) and len(_state(cat)[1]) == 9
        sizes = set()
        for step in range(150):
            det, ind, who = rng.choice(dets), rng.choice(inds), rng.choice(["ann", "bob"])
            action = rng.choice(["confirm", "confirm", "reject", "reject_all", "undo", "undo_det", "suggest"])
            if action == "confirm":
                cat.confirm(det, ind, who)
            elif action == "reject":
                cat.reject(det, ind, who)
            elif action == "reject_all":
                cat.reject(det, None, who)
            elif action == "undo":
                cat.undo_last(who)
            elif action == "undo_det":
                cat.undo_last(who, detection_id=det)
            else:
                _suggest(cat, det, rng.sample(inds, 2), model)
            assert _state(cat) == _derived(cat.db), f"step {step}: {action} on detection {det}"
            sizes.add(tuple(map(len, _state(cat))))
        assert len(sizes) >= 10  # the walk went through many different states, not one repeated


def test_an_existing_schema_4_catalogue_gets_its_state_derived(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite_utils.Database(path)  # a catalogue as Herdbook 0.3 (schema 4) left it, its log written row by row
    db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
    for version in (1, 2, 3, 4):
        MIGRATIONS[version](db)
        db["schema_version"].insert({"version": version, "applied_at": "2026-01-01"})
    model = db["models"].insert({"name": "reid", "version": "1", "kind": "reid"}).last_pk
    a, b = (db["individuals"].insert({"code": c, "species": "nyala"}).last_pk for c in "AB")
    dets = []
    for i in range(4):
        media = (
            db["media"]
            .insert(
                {"path": f"/card/{i}.jpg", "file_name": f"{i}.jpg", "kind": "image", "status": "ok", "sha256": str(i)}
            )
            .last_pk
        )
        dets.append(db["detections"].insert({"media_id": media, "source": "bench"}).last_pk)

    def log(det, ind, status, undoes=None):
        row = {"detection_id": det, "individual_id": ind, "status": status, "who": "ann", "at": "2026-01-01"}
        return db["assignments"].insert({**row, "undoes": undoes, "model_id": model}).last_pk

    for det in dets:
        for ind in (a, b):
            log(det, ind, "suggested")
    log(dets[0], a, "confirmed")
    log(dets[1], b, "undo", undoes=log(dets[1], b, "confirmed"))
    log(dets[2], None, "rejected")
    expected = _derived(db)
    db.close()
    with Catalogue(path) as cat:
        assert cat.version == SCHEMA_VERSION
        assert _state(cat) == expected
        assert expected == ([(dets[0], a)], [dets[1], dets[3]])


def test_the_queue_is_read_a_page_at_a_time_in_photo_time_order(new_catalogue):
    with Catalogue(new_catalogue("c")) as cat:
        model = cat.ensure_model("reid", "1", "reid")
        dets = _photos(cat, 9)
        ind = cat.ensure_individual("A", "nyala")
        for det in dets:
            _suggest(cat, det, [ind], model, new=det == dets[4])
        whole = open_suggestions(cat)
        assert open_count(cat) == len(whole) == 9
        times = [it["taken_at"] for it in whole]
        assert times == sorted(times) and [it["detection_id"] for it in whole] != dets
        pages = [open_suggestions(cat, limit=4, offset=o) for o in (0, 4, 8)]
        assert [len(p) for p in pages] == [4, 4, 1]
        assert [it for p in pages for it in p] == whole == list(iter_open_suggestions(cat, page=2))
        assert next(it for it in whole if it["detection_id"] == dets[4])["probably_new"]
        cat.confirm(whole[0]["detection_id"], ind, "ann")
        assert open_count(cat) == 8 and open_suggestions(cat, limit=1)[0] == whole[1]
        cat.undo_last("ann")
        assert open_suggestions(cat, limit=1)[0] == whole[0]
        # A corrected camera clock moves a photo in the queue.
        last = whole[-1]
        media = cat.db.execute("SELECT media_id FROM detections WHERE id = ?", [last["detection_id"]]).fetchone()[0]
        cat.db["media"].update(media, {"taken_at": "2020-01-01T00:00:00"})
        assert open_suggestions(cat, limit=1)[0]["detection_id"] == last["detection_id"]


def test_a_large_select_streams_and_other_statements_run_between_its_rows(new_catalogue):
    """Exports read their rows through ``Catalogue.stream``: the same rows as a plain query, a few at a time (on
    PostgreSQL a server-side cursor, open while the rows are read), with the exports' own lookups in between."""
    with Catalogue(new_catalogue()) as cat:
        add_photos(cat, 25)
        sql = "SELECT m.id, m.path, d.id AS detection FROM media m JOIN detections d ON d.media_id = m.id ORDER BY m.id"
        streamed = []
        for row in cat.stream(sql):
            streamed.append(row)
            looked_up = cat.query("SELECT path FROM media WHERE id = ?", [row["id"]])
            assert looked_up == [{"path": row["path"]}]
            if cat.dialect == "postgresql" and len(streamed) == 1:
                cursors = [r["name"] for r in cat.query("SELECT name FROM pg_cursors")]
                assert any(name.startswith("herdbook_stream_") for name in cursors), cursors
        assert streamed == cat.query(sql) and len(streamed) == 25
        if cat.dialect == "postgresql":
            assert cat.query("SELECT name FROM pg_cursors") == []  # closed once read
