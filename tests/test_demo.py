"""The demo catalogue: every nyala/lion photo a confirmed sighting, except each nyala's last encounter."""

from __future__ import annotations

from pathlib import Path

from engine.demo import build_demo


def test_demo_holds_out_last_encounters_as_a_new_card(catalogue, data_dir):
    summary = build_demo(catalogue, data_dir, hold_out=True)
    counts = catalogue.counts()
    assert counts["media"] == 1205 + 594  # nyala 218's eight '(1)' copies deduplicated by content
    assert counts["detections"] == counts["media"]
    held = catalogue.query(
        """SELECT m.path FROM detections d JOIN media m ON m.id = d.media_id
           WHERE NOT EXISTS (SELECT 1 FROM sightings s WHERE s.detection_id = d.id)"""
    )
    assert len(held) == counts["media"] - summary.sightings_added > 100
    for row in held:
        individual = Path(row["path"]).parent.name
        number = Path(row["path"]).name.split("_")[0]
        others = catalogue.query(
            """SELECT m.file_name FROM sightings s JOIN individuals i ON i.id = s.individual_id
               JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id
               WHERE i.code = ? AND i.species = 'nyala'""",
            [individual],
        )
        assert others, individual  # the individual is known from its other encounters
        assert all(not o["file_name"].startswith(number + "_") for o in others)


def test_detected_boxes_are_labelled_with_the_folders_individual_and_flank(tmp_path, data_dir):
    """label_detected_individuals (the station bench's labels): each photo's best animal box from the bundled
    detector becomes its one confirmed sighting, flank from the file name; a second run adds nothing."""
    import shutil

    from engine.catalogue import Catalogue
    from engine.demo import label_detected_individuals
    from engine.ingest import import_folder
    from engine.pipeline import Pipeline

    card = tmp_path / "card"
    for folder in sorted((data_dir / "nyala" / "train").iterdir())[:2]:
        shutil.copytree(folder, card / folder.name)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        imp = import_folder(cat, card, site="s")
        Pipeline(cat).detect()
        assert label_detected_individuals(cat, imp.import_id, "nyala") == imp.added
        assert label_detected_individuals(cat, imp.import_id, "nyala") == 0
        rows = cat.query(
            """SELECT m.path, m.file_name, d.viewpoint, i.code, d.w * d.h < m.width * m.height AS boxed
               FROM sightings s JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id
               JOIN individuals i ON i.id = s.individual_id"""
        )
        assert len(rows) == imp.added > 5
        for row in rows:
            assert row["code"] == Path(row["path"]).parent.name
            assert row["viewpoint"] == ("left" if "left" in row["file_name"].lower() else "right")
        assert sum(r["boxed"] for r in rows) >= len(rows) // 2  # most photos: the detector's box, not the frame
