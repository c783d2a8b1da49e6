"""Sighting histories out of the catalogue: a flat CSV, and a Camtrap DP 1.0 package.

Both read the catalogue's ``sightings`` view (confirmed, not undone). Text cells that a spreadsheet would
run as a formula (starting with = + - @, tab or CR) are prefixed with a quote; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .catalogue import Catalogue
from .exif import offset_at, upright_size
from .resources import species_info

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Detector labels -> Camtrap DP observationType (MegaDetector says "person"; the standard says "human").
OBSERVATION_TYPES = {"animal": "animal", "person": "human", "human": "human", "vehicle": "vehicle"}
CAMTRAP_DP_PROFILE = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json"
CAMTRAP_DP_SCHEMA = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/{}-table-schema.json"

SIGHTING_COLUMNS = [
    "individual_code",
    "individual_name",
    "species",
    "scientific_name",
    "taken_at",
    "latitude",
    "longitude",
    "site",
    "deployment",
    "camera",
    "file",
    "box_x",
    "box_y",
    "box_width",
    "box_height",
    "viewpoint",
    "confirmed_by",
    "confirmed_at",
    "score",
    "media_sha256",
    "detection_id",
]
DEPLOYMENT_COLUMNS = [
    "deploymentID",
    "locationID",
    "locationName",
    "latitude",
    "longitude",
    "coordinateUncertainty",
    "deploymentStart",
    "deploymentEnd",
    "setupBy",
    "cameraID",
    "cameraModel",
    "cameraDelay",
    "cameraHeight",
    "cameraDepth",
    "cameraTilt",
    "cameraHeading",
    "detectionDistance",
    "timestampIssues",
    "baitUse",
    "featureType",
    "habitat",
    "deploymentGroups",
    "deploymentTags",
    "deploymentComments",
]
MEDIA_COLUMNS = [
    "mediaID",
    "deploymentID",
    "captureMethod",
    "timestamp",
    "filePath",
    "filePublic",
    "fileName",
    "fileMediatype",
    "exifData",
    "favorite",
    "mediaComments",
]
OBSERVATION_COLUMNS = [
    "observationID",
    "deploymentID",
    "mediaID",
    "eventID",
    "eventStart",
    "eventEnd",
    "observationLevel",
    "observationType",
    "cameraSetupType",
    "scientificName",
    "count",
    "lifeStage",
    "sex",
    "behavior",
    "individualID",
    "individualPositionRadius",
    "individualPositionAngle",
    "individualSpeed",
    "bboxX",
    "bboxY",
    "bboxWidth",
    "bboxHeight",
    "classificationMethod",
    "classifiedBy",
    "classificationTimestamp",
    "classificationProbability",
    "observationTags",
    "observationComments",
]
MEDIATYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".mp4": "video/mp4",
    ".avi": "video/x-msvideo",
    ".mov": "video/quicktime",
}


class ExportError(Exception):
    """The catalogue lacks something the format requires; the message says what and where."""


@dataclass
class ExportReport:
    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def neutralise(value):
    """A cell as written: text that a spreadsheet would evaluate gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> int:
    """Write rows as they come (a generator keeps memory bounded); returns how many."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: neutralise(row.get(k)) for k in columns})
            count += 1
    return count


SIGHTINGS_SQL = """
SELECT s.detection_id, s.who, s.at, s.score,
       COALESCE(mi.code, i.code) AS individual_code, COALESCE(mi.name, i.name) AS individual_name,
       COALESCE(mi.species, i.species) AS species,
       d.x, d.y, d.w, d.h, d.viewpoint, d.source,
       m.id AS media_id, m.path, m.file_name, m.sha256, m.taken_at, m.latitude, m.longitude, m.width, m.height,
       m.camera_make, m.camera_model, m.camera_serial,
       dep.name AS deployment, dep.site, dep.utc_offset, dep.latitude AS dep_latitude,
       dep.longitude AS dep_longitude
FROM sightings s
JOIN individuals i ON i.id = s.individual_id
LEFT JOIN individuals mi ON mi.id = i.merged_into
JOIN detections d ON d.id = s.detection_id
JOIN media m ON m.id = d.media_id
LEFT JOIN deployments dep ON dep.id = m.deployment_id
ORDER BY m.taken_at, m.id, s.detection_id
"""


def with_offset(taken_at: str | None, utc_offset: str | None) -> str | None:
    """A photo time with its UTC offset: the camera's own, else the deployment's; else as stored."""
    if not taken_at:
        return None
    parsed = datetime.fromisoformat(taken_at)
    offset = offset_at(utc_offset, taken_at) if parsed.tzinfo is None else None
    if offset:
        return taken_at + offset
    return taken_at


def export_sightings_csv(
    catalogue: Catalogue,
    out: str | Path,
    species: str | None = None,
    site: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
) -> ExportReport:
    """One row per confirmed sighting, oldest first; optionally of one species, one site (deployment or site
    name) and a date range (inclusive, YYYY-MM-DD)."""
    out = Path(out)

    def rows():
        for r in catalogue.stream(SIGHTINGS_SQL):  # a few rows in memory at a time
            day = (r["taken_at"] or "")[:10]
            if species and r["species"] != species:
                continue
            if site and site not in (r["deployment"], r["site"]):
                continue
            if (date_from and (not day or day < date_from)) or (date_to and (not day or day > date_to)):
                continue
            camera = " ".join(p for p in (r["camera_make"], r["camera_model"]) if p) or None
            yield (
                {
                    "individual_code": r["individual_code"],
                    "individual_name": r["individual_name"],
                    "species": r["species"],
                    "scientific_name": species_info(r["species"])["scientific_name"],
                    "taken_at": with_offset(r["taken_at"], r["utc_offset"]),
                    "latitude": r["latitude"] if r["latitude"] is not None else r["dep_latitude"],
                    "longitude": r["longitude"] if r["longitude"] is not None else r["dep_longitude"],
                    "site": r["site"],
                    "deployment": r["deployment"],
                    "camera": camera,
                    "file": r["path"],
                    "box_x": r["x"],
                    "box_y": r["y"],
                    "box_width": r["w"],
                    "box_height": r["h"],
                    "viewpoint": r["viewpoint"],
                    "confirmed_by": r["who"],
                    "confirmed_at": r["at"],
                    "score": r["score"],
                    "media_sha256": r["sha256"],
                    "detection_id": r["detection_id"],
                }
            )

    return ExportReport(out, rows={"sightings": _write_csv(out, SIGHTING_COLUMNS, rows())})


# -- Camtrap DP -------------------------------------------------------------------------------------------


def _dp_time(taken_at: str | None, utc_offset: str | None, default_offset: str | None) -> str | None:
    """Camtrap DP wants YYYY-MM-DDThh:mm:ss±hh:mm (no fractions)."""
    if not taken_at:
        return None
    parsed = datetime.fromisoformat(taken_at).replace(microsecond=0)
    stamp = parsed.isoformat()
    if parsed.tzinfo is not None:
        return stamp
    offset = offset_at(utc_offset, stamp) or offset_at(default_offset, stamp)
    return stamp + offset if offset else None


def _utc_stamp(at: str | None) -> str | None:
    return datetime.fromisoformat(at).astimezone(UTC).isoformat(timespec="seconds") if at else None


def export_camtrap_dp(
    catalogue: Catalogue,
    out_dir: str | Path,
    utc_offset: str | None = None,
    title: str = "Herdbook camera-trap sightings",
    contributor: str = "Herdbook user",
    species: str | None = None,
    site: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    media_license: str = "CC-BY-4.0",
) -> ExportReport:
    """Write datapackage.json, deployments.csv, media.csv and observations.csv (Camtrap DP 1.0).

    ``media.filePath`` is a path relative to the package when a photo lies under ``out_dir`` (export into the
    card's root to get a package that travels with its photos), else the photo's file:// URL: the standard
    allows a URL or a relative path without '..', never an absolute path. ``media_license`` is the photos'
    licence (the profile requires one for the data, CC0, and one for the media).

    ``utc_offset`` is used for photos whose EXIF has no offset and whose deployment names none. Raises
    ExportError naming what is missing where the standard requires a value the catalogue cannot give.
    The optional filters keep the photos of one species (by folder/tag or confirmed individual), one site
    (deployment or site name) and a date range (inclusive, YYYY-MM-DD), as the sightings CSV does.
    """
    out_dir = Path(out_dir)
    report = ExportReport(out_dir)
    deployments = catalogue.query(
        """SELECT d.*, avg(m.latitude) AS gps_lat, avg(m.longitude) AS gps_lon
           FROM deployments d JOIN media m ON m.deployment_id = d.id
           WHERE m.status != 'error' GROUP BY d.id ORDER BY d.id"""
    )
    for dep in deployments:
        dep["lat"] = dep["latitude"] if dep["latitude"] is not None else dep["gps_lat"]
        dep["lon"] = dep["longitude"] if dep["longitude"] is not None else dep["gps_lon"]
    dep_by_id = {d["id"]: d for d in deployments}
    chosen = _ChosenMedia(catalogue, dep_by_id, utc_offset, species, site, date_from, date_to)

    # Pass 1 checks every photo's time and gathers the per-deployment ranges; passes 2 and 3 stream the rows
    # (a season's million photos and detections are never held in memory).
    first_last: dict[int, list[str]] = {}
    covered: set[int] = set()  # deployments with a photo in this export
    for m, stamp in chosen.media("m.id, m.path, m.taken_at"):
        covered.add(m["deployment_id"])
        if stamp is None:
            why = "no time in its metadata" if not m["taken_at"] else "time without UTC offset"
            report.skipped.append(f"{m['path']}: {why}")
            continue
        span = first_last.setdefault(m["deployment_id"], [stamp, stamp])
        span[0], span[1] = min(span[0], stamp), max(span[1], stamp)
    # Only the deployments this export covers need coordinates: one site is never blocked by another's gaps.
    problems = [
        f"deployment {dep_by_id[i]['name']!r} has no coordinates (no GPS in its photos): set them in the app "
        f"(Catalogue > Deployments) or with `herdbook deployment {dep_by_id[i]['name']} --latitude LAT --longitude LON`"
        for i in sorted(covered)
        if dep_by_id[i]["lat"] is None or dep_by_id[i]["lon"] is None
    ]
    if problems:
        raise ExportError("Camtrap DP requires deployment coordinates:\n" + "\n".join(problems))
    if any("without UTC offset" in s for s in report.skipped):
        raise ExportError(
            "Camtrap DP needs timestamps with a UTC offset; some photos have none and their deployment names "
            "none. Give a UTC offset for the export, or set the deployment's (app: Catalogue > Deployments; command "
            "line: --utc-offset +HH:MM or `herdbook deployment NAME --utc-offset`). First: " + report.skipped[0]
        )

    dep_rows = []
    for dep in deployments:
        if dep["id"] not in first_last:
            continue
        first, last = first_last[dep["id"]]
        dep_rows.append(
            {
                "deploymentID": dep["name"],
                "locationName": dep["site"] or dep["name"],
                "latitude": round(dep["lat"], 6),
                "longitude": round(dep["lon"], 6),
                "deploymentStart": _dp_time(dep["start"], dep["utc_offset"], utc_offset) or first,
                "deploymentEnd": _dp_time(dep["end"], dep["utc_offset"], utc_offset) or last,
                "cameraID": dep["camera"],
                "timestampIssues": "true" if dep["clock_offset_s"] else "false",
                "deploymentComments": dep["clock_note"],
            }
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _ObservationSummary()
    report.rows = {
        "deployments": _write_csv(out_dir / "deployments.csv", DEPLOYMENT_COLUMNS, dep_rows),
        "media": _write_csv(out_dir / "media.csv", MEDIA_COLUMNS, _media_rows(chosen, out_dir)),
        "observations": _write_csv(
            out_dir / "observations.csv", OBSERVATION_COLUMNS, summary.watch(_observations(chosen))
        ),
    }
    times = [t for span in first_last.values() for t in span]
    span = (min(times), max(times)) if times else None
    _write_datapackage(out_dir, title, contributor, dep_rows, span, summary, media_license)
    return report


class _ChosenMedia:
    """The photos an export keeps (filters in SQL) with their Camtrap DP timestamps, read through a cursor."""

    def __init__(self, catalogue, dep_by_id, utc_offset, species, site, date_from, date_to):
        self.cat, self.dep_by_id, self.utc_offset = catalogue, dep_by_id, utc_offset
        where, params = ["m.status != 'error'"], []
        if species:
            where.append(
                "(m.species = ? OR EXISTS (SELECT 1 FROM detections d JOIN sighting_state s ON s.detection_id = d.id"
                " JOIN individuals i ON i.id = s.individual_id WHERE d.media_id = m.id AND i.species = ?))"
            )
            params += [species, species]
        if site:
            where.append("m.deployment_id IN (SELECT id FROM deployments WHERE name = ? OR site = ?)")
            params += [site, site]
        if date_from:
            where.append("substr(m.taken_at, 1, 10) >= ?")
            params.append(date_from)
        if date_to:
            where.append("substr(m.taken_at, 1, 10) <= ?")
            params.append(date_to)
        self.where, self.params = " AND ".join(where), params

    def stamp(self, row: dict) -> str | None:
        dep = self.dep_by_id[row["deployment_id"]]
        return _dp_time(row["taken_at"], dep["utc_offset"], self.utc_offset)

    def media(
        self, columns: str, joins: str = "", order: str = "m.id", also: str = "1 = 1"
    ) -> Iterator[tuple[dict, str | None]]:
        sql = (
            f"SELECT {columns}, m.deployment_id, m.taken_at AS taken_at FROM media m {joins} "
            f"WHERE {self.where} AND {also} ORDER BY {order}"
        )
        for row in self.cat.stream(sql, self.params):
            yield row, self.stamp(row)


def package_file_path(photo: str, package_root: Path) -> str:
    """Camtrap DP's filePath: relative (POSIX) when the photo is inside the package folder (``package_root``,
    resolved), else a file URL. Catalogue paths are absolute already: no file system call per photo."""
    path = os.path.abspath(photo)
    inside = os.path.join(str(package_root), "")
    if path.startswith(inside):
        return path[len(inside) :].replace(os.sep, "/")
    return Path(path).as_uri()


def _media_rows(chosen: _ChosenMedia, package_dir: Path) -> Iterator[dict]:
    package_dir = package_dir.resolve()
    for m, stamp in chosen.media("m.*"):
        if stamp is None:
            continue
        dep = chosen.dep_by_id[m["deployment_id"]]
        yield {
            "mediaID": str(m["id"]),
            "deploymentID": dep["name"],
            "captureMethod": "activityDetection",
            "timestamp": stamp,
            "filePath": package_file_path(m["path"], package_dir),
            "filePublic": "false",
            "fileName": m["file_name"],
            "fileMediatype": MEDIATYPES.get(Path(m["file_name"]).suffix.lower(), "application/octet-stream"),
            "exifData": json.dumps({k: m[k] for k in ("camera_make", "camera_model", "camera_serial") if m[k]}) or None,
            "mediaComments": (
                f"camera clock corrected by {dep['clock_offset_s']:+.0f} s" if dep["clock_offset_s"] else None
            ),
        }


class _ObservationSummary:
    """What datapackage.json says about the observations, gathered while they stream past."""

    def __init__(self):
        self.names: set[str] = set()
        self.individuals = False

    def watch(self, rows: Iterator[dict]) -> Iterator[dict]:
        for row in rows:
            if row.get("scientificName"):
                self.names.add(row["scientificName"])
            self.individuals = self.individuals or bool(row.get("individualID"))
            yield row


def _observations(chosen: _ChosenMedia) -> Iterator[dict]:
    """One observation per detection of a kept photo (with its sighting when confirmed), then one per photo
    classified by folder or tag that has no detection."""
    columns = """d.*, d.id AS detection_id, m.id AS media_id, m.width, m.height, m.orientation,
        m.species AS media_species, s.individual_id, s.who AS sighting_who, s.at AS sighting_at,
        COALESCE(mi.code, i.code) AS code, COALESCE(mi.species, i.species) AS sighting_species"""
    joins = """JOIN detections d ON d.media_id = m.id LEFT JOIN sighting_state s ON s.detection_id = d.id
        LEFT JOIN individuals i ON i.id = s.individual_id LEFT JOIN individuals mi ON mi.id = i.merged_into"""
    for d, stamp in chosen.media(columns, joins, order="d.id"):
        if stamp is None:
            continue
        confirmed = d["individual_id"] is not None
        species = (confirmed and d["sighting_species"]) or d["species"] or d["media_species"]
        obs_type = OBSERVATION_TYPES.get((d["label"] or "animal").lower(), "animal")
        row = _observation(f"det{d['detection_id']}", chosen, d, stamp, obs_type, species) | {"count": 1}
        if d["x"] is not None and d["width"] and d["height"]:
            width, height = upright_size(d["width"], d["height"], d["orientation"])  # boxes are upright
            row.update(
                bboxX=round(max(0.0, d["x"] / width), 6),
                bboxY=round(max(0.0, d["y"] / height), 6),
                bboxWidth=round(min(1.0, d["w"] / width), 6),
                bboxHeight=round(min(1.0, d["h"] / height), 6),
            )
        if confirmed:
            row.update(
                individualID=d["code"],
                classificationMethod="human",
                classifiedBy=d["sighting_who"],
                classificationTimestamp=_utc_stamp(d["sighting_at"]),
            )
        elif species and obs_type == "animal":  # the species was the user's (folder or tag), not a machine's
            row.update(classificationMethod="human", classifiedBy="species given at import (folder or tag)")
        else:
            row.update(
                classificationMethod="machine",
                classifiedBy=d["source"],
                classificationProbability=round(d["score"], 4) if d["score"] is not None else None,
                classificationTimestamp=_utc_stamp(d["created_at"]),
            )
        yield row
    # Photos a user classified by folder or tag, with no detection: one media-level observation each.
    unboxed = "m.id, m.id AS media_id, m.species AS media_species"
    no_detection = "m.species IS NOT NULL AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.media_id = m.id)"
    for m, stamp in chosen.media(unboxed, also=no_detection):
        if stamp is None:
            continue
        yield _observation(f"media{m['id']}", chosen, m, stamp, "animal", m["media_species"]) | {
            "classificationMethod": "human"
        }


def _observation(observation_id: str, chosen: _ChosenMedia, row: dict, stamp: str, obs_type: str, species) -> dict:
    """The fields every observation of one photo has: ids, its event (the photo's time), type and species (the
    scientific name when known, else the user's name as a tag)."""
    sci = species_info(species)["scientific_name"]
    return {
        "observationID": observation_id,
        "deploymentID": chosen.dep_by_id[row["deployment_id"]]["name"],
        "mediaID": str(row["media_id"]),
        "eventID": str(row["media_id"]),
        "eventStart": stamp,
        "eventEnd": stamp,
        "observationLevel": "media",
        "observationType": obs_type,
        "scientificName": sci if obs_type == "animal" else None,
        "observationTags": f"species:{species}" if species and not sci else None,
    }


def _write_datapackage(
    out_dir, title, contributor, dep_rows, time_span, summary: _ObservationSummary, media_license: str
) -> None:
    lats = [d["latitude"] for d in dep_rows]
    lons = [d["longitude"] for d in dep_rows]
    names = sorted(summary.names)
    package = {
        "profile": CAMTRAP_DP_PROFILE,
        "name": "herdbook-export",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "title": title,
        "contributors": [{"title": contributor, "role": "contact"}],
        "licenses": [{"name": "CC0-1.0", "scope": "data"}, {"name": media_license, "scope": "media"}],
        "sources": [{"title": "Herdbook", "version": "0.1.0"}],
        "project": {
            "title": title,
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": summary.individuals,
            "observationLevel": ["media"],
        },
        "spatial": {
            "type": "Polygon",
            "coordinates": [
                [
                    [min(lons), min(lats)],
                    [max(lons), min(lats)],
                    [max(lons), max(lats)],
                    [min(lons), max(lats)],
                    [min(lons), min(lats)],
                ]
            ],
        }
        if dep_rows
        else None,
        "temporal": {"start": time_span[0][:10], "end": time_span[1][:10]} if time_span else None,
        "taxonomic": [{"scientificName": n} for n in names],
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": CAMTRAP_DP_SCHEMA.format(name),
            }
            for name in ("deployments", "media", "observations")
        ],
    }
    with open(out_dir / "datapackage.json", "w", encoding="utf-8") as fh:
        json.dump(package, fh, indent=2)
