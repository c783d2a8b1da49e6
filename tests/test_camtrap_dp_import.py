"""Reading Camtrap DP packages into a catalogue: Herdbook's own export of a real card reads back to the same
individuals on the same photos, and the standard's own example (an Agouti export whose media are web URLs) reads
its deployments and species without downloading anything; a second read adds nothing."""

from __future__ import annotations

import shutil

import pytest

from engine.camtrap_dp_import import import_camtrap_dp
from engine.catalogue import Catalogue
from engine.export import export_camtrap_dp
from engine.ingest import IngestError
from tests.conftest import import_placed


def _sightings(cat: Catalogue) -> set[tuple[str, str]]:
    return {
        (r["code"], r["sha256"])
        for r in cat.query(
            """SELECT i.code, m.sha256 FROM sightings s JOIN individuals i ON i.id = s.individual_id
               JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id"""
        )
    }


def _station_card(data_dir, tmp_path, also=None) -> tuple:
    """A copy of camtrapR's tagged card, imported with its deployments placed, then exported as Camtrap DP into
    the card itself (relative file paths); ``also(cat)`` adds to the station's catalogue before the export.
    Returns the card, the station's sightings and its deployment names."""
    card = tmp_path / "card"
    shutil.copytree(data_dir / "camtrapr/sample_images_indiv_tag", card)
    with Catalogue(tmp_path / "station.sqlite") as cat:
        import_placed(cat, card)
        if also:
            also(cat)
        export_camtrap_dp(cat, card)
        return card, _sightings(cat), {r["name"] for r in cat.query("SELECT name FROM deployments")}


def test_herdbooks_own_package_reads_back_to_the_same_individuals_on_the_same_photos(data_dir, tmp_path):
    def boxed_sighting(cat):
        photo = cat.query("SELECT id, width, height FROM media ORDER BY id LIMIT 1")[0]
        boxed = cat.add_detection(photo["id"], (10, 20, photo["width"] / 2, photo["height"] / 4), source="manual")
        cat.confirm(boxed, cat.ensure_individual("7", "Leopard Cat"), "ann")

    card, expected, deployments = _station_card(data_dir, tmp_path, boxed_sighting)
    assert len(expected) == 27
    with Catalogue(tmp_path / "central.sqlite") as cat:
        report = import_camtrap_dp(cat, card)
        assert report.problems == [] and report.media_local == cat.counts()["media"] > 0
        assert _sightings(cat) == expected and report.individuals == 4
        assert {r["species"] for r in cat.query("SELECT species FROM individuals")} == {"leopard cat"}
        assert {r["name"] for r in cat.query("SELECT name FROM deployments")} == deployments
        assert all(d["latitude"] == 5.1 for d in cat.query("SELECT latitude FROM deployments"))
        box = cat.query("SELECT d.* FROM detections d WHERE d.x IS NOT NULL")
        assert (
            len(box) == 1 and box[0]["x"] == pytest.approx(10, abs=0.01) and box[0]["y"] == pytest.approx(20, abs=0.01)
        )
        taken = cat.query("SELECT taken_at FROM media LIMIT 1")[0]["taken_at"]
        assert taken.endswith("+08:00")  # the package's timestamps, offset included
        again = import_camtrap_dp(cat, card)
        assert again.media_local == 0 and again.media_known == report.media_local and _sightings(cat) == expected
        assert cat.counts()["detections"] == len(expected)  # nothing twice


def test_the_standards_example_package_reads_without_downloading_its_web_media(data_dir, tmp_path):
    example = data_dir.parent / "camtrap-dp-1.0" / "example"
    with Catalogue(tmp_path / "c.sqlite") as cat:
        report = import_camtrap_dp(cat, example)
        assert report.deployments == 4 and report.media_local == 0
        # 10 media rows name files beside the package that the example does not ship: each is listed by its row
        # and recorded with the problem, so that its observations still come in.
        assert report.media_unreadable == len(report.problems) == 10
        assert all("media.csv row" in p and "No such file" in p for p in report.problems)
        media = cat.query("SELECT * FROM media WHERE status != 'error'")
        assert len(media) == report.media_remote > 0
        assert all(m["path"].startswith("https://") and m["status"] == "not processed" for m in media)
        assert all("not downloaded" in m["error"] for m in media)
        dep = cat.deployment("00a2c20d")
        assert (dep["latitude"], dep["longitude"]) == (51.496, 4.774) and "Reconyx" in dep["camera"]
        species = {m["species"] for m in media if m["species"]}
        assert "Anas platyrhynchos" in species  # a media-level observation's scientific name
        again = import_camtrap_dp(cat, example)
        assert again.media_remote == again.media_unreadable == 0 and cat.counts()["media"] == len(media) + 10


def test_a_folder_that_is_not_a_package_is_refused_by_name(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as cat, pytest.raises(IngestError, match="no datapackage.json"):
        import_camtrap_dp(cat, tmp_path)


def test_reading_a_package_shows_progress_and_a_cancel_writes_nothing(data_dir, tmp_path):
    import threading

    card, _, _ = _station_card(data_dir, tmp_path)
    with Catalogue(tmp_path / "central.sqlite") as cat:
        stop = threading.Event()
        seen = []

        def progress(done, total):
            seen.append((done, total))
            stop.set()  # the user presses Cancel after the first batch of files

        report = import_camtrap_dp(cat, card, progress=progress, cancel=stop)
        assert report.cancelled and seen and seen[0][1] >= seen[0][0] > 0
        assert cat.counts()["media"] == 0 and cat.counts()["deployments"] == 0  # nothing written
        assert "nothing written" in report.lines()[0]
        done = []
        report = import_camtrap_dp(cat, card, progress=lambda d, t: done.append((d, t)))
        assert not report.cancelled and done[-1][0] == done[-1][1] == report.media_local
