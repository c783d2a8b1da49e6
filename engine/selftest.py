"""`herdbook --selftest`: the whole chain on bundled real photos, offline and without a display.

the bundled detector boxes the animal in each of 4 camera-trap photos -> temporary catalogue -> import them ->
detect (whole frame) -> embed -> suggest -> name a new individual -> a second view of that animal is matched back
to it -> CSV export read back. Prints one verdict line.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

from .catalogue import Catalogue
from .detect import load_detector, normalised_boxes
from .export import export_sightings_csv
from .ingest import import_folder
from .pipeline import Pipeline, open_suggestions
from .resources import resources_dir


def run_selftest() -> tuple[bool, str]:
    t0 = time.perf_counter()
    checks: list[str] = []
    detector = load_detector()
    photos = sorted(p for p in (resources_dir() / "selftest").iterdir() if p.suffix == ".jpg")
    for photo in photos:
        animals = [b for b in normalised_boxes(detector, photo) if b[5] == "animal"]
        if not animals or max((b[2] - b[0]) * (b[3] - b[1]) for b in animals) > 0.9:  # a box, not the frame
            return False, f"detector: no animal box in {photo.name}"
    checks.append(f"detector ({len(photos)} photos boxed on {detector.device})")
    with tempfile.TemporaryDirectory() as tmp:
        with Catalogue(Path(tmp) / "selftest.sqlite") as cat:
            summary = import_folder(cat, resources_dir() / "selftest", site="selftest")
            if summary.added != 4 or summary.errors:
                return False, f"import: expected 4 photos, got {summary.added} ({summary.errors})"
            checks.append("import")
            pipe = Pipeline(cat, detector="whole-frame")
            pipe.run()
            items = open_suggestions(cat, pipe.reid_model_id)
            if len(items) != 4 or not all(it["probably_new"] for it in items):
                return False, f"suggest: expected 4 probably-new detections, got {len(items)}"
            checks.append(f"detect+embed+suggest on {pipe.device}")
            first = items[0]
            with cat.transaction():
                ind = cat.ensure_individual("SELFTEST-1", "unknown")
                cat.confirm(first["detection_id"], ind, who="selftest")
            media_id = cat.db["detections"].get(first["detection_id"])["media_id"]
            w, h = (cat.db["media"].get(media_id)[k] for k in ("width", "height"))
            cat.add_detection(media_id, (w * 0.02, h * 0.02, w * 0.96, h * 0.96), source="manual", label="animal")
            pipe.embed()
            pipe.suggest()
            again = [it for it in open_suggestions(cat, pipe.reid_model_id) if it["candidates"]]
            if not again or again[0]["candidates"][0]["code"] != "SELFTEST-1":
                return False, "match: a second view of SELFTEST-1 was not matched back to it"
            checks.append(f"match (score {again[0]['candidates'][0]['score']:.3f})")
            out = Path(tmp) / "sightings.csv"
            export_sightings_csv(cat, out)
            with open(out, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if len(rows) != 1 or rows[0]["individual_code"] != "SELFTEST-1":
                return False, f"export: expected 1 sighting of SELFTEST-1, read back {len(rows)}"
            checks.append("export")
    return True, f"selftest OK in {time.perf_counter() - t0:.1f} s: " + ", ".join(checks)
