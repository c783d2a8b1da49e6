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
