"""Import a folder of camera-trap photos into the catalogue.

Folder -> (walk, sorted) -> per file: stat, sha256, EXIF/XMP -> media rows, in batched transactions.
The content hash is a photo's identity, so a card imported twice, or a copy of it elsewhere, adds nothing.
Each file's rows (media, its path, tag-derived individuals and confirmations) are written in the same
transaction, so an import killed at any moment and run again ends exactly as one uninterrupted run.
The source folder is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .catalogue import Catalogue, shift_time, utc_now
from .exif import PhotoMeta, read_photo

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".heif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".wmv", ".m4v", ".3gp", ".asf", ".mts"}
LEVEL_NAMES = {"station", "species", "-"}
TAG_WHO = "import:xmp-tag"

# camtrapR renames photos to Station__YYYY-MM-DD__HH-MM-SS(n).JPG
_CAMTRAPR_NAME = re.compile(r"^(?P<station>.+?)__\d{4}-\d{2}-\d{2}__\d{2}-\d{2}-\d{2}\(\d+\)\.\w+$")

ProgressFn = Callable[[int, int, str], None]


class IngestError(Exception):
    """The import cannot start: a bad folder or bad options."""


@dataclass
class ImportSummary:
    import_id: int
    source: str
    files_seen: int = 0
    added: int = 0
    already_known: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    exif_problems: list[tuple[str, str]] = field(default_factory=list)  # usable images, broken EXIF
    not_processed: list[tuple[str, str]] = field(default_factory=list)  # videos etc.
    warnings: list[tuple[str, str]] = field(default_factory=list)  # odd but harmless (placeholder GPS, ...)
    ignored: int = 0  # files that are neither images nor videos (README, CSV, ...)
    cancelled: bool = False

    def lines(self) -> list[str]:
        head = (
            f"{'cancelled' if self.cancelled else 'imported'} {self.source}: {self.files_seen} files, "
            f"{self.added} new, {self.already_known} already in catalogue, {len(self.errors)} unreadable, "
            f"{len(self.exif_problems)} with broken EXIF, "
            f"{len(self.not_processed)} not processed, {self.ignored} other files ignored"
        )
        out = [head]
        out += [f"  error: {path}: {msg}" for path, msg in self.errors]
        out += [f"  broken EXIF: {path}: {msg}" for path, msg in self.exif_problems]
        out += [f"  not processed: {path}: {msg}" for path, msg in self.not_processed]
        out += [f"  warning: {path}: {msg}" for path, msg in self.warnings]
        return out


@dataclass
class CardLayout:
    """Which folder level below the import root names the station and which the species.

    ``levels`` is read from the top, e.g. ("station", "species") for <Station>/<Species>/file.jpg, with "-" for
    a level to ignore. Without it, camtrapR's file names (Station__date__time(n).JPG) are recognised.
    """

    levels: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [lv for lv in self.levels if lv not in LEVEL_NAMES]
        if bad:
            raise IngestError(f"unknown folder level {bad[0]!r}: use station, species or -")

    def read(self, relative: Path) -> dict[str, str]:
        folders = relative.parts[:-1]
        found: dict[str, str] = {}
        if self.levels:
            for name, value in zip(self.levels, folders, strict=False):
                if name != "-":
                    found[name] = value
            return found
        m = _CAMTRAPR_NAME.match(relative.name)
        if m:
            found["station"] = m["station"]  # camtrapR wrote it from the station folder
            if m["station"] in folders:
                i = folders.index(m["station"])
                if i + 1 < len(folders):
                    found["species"] = folders[i + 1]
        return found


# Folders a camera writes by itself (DCIM, 100RECNX, 101MEDIA, 100EK113): they never name a station.
_CAMERA_FOLDER = re.compile(r"^(dcim|\d{3}[a-z0-9_]{5}|misc)$", re.IGNORECASE)


def station_folder(relative: Path) -> str | None:
    """The station when nobody named one (no --site, no layout, no camtrapR names): the first folder under the card
    root that the camera did not make itself (Card/StationA/DCIM/100RECNX/IMG_0001.JPG -> StationA)."""
    return next((f for f in relative.parts[:-1] if not _CAMERA_FOLDER.match(f)), None)


def parse_tags(subjects: Sequence[str]) -> dict[str, str]:
    """digiKam/camtrapR hierarchical keywords: 'Species|Leopard Cat', 'individual|2'."""
    out: dict[str, str] = {}
    for subject in subjects:
        key, _, value = str(subject).partition("|")
        key, value = key.strip().casefold(), value.strip()
        if not value:
            continue
        if key == "species":
            out["species"] = value
        elif key in ("individual", "individual id", "individualid", "id"):
            out["individual"] = value
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def walk(folder: Path) -> tuple[list[Path], int]:
    """Candidate files under folder in a fixed order, and how many other files were passed over."""
    files, ignored = [], 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
                files.append(Path(root) / name)
            else:
                ignored += 1
    return files, ignored


@dataclass
class _Scanned:
    path: Path
    size: int
    mtime_ns: int
    sha256: str | None
    meta: PhotoMeta | None
    kind: str
    error: str | None = None


def photo_columns(meta: PhotoMeta) -> dict:
    """The media columns a photo's own metadata fills (size, place, camera, orientation); the time is the
    caller's (EXIF here, a Camtrap DP package's timestamp there)."""
    return {
        "width": meta.width,
        "height": meta.height,
        "latitude": meta.latitude,
        "longitude": meta.longitude,
        "altitude": meta.altitude,
        "camera_make": meta.camera_make,
        "camera_model": meta.camera_model,
        "camera_serial": meta.camera_serial,
        "orientation": meta.orientation,
    }


def scan_file(path: Path) -> _Scanned:
    """Everything that reads the file; runs in worker threads (hashing and decoding release the GIL)."""
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
    try:
        st = path.stat()
        digest = sha256_of(path)
    except OSError as exc:
        return _Scanned(path, 0, 0, None, None, kind, f"cannot read file: {exc.strerror or exc}")
    meta = read_photo(path) if kind == "image" else None
    return _Scanned(path, st.st_size, st.st_mtime_ns, digest, meta, kind)


class Importer:
    """One import of one folder into one catalogue. Re-running it on the same folder resumes it."""

    def __init__(
        self,
        catalogue: Catalogue,
        folder: str | Path,
        site: str | None = None,
        layout: CardLayout | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        species: str | None = None,
    ):
        self.cat = catalogue
        self.species = species  # for photos whose folders and tags name none
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise IngestError(f"{folder}: not a folder")
        self.site = site
        self.layout = layout or CardLayout()
        self.batch_size = batch_size
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._deployments: dict[str, dict] = {}

    def _import_row(self) -> int:
        db = self.cat.db
        row = db.execute("SELECT id FROM imports WHERE source = ?", [str(self.folder)]).fetchone()
        if row:
            db["imports"].update(row[0], {"status": "running", "finished_at": None})
            return row[0]
        return (
            db["imports"]
            .insert({"source": str(self.folder), "site": self.site, "started_at": utc_now(), "status": "running"})
            .last_pk
        )

    def _deployment(self, name: str) -> dict:
        if name not in self._deployments:
            self.cat.ensure_deployment(name, site=self.site)
            self._deployments[name] = self.cat.deployment(name)
        return self._deployments[name]

    def _known_path(self, path: Path) -> bool:
        """A path already imported with the same size and time is skipped without hashing it again."""
        row = self.cat.db.execute("SELECT size, mtime_ns FROM media_files WHERE path = ?", [str(path)]).fetchone()
        if not row:
            return False
        try:
            st = path.stat()
        except OSError:
            return True
        return (row[0], row[1]) == (st.st_size, st.st_mtime_ns)

    def _store(self, scanned: _Scanned, import_id: int, summary: ImportSummary) -> None:
        db = self.cat.db
        path_text = str(scanned.path)
        existing = None
        if scanned.sha256:
            existing = db.execute("SELECT id FROM media WHERE sha256 = ?", [scanned.sha256]).fetchone()
        if existing:
            summary.already_known += 1
            db["media_files"].upsert(
                {
                    "path": path_text,
                    "media_id": existing[0],
                    "import_id": import_id,
                    "size": scanned.size,
                    "mtime_ns": scanned.mtime_ns,
                },
                pk="path",
            )
            return
        meta = scanned.meta or PhotoMeta()
        relative = scanned.path.relative_to(self.folder)
        from_folders = self.layout.read(relative)
        tags = parse_tags(meta.subjects)
        station = from_folders.get("station") or self.site or station_folder(relative) or self.folder.name
        deployment = self._deployment(station)
        error = scanned.error or meta.error or meta.exif_error
        if scanned.error or meta.error:
            status = "error"
        elif scanned.kind == "video":
            status = "not processed"
        else:
            status = "ok"
        species = tags.get("species") or from_folders.get("species") or self.species
        media_id = (
            db["media"]
            .insert(
                {
                    "sha256": scanned.sha256,
                    "path": path_text,
                    "file_name": scanned.path.name,
                    "import_id": import_id,
                    "deployment_id": deployment["id"],
                    "kind": scanned.kind,
                    "status": status,
                    "taken_at": shift_time(meta.taken_at_raw, deployment["clock_offset_s"] or 0.0),
                    "taken_at_raw": meta.taken_at_raw,
                    "time_source": meta.time_source,
                    **photo_columns(meta),
                    "species": species,
                    "tags": json.dumps(meta.subjects) if meta.subjects else None,
                    "warnings": json.dumps(meta.warnings) if meta.warnings else None,
                    "error": error,
                }
            )
            .last_pk
        )
        db["media_files"].upsert(
            {
                "path": path_text,
                "media_id": media_id,
                "import_id": import_id,
                "size": scanned.size,
                "mtime_ns": scanned.mtime_ns,
            },
            pk="path",
        )
        summary.added += 1
        if tags.get("individual") and status == "ok":
            # A tagged archive already says who is in the photo: a confirmed sighting without a box.
            individual_id = self.cat.ensure_individual(tags["individual"], species or "unknown")
            detection_id = self.cat.add_detection(media_id, None, source="tag", label=species)
            self.cat.confirm(detection_id, individual_id, who=TAG_WHO)

    def run(self, progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> ImportSummary:
        files, ignored = walk(self.folder)
        import_id = self._import_row()
        summary = ImportSummary(import_id=import_id, source=str(self.folder), ignored=ignored)
        summary.files_seen = len(files)
        done = 0
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(files), self.batch_size):
                if cancel is not None and cancel.is_set():
                    summary.cancelled = True
                    break
                batch = files[start : start + self.batch_size]
                fresh = [p for p in batch if not self._known_path(p)]
                summary.already_known += len(batch) - len(fresh)
                scanned = list(pool.map(scan_file, fresh))
                with self.cat.transaction():
                    for item in scanned:
                        self._store(item, import_id, summary)
                done += len(batch)
                if progress:
                    progress(done, len(files), str(batch[-1]))
        # Problems are reported from the catalogue, so a resumed import still lists those of its first run.
        for row in self.cat.db.query(
            "SELECT path, kind, status, error FROM media"
            " WHERE import_id = ? AND (status != 'ok' OR error IS NOT NULL) ORDER BY id",
            [import_id],
        ):
            if row["status"] == "error":
                summary.errors.append((row["path"], row["error"]))
            elif row["status"] == "ok":
                summary.exif_problems.append((row["path"], row["error"]))
            else:
                summary.not_processed.append((row["path"], f"{row['kind']}: recorded, not analysed"))
        for row in self.cat.db.query(
            "SELECT path, warnings FROM media WHERE import_id = ? AND warnings IS NOT NULL ORDER BY id", [import_id]
        ):
            summary.warnings += [(row["path"], w) for w in json.loads(row["warnings"])]
        self.cat.db["imports"].update(
            import_id,
            {
                "status": "cancelled" if summary.cancelled else "finished",
                "finished_at": None if summary.cancelled else utc_now(),
            },
        )
        return summary


def import_folder(
    catalogue: Catalogue,
    folder: str | Path,
    site: str | None = None,
    levels: Sequence[str] = (),
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    batch_size: int = 32,
    species: str | None = None,
) -> ImportSummary:
    """Import every photo under ``folder``; see :class:`Importer`."""
    importer = Importer(
        catalogue, folder, site=site, layout=CardLayout(tuple(levels)), batch_size=batch_size, species=species
    )
    return importer.run(progress=progress, cancel=cancel)
