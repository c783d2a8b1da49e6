"""Offline-first sync between a station's catalogue and a central one (issue 14).

A station works on its own SQLite file for weeks; when it can reach the central catalogue (PostgreSQL, or any
catalogue), ``sync`` does two things:

* **push** what the station made: deployments (named ``station/name`` centrally), photo metadata (paths stay
  the station's), detections, individuals, embeddings and coat-pattern features, a small crop of each animal
  (so a remote reviewer sees it), and the decision and merge logs;
* **pull** what other stations made that this one needs: their individuals with the gallery of each (the
  detections of its standing sightings, as rows whose photo is ``remote``, with embeddings, pattern features
  and thumbnails), merges, and any decision someone elsewhere made on this station's detections;
* both ways, the trails of each detection's side and species (schema 9): a flank corrected after a sync reaches
  the other catalogues, and the correction made last stands everywhere.

Every row carries a stable id (engine.catalogue migration 6): (origin catalogue UUID, id there). Rows are
inserted with "on conflict do nothing" under that id, batch by batch, each batch committed: a sync that is
killed resumes where it stopped, and a second sync moves nothing. Two decisions on one detection from two
places are both kept in the log; the one that reaches the catalogue last stands, and both stay visible there.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .catalogue import DETECTION_TRAILS, Catalogue, utc_now
from .decisions import settle_changes

THUMBNAIL_SIDE = 192  # px, longest side: enough to see the animal and its flank, ~8 KB as JPEG
BATCH = 500
LOG_PAGE = 20_000  # central decision-log rows read (and their gallery copied) at a time

Progress = Callable[[str, int, int], None]


class SyncCancelled(Exception):
    """The user cancelled; everything committed so far stays and the next sync goes on from there."""


@dataclass
class SyncReport:
    pushed: Counter = field(default_factory=Counter)
    pulled: Counter = field(default_factory=Counter)
    renamed: list[str] = field(default_factory=list)
    thumbnail_errors: list[str] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return sum(self.pushed.values()) + sum(self.pulled.values())

    def lines(self) -> list[str]:
        def part(c: Counter) -> str:
            return ", ".join(f"{n} {t}" for t, n in sorted(c.items()) if n) or "nothing"

        out = [f"pushed: {part(self.pushed)}", f"pulled: {part(self.pulled)}"]
        out += [f"  renamed: {r}" for r in self.renamed]
        out += [f"  no thumbnail: {e}" for e in self.thumbnail_errors[:20]]
        return out


def station_name(cat: Catalogue, name: str | None = None) -> str:
    """The station's name in other catalogues: given once, kept in the catalogue (default: the file's name)."""
    row = cat.db.execute("SELECT value FROM catalogue_info WHERE key = 'station'").fetchone()
    if row and (name is None or name == row[0]):
        return row[0]
    chosen = name or cat.path.stem
    with cat.transaction():
        cat.db.execute("DELETE FROM catalogue_info WHERE key = 'station'")
        cat.db.execute("INSERT INTO catalogue_info (key, value) VALUES ('station', ?)", [chosen])
    return chosen


class KeyMap:
    """Ids of one table in ``src`` -> ids of the same rows in ``dst``, through their stable ids."""

    def __init__(self, src: Catalogue, dst: Catalogue, table: str, fallback: str | None = None):
        self.src, self.dst, self.table, self.fallback = src, dst, table, fallback
        self.src_uuid, self.dst_uuid = src.uuid, dst.uuid
        self.cache: dict[int, int | None] = {}
        # The src's own rows that dst has already: one query, not one per row.
        for origin_id, dst_id in dst.db.execute(
            f"SELECT origin_id, id FROM {table} WHERE origin = ?", [self.src_uuid]
        ).fetchall():
            self.cache[origin_id] = dst_id

    def stable(self, src_id: int) -> tuple[str, int]:
        row = self.src.db.execute(f"SELECT origin, origin_id FROM {self.table} WHERE id = ?", [src_id]).fetchone()
        return (row[0], row[1]) if row and row[0] else (self.src_uuid, src_id)

    def __call__(self, src_id: int | None, key: tuple[str, int] | None = None) -> int | None:
        if src_id is None:
            return None
        if src_id not in self.cache:
            origin, origin_id = key or self.stable(src_id)
            if origin == self.dst_uuid:
                self.cache[src_id] = origin_id
            else:
                row = self.dst.db.execute(
                    f"SELECT id FROM {self.table} WHERE origin = ? AND origin_id = ?", [origin, origin_id]
                ).fetchone()
                if row is None and self.fallback:  # the same photo reached dst from another station
                    value = self.src.db.execute(
                        f"SELECT {self.fallback} FROM {self.table} WHERE id = ?", [src_id]
                    ).fetchone()[0]
                    row = self.dst.db.execute(
                        f"SELECT id FROM {self.table} WHERE {self.fallback} = ?", [value]
                    ).fetchone()
                self.cache[src_id] = row[0] if row else None
        return self.cache[src_id]


def _stable_key(src: Catalogue, row: dict) -> tuple[str, int]:
    return (row["origin"], row["origin_id"]) if row.get("origin") else (src.uuid, row["id"])


def _insert_sql(table: str, cols: list[str], on_conflict: str = "") -> str:
    names = ", ".join(f'"{c}"' for c in cols)  # quoted: deployments has a column named "end"
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT {on_conflict}DO NOTHING"


def _insert_keyed(dst: Catalogue, table: str, row: dict) -> tuple[int | None, bool]:
    """Insert ``row`` (with origin, origin_id) unless dst has it; its dst id and whether it was new. Only a row
    with the same stable id is skipped: any other conflict (a key taken, a photo already there) is an error,
    never a row silently left out."""
    cols = list(row)
    cur = dst.db.execute(_insert_sql(table, cols, "(origin, origin_id) "), [row[c] for c in cols])
    new = cur.rowcount > 0
    found = dst.db.execute(
        f"SELECT id FROM {table} WHERE origin = ? AND origin_id = ?", [row["origin"], row["origin_id"]]
    ).fetchone()
    return (found[0] if found else None), new


def _batches(rows: list, size: int = BATCH):
    for start in range(0, len(rows), size):
        yield start, rows[start : start + size]


class _Copier:
    """Copies rows of one catalogue into another, table by table, in committed batches."""

    def __init__(self, src: Catalogue, dst: Catalogue, counts: Counter, report: SyncReport, progress, cancel):
        self.src, self.dst, self.counts, self.report = src, dst, counts, report
        self.progress, self.cancel = progress, cancel
        self.maps: dict[str, KeyMap] = {}
        self.models: dict[int, int] = {}

    def keymap(self, table: str) -> KeyMap:
        if table not in self.maps:
            self.maps[table] = KeyMap(self.src, self.dst, table, fallback="sha256" if table == "media" else None)
        return self.maps[table]

    def model_id(self, src_model: int | None) -> int | None:
        """Models are the same files everywhere: matched by name and version, created in dst when missing
        (looked up once per model, not once per detection or decision)."""
        if src_model is None:
            return None
        if src_model not in self.models:
            self.models[src_model] = self._dst_model(src_model)
        return self.models[src_model]

    def _dst_model(self, src_model: int) -> int:
        row = self.src.query("SELECT name, version, kind, onnx_sha256, card FROM models WHERE id = ?", [src_model])[0]
        found = self.dst.db.execute(
            "SELECT id FROM models WHERE name = ? AND version = ?", [row["name"], row["version"]]
        ).fetchone()
        if found:
            return found[0]
        return self.dst.db["models"].insert(row | {"created": utc_now()}).last_pk

    def detection(self, row: dict) -> dict | None:
        """A detection shaped for dst: its photo and model mapped (None while its photo is not there)."""
        media_id = self.keymap("media")(row["media_id"])
        if media_id is None:
            return None
        return {k: v for k, v in row.items() if k not in ("id", "origin", "origin_id")} | {
            "media_id": media_id,
            "model_id": self.model_id(row["model_id"]),
        }

    def step(self, stage: str, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel():
            raise SyncCancelled(f"sync cancelled during {stage}; run it again to go on")
        if self.progress:
            self.progress(stage, done, total)

    def keyed(
        self,
        table: str,
        rows: list[dict],
        shape: Callable[[dict], dict | None],
        stage: str,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        """Rows with a stable id: shaped for dst (ids mapped), inserted unless there already. ``after_batch`` runs
        in each batch's transaction, after its rows (what they change elsewhere commits with them)."""
        keymap = self.keymap(table)
        dst_uuid = self.dst.uuid
        for start, batch in _batches(rows):
            self.step(stage, start, len(rows))
            with self.dst.transaction():
                for row in batch:
                    origin, origin_id = key = _stable_key(self.src, row)
                    if origin == dst_uuid or keymap(row["id"], key) is not None:
                        continue  # dst's own row, or one it has already
                    shaped = shape(row)
                    if shaped is None:
                        continue
                    dst_id, new = _insert_keyed(self.dst, table, shaped | {"origin": origin, "origin_id": origin_id})
                    keymap.cache.pop(row["id"], None)
                    if dst_id is None:  # refused as a duplicate of another row (a photo two stations both hold)
                        dst_id = keymap(row["id"], key)
                    keymap.cache[row["id"]] = dst_id
                    if new:
                        self.counts[table] += 1
                if after_batch is not None:
                    after_batch()
        self.step(stage, len(rows), len(rows))

    def changes(self, trail: str, rows: list[dict], stage: str) -> None:
        """A side or species trail's rows on detections dst holds; each detection they reach then takes its
        trail's latest value (engine.decisions.settle_changes), in the same transaction as the rows."""
        detections = self.keymap("detections")
        value = DETECTION_TRAILS[trail][1]
        reached: set[int] = set()
        arrived = utc_now()

        def shape(row: dict) -> dict | None:
            det = detections(row["detection_id"])
            if det is not None:
                reached.add(det)
                return {value: row[value], "who": row["who"], "at": row["at"], "detection_id": det, "arrived": arrived}
            return None  # its detection is not there (yet): the pull that brings it brings its trail too

        def settle() -> None:
            settle_changes(self.dst, trail, sorted(reached))
            reached.clear()

        self.keyed(trail, rows, shape, stage, after_batch=settle)

    def per_detection(
        self, table: str, rows: list[dict], columns: list[str], stage: str, done: int = 0, total: int | None = None
    ) -> None:
        """Rows keyed by their detection (embeddings, patterns, thumbnails): inserted unless there already.
        ``done`` and ``total`` place these rows in a longer run, for the progress."""
        detections = self.keymap("detections")
        total = len(rows) if total is None else total
        for start, batch in _batches(rows):
            self.step(stage, done + start, total)
            with self.dst.transaction():
                for row in batch:
                    det = detections(row["detection_id"])
                    if det is None:
                        continue
                    values = {c: row[c] for c in columns} | {"detection_id": det}
                    if "model_id" in values:
                        values["model_id"] = self.model_id(values["model_id"])
                    cols = list(values)
                    cur = self.dst.db.execute(
                        _insert_sql(table, cols),
                        [values[c] for c in cols],
                    )
                    if cur.rowcount > 0:
                        self.counts[table] += 1
        self.step(stage, done + len(rows), total)

    def individuals(self, rows: list[dict], origin_names: dict[str, str], stage: str) -> None:
        """Individuals keep their code where it is free in dst; a code taken there by another animal becomes
        ``code@station`` (the two are perhaps one animal: engine.merge_proposals asks)."""

        def shape(row: dict) -> dict:
            code = row["code"]
            taken = self.dst.db.execute(
                "SELECT 1 FROM individuals WHERE species = ? AND code = ?", [row["species"], code]
            ).fetchone()
            if taken:
                where = origin_names.get(row.get("origin") or self.src.uuid, "elsewhere")
                code = f"{code}@{where}"
                self.report.renamed.append(f"{row['species']} {row['code']} -> {code}")
            return {k: row[k] for k in ("name", "species", "notes", "created_at")} | {"code": code}

        self.keyed("individuals", rows, shape, stage)

    def log(self, table: str, rows: list[dict], stage: str) -> None:
        """The decision log and the merge log, in their order (an undo refers to an earlier row)."""
        individuals, detections = self.keymap("individuals"), self.keymap("detections")
        own = self.keymap(table)

        def assignment(row: dict) -> dict | None:
            det = detections(row["detection_id"])
            if det is None:
                return None
            return {k: row[k] for k in ("status", "score", "rank", "who", "at", "note", "proposal")} | {
                "detection_id": det,
                "individual_id": individuals(row["individual_id"]),
                "undoes": own(row["undoes"]),
                "model_id": self.model_id(row["model_id"]),
            }

        def merge(row: dict) -> dict | None:
            kept, merged = individuals(row["kept_id"]), individuals(row["merged_id"])
            if kept is None or merged is None:
                return None
            return {
                "kept_id": kept,
                "merged_id": merged,
                "who": row["who"],
                "at": row["at"],
                "undoes": own(row["undoes"]),
            }

        self.keyed(table, rows, assignment if table == "assignments" else merge, stage)


def _rederive_merged_into(cat: Catalogue) -> None:
    """individuals.merged_into mirrors the merge log (engine.decisions): re-derived after merge rows arrived."""
    with cat.transaction():
        cat.db.execute("UPDATE individuals SET merged_into = NULL WHERE merged_into IS NOT NULL")
        standing = cat.query(
            "SELECT m.kept_id, m.merged_id FROM merges m WHERE m.undoes IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM merges u WHERE u.undoes = m.id) ORDER BY m.id"
        )
        for row in standing:  # as engine.decisions.merge does, in the log's order
            cat.db.execute("UPDATE individuals SET merged_into = ? WHERE id = ?", [row["kept_id"], row["merged_id"]])
            cat.db.execute(
                "UPDATE individuals SET merged_into = ? WHERE merged_into = ?", [row["kept_id"], row["merged_id"]]
            )


def make_thumbnails(cat: Catalogue, report: SyncReport, progress=None, cancel=None) -> int:
    """A small JPEG crop of every animal detection of this station that has none yet (decoded at reduced
    size: an 8 MP frame is not decoded whole for a 192 px crop)."""
    from PIL import Image, ImageOps

    from .imageio import ImageError, open_image

    rows = cat.query(
        "SELECT d.id, d.x, d.y, d.w, d.h, m.path "
        "FROM detections d JOIN media m ON m.id = d.media_id WHERE d.origin IS NULL AND m.status = 'ok' "
        "AND (d.label IS NULL OR d.label NOT IN ('person', 'vehicle', 'human')) "
        "AND NOT EXISTS (SELECT 1 FROM thumbnails t WHERE t.detection_id = d.id) ORDER BY d.id"
    )
    made = 0
    for start, batch in _batches(rows, 50):
        if cancel is not None and cancel():
            raise SyncCancelled("sync cancelled while making thumbnails; run it again to go on")
        if progress:
            progress("thumbnails", start, len(rows))
        out = []
        for row in batch:
            try:
                with open_image(row["path"]) as image:
                    full = image.size
                    box = (row["x"], row["y"], row["w"], row["h"]) if row["w"] else None
                    # Draft to the scale at which the box is still at least THUMBNAIL_SIDE on its long side.
                    long_side = max(box[2:]) if box else max(full)
                    scale = min(1.0, THUMBNAIL_SIDE / max(long_side, 1))
                    image.draft("RGB", (max(1, int(full[0] * scale)), max(1, int(full[1] * scale))))
                    upright = ImageOps.exif_transpose(image).convert("RGB")
                    # Boxes are in full-size upright pixels: scale by the upright full width, not the file's.
                    turned = image.getexif().get(0x0112) in (5, 6, 7, 8)
                    k = upright.size[0] / (full[1] if turned else full[0])
                    if box:
                        x, y, w, h = (v * k for v in box)
                        upright = upright.crop((int(x), int(y), int(x + w), int(y + h)))
                    upright.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
                    buffer = io.BytesIO()
                    upright.save(buffer, "JPEG", quality=80)
                    out.append((row["id"], buffer.getvalue()))
            except (ImageError, OSError, ValueError) as exc:
                report.thumbnail_errors.append(f"detection {row['id']}: {exc}")
        with cat.transaction():
            for det, jpeg in out:
                cat.db.execute("INSERT OR IGNORE INTO thumbnails (detection_id, jpeg) VALUES (?, ?)", [det, jpeg])
        made += len(out)
    return made


def _register_station(central: Catalogue, uuid: str, name: str) -> dict[str, str]:
    with central.transaction():
        central.db.execute("DELETE FROM stations WHERE uuid = ?", [uuid])
        central.db.execute("INSERT INTO stations (uuid, name, last_sync) VALUES (?, ?, ?)", [uuid, name, utc_now()])
    return {r["uuid"]: r["name"] for r in central.query("SELECT uuid, name FROM stations")}


def push(local: Catalogue, central: Catalogue, station: str, report: SyncReport, progress=None, cancel=None) -> None:
    """Everything the station made (origin NULL) that central lacks."""
    copier = _Copier(local, central, report.pushed, report, progress, cancel)
    names = _register_station(central, local.uuid, station)
    own = "WHERE origin IS NULL ORDER BY id"

    def deployment(row: dict) -> dict:
        keep = ("site", "camera", "latitude", "longitude", "utc_offset", "clock_offset_s", "clock_note", "start", "end")
        return {k: row[k] for k in keep} | {"name": f"{station}/{row['name']}"}

    copier.keyed("deployments", local.query(f"SELECT * FROM deployments {own}"), deployment, "deployments")
    deployments = copier.keymap("deployments")

    def media(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("id", "origin", "origin_id", "import_id")} | {
            "deployment_id": deployments(row["deployment_id"])
        }

    copier.keyed("media", local.query(f"SELECT * FROM media {own}"), media, "photos")

    copier.keyed("detections", local.query(f"SELECT * FROM detections {own}"), copier.detection, "detections")
    copier.individuals(local.query(f"SELECT * FROM individuals {own}"), names, "individuals")
    mine = "JOIN detections d ON d.id = x.detection_id WHERE d.origin IS NULL ORDER BY x.detection_id"
    copier.per_detection(
        "embeddings", local.query(f"SELECT x.* FROM embeddings x {mine}"), ["model_id", "vector"], "embeddings"
    )
    copier.per_detection(
        "patterns", local.query(f"SELECT x.* FROM patterns x {mine}"), ["method", "features"], "patterns"
    )
    make_thumbnails(local, report, progress, cancel)
    copier.per_detection("thumbnails", local.query(f"SELECT x.* FROM thumbnails x {mine}"), ["jpeg"], "thumbnails")
    copier.log("assignments", local.query(f"SELECT * FROM assignments {own}"), "decisions")
    for trail in DETECTION_TRAILS:  # sides and species corrected here, also on others' gallery detections
        copier.changes(trail, local.query(f"SELECT * FROM {trail} {own}"), trail.replace("_", " "))
    before = report.pushed["merges"]
    copier.log("merges", local.query(f"SELECT * FROM merges {own}"), "merges")
    if report.pushed["merges"] > before:
        _rederive_merged_into(central)


def _pull_marks(local: Catalogue, central: Catalogue) -> dict[str, int]:
    """How far this station has read the central catalogue's append-only tables (their largest ids)."""
    row = local.db.execute("SELECT value FROM catalogue_info WHERE key = ?", [f"pulled:{central.uuid}"]).fetchone()
    # Marks saved before the change logs travelled lack them: those logs are read from the start once.
    return dict.fromkeys(("individuals", "assignments", "merges", *DETECTION_TRAILS), 0) | (
        json.loads(row[0]) if row else {}
    )


def _save_pull_marks(local: Catalogue, central: Catalogue, marks: dict[str, int]) -> None:
    with local.transaction():
        local.db.execute("DELETE FROM catalogue_info WHERE key = ?", [f"pulled:{central.uuid}"])
        local.db.execute(
            "INSERT INTO catalogue_info (key, value) VALUES (?, ?)", [f"pulled:{central.uuid}", json.dumps(marks)]
        )


def pull(local: Catalogue, central: Catalogue, report: SyncReport, progress=None, cancel=None) -> None:
    """Other stations' individuals with their galleries, merges, and others' decisions on this station's rows.

    Only what central added since the last completed pull is read: individuals, the decision log and the merge
    log only grow, and a detection joins another station's gallery only through a new log row. The log is read
    a page at a time, each page's gallery copied before the next is read, so memory stays flat however large
    central is. The marks move once the pull has committed everything, so a killed pull reads the same rows
    again (and skips what it has)."""
    copier = _Copier(central, local, report.pulled, report, progress, cancel)
    names = {r["uuid"]: r["name"] for r in central.query("SELECT uuid, name FROM stations")}
    names.setdefault(central.uuid, "central")
    here = local.uuid
    marks = _pull_marks(local, central)
    tops = {t: central.db.execute(f"SELECT COALESCE(max(id), 0) FROM {t}").fetchone()[0] for t in marks}
    elsewhere = "(origin IS NULL OR origin != ?)"
    copier.individuals(
        central.query(
            f"SELECT * FROM individuals WHERE {elsewhere} AND id > ? AND id <= ? ORDER BY id",
            [here, marks["individuals"], tops["individuals"]],
        ),
        names,
        "individuals",
    )
    # Embeddings only of the models this station uses.
    used = {(r["name"], r["version"]) for r in local.query("SELECT name, version FROM models")}
    models = {
        r["id"] for r in central.query("SELECT id, name, version FROM models") if (r["name"], r["version"]) in used
    }
    first, last = marks["assignments"], tops["assignments"]
    for page_start in range(first, last, LOG_PAGE):
        copier.step("central log", page_start - first, last - first)
        log = central.query(
            "SELECT a.*, d.origin AS detection_origin FROM assignments a JOIN detections d ON d.id = a.detection_id "
            "WHERE (a.origin IS NULL OR a.origin != ?) AND a.id > ? AND a.id <= ? ORDER BY a.id",
            [here, page_start, min(page_start + LOG_PAGE, last)],
        )
        _pull_log_page(copier, central, log, models, here)
    copier.step("central log", last - first, last - first)
    before = report.pulled["merges"]
    copier.log(
        "merges",
        central.query(
            f"SELECT * FROM merges WHERE {elsewhere} AND id > ? AND id <= ? ORDER BY id",
            [here, marks["merges"], tops["merges"]],
        ),
        "merges",
    )
    if report.pulled["merges"] > before:
        _rederive_merged_into(local)
    # Sides and species corrected elsewhere on detections this station holds (its own, or its gallery's), a page
    # at a time as the decision log.
    for trail in DETECTION_TRAILS:
        stage = trail.replace("_", " ")
        for page_start in range(marks[trail], tops[trail], LOG_PAGE):
            rows = central.query(
                f"SELECT * FROM {trail} WHERE {elsewhere} AND id > ? AND id <= ? ORDER BY id",
                [here, page_start, min(page_start + LOG_PAGE, tops[trail])],
            )
            copier.changes(trail, rows, stage)
    _save_pull_marks(local, central, tops)


def _pull_log_page(copier: _Copier, central: Catalogue, log: list[dict], models: set[int], here: str) -> None:
    """One page of central's decision log: the gallery it touches, then the decisions this station needs."""
    # The gallery those rows touch: standing sightings of detections made elsewhere (photos as 'remote' rows).
    touched = sorted({r["detection_id"] for r in log if r["status"] != "suggested" and r["detection_origin"] != here})
    gallery = _rows_in(
        central,
        "SELECT d.* FROM sighting_state s JOIN detections d ON d.id = s.detection_id "
        "JOIN individuals i ON i.id = s.individual_id WHERE (i.origin IS NULL OR i.origin != ?) AND d.id IN ({})",
        touched,
        (here,),
    )
    photos = _rows_in(central, "SELECT * FROM media WHERE id IN ({})", sorted({r["media_id"] for r in gallery}))

    def media(row: dict) -> dict:
        keep = {k: v for k, v in row.items() if k not in ("id", "origin", "origin_id", "import_id", "deployment_id")}
        return keep | {"status": "remote"}  # never opened here: the photo stays at its station

    copier.keyed("media", photos, media, "photos")
    held = copier.keymap("detections")
    arriving = [r["id"] for r in gallery if held(r["id"], _stable_key(central, r)) is None]
    copier.keyed("detections", gallery, copier.detection, "detections")
    ids = [r["id"] for r in gallery]
    # The side and species trails of the detections arriving now, in full: a change made before a detection came
    # here was passed over when it was pulled, and the latest change stands only where every change is held
    # (engine.decisions.settle_changes). Detections held already got theirs when they came.
    for trail in DETECTION_TRAILS:
        for rows in _chunks_in(central, f"SELECT * FROM {trail} WHERE detection_id IN ({{}})", arriving):
            copier.changes(trail, rows, trail.replace("_", " "))
    for table, columns in (
        ("embeddings", ["model_id", "vector"]),
        ("patterns", ["method", "features"]),
        ("thumbnails", ["jpeg"]),
    ):
        # A chunk of detections at a time: the gallery's vectors and crops never sit in memory at once.
        sql = f"SELECT * FROM {table} WHERE detection_id IN ({{}})"
        for n, rows in enumerate(_chunks_in(central, sql, ids)):
            if table == "embeddings":
                rows = [r for r in rows if r["model_id"] in models]
            copier.per_detection(table, rows, columns, table, done=n * BATCH, total=len(ids))
    # The decisions on detections this station holds: its own, the gallery's (not others' suggestions on it),
    # and later decisions on gallery detections pulled earlier (a rejection made centrally).
    wanted = set(ids)
    relevant = [
        r
        for r in log
        if r["detection_origin"] == here
        or (r["status"] != "suggested" and (r["detection_id"] in wanted or held(r["detection_id"]) is not None))
    ]
    copier.log("assignments", [{k: v for k, v in r.items() if k != "detection_origin"} for r in relevant], "decisions")


def _chunks_in(cat: Catalogue, sql: str, values: list, params: tuple = ()) -> Iterator[list[dict]]:
    """``sql``'s rows, one list per BATCH values: its ``IN ({})`` filled with each chunk in turn."""
    for start in range(0, len(values), BATCH):
        chunk = values[start : start + BATCH]
        yield cat.query(sql.format(", ".join("?" * len(chunk))), [*params, *chunk])


def _rows_in(cat: Catalogue, sql: str, values: list, params: tuple = ()) -> list[dict]:
    """``sql``'s rows for every value (chunked as ``_chunks_in``)."""
    return [row for rows in _chunks_in(cat, sql, values, params) for row in rows]


def sync(
    local: Catalogue,
    central: Catalogue,
    station: str | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SyncReport:
    """Push what ``local`` made, then pull what it needs; both directions resume after an interruption and a
    second run moves nothing."""
    if local.uuid == central.uuid:
        raise ValueError(f"{local.location} and {central.location} are the same catalogue")
    name = station_name(local, station)
    report = SyncReport()
    push(local, central, name, report, progress, cancel)
    pull(local, central, report, progress, cancel)
    return report
