"""Two stations' catalogues synced through a central one (issue 14): on a central SQLite file and on a real
PostgreSQL server (the new_catalogue fixture runs each test on both)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import decisions
from engine.catalogue import Catalogue
from engine.demo import label_folder_individuals, nyala_photo
from engine.export import export_sightings_csv
from engine.ingest import import_folder
from engine.sync import sync

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def station_cards(tmp_path_factory, data_dir):
    """Four nyala seen at both stations: A has every encounter but the last (codes = folder names), B the last
    encounters under its own codes ('S2-<n>'). Derived at test time from the real photos."""
    root = tmp_path_factory.mktemp("stations")
    chosen = []
    for folder in sorted((data_dir / "nyala/train").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        encounters = sorted({nyala_photo(f.name)[0] for f in files if nyala_photo(f.name)}, key=int)
        if len(encounters) < 2:
            continue
        for f in files:
            station, code = (
                ("B", "S2-" + folder.name) if nyala_photo(f.name)[0] == encounters[-1] else ("A", folder.name)
            )
            (root / station / code).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / station / code / f.name)
        chosen.append(folder.name)
        if len(chosen) == 4:
            break
    return root, chosen


def build_station(cards: Path, name: str, where: Path) -> Path:
    path = where / f"{name}.sqlite"
    with Catalogue(path) as cat:
        imp = import_folder(cat, cards / name, site=name)
        label_folder_individuals(cat, imp.import_id, "nyala")
    return path


@pytest.fixture
def stations(station_cards, tmp_path):
    cards, chosen = station_cards
    return build_station(cards, "A", tmp_path), build_station(cards, "B", tmp_path), chosen


def stable_rows(target) -> dict:
    with Catalogue(target) as cat:
        return {
            t: sorted(map(tuple, cat.db.execute(f"SELECT origin, origin_id FROM {t}").fetchall()))
            for t in ("deployments", "media", "detections", "individuals", "assignments")
        } | {"thumbnails": cat.db["thumbnails"].count}


def test_two_stations_share_one_population_through_the_central_catalogue(stations, new_catalogue, tmp_path):
    a_path, b_path, chosen = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        a_photos, b_photos = a.db["media"].count, b.db["media"].count
        first_a, first_b = sync(a, c), sync(b, c)
        pulled_by_a = sync(a, c)
        assert first_a.pushed["media"] == a_photos and first_b.pushed["media"] == b_photos
        assert first_b.pulled["media"] == a_photos and pulled_by_a.pulled["media"] == b_photos
        # Central holds both stations: every photo, sighting and individual, deployments named by station.
        assert c.db["media"].count == a_photos + b_photos
        assert c.db["individuals"].count == 8
        assert sorted(r[0] for r in c.db.execute("SELECT name FROM deployments").fetchall()) == ["A/A", "B/B"]
        assert c.counts()["sightings"] == c.db["detections"].count
        assert c.db["thumbnails"].count == c.db["detections"].count  # a remote reviewer sees every animal
        # Each station now has the other's individuals and their gallery (photos as 'remote', with thumbnails).
        codes_at_a = {r[0] for r in a.db.execute("SELECT code FROM individuals").fetchall()}
        assert codes_at_a == set(chosen) | {"S2-" + n for n in chosen}
        assert pulled_by_a.pulled["individuals"] == 4 and pulled_by_a.pulled["detections"] > 0
        remote = a.query("SELECT m.path, m.status FROM media m WHERE m.origin IS NOT NULL")
        assert remote and all(r["status"] == "remote" for r in remote)
        assert all("/B/" in r["path"] for r in remote)  # the paths of B's card, kept as B has them
        assert a.counts()["sightings"] == a.db["detections"].count
        # A second sync moves nothing, either way.
        assert sync(a, c).moved == 0 and sync(b, c).moved == 0
        # The coordinator's export covers both stations.
        rows = export_sightings_csv(c, tmp_path / "all.csv").rows["sightings"]
    lines = (tmp_path / "all.csv").read_text().splitlines()
    assert rows == len(lines) - 1 == a_photos + b_photos
    assert any(",A/A," in line or "A/A" in line for line in lines) and any("B/B" in line for line in lines)


def synced_first_sighting(a: Catalogue, c: Catalogue) -> tuple[int, int, int]:
    """After A's sync: A's first detection, its id at central, and the individual it stands for at A."""
    sync(a, c)
    det_a = a.query("SELECT id FROM detections ORDER BY id LIMIT 1")[0]["id"]
    det_c = c.query("SELECT id FROM detections WHERE origin = ? AND origin_id = ?", [a.uuid, det_a])[0]["id"]
    own = a.query("SELECT individual_id FROM sighting_state WHERE detection_id = ?", [det_a])[0]["individual_id"]
    return det_a, det_c, own


def standing_codes(cat: Catalogue, detection_id: int) -> list[dict]:
    """The code of the individual a detection's standing sighting names (none when nothing stands)."""
    return cat.query(
        "SELECT i.code FROM sighting_state s JOIN individuals i ON i.id = s.individual_id WHERE s.detection_id = ?",
        [detection_id],
    )


def test_a_sync_killed_midway_resumes_to_what_a_clean_sync_gives(stations, new_catalogue):
    a_path, _, _ = stations
    clean, killed = new_catalogue("clean"), new_catalogue("killed")
    with Catalogue(a_path) as a, Catalogue(clean) as c:
        sync(a, c)
    Catalogue(killed).close()
    cmd = [sys.executable, "-m", "herdbook", "--catalogue", str(a_path), "sync", "--to", str(killed)]
    proc = subprocess.Popen([*cmd, "--progress-lines"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("progress detections"):  # photos are in, detections are not yet
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen
    partial = stable_rows(killed)
    assert partial["media"] and not partial["assignments"], "killed before the decisions were pushed"
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "pushed:" in resumed.stdout
    assert stable_rows(killed) == stable_rows(clean)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "pushed: nothing" in again.stdout and "pulled: nothing" in again.stdout


def test_conflicting_decisions_from_two_places_are_both_kept_and_the_later_stands(stations, new_catalogue):
    a_path, _, _ = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(central) as c:
        det_a, det_c, own = synced_first_sighting(a, c)
        other_c = c.query("SELECT id, code FROM individuals WHERE origin_id != ? ORDER BY id LIMIT 1", [own])[0]
        # The coordinator re-assigns the sighting centrally; later, the station (offline) rejects it.
        decisions.confirm(c, det_c, other_c["id"], who="coordinator")
        time.sleep(0.05)  # decision times are to the millisecond (the next test shows why that matters)
        a.reject(det_a, own, who="ranger")
        report = sync(a, c)
        assert report.pushed["assignments"] == 1 and report.pulled["assignments"] == 1
        for cat, det in ((a, det_a), (c, det_c)):
            log = cat.query("SELECT status, who FROM assignments WHERE detection_id = ? ORDER BY id", [det])
            assert {"coordinator", "ranger"} <= {r["who"] for r in log}  # both visible in both logs
        # The ranger's rejection was made last: it stands at both, whichever order the rows arrived in. It rejects
        # the station's own individual, so the coordinator's confirmation of another one stands with it.
        standing = [standing_codes(cat, det) for cat, det in ((a, det_a), (c, det_c))]
        assert standing == [[{"code": other_c["code"]}]] * 2


def test_two_confirmations_within_one_second_resolve_to_the_later_at_both_ends(stations, new_catalogue):
    """The coordinator and the (offline) station each re-assign one sighting, 50 ms apart. Each catalogue gets the
    other's row after its own, so row order would leave them disagreeing; decision times to the millisecond make
    the later one stand at both."""
    a_path, _, _ = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(central) as c:
        det_a, det_c, own = synced_first_sighting(a, c)
        species = a.db["individuals"].get(own)["species"]
        others = a.query("SELECT id, code FROM individuals WHERE id != ? AND species = ? ORDER BY id", [own, species])
        coordinators, rangers = others[0], others[1]
        coordinators_c = c.query("SELECT id FROM individuals WHERE origin_id = ?", [coordinators["id"]])[0]["id"]
        decisions.confirm(c, det_c, coordinators_c, who="coordinator")
        time.sleep(0.05)
        decisions.confirm(a, det_a, rangers["id"], who="ranger")
        sync(a, c)
        standing = [standing_codes(cat, det) for cat, det in ((a, det_a), (c, det_c))]
        assert standing == [[{"code": rangers["code"]}]] * 2


def test_one_animal_named_at_two_stations_is_proposed_for_a_merge_and_exports_as_one(stations, new_catalogue, tmp_path):
    """Both stations embed their photos (bundled model, coat patterns); after the sync the central catalogue
    proposes pairs across stations. The truth is known: A's '<n>' is B's 'S2-<n>'."""
    from engine.merge_proposals import propose_for_current_model
    from engine.pipeline import Pipeline

    a_path, b_path, chosen = stations
    central = new_catalogue("central")
    for path in (a_path, b_path):
        with Catalogue(path) as cat:
            Pipeline(cat, detector="whole-frame").embed()
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        sync(a, c), sync(b, c)
        proposals = propose_for_current_model(c)
        origin = {r["code"]: r["origin"] for r in c.query("SELECT code, origin FROM individuals")}
        assert proposals, "no proposal for four animals seen at both stations"
        for p in proposals:  # only across stations, never two of one station's animals
            assert origin[p.keep_code] != origin[p.merge_code] and p.species == "nyala"
            assert "matching pattern point" in p.reason and 0 <= p.probability <= 1
        correct = [p for p in proposals if p.merge_code == "S2-" + p.keep_code]
        assert len(correct) >= len(proposals) / 2, [(p.keep_code, p.merge_code) for p in proposals]
        first = correct[0]
    listed = subprocess.run(
        [sys.executable, "-m", "herdbook", "--catalogue", str(central), "merge-proposals", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # the command line lists the same proposals
    assert listed.returncode == 0, listed.stderr
    assert [(p["keep_code"], p["merge_code"]) for p in json.loads(listed.stdout)] == [
        (p.keep_code, p.merge_code) for p in proposals
    ]
    with Catalogue(central) as c:
        decisions.merge(c, first.keep_id, first.merge_id, who="coordinator")
        export_sightings_csv(c, tmp_path / "merged.csv")
    codes = [line.split(",")[0] for line in (tmp_path / "merged.csv").read_text().splitlines()[1:]]
    assert first.merge_code not in codes and codes.count(first.keep_code) > 0  # one individual, both histories
    with Catalogue(a_path) as a, Catalogue(central) as c:
        assert sync(a, c).pulled["merges"] == 1  # the station learns of the merge
        gone = a.query("SELECT merged_into FROM individuals WHERE code = ?", [first.merge_code])[0]["merged_into"]
        assert gone == a.query("SELECT id FROM individuals WHERE code = ?", [first.keep_code])[0]["id"]


def test_proposed_merges_are_reviewed_with_keys_in_the_individuals_tab(qtbot, stations, tmp_path):
    """After a sync the Individuals tab finds the proposals in a worker thread (a second press while it runs does
    nothing; a cancelled search says so), shows them, and M merges the selected pair (U undoes it); a pulled
    animal's gallery shows the crop that came with the sync."""
    pytest.importorskip("PySide6")
    from PySide6.QtCore import Qt

    from desktop.individuals import IndividualsWidget
    from engine.pipeline import Pipeline

    a_path, b_path, _ = stations
    for path in (a_path, b_path):
        with Catalogue(path) as cat:
            Pipeline(cat, detector="whole-frame").embed()
    central = tmp_path / "central.sqlite"
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        sync(a, c), sync(b, c), sync(a, c)
    cat = Catalogue(a_path)  # the station, which now knows B's animals too
    widget = IndividualsWidget(cat, who="tester")
    qtbot.addWidget(widget)
    widget.show()
    widget.find_proposals()
    search = widget.worker
    widget.find_proposals()  # a second press while it runs starts nothing
    assert widget.worker is search
    widget.stop_work()  # cancelled (the window closing does this): it ends, and says so
    qtbot.waitUntil(lambda: "cancelled" in widget.status.text(), timeout=20_000)
    assert not search.thread.isRunning() and not widget.proposals.isVisible()
    widget.find_proposals()
    assert widget.worker is not search
    qtbot.waitUntil(lambda: widget.proposals.isVisible() or "no proposed" in widget.status.text(), timeout=60_000)
    assert widget.proposals.count() > 0, widget.status.text()
    first = widget.proposals.current_proposal()
    qtbot.keyClick(widget.proposals, Qt.Key.Key_M)
    merged = cat.query("SELECT merged_into FROM individuals WHERE id = ?", [first.merge_id])[0]["merged_into"]
    assert merged == first.keep_id and "merged" in widget.status.text()
    remote_icons = [widget.gallery.item(i).icon().isNull() for i in range(widget.gallery.count())]
    assert remote_icons and not any(remote_icons)  # B's photos are not here: their synced crops are shown
    qtbot.keyClick(widget.proposals, Qt.Key.Key_U)
    assert cat.query("SELECT merged_into FROM individuals WHERE id = ?", [first.merge_id])[0]["merged_into"] is None
    cat.close()


def test_a_second_pull_reads_only_what_is_new_and_a_later_rejection_reaches_the_gallery(stations, new_catalogue):
    a_path, b_path, _ = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        sync(a, c), sync(b, c)
        pulled = sync(a, c).pulled
        assert pulled["detections"] > 0
        # The coordinator rejects one of B's sightings centrally: A's copy of B's gallery loses it.
        det_c, ind_c = c.db.execute(
            "SELECT s.detection_id, s.individual_id FROM sighting_state s JOIN detections d ON d.id = s.detection_id "
            "WHERE d.origin = ? ORDER BY s.detection_id LIMIT 1",
            [b.uuid],
        ).fetchone()
        decisions.reject(c, det_c, ind_c, who="coordinator")
        before = a.counts()["sightings"]
        again = sync(a, c)
        assert {table: n for table, n in again.pulled.items() if n} == {"assignments": 1}
        assert a.counts()["sightings"] == before - 1


def trail(cat: Catalogue, table: str, detection_id: int) -> list[str]:
    return [r["who"] for r in cat.query(f"SELECT who FROM {table} WHERE detection_id = ? ORDER BY at", [detection_id])]


def test_a_side_and_species_corrected_after_a_sync_reach_every_catalogue_and_the_later_stands(stations, new_catalogue):
    """A ranger corrects a flank and a species after A's photos were synced: both reach central and B's copy of A's
    gallery. Then the coordinator sets the flank centrally and the ranger, offline, changes it again later: the
    ranger's stands at every catalogue, though A receives the coordinator's older row after its own."""
    a_path, b_path, _ = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        det_a, det_c, _ = synced_first_sighting(a, c)
        sync(b, c)
        det_b = b.query("SELECT id FROM detections WHERE origin = ? AND origin_id = ?", [a.uuid, det_a])[0]["id"]
        decisions.set_detection_side(a, det_a, "right", who="ranger")
        decisions.set_detection_species(a, det_a, "Tragelaphus angasii", who="ranger")
        report = sync(a, c)
        assert report.pushed["side_changes"] == 1 and report.pushed["species_changes"] == 1
        sync(b, c)
        for cat, det in ((a, det_a), (c, det_c), (b, det_b)):
            row = cat.query("SELECT viewpoint, species FROM detections WHERE id = ?", [det])[0]
            assert (row["viewpoint"], row["species"]) == ("right", "Tragelaphus angasii")
            assert trail(cat, "side_changes", det)[-1] == trail(cat, "species_changes", det)[-1] == "ranger"
        # The coordinator sets the flank centrally; later the ranger, offline, says it is not known after all.
        decisions.set_detection_side(c, det_c, "left", who="coordinator")
        time.sleep(0.05)  # change times are to the millisecond
        decisions.set_detection_side(a, det_a, None, who="ranger")
        again = sync(a, c)
        assert again.pushed["side_changes"] == 1 and again.pulled["side_changes"] == 1
        sync(b, c)
        for cat, det in ((a, det_a), (c, det_c), (b, det_b)):
            assert cat.query("SELECT viewpoint FROM detections WHERE id = ?", [det])[0]["viewpoint"] is None
            assert trail(cat, "side_changes", det)[-2:] == ["coordinator", "ranger"]  # both kept everywhere
            assert decisions.side_of(cat, det) == (None, "ranger")
        assert sync(a, c).moved == 0 and sync(b, c).moved == 0


def test_a_side_set_before_a_detection_joins_the_gallery_comes_with_it(stations, new_catalogue):
    """B sets the flank of a detection while nothing stands on it (its sighting rejected): A's pull passes the
    change over, A holding no copy. Confirmed later, the detection joins the gallery A pulls, and its trail with it:
    A knows who set the side, and an older change arriving later cannot overrule it."""
    a_path, b_path, _ = stations
    central = new_catalogue("central")
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        det_b, ind_b = b.db.execute("SELECT detection_id, individual_id FROM sighting_state LIMIT 1").fetchone()
        decisions.reject(b, det_b, ind_b, who="ranger-b")
        decisions.set_detection_side(b, det_b, "right", who="ranger-b")
        sync(b, c), sync(a, c)
        copy = "SELECT id FROM detections WHERE origin = ? AND origin_id = ?"
        assert a.query(copy, [b.uuid, det_b]) == [] and sync(a, c).moved == 0
        b.confirm(det_b, ind_b, who="ranger-b")
        sync(b, c)
        pulled = sync(a, c).pulled
        det_a = a.query(copy, [b.uuid, det_b])[0]["id"]
        assert pulled["side_changes"] >= 1
        assert decisions.side_of(a, det_a) == ("right", "ranger-b")
        assert trail(a, "side_changes", det_a)[-1] == "ranger-b"
        # A change made centrally before B's (its clock earlier), entered only now, reaches A after B's.
        det_c = c.query(copy, [b.uuid, det_b])[0]["id"]
        with c.transaction():
            c.db["side_changes"].insert(
                {"detection_id": det_c, "side": "left", "who": "coordinator", "at": "2026-01-01T00:00:00.000+00:00"}
            )
        assert sync(a, c).pulled["side_changes"] == 1
        assert decisions.side_of(a, det_a) == ("right", "ranger-b")  # the later change still stands
        assert sync(a, c).moved == 0


def test_thumbnails_are_the_box_of_the_upright_photo(tmp_path, data_dir):
    """The crop that travels instead of the photo shows the detection's box (its shape), at most 192 px."""
    import io

    from PIL import Image

    from engine.sync import THUMBNAIL_SIDE, SyncReport, make_thumbnails

    with Catalogue(tmp_path / "c.sqlite") as cat:
        import_folder(cat, data_dir / "camtraps" / "megadetector", site="x")
        rows = cat.query("SELECT id, width, height FROM media WHERE status = 'ok' ORDER BY id")
        boxes = {}
        for r in rows:  # the left third, full height: a tall box on these wide frames
            boxes[cat.add_detection(r["id"], (0, 0, r["width"] / 3, r["height"]), source="t", label="animal")] = r
        report = SyncReport()
        assert make_thumbnails(cat, report) == len(rows) and not report.thumbnail_errors
        for det, jpeg in cat.db.execute("SELECT detection_id, jpeg FROM thumbnails").fetchall():
            size = Image.open(io.BytesIO(jpeg)).size
            r = boxes[det]
            assert max(size) == THUMBNAIL_SIDE
            assert abs(size[0] / size[1] - (r["width"] / 3) / r["height"]) < 0.03, (size, r)
        assert make_thumbnails(cat, report) == 0  # made once


def test_a_pull_read_a_page_of_the_central_log_at_a_time_leaves_what_one_read_leaves(
    stations, new_catalogue, tmp_path, monkeypatch
):
    """The pull reads central's decision log in pages (memory stays flat at a million detections); pages of 2
    rows must leave a station exactly as one read does, later decisions on earlier pages' gallery included."""
    import sqlite3

    import engine.sync

    a_path, b_path, _ = stations
    central = new_catalogue("central")
    paged = tmp_path / "A-paged.sqlite"
    with Catalogue(a_path) as a, Catalogue(b_path) as b, Catalogue(central) as c:
        sync(a, c), sync(b, c)
        det_c, ind_c = c.db.execute(
            "SELECT s.detection_id, s.individual_id FROM sighting_state s JOIN detections d ON d.id = s.detection_id "
            "WHERE d.origin = ? ORDER BY s.detection_id LIMIT 1",
            [b.uuid],
        ).fetchone()
        decisions.reject(c, det_c, ind_c, who="coordinator")  # a later row on a detection of an earlier page
        with sqlite3.connect(paged) as copy:
            a.db.conn.backup(copy)  # the station as it stood before pulling B's animals
        before = c.db.execute("SELECT max(id) FROM assignments WHERE origin = ?", [a.uuid]).fetchone()[0]
        new_rows = c.db.execute("SELECT count(*) FROM assignments WHERE id > ?", [before]).fetchone()[0]
        one_read = sync(a, c).pulled
    monkeypatch.setattr(engine.sync, "LOG_PAGE", 2)
    with Catalogue(paged) as p, Catalogue(central) as c:
        paged_read = sync(p, c).pulled
    assert paged_read == one_read and new_rows > 2 * 2  # three pages or more

    def held(path) -> dict:
        """Each table's rows by stable id (a station's own rows: no origin, their own id), and what stands."""
        key = "COALESCE({0}.origin, ''), COALESCE({0}.origin_id, {0}.id)"
        with Catalogue(path) as cat:
            out = {
                t: sorted(cat.db.execute(f"SELECT {key.format(t)} FROM {t}").fetchall())
                for t in ("media", "detections", "individuals", "assignments")
            }
            out["standing"] = sorted(
                cat.db.execute(
                    f"SELECT {key.format('d')}, {key.format('i')} FROM sighting_state s "
                    "JOIN detections d ON d.id = s.detection_id JOIN individuals i ON i.id = s.individual_id"
                ).fetchall()
            )
            return out

    assert held(paged) == held(a_path)
