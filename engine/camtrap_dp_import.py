"""Read a Camtrap DP 1.0 package (Agouti, AddaxAI, Trapper, Herdbook's own export) into a catalogue.

What comes in: its deployments (name = deploymentID; site, coordinates, camera), its media (a file the package
names by a relative path or file URL is imported like any photo: hashed, its metadata read; a web URL is recorded
as a remote file, never downloaded: Herdbook works offline), and its observations: a media-level observation with
a bounding box becomes a detection (boxes are fractions of the image in the standard, pixels in the catalogue),
one with an ``individualID`` becomes a confirmed sighting of that individual (made if new, per species), and the
species of media- and event-level observations becomes the photos' species. Rows that cannot be read are listed
with their file and row number; the rest is imported. Running it again adds nothing twice.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from .catalogue import Catalogue, utc_now
from .ingest import IngestError, photo_columns, scan_file
from .resources import species_from_scientific

SOURCE = "camtrap-dp"
SCAN_BATCH = 32  # files read between two looks at the cancel event
LABELS = {"animal": "animal", "human": "person", "vehicle": "vehicle"}  # observationType -> detector label


@dataclass
class CamtrapImportReport:
    package: str
    deployments: int = 0
    media_local: int = 0
    media_remote: int = 0
    media_known: int = 0
    media_unreadable: int = 0  # named by the package, missing or unreadable here: recorded with the problem
    detections: int = 0
    sightings: int = 0
    individuals: int = 0
    problems: list[str] = field(default_factory=list)
    cancelled: bool = False

    def lines(self) -> list[str]:
        if self.cancelled:
            return [f"cancelled reading Camtrap DP package {self.package}: nothing written"]
        out = [
            f"read Camtrap DP package {self.package}: {self.deployments} deployments, "
            f"{self.media_local} photos imported, {self.media_remote} remote files recorded (not downloaded), "
            f"{self.media_unreadable} missing or unreadable, "
            f"{self.media_known} already in catalogue, {self.detections} boxes, {self.sightings} sightings of "
            f"{self.individuals} individuals"
        ]
        return out + [f"  problem: {p}" for p in self.problems]


def _resources(package: Path) -> dict[str, Path]:
    descriptor = package / "datapackage.json"
    try:
        data = json.loads(descriptor.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError(f"{package}: no datapackage.json (not a Camtrap DP package)") from None
    except (OSError, ValueError) as exc:
        raise IngestError(f"{descriptor}: cannot read ({exc})") from None
    paths = {}
    for res in data.get("resources", []):
        if res.get("name") in ("deployments", "media", "observations") and isinstance(res.get("path"), str):
            paths[res["name"]] = package / res["path"]
    missing = [n for n in ("deployments", "media", "observations") if n not in paths or not paths[n].is_file()]
    if missing:
        raise IngestError(f"{descriptor}: the package lacks its {', '.join(missing)} table")
    return paths


def _rows(path: Path):
    with open(path, newline="", encoding="utf-8-sig") as fh:  # Agouti writes a byte-order mark
        yield from enumerate(csv.DictReader(fh), 2)  # row 1 is the header


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _when(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _local_file(package: Path, file_path: str) -> Path | None:
    """The local file a media row names, or None for a web URL."""
    parsed = urlparse(file_path)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return (package / file_path).resolve()


def _species(obs: dict) -> str | None:
    tags = dict(t.strip().split(":", 1) for t in (obs.get("observationTags") or "").split("|") if ":" in t)
    return species_from_scientific(obs.get("scientificName")) or (tags.get("species") or "").strip() or None


def _scan_local_files(package: Path, media_table: Path, progress=None, cancel=None) -> dict[Path, object] | None:
    """Every local file the media table names, hashed and read in threads before anything is written (so the
    catalogue is never locked while files are read); None when cancelled."""
    paths = sorted(
        {p for _, m in _rows(media_table) if m.get("filePath") and (p := _local_file(package, m["filePath"]))}
    )
    scanned: dict[Path, object] = {}
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), SCAN_BATCH):
            if cancel is not None and cancel.is_set():
                return None
            batch = paths[start : start + SCAN_BATCH]
            scanned.update(zip(batch, pool.map(scan_file, batch), strict=True))
            if progress:
                progress(len(scanned), len(paths))
    return None if cancel is not None and cancel.is_set() else scanned


def import_camtrap_dp(
    catalogue: Catalogue, package: str | Path, who: str = SOURCE, progress=None, cancel=None
) -> CamtrapImportReport:
    """Import a Camtrap DP package folder; see the module docstring. ``progress(done, total)`` follows the
    reading of its files; a ``cancel`` event set meanwhile leaves the catalogue as it was."""
    package = Path(package).resolve()
    tables = _resources(package)
    report = CamtrapImportReport(str(package))
    files = _scan_local_files(package, tables["media"], progress, cancel)
    if files is None:
        report.cancelled = True
        return report
    db = catalogue.db
    source = f"camtrap-dp:{package}"
    found = db.execute("SELECT id FROM imports WHERE source = ?", [source]).fetchone()
    with catalogue.transaction():
        import_id = (
            found[0]
            if found
            else db["imports"].insert({"source": source, "started_at": utc_now(), "status": "running"}).last_pk
        )
        deployments = {}
        for row_no, d in _rows(tables["deployments"]):
            name = (d.get("deploymentID") or "").strip()
            if not name:
                report.problems.append(f"{tables['deployments'].name} row {row_no}: no deploymentID")
                continue
            fields = {
                "site": d.get("locationName") or d.get("locationID") or None,
                "latitude": _number(d.get("latitude")),
                "longitude": _number(d.get("longitude")),
                "camera": " ".join(x for x in (d.get("cameraModel"), d.get("cameraID")) if x) or None,
                "start": d.get("deploymentStart") or None,
                "end": d.get("deploymentEnd") or None,
            }
            dep_id = catalogue.ensure_deployment(name)
            current = catalogue.deployment(name)
            update = {k: v for k, v in fields.items() if v is not None and current.get(k) is None}
            if update:  # what the catalogue already knows about a deployment is kept
                db["deployments"].update(dep_id, update)
            deployments[name] = dep_id
            report.deployments += 1

        media: dict[str, dict] = {}  # mediaID -> catalogue row
        fresh: set[int] = set()  # media rows this run added: only their observations are read
        for row_no, m in _rows(tables["media"]):
            where = f"{tables['media'].name} row {row_no}"
            dep_id = deployments.get(m.get("deploymentID", ""))
            if dep_id is None or not m.get("mediaID") or not m.get("filePath"):
                report.problems.append(f"{where}: needs a mediaID, a filePath and a known deploymentID")
                continue
            local = _local_file(package, m["filePath"])
            kind = "video" if (m.get("fileMediatype") or "").startswith("video") else "image"
            taken = m.get("timestamp") or None
            row = {
                "path": str(local) if local else m["filePath"],
                "file_name": m.get("fileName") or Path(urlparse(m["filePath"]).path).name or m["mediaID"],
                "import_id": import_id,
                "deployment_id": dep_id,
                "kind": kind,
                "taken_at": taken,
                "taken_at_raw": taken,
                "time_source": SOURCE if taken else None,
            }
            scanned = files[local] if local is not None else None
            readable = scanned is not None and not scanned.error and scanned.meta and not scanned.meta.error
            # A photo the catalogue has already (same content, or for a remote or missing file the same path)
            # keeps its row and its decisions.
            key, value = ("sha256", scanned.sha256) if readable else ("path", row["path"])
            known = catalogue.query(f"SELECT * FROM media WHERE {key} = ?", [value])
            if known:
                media[m["mediaID"]] = known[0]
                report.media_known += 1
                continue
            if readable:
                row |= photo_columns(scanned.meta)
                row |= {"sha256": scanned.sha256, "status": "ok" if kind == "image" else "not processed"}
                report.media_local += 1
            elif scanned is not None:  # recorded, so the observations of a missing or broken photo are not lost
                problem = scanned.error or (scanned.meta and scanned.meta.error) or "unreadable"
                report.problems.append(f"{where}: {local}: {problem}")
                row |= {"status": "error", "error": problem}
                report.media_unreadable += 1
            else:
                row |= {"status": "not processed", "error": "remote file, not downloaded (Herdbook works offline)"}
                report.media_remote += 1
            row["id"] = db["media"].insert(row).last_pk
            fresh.add(row["id"])
            if readable:
                file_row = {"path": row["path"], "media_id": row["id"], "import_id": import_id}
                db["media_files"].upsert(file_row | {"size": scanned.size, "mtime_ns": scanned.mtime_ns}, pk="path")
            media[m["mediaID"]] = row

        individuals_before = db.execute("SELECT count(*) FROM individuals").fetchone()[0]
        by_deployment: dict[int, list[dict]] = {}
        for r in media.values():
            by_deployment.setdefault(r["deployment_id"], []).append(r)
        for row_no, obs in _rows(tables["observations"]):
            where = f"{tables['observations'].name} row {row_no}"
            species = _species(obs)
            kind = (obs.get("observationType") or "").strip()
            if obs.get("observationLevel") == "event" or not obs.get("mediaID"):
                start, end = _when(obs.get("eventStart")), _when(obs.get("eventEnd"))
                dep_id = deployments.get(obs.get("deploymentID", ""))
                if species and start and end and dep_id is not None:
                    for r in by_deployment.get(dep_id, []):
                        t = _when(r.get("taken_at"))
                        if r["id"] in fresh and t and t.tzinfo and start <= t <= end and not r.get("species"):
                            db["media"].update(r["id"], {"species": species})
                            r["species"] = species
                continue
            target = media.get(obs["mediaID"])
            if target is None:
                report.problems.append(f"{where}: mediaID {obs['mediaID']!r} is not in the media table")
                continue
            if target["id"] not in fresh:
                continue  # a photo the catalogue had already: its decisions are the catalogue's
            if species and not target.get("species"):
                db["media"].update(target["id"], {"species": species})
                target["species"] = species
            if kind not in LABELS:
                continue  # blank, unknown, unclassified: no animal to box
            box = [_number(obs.get(k)) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")]
            individual = (obs.get("individualID") or "").strip()
            if None in box and not individual:
                continue
            pixels = None
            if None not in box and target.get("width") and target.get("height"):
                w, h = target["width"], target["height"]
                if target.get("orientation") in (5, 6, 7, 8):  # boxes are of the upright image
                    w, h = h, w
                pixels = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
            detection = catalogue.add_detection(
                target["id"],
                pixels,
                source=SOURCE,
                label=LABELS[kind],
                score=_number(obs.get("classificationProbability")),
            )
            report.detections += pixels is not None
            if individual:  # a sighting history stands without the photo (a web URL, a missing file)
                ind = catalogue.ensure_individual(individual, species or "unknown")
                catalogue.confirm(detection, ind, who=obs.get("classifiedBy") or who)
                report.sightings += 1
        report.individuals = db.execute("SELECT count(*) FROM individuals").fetchone()[0] - individuals_before
        db["imports"].update(import_id, {"status": "finished", "finished_at": utc_now()})
    return report
