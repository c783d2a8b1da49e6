"""Exports read back equal to the catalogue; Camtrap DP required fields; formula injection neutralised."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from engine.catalogue import Catalogue
from engine.demo import label_folder_individuals
from engine.export import (
    DEPLOYMENT_COLUMNS,
    MEDIA_COLUMNS,
    OBSERVATION_COLUMNS,
    ExportError,
    export_camtrap_dp,
    export_sightings_csv,
)
from engine.ingest import import_folder
from tests.conftest import import_placed

REQUIRED = {
    "deployments.csv": ["deploymentID", "latitude", "longitude", "deploymentStart", "deploymentEnd"],
    "media.csv": ["mediaID", "deploymentID", "timestamp", "filePath", "filePublic", "fileMediatype"],
    "observations.csv": [
        "observationID",
        "deploymentID",
        "eventStart",
        "eventEnd",
        "observationLevel",
        "observationType",
    ],
}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def tagged(catalogue, data_dir):
    """The camtrapR leopard cats (XMP individuals) plus two nyala individuals with whole-frame boxes."""
    import_folder(catalogue, data_dir / "camtrapr")
    imp = import_folder(catalogue, data_dir / "nyala/train/75", site="nyala-site")
    label_folder_individuals(catalogue, imp.import_id, "nyala")
    stations = [r["name"] for r in catalogue.query("SELECT name FROM deployments WHERE name != 'nyala-site'")]
    assert {"StationA", "StationB", "StationC", "raw_images"} <= set(stations)  # card folders without camtrapR names
    for name in stations:
        catalogue.update_deployment(name, latitude=5.1, longitude=117.9, utc_offset="+08:00")
    catalogue.update_deployment("nyala-site", latitude=-27.6, longitude=-32.3, utc_offset="+02:00")
    return catalogue


def test_sightings_csv_reads_back_equal(tagged, tmp_path):
    report = export_sightings_csv(tagged, tmp_path / "s.csv")
    rows = read_csv(tmp_path / "s.csv")
    expected = tagged.query(
        """SELECT s.detection_id, i.code, i.species, m.path, m.sha256, s.who FROM sightings s
           JOIN individuals i ON i.id = s.individual_id JOIN detections d ON d.id = s.detection_id
           JOIN media m ON m.id = d.media_id"""
    )
    assert report.rows["sightings"] == len(rows) == len(expected) > 26
    got = {
        (int(r["detection_id"]), r["individual_code"], r["species"], r["file"], r["media_sha256"], r["confirmed_by"])
        for r in rows
    }
    assert got == {tuple(e.values()) for e in expected}
    nyala = [r for r in rows if r["species"] == "nyala"]
    assert all(r["scientific_name"] == "Tragelaphus angasii" and r["viewpoint"] in ("left", "right") for r in nyala)
    assert all(float(r["box_width"]) > 0 for r in nyala)


def test_undo_removes_a_sighting_from_the_export(tagged, tmp_path):
    before = len(read_csv(export_sightings_csv(tagged, tmp_path / "a.csv").path))
    latest = tagged.query("SELECT detection_id FROM sightings ORDER BY assignment_id DESC LIMIT 1")[0]
    undone = tagged.undo_last(who="tester", detection_id=latest["detection_id"])  # a named detection: anyone's
    after_rows = read_csv(export_sightings_csv(tagged, tmp_path / "b.csv").path)
    assert len(after_rows) == before - 1
    undone_detection = tagged.db["assignments"].get(undone)["detection_id"]
    assert undone_detection not in {int(r["detection_id"]) for r in after_rows}
    assert tagged.db["assignments"].count == before + 1  # the undo is a new row, nothing was deleted


def camtrap_dp_errors(package_dir, standard_dir) -> list[str]:
    """Validate a package against the standard's own files (local copies in ../shared/camtrap-dp-1.0; nothing may
    be downloaded): the descriptor against the Camtrap DP profile with jsonschema (its remote references, to the
    generic Data Package and GeoJSON schemas, resolve to empty schemas: frictionless checks the generic package
    itself), and every table against its table schema with frictionless. Returns the errors, empty when valid."""
    frictionless = pytest.importorskip("frictionless")
    import jsonschema
    import referencing

    descriptor = json.loads((package_dir / "datapackage.json").read_text())
    # The 1.0 profile writes one reference as '#$defs/version'; JSON Pointer needs '#/$defs/version'.
    profile = json.loads((standard_dir / "camtrap-dp-profile.json").read_text().replace('"#$defs/', '"#/$defs/'))
    registry = referencing.Registry(
        retrieve=lambda uri: referencing.Resource.from_contents({}, referencing.jsonschema.DRAFT7)
    )
    validator = jsonschema.validators.validator_for(profile)(profile, registry=registry)
    errors = [f"datapackage.json: {e.message}" for e in validator.iter_errors(descriptor)]
    descriptor.pop("profile")  # frictionless's own Data Package profile
    tables = ("deployments", "media", "observations")  # the standard's tables (a package may add its own)
    descriptor["resources"] = [r for r in descriptor["resources"] if r["name"] in tables]
    for resource in descriptor["resources"]:
        resource["schema"] = str(standard_dir / f"{resource['name']}-table-schema.json")
    local = package_dir / "datapackage.local.json"
    local.write_text(json.dumps(descriptor))
    try:
        with frictionless.system.use_context(trusted=True):
            report = frictionless.Package(str(local)).validate()
    finally:
        local.unlink()
    errors += [f"{task.name}: {e.type}: {e.message}" for task in report.tasks for e in task.errors]
    return errors + [f"package: {e.type}: {e.message}" for e in report.errors]


def test_camtrap_dp_validates_against_the_standard(tagged, data_dir, tmp_path):
    standard = data_dir.parent / "camtrap-dp-1.0"
    assert camtrap_dp_errors(standard / "example", standard) == []  # the validator accepts the standard's example
    # Person and vehicle boxes, as MegaDetector gives them, are not animals.
    photo = tagged.query("SELECT id, width, height FROM media WHERE file_name LIKE 'StationA__%' LIMIT 1")[0]
    person = tagged.add_detection(photo["id"], (1, 1, 20, 40), source="megadetector-json", label="person", score=0.9)
    out = tmp_path / "dp"
    export_camtrap_dp(tagged, out)
    assert camtrap_dp_errors(out, standard) == []
    broken = tmp_path / "broken"  # what Herdbook wrote before: an absolute filePath and one licence
    shutil.copytree(out, broken)
    (broken / "media.csv").write_text((out / "media.csv").read_text().replace("file:///", "/", 1))
    descriptor = json.loads((out / "datapackage.json").read_text())
    (broken / "datapackage.json").write_text(json.dumps({**descriptor, "licenses": descriptor["licenses"][:1]}))
    found = "\n".join(camtrap_dp_errors(broken, standard))
    assert "constraint-error" in found and "filePath" in found and "too short" in found
    package = json.loads((out / "datapackage.json").read_text())
    assert {lic["scope"] for lic in package["licenses"]} == {"data", "media"}
    media = read_csv(out / "media.csv")
    assert all(m["filePath"].startswith("file:///") for m in media)  # the photos lie outside the package
    observations = {o["observationID"]: o for o in read_csv(out / "observations.csv")}
    assert observations[f"det{person}"]["observationType"] == "human"
    assert not observations[f"det{person}"]["scientificName"]
    # Exported into the card's own folder, the package points at its photos by relative paths.
    card = tmp_path / "card"
    shutil.copytree(data_dir / "camtrapr", card)
    with Catalogue(tmp_path / "card.sqlite") as cat:
        import_placed(cat, card)
        export_camtrap_dp(cat, card)
    assert camtrap_dp_errors(card, standard) == []
    paths = [m["filePath"] for m in read_csv(card / "media.csv")]
    assert paths and all(not p.startswith(("/", "file:")) and (card / p).is_file() for p in paths)


def test_camtrap_dp_package(tagged, tmp_path):
    # Two animals boxed by hand in one photo are two observations with relative boxes.
    photo = tagged.query("SELECT id, width, height FROM media WHERE file_name LIKE 'StationC__%' LIMIT 1")[0]
    cat_id = tagged.ensure_individual("1", "Leopard Cat")
    half_w, half_h = photo["width"] / 2, photo["height"] / 2
    for box in ((0.0, 0.0, half_w, half_h), (half_w, half_h, half_w / 2, half_h / 2)):
        det = tagged.add_detection(photo["id"], box, source="manual", label="animal")
        tagged.confirm(det, cat_id, who="tester")
    out = tmp_path / "dp"
    report = export_camtrap_dp(tagged, out)
    package = json.loads((out / "datapackage.json").read_text())
    for key in ("profile", "created", "contributors", "project", "spatial", "temporal", "taxonomic", "resources"):
        assert package[key], key
    assert package["project"]["individualAnimals"] is True
    assert {r["name"] for r in package["resources"]} == {"deployments", "media", "observations"}
    columns = {
        "deployments.csv": DEPLOYMENT_COLUMNS,
        "media.csv": MEDIA_COLUMNS,
        "observations.csv": OBSERVATION_COLUMNS,
    }
    tables = {}
    for name, required in REQUIRED.items():
        rows = read_csv(out / name)
        assert list(rows[0].keys()) == columns[name]
        for row in rows:
            assert all(row[f] for f in required), (name, row)
        tables[name] = rows
    assert report.rows["observations"] == len(tables["observations.csv"])
    media_ids = {m["mediaID"] for m in tables["media.csv"]}
    deployment_ids = {d["deploymentID"] for d in tables["deployments.csv"]}
    with_individual = [o for o in tables["observations.csv"] if o["individualID"]]
    assert len(with_individual) == 26 + 2  # every leopard-cat sighting, and the two boxed by hand
    boxed = sorted((o for o in with_individual if o["bboxX"]), key=lambda o: float(o["bboxX"]))
    assert [(float(o["bboxX"]), float(o["bboxY"]), float(o["bboxWidth"]), float(o["bboxHeight"])) for o in boxed] == [
        (0.0, 0.0, 0.5, 0.5),
        (0.5, 0.5, 0.25, 0.25),
    ]
    assert boxed[0]["mediaID"] == boxed[1]["mediaID"] == str(photo["id"])
    for obs in tables["observations.csv"]:
        assert obs["mediaID"] in media_ids and obs["deploymentID"] in deployment_ids
        assert obs["eventStart"][-6] in "+-"  # ISO 8601 with offset
        assert obs["classificationMethod"] in ("human", "machine")
    assert {o["scientificName"] for o in with_individual} == {"Prionailurus bengalensis"}
    # The nyala photos carry no time at all: listed as skipped, never given an invented one.
    assert sum("nyala/train/75" in s and "no time" in s for s in report.skipped) == 12


def test_camtrap_dp_names_missing_coordinates(catalogue, data_dir, tmp_path):
    import_folder(catalogue, data_dir / "camtrapr/raw_images", site="Kinabatangan-3")
    with pytest.raises(ExportError, match="Kinabatangan-3"):
        export_camtrap_dp(catalogue, tmp_path / "dp")
    catalogue.update_deployment("Kinabatangan-3", latitude=5.4, longitude=118.1)
    with pytest.raises(ExportError, match="UTC offset"):
        export_camtrap_dp(catalogue, tmp_path / "dp")
    report = export_camtrap_dp(catalogue, tmp_path / "dp", utc_offset="+08:00")
    assert report.rows["media"] == 6


def test_formula_injection_is_neutralised(tagged, tmp_path):
    det = tagged.query("SELECT id FROM detections ORDER BY id LIMIT 1")[0]["id"]
    evil = tagged.ensure_individual('=HYPERLINK("http://x")', "nyala", name="@SUM(A1)")
    tagged.confirm(det, evil, who="+tester")
    rows = read_csv(export_sightings_csv(tagged, tmp_path / "s.csv").path)
    row = next(r for r in rows if int(r["detection_id"]) == det)
    assert row["individual_code"] == '\'=HYPERLINK("http://x")'
    assert row["individual_name"] == "'@SUM(A1)" and row["confirmed_by"] == "'+tester"
    nyala = next(r for r in rows if r["species"] == "nyala" and r["deployment"] == "nyala-site")
    assert nyala["latitude"] == "-27.6" and nyala["longitude"] == "-32.3"  # numbers are never quoted
    export_camtrap_dp(tagged, tmp_path / "dp")
    obs = read_csv(tmp_path / "dp" / "observations.csv")
    assert any(o["individualID"] == '\'=HYPERLINK("http://x")' for o in obs)


def test_camtrap_dp_filters_by_site_date_and_species(tagged, tmp_path):
    report = export_camtrap_dp(tagged, tmp_path / "dp", site="StationA", date_from="2009-04-22")
    media = read_csv(tmp_path / "dp" / "media.csv")
    assert report.rows["media"] == len(media) > 0
    assert {m["deploymentID"] for m in media} == {"StationA"}
    assert all(m["timestamp"][:10] >= "2009-04-22" for m in media)
    assert {d["deploymentID"] for d in read_csv(tmp_path / "dp" / "deployments.csv")} == {"StationA"}
    export_camtrap_dp(tagged, tmp_path / "cats", species="Leopard Cat")
    obs = read_csv(tmp_path / "cats" / "observations.csv")
    assert {o["scientificName"] for o in obs} == {"Prionailurus bengalensis"}  # no other species
    assert sum(bool(o["individualID"]) for o in obs) == 26


def test_a_time_zone_name_follows_daylight_saving_time():
    from engine.exif import offset_at, valid_zone

    assert offset_at("Europe/Berlin", "2026-03-29T01:59:00") == "+01:00"  # the night clocks go forward
    assert offset_at("Europe/Berlin", "2026-03-29T03:00:00") == "+02:00"
    assert offset_at("Europe/Berlin", "2026-10-25T02:30:00") == "+02:00"  # twice that night: the first one
    assert offset_at("America/Denver", "2009-01-10T05:07:00") == "-07:00"
    assert offset_at("America/Denver", "2009-07-10T05:07:00") == "-06:00"
    assert offset_at("Africa/Johannesburg", "2026-07-01T12:00:00") == "+02:00"
    assert offset_at("+0530", "2026-07-01T12:00:00") == "+05:30"
    assert not valid_zone("Mars/Olympus") and not valid_zone("+25:00") and valid_zone("Asia/Kuching")


def test_exports_take_each_photos_offset_from_its_deployments_time_zone(tagged, tmp_path):
    tagged.update_deployment("StationA", utc_offset="America/Denver")
    photos = tagged.query(
        "SELECT m.id, m.taken_at FROM media m JOIN deployments d ON d.id = m.deployment_id "
        "WHERE d.name = 'StationA' AND m.taken_at IS NOT NULL"
    )
    assert photos
    export_camtrap_dp(tagged, tmp_path / "dp")
    stamps = {m["mediaID"]: m["timestamp"] for m in read_csv(tmp_path / "dp" / "media.csv")}
    seen = set()
    for photo in photos:
        month = int(photo["taken_at"][5:7])
        if month in (3, 11):
            continue  # the months clocks change in; the others are unambiguous
        expected = "-06:00" if 4 <= month <= 10 else "-07:00"  # MDT April-October, MST November-March
        assert stamps[str(photo["id"])].endswith(expected), (photo, stamps[str(photo["id"])])
        seen.add(expected)
    assert seen  # photos were checked


def test_one_sites_export_is_not_blocked_by_another_sites_missing_coordinates(catalogue, data_dir, tmp_path):
    import_folder(catalogue, data_dir / "camtrapr/raw_images")  # StationA and StationB, no GPS in the photos
    catalogue.update_deployment("StationA", latitude=5.4, longitude=118.1, utc_offset="+08:00")
    with pytest.raises(ExportError, match="'StationB'") as whole:
        export_camtrap_dp(catalogue, tmp_path / "all")
    assert "StationA" not in str(whole.value) and "Deployments" in str(whole.value)  # says where to set them
    report = export_camtrap_dp(catalogue, tmp_path / "a", site="StationA")
    media = read_csv(tmp_path / "a" / "media.csv")
    assert report.rows["media"] == len(media) > 0 and {m["deploymentID"] for m in media} == {"StationA"}
