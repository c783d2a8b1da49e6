"""Import of real camera-trap folders: identity by content, broken files, card layouts, tags, clocks."""

from __future__ import annotations

import shutil

import pytest

from engine.catalogue import Catalogue
from engine.ingest import IngestError, import_folder
from tests.conftest import tree_digest


def test_reimport_and_copy_add_nothing(catalogue, data_dir, tmp_path):
    first = import_folder(catalogue, data_dir / "camtraps")
    before = catalogue.counts()
    again = import_folder(catalogue, data_dir / "camtraps")
    assert again.added == 0 and catalogue.counts() == before
    copy = tmp_path / "sd-card-copy"
    shutil.copytree(data_dir / "camtraps", copy)
    from_copy = import_folder(catalogue, copy)
    assert from_copy.added == 0
    assert from_copy.already_known == first.files_seen
    after = catalogue.counts()
    assert after["media"] == before["media"]
    assert after["media_files"] == before["media_files"] + first.files_seen  # the copy's paths are known


def test_source_folder_is_never_written(catalogue, data_dir):
    folder = data_dir / "camtrapr"
    before = tree_digest(folder)
    import_folder(catalogue, folder)
    assert tree_digest(folder) == before


def test_broken_files_are_recorded_and_import_goes_on(catalogue, data_dir, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    good = data_dir / "camtraps/animl/examples/BUOW/RCNX0712.JPG"
    shutil.copy(good, card / "good.jpg")
    (card / "truncated.jpg").write_bytes(good.read_bytes()[:5000])  # a card pulled out mid-write
    (card / "text.jpg").write_text("this is not a photo")
    (card / "empty.JPG").write_bytes(b"")
    shutil.copy(data_dir / "exif/jpg/tests/45-gps_ifd.jpg", card / "broken_exif.jpg")
    summary = import_folder(catalogue, card)
    rows = {r["file_name"]: r for r in catalogue.query("SELECT * FROM media")}
    assert set(rows) == {"good.jpg", "truncated.jpg", "text.jpg", "empty.JPG", "broken_exif.jpg"}
    assert rows["good.jpg"]["status"] == "ok" and rows["good.jpg"]["error"] is None
    for name in ("truncated.jpg", "text.jpg", "empty.JPG"):
        assert rows[name]["status"] == "error", name
        assert rows[name]["error"], name
    assert "broken" in rows["broken_exif.jpg"]["error"] and rows["broken_exif.jpg"]["status"] == "ok"
    assert {p.rsplit("/", 1)[1] for p, _ in summary.errors} == {"truncated.jpg", "text.jpg", "empty.JPG"}
    assert any("broken_exif.jpg" in line for line in summary.lines())


def test_camtrapr_stations_species_and_tagged_individuals(catalogue, data_dir):
    summary = import_folder(catalogue, data_dir / "camtrapr")
    stations = {
        r["name"]
        for r in catalogue.query(
            "SELECT DISTINCT d.name FROM deployments d JOIN media m ON m.deployment_id = d.id"
            " WHERE m.file_name LIKE 'Station%'"
        )
    }
    assert stations == {"StationA", "StationB", "StationC"}
    species = {
        r["species"]
        for r in catalogue.query(
            "SELECT DISTINCT species FROM media WHERE path LIKE '%sample_images_species_dir%' AND kind = 'image'"
        )
    }
    assert species == {"PBE", "VTA", "MNE", "EGY", "TRA", "UNID"}
    cats = catalogue.query(
        """SELECT i.code, count(*) AS n FROM sightings s JOIN individuals i ON i.id = s.individual_id
           WHERE i.species = 'Leopard Cat' GROUP BY i.code ORDER BY i.code"""
    )
    assert sum(r["n"] for r in cats) == 26  # the 26 tagged leopard-cat photos
    assert [r["code"] for r in cats] == ["1", "2", "3"]
    video = catalogue.query("SELECT * FROM media WHERE kind = 'video'")
    assert len(video) == 1 and video[0]["status"] == "not processed"
    assert any(path.endswith(".mp4") for path, _ in summary.not_processed)


def test_station_species_levels_given_by_user(catalogue, data_dir):
    import_folder(catalogue, data_dir / "camtrapr/sample_images_species_dir", levels=("station", "species"))
    row = catalogue.query(
        "SELECT d.name, m.species FROM media m JOIN deployments d ON d.id = m.deployment_id"
        " WHERE m.path LIKE '%/StationC/EGY/%' LIMIT 1"
    )[0]
    assert row == {"name": "StationC", "species": "EGY"}
    with pytest.raises(IngestError, match="unknown folder level"):
        import_folder(catalogue, data_dir / "camtrapr", levels=("station", "genus"))


def test_placeholder_gps_means_no_position_and_the_import_says_so(catalogue, data_dir):
    summary = import_folder(catalogue, data_dir / "camtraps/animl/examples/Southwest")
    rows = {r["file_name"]: r for r in catalogue.query("SELECT * FROM media")}
    for name in ("2021-06-30_SYFR0218_cougar.JPG", "2021-12-07_12080069_rabbit.JPG"):
        assert rows[name]["latitude"] is None and rows[name]["longitude"] is None
        assert "placeholder GPS" in rows[name]["warnings"]
        assert any(
            line.startswith("  warning: ") and name in line and "placeholder GPS" in line for line in summary.lines()
        )


def test_clock_correction_keeps_raw_time(catalogue, data_dir):
    import_folder(catalogue, data_dir / "camtrapr/raw_images", site="StationA")
    first = catalogue.query("SELECT * FROM media WHERE file_name = 'IMG0001.JPG' ORDER BY id LIMIT 1")[0]
    assert first["taken_at"] == first["taken_at_raw"]
    moved = catalogue.set_clock_from_reference("StationA", first["id"], "2009-04-10T06:07:00")
    assert moved == 3600.0
    after = catalogue.db["media"].get(first["id"])
    assert after["taken_at_raw"] == first["taken_at_raw"]
    assert after["taken_at"] == "2009-04-10T06:07:00" and first["taken_at_raw"] == "2009-04-10T05:07:00"
    # New photos of a corrected deployment are corrected on import too.
    import_folder(catalogue, data_dir / "camtrapr/full_size_for_ocr", site="StationA")
    others = catalogue.query("SELECT taken_at, taken_at_raw FROM media WHERE taken_at_raw IS NOT NULL")
    assert all(r["taken_at"] != r["taken_at_raw"] for r in others)


def test_unusable_catalogue_is_refused_with_its_name(tmp_path):
    from engine.catalogue import CatalogueError

    bad = tmp_path / "notes.sqlite"
    bad.write_text("shopping list")
    with pytest.raises(CatalogueError, match="notes.sqlite"):
        Catalogue(bad)
    assert bad.read_text() == "shopping list"


def test_the_station_is_the_folder_under_the_card_root_when_nobody_names_one(catalogue, data_dir, tmp_path):
    import_folder(catalogue, data_dir / "camtrapr/raw_images")  # StationA/IMG0001.JPG, StationB/IMG0001.JPG
    assert _stations(catalogue) == {
        "IMG0001.JPG": {"StationA", "StationB"},
        "IMG0002.JPG": {"StationA", "StationB"},
        "IMG0003.JPG": {"StationA", "StationB"},
    }
    # Folders the camera makes itself are not stations; a --site given by the user wins.
    card = tmp_path / "card"
    for folder, name in (("Waterhole/DCIM/100RECNX", "IMG0001.JPG"), ("DCIM/101RECNX", "IMG0002.JPG")):
        (card / folder).mkdir(parents=True)
        shutil.copy(data_dir / "camtrapr/raw_images/StationA" / name, card / folder / name)
    with Catalogue(tmp_path / "card.sqlite") as cat:
        import_folder(cat, card)
        assert _stations(cat) == {"IMG0001.JPG": {"Waterhole"}, "IMG0002.JPG": {"card"}}
    with Catalogue(tmp_path / "site.sqlite") as cat:
        import_folder(cat, card, site="North fence")
        assert _stations(cat) == {"IMG0001.JPG": {"North fence"}, "IMG0002.JPG": {"North fence"}}


def _stations(cat) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in cat.query("SELECT m.file_name, d.name FROM media m JOIN deployments d ON d.id = m.deployment_id"):
        out.setdefault(r["file_name"], set()).add(r["name"])
    return out


def test_heic_photos_from_phones_are_imported_with_their_exif(catalogue, data_dir, tmp_path):
    """A derived fixture: a real JPEG of the EXIF corpus re-encoded as HEIC with its EXIF block, as a phone writes
    it; expectations from exiftool's reading of the original (tests/oracle/exiftool_oracle.json)."""
    import json
    from pathlib import Path

    from PIL import Image

    import engine  # noqa: F401  (registers the HEIF opener)

    oracle = {
        row["SourceFile"]: row
        for row in json.loads((Path(__file__).parent / "oracle/exiftool_oracle.json").read_text())
    }["exif/jpg/Kodak_CX7530.jpg"]
    folder = tmp_path / "phone"
    folder.mkdir()
    with Image.open(data_dir / "exif/jpg/Kodak_CX7530.jpg") as jpeg:
        jpeg.save(folder / "IMG_0001.HEIC", exif=jpeg.info["exif"], quality=90)
    summary = import_folder(catalogue, folder)
    assert summary.added == 1 and not summary.errors
    row = catalogue.query("SELECT * FROM media")[0]
    assert row["status"] == "ok" and row["file_name"] == "IMG_0001.HEIC"
    assert row["taken_at_raw"] == oracle["ExifIFD:DateTimeOriginal"].replace(":", "-", 2).replace(" ", "T")
    assert row["latitude"] == pytest.approx(oracle["Composite:GPSLatitude"], abs=1e-4)
    assert row["longitude"] == pytest.approx(oracle["Composite:GPSLongitude"], abs=1e-4)
    assert row["camera_make"] == oracle["IFD0:Make"]
