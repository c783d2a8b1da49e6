"""A demo catalogue from the real photos in shared/data: every photo a confirmed sighting of its folder's
individual, so the review, export and training screens have something real to show."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from .catalogue import Catalogue
from .ingest import ImportSummary, ProgressFn, import_folder
from .side import SIDES

DEMO_WHO = "demo:folder-label"
# (sub-folder of the data dir, species, site)
DEMO_SETS = (("nyala/train", "nyala", "nyala-demo"), ("lion/train", "lion", "lion-demo"))
_NYALA_PHOTO = re.compile(r"^(?P<photo>.+?)_(?P<side>left|right)photo", re.IGNORECASE)


def nyala_photo(file_name: str) -> tuple[str, str] | None:
    """'<n>_leftphoto.jpg' -> ('<n>', 'left'): the photo number names the encounter, the side the flank."""
    m = _NYALA_PHOTO.match(file_name)
    return (m["photo"], m["side"].lower()) if m else None


def find_data_dir(start: Path | None = None) -> Path | None:
    """shared/data beside the checkout (../shared/data), or $HERDBOOK_DATA."""
    if os.environ.get("HERDBOOK_DATA"):
        return Path(os.environ["HERDBOOK_DATA"])
    here = (start or Path(__file__)).resolve()
    for parent in [here, *here.parents]:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def viewpoint_from_name(file_name: str, individual: str) -> str | None:
    """The side of the animal a file name gives, as the app knows sides (engine.side.SIDES): nyala's flank from
    '<n>_leftphoto.jpg'; lion's from the body part after the name ('Left_Face', 'Right_Ear'), none for a part of no
    side ('Nose', 'Mane'). A body part is no side: the app compares a detection with the same side's photos only,
    so a part kept as a side would be compared with the same part of other individuals alone."""
    nyala = nyala_photo(file_name)
    if nyala:
        return nyala[1]
    stem = Path(file_name).stem
    if stem.startswith(individual + "_"):
        words = re.split(r"[_\s-]+", re.sub(r"\d+$", "", stem[len(individual) + 1 :]).lower())
        return next((w for w in words if w in SIDES), None)
    return None


@dataclass
class DemoSummary:
    imports: list[ImportSummary]
    sightings_added: int


def last_encounters(rows: list[dict]) -> set[int]:
    """Media ids of each individual's last encounter (nyala photo number), for individuals with two or more:
    the demo leaves them unlabelled, as a new card whose truth it knows."""
    by_ind: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        nyala = nyala_photo(row["file_name"])
        if nyala:
            by_ind.setdefault(Path(row["path"]).parent.name, {}).setdefault(nyala[0], []).append(row["id"])
    out: set[int] = set()
    for encounters in by_ind.values():
        if len(encounters) >= 2:
            out.update(encounters[max(encounters, key=int)])
    return out


def _whole_frame(catalogue: Catalogue, photo: dict, species: str, viewpoint: str | None) -> int:
    """A box over the whole photo (the folder says which animal it shows), as a person would draw it."""
    box = (0.0, 0.0, float(photo["width"]), float(photo["height"]))
    return catalogue.add_detection(
        photo["id"], box, source="whole-frame", label=species, score=1.0, viewpoint=viewpoint
    )


def label_folder_individuals(catalogue: Catalogue, import_id: int, species: str, hold_out: bool = False) -> int:
    """Each photo of an import whose parent folder names an individual becomes a confirmed whole-frame
    sighting of that individual; with ``hold_out``, each individual's last encounter gets its whole-frame
    detection but no label (the demo's new card). Idempotent: photos with a detection are left alone."""
    rows = catalogue.query(
        """SELECT m.id, m.path, m.file_name, m.width, m.height FROM media m
           WHERE m.import_id = ? AND m.status = 'ok'
             AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.media_id = m.id) ORDER BY m.id""",
        [import_id],
    )
    held = last_encounters(rows) if hold_out else set()
    with catalogue.transaction():
        for row in rows:
            code = Path(row["path"]).parent.name
            detection_id = _whole_frame(catalogue, row, species, viewpoint_from_name(row["file_name"], code))
            catalogue.db["media"].update(row["id"], {"species": species})
            if row["id"] not in held:
                catalogue.confirm(detection_id, catalogue.ensure_individual(code, species), who=DEMO_WHO)
    return len(rows) - len(held)


def label_detected_individuals(catalogue: Catalogue, import_id: int, species: str, hold_out: bool = False) -> int:
    """As ``label_folder_individuals``, on the detector's boxes (run it after ``Pipeline.detect``): each photo's
    best animal box (score x area: the one a person would confirm) becomes the confirmed sighting of its folder's
    individual, flank from the file name; a photo where the detector found no animal gets a whole-frame box. With
    ``hold_out``, each individual's last encounter gets its best box labelled but not confirmed (the demo's new
    card). The photos' other boxes (herd-mates) stay open, as on a real card. Photos with a decision already are
    left alone."""
    rows = catalogue.query(
        """SELECT m.id, m.path, m.file_name, m.width, m.height FROM media m
           WHERE m.import_id = ? AND m.status = 'ok' AND NOT EXISTS (
               SELECT 1 FROM detections d JOIN sighting_state s ON s.detection_id = d.id WHERE d.media_id = m.id)
             AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.media_id = m.id AND d.label = ?)
           ORDER BY m.id""",
        [import_id, species],
    )
    held = last_encounters(rows) if hold_out else set()
    with catalogue.transaction():
        for row in rows:
            code = Path(row["path"]).parent.name
            viewpoint = viewpoint_from_name(row["file_name"], code)
            boxes = catalogue.query(
                "SELECT id FROM detections WHERE media_id = ? AND label = 'animal' ORDER BY score * w * h DESC LIMIT 1",
                [row["id"]],
            )
            if boxes:
                detection_id = boxes[0]["id"]
                catalogue.db["detections"].update(detection_id, {"label": species, "viewpoint": viewpoint})
            else:
                detection_id = _whole_frame(catalogue, row, species, viewpoint)
            catalogue.db["media"].update(row["id"], {"species": species})
            if row["id"] not in held:
                catalogue.confirm(detection_id, catalogue.ensure_individual(code, species), who=DEMO_WHO)
    return len(rows) - len(held)


def held_out_detections(catalogue: Catalogue) -> set[int]:
    """The demo's held-out animals: on each photo without a confirmed sighting, the box labelled with the photo's
    species (its folder's individual; label_*_individuals), not the herd-mates' boxes beside it."""
    rows = catalogue.query(
        """SELECT d.id FROM detections d JOIN media m ON m.id = d.media_id
           WHERE d.label = m.species AND NOT EXISTS (
               SELECT 1 FROM detections o JOIN sighting_state s ON s.detection_id = o.id WHERE o.media_id = m.id)"""
    )
    return {r["id"] for r in rows}


def build_demo(
    catalogue: Catalogue,
    data_dir: str | Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    hold_out: bool = False,
    detector: str | None = None,
) -> DemoSummary:
    """Import shared/data's nyala and lion photos, each a confirmed sighting of its folder's individual (but each
    nyala's last encounter with ``hold_out``). With ``detector`` ('bundled', a detector file) the photos go
    through it first and its best box is the sighting, as on a real card; without, the whole photo is."""
    data_dir = Path(data_dir)
    imports, added = [], 0
    detecting = None  # one pipeline (its sessions loaded once) for every set's photos
    if detector is not None:
        from .pipeline import Pipeline

        detecting = Pipeline(catalogue, detector=detector)
    for sub, species, site in DEMO_SETS:
        folder = data_dir / sub
        if not folder.is_dir():
            continue
        summary = import_folder(catalogue, folder, site=site, progress=progress, cancel=cancel)
        imports.append(summary)
        if summary.cancelled:
            break
        if detecting is None:
            added += label_folder_individuals(catalogue, summary.import_id, species, hold_out=hold_out)
            continue
        media = [r["id"] for r in catalogue.query("SELECT id FROM media WHERE import_id = ?", [summary.import_id])]
        stage_progress = (lambda _stage, done, total: progress(done, total, "detect")) if progress else None
        detecting.detect(media, progress=stage_progress, cancel=cancel)
        if cancel is not None and cancel.is_set():
            break
        added += label_detected_individuals(catalogue, summary.import_id, species, hold_out=hold_out)
    return DemoSummary(imports, added)


def demo_accuracy(catalogue: Catalogue, suggestions: list[dict], unseen: set[str] | None = None) -> dict:
    """How often the held-out photos' true individual (their folder) is the top-1 / in the top-5 suggestions;
    with ``unseen`` (individuals the model never trained on), also for those alone. Only each held-out photo's
    labelled box counts (held_out_detections)."""

    held = held_out_detections(catalogue)  # not the herd-mates the detector boxed beside them
    suggestions = [item for item in suggestions if item["detection_id"] in held]

    def score(items: list[dict]) -> dict:
        top1 = top5 = flagged_new = 0
        for item in items:
            truth = Path(item["path"]).parent.name
            codes = [c["code"] for c in item["candidates"]]
            top1 += bool(codes) and codes[0] == truth
            top5 += truth in codes[:5]
            flagged_new += item["probably_new"]
        n = max(len(items), 1)
        return {"held_out_photos": len(items), "top1": top1 / n, "top5": top5 / n, "flagged_new": flagged_new / n}

    out = score(suggestions)
    if unseen is not None:
        out["unseen_individuals"] = score([i for i in suggestions if Path(i["path"]).parent.name in unseen])
    return out
