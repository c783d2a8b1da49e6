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


def test_the_demo_through_the_detector_holds_out_each_last_encounters_best_box_and_scores_it_alone(tmp_path, data_dir):
    """make demo's path: the bundled detector boxes every photo, its best box is the folder's individual (confirmed,
    or held out for the last encounter); herd-mates boxed beside it stay open but are never scored as that
    individual."""
    import shutil

    from engine.catalogue import Catalogue
    from engine.demo import demo_accuracy, held_out_detections
    from engine.pipeline import Pipeline, open_suggestions

    data = tmp_path / "data"
    folders = sorted((data_dir / "nyala" / "train").iterdir())[:3]
    for folder in folders:
        shutil.copytree(folder, data / "nyala" / "train" / folder.name)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        summary = build_demo(cat, data, hold_out=True, detector="bundled")
        photos = cat.db["media"].count
        held = held_out_detections(cat)
        assert 0 < len(held) < photos and summary.sightings_added == photos - len(held)
        rows = cat.query(
            f"""SELECT d.id, d.media_id, d.label, m.path, d.w * d.h < m.width * m.height AS boxed,
                      EXISTS (SELECT 1 FROM sighting_state s WHERE s.detection_id = d.id) AS confirmed
               FROM detections d JOIN media m ON m.id = d.media_id WHERE d.id IN ({",".join(map(str, held))})"""
        )
        assert len({r["media_id"] for r in rows}) == len(rows)  # one held-out animal a photo
        assert not any(r["confirmed"] for r in rows) and all(r["label"] == "nyala" for r in rows)
        assert sum(r["boxed"] for r in rows) >= len(rows) // 2  # the detector's box, mostly not the frame
        numbers = {Path(r["path"]).parent.name: set() for r in rows}
        for r in rows:
            numbers[Path(r["path"]).parent.name].add(Path(r["path"]).name.split("_")[0])
        assert all(len(n) == 1 for n in numbers.values())  # each individual's one last encounter
        pipe = Pipeline(cat, detector="whole-frame")
        pipe.run()
        herd_mates = cat.query(  # those big enough to identify (a box under 16 px is reported, not embedded)
            "SELECT count(*) AS n FROM detections d JOIN embeddings e ON e.detection_id = d.id WHERE d.label = 'animal'"
        )[0]["n"]
        items = open_suggestions(cat, pipe.reid_model_id)
        assert herd_mates > 0 and len(items) == len(held) + herd_mates  # suggested too, as on a real card
        assert demo_accuracy(cat, items)["held_out_photos"] == len(held)
        assert build_demo(cat, data, hold_out=True, detector="bundled").sightings_added == 0  # a re-run adds none


def test_file_names_give_only_sides_the_app_knows(data_dir):
    """A lion crop named for a body part ('Left_Face', 'Nose') gets that part's side or none: the app compares a
    detection with its own side's photos only, so a part kept as a side would never meet another part of its
    individual (herdbook evaluate on the lion folder gave top-1 0% so)."""
    from engine.demo import viewpoint_from_name
    from engine.side import SIDES

    lions = sorted((data_dir / "lion" / "train").glob("*/*.png"))
    sides = {f.name: viewpoint_from_name(f.name, f.parent.name) for f in lions}
    assert set(sides.values()) == {*SIDES, None}
    assert sides["Kinna_Left_Face.png"] == "left" and sides["Kinna_Right_ear.png"] == "right"
    assert sides["Kinna_Nose.png"] is None and sides["Kinna_Portrait.png"] is None
    nyala = next((data_dir / "nyala" / "train").glob("*/*_rightphoto.jpg"))
    assert viewpoint_from_name(nyala.name, nyala.parent.name) == "right"
