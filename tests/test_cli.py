"""The `herdbook` command as a user runs it: real processes, real catalogue, real photos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from engine.catalogue import Catalogue


def herdbook(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "herdbook", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_import_then_export_from_the_command_line(tmp_path, data_dir):
    cat = tmp_path / "c.sqlite"
    first = herdbook("--catalogue", cat, "import", data_dir / "exif/jpg", "--site", "corpus")
    assert first.returncode == 0, first.stderr
    assert "73 files, 73 new" in first.stdout and "broken EXIF" in first.stdout
    again = herdbook("--catalogue", cat, "import", data_dir / "exif/jpg")
    assert "0 new, 73 already in catalogue" in again.stdout
    tagged = herdbook("--catalogue", cat, "import", data_dir / "camtrapr/sample_images_indiv_tag")
    assert tagged.returncode == 0
    out = herdbook("--catalogue", cat, "export", "sightings", tmp_path / "s.csv")
    assert out.returncode == 0 and "26 sightings" in out.stdout
    with open(tmp_path / "s.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 26


def test_bad_input_gives_one_line_naming_the_problem(tmp_path, data_dir):
    missing = herdbook("--catalogue", tmp_path / "c.sqlite", "import", tmp_path / "no-such-card")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"herdbook: error: {tmp_path / 'no-such-card'}: not a folder"
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a catalogue")
    bad_cat = herdbook("--catalogue", junk, "import", data_dir / "exif/jpg")
    assert bad_cat.returncode == 1 and "junk.sqlite" in bad_cat.stderr and "not an SQLite file" in bad_cat.stderr
    assert junk.read_text() == "not a catalogue"
    usage = herdbook("import")
    assert usage.returncode == 2


def test_deployment_clock_and_place(tmp_path, data_dir):
    cat = tmp_path / "c.sqlite"
    herdbook("--catalogue", cat, "import", data_dir / "camtrapr/raw_images", "--site", "B-7")
    res = herdbook(
        "--catalogue",
        cat,
        "deployment",
        "B-7",
        "--latitude",
        "5.4",
        "--longitude",
        "118.0",
        "--utc-offset",
        "+08:00",
        "--clock-offset",
        "-120",
    )
    assert res.returncode == 0, res.stderr
    assert "applied to 6 photos" in res.stdout and '"utc_offset": "+08:00"' in res.stdout
    dp = herdbook("--catalogue", cat, "export", "camtrap-dp", tmp_path / "dp")
    assert dp.returncode == 0, dp.stderr
    with open(tmp_path / "dp" / "media.csv", newline="") as fh:
        stamps = sorted(r["timestamp"] for r in csv.DictReader(fh))
    assert stamps[0] == "2009-04-05T00:09:00+08:00"  # StationB/IMG0001: 00:11:00 on the camera (exiftool)


def test_cli_refuses_bad_inputs_before_touching_anything(tmp_path, data_dir):
    """Issue 10: a missing folder created an empty catalogue; a missing detector failed after importing; an
    export to a missing folder printed a traceback; '--utc-offset -07:00' was refused."""
    cat = tmp_path / "c.sqlite"
    res = herdbook("--catalogue", cat, "import", tmp_path / "no-such-card")
    assert res.returncode == 1 and "no-such-card: not a folder" in res.stderr and not cat.exists()
    res = herdbook("--catalogue", cat, "import", data_dir / "camtraps/megadetector", "--detector", "/nonexistent.onnx")
    assert res.returncode == 1 and "/nonexistent.onnx: no such detector file" in res.stderr and not cat.exists()
    assert herdbook("--catalogue", cat, "import", data_dir / "camtraps/megadetector", "--only-ingest").returncode == 0
    res = herdbook("--catalogue", cat, "export", "sightings", tmp_path / "missing" / "dir" / "out.csv")
    assert res.returncode == 1 and "cannot write the export" in res.stderr and "Traceback" not in res.stderr
    res = herdbook("--catalogue", cat, "export", "camtrap-dp", tmp_path / "dp", "--utc-offset", "-07:00")
    assert "unrecognized arguments" not in res.stderr and "expected one argument" not in res.stderr


def test_one_default_catalogue_for_the_cli_and_the_app(tmp_path, monkeypatch):
    from engine.catalogue import default_catalogue_path

    Catalogue(tmp_path / "station.sqlite").close()
    env = {**os.environ, "HERDBOOK_CATALOGUE": str(tmp_path / "station.sqlite")}
    res = subprocess.run([sys.executable, "-m", "herdbook", "info"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["catalogue"] == str(tmp_path / "station.sqlite")
    monkeypatch.delenv("HERDBOOK_CATALOGUE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_catalogue_path() == tmp_path / "herdbook.sqlite"  # not the working directory's


def test_a_camtrap_dp_package_is_read_from_the_command_line(tmp_path, data_dir):
    cat = tmp_path / "c.sqlite"
    refused = herdbook("--catalogue", cat, "import-camtrap-dp", data_dir / "exif")
    assert refused.returncode == 1 and "no datapackage.json" in refused.stderr and not cat.exists()
    example = data_dir.parent / "camtrap-dp-1.0" / "example"
    read = herdbook("--catalogue", cat, "import-camtrap-dp", example)
    assert read.returncode == 0, read.stderr
    assert "4 deployments" in read.stdout and "remote files recorded (not downloaded)" in read.stdout
    assert read.stdout.count("  problem: media.csv row") == 10  # the files the example does not ship
    with Catalogue(cat) as c:
        assert c.counts()["deployments"] == 4
