"""Folder -> suggestions: ingest -> detect -> embed (and coat pattern) -> suggest, each stage a function of the
catalogue's state.

Every stage picks up only the work not yet recorded (photos without a detection pass for this detector,
detections without an embedding for this model, detections without a suggestion from this model), and
commits in batches, so a run that is killed or cancelled resumes where it stopped: nothing twice, nothing lost.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .calibration import Fusion
from .catalogue import DETECTION_TRAILS, Catalogue
from .decisions import record_side
from .detect import load_detector
from .gallery_index import gallery_folder, open_gallery
from .imageio import ImageError, crop, load_rgb, load_rgb_reduced
from .ingest import ImportSummary, import_folder
from .match import bursts, group_new, judge_bursts, log_odds_lead, match_reason, suggest
from .pattern import PATTERN_METHOD, PatternFeatures, PatternMatch, draw_match
from .pattern import extract as extract_pattern
from .pattern import match as match_pattern
from .reid import Embedder
from .side import SideClassifier, embedded_side_inputs

CROP_MARGIN = 0.05  # a detector's box is tight; re-identification sees a little of the animal's outline too
StageProgress = Callable[[str, int, int], None]  # stage, done, total


@dataclass
class StageStats:
    items: int = 0
    seconds: float = 0.0
    empty: int = 0  # detect stage: photos where no animal was found
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


@dataclass
class PipelineSummary:
    ingest: ImportSummary | None
    stages: dict[str, StageStats]
    device: str
    cancelled: bool = False

    def lines(self) -> list[str]:
        out = self.ingest.lines() if self.ingest else []
        for name, st in self.stages.items():
            problems = f", {len(st.errors)} problems" if st.errors else ""
            empty = f", {st.empty} with no animal (empty frames)" if name == "detect" else ""
            out.append(f"{name}: {st.items} in {st.seconds:.1f} s ({st.per_second:.1f}/s){empty}{problems}")
            out += [f"  {e}" for e in st.errors[:20]]
        out.append(f"compute device: {self.device}")
        return out


# The logs whose new rows can make a detection's suggestion pending again (an undone decision; a side or species
# set after its suggestions were made), watched by the suggest stage's marks.
CHANGE_LOGS = ("assignments", *DETECTION_TRAILS)
# What identifies the last embedding row a suggest stage saw: a restored backup reuses rowids and detection ids
# for other photos, but not their vectors.
_EMBEDDING_ROW = "detection_id, model_id, substr(vector, 1, 32)"


def _row_key(row) -> list | None:
    """A mark's row as JSON can hold it (the vector's first bytes as hex)."""
    return [v.hex().upper() if isinstance(v, (bytes, memoryview)) else v for v in row] if row else None


SEARCH_DEPTH = 200  # gallery photos per query that are aggregated into individuals (engine.match.suggest)
SEARCH_BLOCK = 256  # queries searched together: the gallery is read once per block, not once per query


class PatternStore:
    """Detection id -> its stored coat-pattern features (current recipe), read once per suggestion run."""

    def __init__(self, catalogue: Catalogue):
        self.cat = catalogue
        self.cache: dict[int, PatternFeatures | None] = {}

    def __call__(self, detection_id: int) -> PatternFeatures | None:
        if detection_id not in self.cache:
            row = self.cat.db.execute(
                "SELECT features FROM patterns WHERE detection_id = ? AND method = ?", [detection_id, PATTERN_METHOD]
            ).fetchone()
            self.cache[detection_id] = PatternFeatures.from_bytes(row[0]) if row else None
        return self.cache[detection_id]


@dataclass
class Suggested:
    """One detection's suggestions while a suggest stage runs: its verified candidates (best first), whether it is
    probably new, its best score, its embedding, and how many photos of its burst judged it."""

    row: dict
    cands: list
    is_new: bool
    best: float
    vector: np.ndarray
    photos: int = 1


class Pipeline:
    def __init__(
        self,
        catalogue: Catalogue,
        detector=None,
        reid_model: str | Path | None = None,
        species: str | None = None,
        batch_size: int = 16,
        who: str | None = None,
    ):
        self.cat = catalogue
        self._detector_spec = detector
        self.embedder = Embedder(reid_model)
        card = self.embedder.card
        self.reid_model_id = catalogue.ensure_model(
            card["name"], card["version"], "reid", card.data.get("onnx_sha256"), card.data
        )
        # Appearance similarity: the open set without fusion, and when two new detections look alike.
        self.appearance_threshold = float(card.data.get("open_set_threshold") or 0.5)
        self.fusion = Fusion.from_card(card.data)  # carries its own 'probably new' probability
        self.side_classifier = SideClassifier.from_card(card.data)  # a detection's flank, where nobody recorded it
        self.species = species
        self.batch_size = batch_size
        self.inferred_by = f"model:{card['name']}-{card['version']}"  # what the model infers is signed so
        self.who = who or self.inferred_by

    @cached_property
    def detector(self):
        """Loaded on first use: re-embedding and suggesting never pay for a detector session."""
        spec = self._detector_spec
        return spec if spec is not None and not isinstance(spec, str | Path) else load_detector(spec)

    @cached_property
    def detector_model_id(self) -> int:
        return self.cat.ensure_model(self.detector.name, self.detector.version, "detector")

    @property
    def device(self) -> str:
        devices = {self.embedder.device}
        if "detector" in self.__dict__:  # only a detector that ran says where it ran
            devices.add(self.detector.device)
        return " + ".join(sorted(devices))

    # -- detect ---------------------------------------------------------------------------------------------
    def pending_detection(self, media_ids: list[int] | None = None) -> list[dict]:
        sql = """SELECT m.id, m.path FROM media m WHERE m.status = 'ok' AND m.kind = 'image'
                 AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.media_id = m.id)
                 AND NOT EXISTS (SELECT 1 FROM media_stages s WHERE s.media_id = m.id AND s.stage = 'detect')"""
        # A photo is searched once, by whichever detector came first (a MegaDetector file's empty frame stays
        # empty; the bundled detector covers only the photos that file does not name).
        rows = self.cat.query(sql + " ORDER BY m.id")
        if media_ids is None:
            return rows
        wanted = set(media_ids)
        return [r for r in rows if r["id"] in wanted]

    def detect(self, media_ids=None, progress: StageProgress | None = None, cancel=None) -> StageStats:
        stats, t0 = StageStats(), time.perf_counter()
        todo = self.pending_detection(media_ids)
        label = self.detector.name

        def load(row):
            try:  # every detector says the least it needs to see (`input_size`)
                return load_rgb_reduced(row["path"], self.detector.input_size)
            except ImageError as exc:
                return exc

        # Decoding (PIL releases the GIL) runs in threads, one batch ahead of the detector.
        with ThreadPoolExecutor(max_workers=2) as pool:
            batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
            pending = pool.map(load, batches[0]) if batches else None
            for number, batch in enumerate(batches):
                if cancel is not None and cancel.is_set():
                    break
                loaded = list(pending)
                if number + 1 < len(batches):
                    pending = pool.map(load, batches[number + 1])
                found = []
                for row, item in zip(batch, loaded, strict=True):
                    if isinstance(item, ImageError):
                        stats.errors.append(str(item))
                        found.append((row, []))
                        continue
                    image, (full_w, full_h) = item
                    sx, sy = full_w / image.shape[1], full_h / image.shape[0]
                    boxes = [(b.x * sx, b.y * sy, b.w * sx, b.h * sy, b) for b in self.detector(image)]
                    found.append((row, boxes))
                with self.cat.transaction():
                    for row, boxes in found:
                        for *xywh, box in boxes:
                            self.cat.add_detection(
                                row["id"],
                                tuple(xywh),
                                score=box.score,
                                label=box.label,
                                source=label,
                                model_id=self.detector_model_id,
                            )
                        self.cat.mark_stage(row["id"], "detect", self.detector_model_id)
                        stats.empty += not any(b.label == "animal" for *_, b in boxes)
                stats.items += len(found)
                if progress:
                    progress("detect", min((number + 1) * self.batch_size, len(todo)), len(todo))
        stats.seconds = time.perf_counter() - t0
        return stats

    # -- embed ----------------------------------------------------------------------------------------------
    def pending_embedding(self) -> list[dict]:
        """Animal detections without an embedding from this model, or (when the model's card fuses coat
        patterns) without pattern features of the current recipe."""
        method = PATTERN_METHOD if self.fusion else None
        return self.cat.query(
            """SELECT * FROM (
                 SELECT d.id, d.x, d.y, d.w, d.h, m.path, m.id AS media_id, d.viewpoint,
                      COALESCE(d.species, m.species) AS species,
                      EXISTS (SELECT 1 FROM embeddings e WHERE e.detection_id = d.id AND e.model_id = :model)
                        AS has_embedding,
                      (CAST(:method AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM patterns p WHERE p.detection_id = d.id
                                                   AND p.method = :method)) AS has_pattern
                 FROM detections d JOIN media m ON m.id = d.media_id
                 WHERE m.status = 'ok' AND (d.label IS NULL OR d.label NOT IN ('person', 'vehicle', 'human'))
               ) pending
               WHERE NOT (has_embedding AND has_pattern)
               ORDER BY media_id, id""",
            {"model": self.reid_model_id, "method": method},
        )

    def embed(self, progress: StageProgress | None = None, cancel=None) -> StageStats:
        stats, t0 = StageStats(), time.perf_counter()
        todo = self.pending_embedding()
        batch = max(self.batch_size, self.embedder.batch_size)
        # A crop's pattern (GrabCut + SIFT, ~0.1 s) costs more than its embedding; OpenCV releases the GIL, so two
        # threads extract about twice as fast on a 2-core laptop (same features: GrabCut is seeded per call).
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(todo), batch):
                if cancel is not None and cancel.is_set():
                    break
                stats.items += self._embed_batch(todo[start : start + batch], pool, stats)
                if progress:
                    progress("embed", min(start + batch, len(todo)), len(todo))
        stats.seconds = time.perf_counter() - t0
        return stats

    def _embed_batch(self, todo: list[dict], pool: ThreadPoolExecutor, stats: StageStats) -> int:
        """Embed and extract the patterns of one batch of pending detections, stored in one transaction; returns
        how many were read (unreadable crops go to stats.errors)."""
        crops, rows, photo, photo_path = [], [], None, None
        for row in todo:
            try:
                if row["path"] != photo_path:
                    photo, photo_path = load_rgb(row["path"]), row["path"]
                box = (row["x"], row["y"], row["w"], row["h"]) if row["w"] else None
                crops.append(crop(photo, box, f"{row['path']} detection {row['id']}", CROP_MARGIN))
                rows.append(row)
            except ImageError as exc:
                stats.errors.append(str(exc))
        to_embed = [i for i, r in enumerate(rows) if not r["has_embedding"]]
        to_extract = [i for i, r in enumerate(rows) if not r["has_pattern"]]
        extracting = pool.map(extract_pattern, [crops[i] for i in to_extract])  # runs while the network embeds
        vectors = self.embedder.embed([crops[i] for i in to_embed]) if to_embed else []
        sides = self._infer_sides([rows[i] for i in to_embed], [crops[i] for i in to_embed], vectors)
        patterns = dict(zip(to_extract, extracting, strict=True))
        with self.cat.transaction():
            if sides:  # inferred only where nobody has given a side, even meanwhile: one read for the batch
                marks = ",".join("?" * len(sides))
                unknown = self.cat.query(
                    f"SELECT id FROM detections WHERE id IN ({marks}) AND viewpoint IS NULL", list(sides)
                )
                for row in unknown:
                    record_side(self.cat, row["id"], sides[row["id"]], self.inferred_by)
            for i, vec in zip(to_embed, vectors, strict=True):
                self.cat.db["embeddings"].insert(
                    {"detection_id": rows[i]["id"], "model_id": self.reid_model_id, "vector": vec.tobytes()},
                    replace=True,
                )
            for i, features in patterns.items():
                self.cat.db["patterns"].insert(
                    {"detection_id": rows[i]["id"], "method": PATTERN_METHOD, "features": features.to_bytes()},
                    replace=True,
                )
        return len(rows)

    def _infer_sides(self, rows: list[dict], crops: list[np.ndarray], vectors) -> dict[int, str]:
        """{detection id: side} for the detections of this batch that nobody gave a side, of a species the card's
        side classifier knows, where it is sure enough (engine.side); one more embedding each, of the mirror."""
        if self.side_classifier is None:
            return {}
        todo = [
            i
            for i, r in enumerate(rows)
            if r["viewpoint"] is None and self.side_classifier.applies_to(self.species or r["species"])
        ]
        if not todo:
            return {}
        inputs = embedded_side_inputs(self.embedder, np.asarray(vectors)[todo], [crops[i] for i in todo])
        sides = self.side_classifier.sides(inputs)
        return {rows[i]["id"]: side for i, side in zip(todo, sides, strict=True) if side is not None}

    # -- suggest --------------------------------------------------------------------------------------------
    def _marks_path(self) -> Path:
        return gallery_folder(self.cat.path, self.reid_model_id) / "suggest_marks.json"

    def _log_marks(self) -> dict:
        """Where the embeddings table and the logs end now (all only grow), with what those last rows say: a
        catalogue restored from an older backup has other rows there, and its marks are then not used."""
        db = self.cat.db
        emb = db.execute(f"SELECT rowid, {_EMBEDDING_ROW} FROM embeddings ORDER BY rowid DESC LIMIT 1").fetchone()
        marks = {"embedding_rowid": emb[0] if emb else 0, "embedding_row": _row_key(emb[1:]) if emb else None}
        for table in CHANGE_LOGS:
            last = db.execute(f"SELECT id, detection_id, at FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
            marks[f"{table}_id"], marks[f"{table}_row"] = (last[0], list(last[1:])) if last else (0, None)
        return marks

    def _valid_marks(self) -> dict | None:
        try:
            marks = json.loads(self._marks_path().read_text())
        except (OSError, ValueError):
            return None
        db = self.cat.db
        emb = db.execute(
            f"SELECT {_EMBEDDING_ROW} FROM embeddings WHERE rowid = ?", [marks.get("embedding_rowid", 0)]
        ).fetchone()
        if _row_key(emb) != marks.get("embedding_row"):
            return None
        for table in CHANGE_LOGS:  # marks written before a log was watched lack its keys: not trusted
            if f"{table}_id" not in marks:
                return None
            last = db.execute(f"SELECT detection_id, at FROM {table} WHERE id = ?", [marks[f"{table}_id"]]).fetchone()
            if (list(last) if last else None) != marks[f"{table}_row"]:
                return None
        return marks

    def pending_suggestion(self) -> list[dict]:
        """Embedded detections with no standing decision and no suggestion of this model made since their side or
        species last changed, oldest photo first. A reviewer who corrects a flank (the F key) or a species has
        made the old suggestions wrong: they were searched among the other flank's photos or another species.

        After a completed suggest stage only what changed since can be pending: embeddings added after it,
        detections the logs have written about since (an undone decision, a side or species set), and detections
        waiting with another model's suggestions; so only those are looked at (a season's million detections are
        not scanned on every import). Without marks (first run, another model, a lost cache) every detection is
        looked at."""
        marks = self._valid_marks()
        source, join = "detections d", "JOIN"
        params = {"model": self.reid_model_id}
        if marks:
            changed = "".join(f" UNION SELECT detection_id FROM {t} WHERE id > :{t}_id" for t in CHANGE_LOGS)
            source = f"""(SELECT detection_id AS id FROM embeddings WHERE rowid > :embedding_rowid{changed}
                         UNION SELECT detection_id FROM review_queue WHERE model_id < :model OR model_id > :model
                        ) changed {{join}} detections d ON d.id = changed.id"""
            params |= {"embedding_rowid": int(marks["embedding_rowid"])}
            params |= {f"{t}_id": int(marks[f"{t}_id"]) for t in CHANGE_LOGS}
            # SQLite keeps a CROSS JOIN's order: from the few changed rows, not from every embedding. PostgreSQL
            # has no CROSS JOIN ... ON, and its planner starts from the small side by itself.
            join = "CROSS JOIN" if self.cat.dialect == "sqlite" else "JOIN"
            source = source.format(join=join)
        # Only the change that stands (the latest made, engine.decisions.settle_changes) can make suggestions
        # stale. A change synced from elsewhere counts from when it arrived: it may be older than suggestions made
        # here with the side it replaced. One that arrives older than the change standing here changes nothing.
        since_changed = " ".join(
            f"AND a.at >= COALESCE((SELECT COALESCE(c.arrived, c.at) FROM {t} c WHERE c.detection_id = d.id "
            "ORDER BY c.at DESC, c.id DESC LIMIT 1), '')"
            for t in DETECTION_TRAILS
        )
        return self.cat.query(
            f"""SELECT d.id, d.media_id, d.viewpoint, e.vector, m.deployment_id, m.taken_at,
                      COALESCE(d.species, m.species) AS species,
                      (SELECT count(*) FROM detections d2 WHERE d2.media_id = d.media_id) AS n_in_photo
               FROM {source} {join} embeddings e ON e.detection_id = d.id AND e.model_id = :model
               JOIN media m ON m.id = d.media_id
               WHERE NOT EXISTS (SELECT 1 FROM effective_assignments a WHERE a.detection_id = d.id)
                 AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.detection_id = d.id
                                 AND a.status = 'suggested' AND a.model_id = :model {since_changed})
               ORDER BY m.taken_at, d.id""",
            params,
        )

    def suggest(self, progress: StageProgress | None = None, cancel=None, k: int = 5) -> StageStats:
        stats, t0 = StageStats(), time.perf_counter()
        marks = self._log_marks()  # read before the work: whatever arrives during it is looked at next time
        todo = self.pending_suggestion()
        gallery = open_gallery(self.cat, self.reid_model_id)
        patterns = PatternStore(self.cat)
        results = []
        queries = np.stack([np.frombuffer(r["vector"], np.float32) for r in todo]) if todo else None
        depth = min(SEARCH_DEPTH, len(gallery.vectors))
        for i, row in enumerate(todo):
            if cancel is not None and cancel.is_set():
                break
            if depth and i % SEARCH_BLOCK == 0:  # one gallery pass serves a block of queries
                block_scores, block_rows = gallery.index.search(queries[i : i + SEARCH_BLOCK], depth)
            vec = queries[i]
            species = self.species or row["species"]
            query_pattern = patterns(row["id"])
            # A verified detection keeps all its candidates until its burst has been judged (judge_bursts).
            listed = max(k, self.fusion.candidates) if self.fusion and query_pattern is not None else k
            cands, is_new, best = suggest(
                vec,
                gallery,
                self.appearance_threshold,
                row["viewpoint"],
                species,
                k=listed,
                search_depth=SEARCH_DEPTH,
                fusion=self.fusion,
                query_pattern=query_pattern,
                gallery_pattern=patterns,
                neighbours=(block_scores[i % SEARCH_BLOCK], block_rows[i % SEARCH_BLOCK]) if depth else None,
            )
            results.append(Suggested(row, cands, is_new, best, vec))
            if progress and i % 50 == 0:
                progress("suggest", i, len(todo))
        # A burst's photos show one animal: both flanks are judged together, when the card says how (0.10.0 on).
        if self.fusion is not None and self.fusion.encounter_lead_threshold is not None:
            rows_seen = [r.row for r in results]
            photos = judge_bursts(
                [r.cands for r in results], bursts(rows_seen), [row["viewpoint"] for row in rows_seen]
            )
            for r, n in zip(results, photos, strict=True):
                if n > 1:
                    r.best, r.photos = r.cands[0].score, n
                    r.is_new = log_odds_lead([c.score for c in r.cands]) < self.fusion.encounter_lead_threshold
        new_items = [r.row for r in results if r.is_new]
        new_vecs = [r.vector for r in results if r.is_new]
        groups = group_new(new_items, np.stack(new_vecs), self.appearance_threshold) if new_items else []
        batch_key = f"m{self.reid_model_id}-{int(time.time())}"
        proposal_of = {row["id"]: f"new-{batch_key}-{g}" for row, g in zip(new_items, groups, strict=True)}
        rows = []
        for r in results:
            for rank, c in enumerate(r.cands[:k], 1):
                note = {"gallery_detection": c.best_detection_id, "appearance": c.appearance}
                if c.pattern_points is not None:
                    note["pattern_points"] = c.pattern_points
                if r.photos > 1:
                    note["burst_photos"] = r.photos
                rows.append(
                    {
                        "detection_id": r.row["id"],
                        "individual_id": c.individual_id,
                        "score": c.score,
                        "rank": rank,
                        "note": json.dumps(note),
                    }
                )
            if r.is_new or not r.cands:
                rows.append(
                    {
                        "detection_id": r.row["id"],
                        "individual_id": None,
                        "score": r.best if r.cands else None,
                        "rank": 0,
                        "note": "probably a new individual",
                        "proposal": proposal_of.get(r.row["id"]),
                    }
                )
        with self.cat.transaction():
            self.cat.record_suggestions(rows, self.who, self.reid_model_id)
        if len(results) == len(todo):  # completed, not cancelled: the next run looks only at what changed
            with contextlib.suppress(OSError):
                self._marks_path().parent.mkdir(parents=True, exist_ok=True)
                self._marks_path().write_text(json.dumps(marks))
        stats.items = len(results)
        stats.seconds = time.perf_counter() - t0
        if progress:
            progress("suggest", len(todo), len(todo))
        return stats

    # -- all ------------------------------------------------------------------------------------------------
    def run(
        self,
        folder: str | Path | None = None,
        site: str | None = None,
        levels=(),
        progress: StageProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> PipelineSummary:
        ingest = None
        stages: dict[str, StageStats] = {}
        if folder is not None:
            t0 = time.perf_counter()
            ingest = import_folder(
                self.cat,
                folder,
                site=site,
                levels=levels,
                cancel=cancel,
                progress=(lambda d, t, _p: progress("import", d, t)) if progress else None,
            )
            stages["import"] = StageStats(ingest.files_seen, time.perf_counter() - t0)
        for name, fn in (("detect", self.detect), ("embed", self.embed), ("suggest", self.suggest)):
            if cancel is not None and cancel.is_set():
                break
            stages[name] = fn(progress=progress, cancel=cancel)
        return PipelineSummary(ingest, stages, self.device, cancelled=bool(cancel and cancel.is_set()))


def review_model(catalogue: Catalogue) -> int | None:
    """The model whose suggestions the review shows: the newest one with detections waiting."""
    return catalogue.db.execute("SELECT max(model_id) FROM review_queue").fetchone()[0]


def open_count(catalogue: Catalogue, model_id: int | None = None) -> int:
    """How many detections wait for a decision (read from the indexed queue, not the log)."""
    model_id = review_model(catalogue) if model_id is None else model_id
    return catalogue.db.execute("SELECT count(*) FROM review_queue WHERE model_id = ?", [model_id]).fetchone()[0]


def open_suggestions(
    catalogue: Catalogue, model_id: int | None = None, limit: int | None = None, offset: int = 0
) -> list[dict]:
    """Detections waiting for a decision, oldest photo first, each with its ranked candidates and the 'new
    individual' flag; ``limit`` and ``offset`` give one page of the queue (the app never loads all of it)."""
    model_id = review_model(catalogue) if model_id is None else model_id
    if model_id is None:
        return []
    ids = [
        r[0]
        for r in catalogue.db.execute(
            "SELECT detection_id FROM review_queue WHERE model_id = ? ORDER BY taken_at, detection_id LIMIT ? OFFSET ?",
            [model_id, 2**62 if limit is None else limit, offset],  # SQLite's LIMIT -1 is an error on PostgreSQL
        )
    ]
    return suggestions_for(catalogue, ids, model_id)


def iter_open_suggestions(catalogue: Catalogue, model_id: int | None = None, page: int = 500) -> Iterator[dict]:
    """Every waiting detection in queue order, read a page at a time (bounded memory at any queue length)."""
    model_id = review_model(catalogue) if model_id is None else model_id
    if model_id is None:
        return
    cursor = catalogue.db.conn.execute(
        "SELECT detection_id FROM review_queue WHERE model_id = ? ORDER BY taken_at, detection_id", [model_id]
    )
    while ids := [r[0] for r in cursor.fetchmany(page)]:
        yield from suggestions_for(catalogue, ids, model_id)


def suggestions_for(catalogue: Catalogue, detection_ids: list[int], model_id: int) -> list[dict]:
    """The review items of these detections (in the order given): photo, box, ranked candidates, new flag. Each
    from its latest suggestions of this model (those made again after its side or species changed)."""
    if not detection_ids:
        return []
    marks = ",".join("?" * len(detection_ids))
    rows = catalogue.query(
        f"""SELECT a.detection_id, a.individual_id, a.score, a.rank, a.proposal, a.note, i.code, i.name, i.species,
                  m.path, m.taken_at, d.x, d.y, d.w, d.h, d.label AS detector_label, d.score AS detector_score,
                  d.source AS detector, dep.name AS station
           FROM assignments a JOIN detections d ON d.id = a.detection_id JOIN media m ON m.id = d.media_id
           LEFT JOIN individuals i ON i.id = a.individual_id LEFT JOIN deployments dep ON dep.id = m.deployment_id
           WHERE a.detection_id IN ({marks}) AND a.status = 'suggested' AND a.model_id = ?
             AND a.at = (SELECT max(b.at) FROM assignments b WHERE b.detection_id = a.detection_id
                         AND b.status = 'suggested' AND b.model_id = a.model_id)
           ORDER BY a.detection_id, a.rank, a.id""",
        [*detection_ids, model_id],
    )
    out: dict[int, dict] = {}
    for r in rows:
        item = out.setdefault(
            r["detection_id"],
            {
                "detection_id": r["detection_id"],
                "path": r["path"],
                "station": r["station"],
                "taken_at": r["taken_at"],
                "box": [r["x"], r["y"], r["w"], r["h"]] if r["w"] else None,
                "detector": r["detector"],
                "detector_label": r["detector_label"],
                "detector_score": r["detector_score"],
                "candidates": [],
                "probably_new": False,
                "proposal": None,
            },
        )
        if r["individual_id"] is None:
            item["probably_new"], item["proposal"] = True, r["proposal"]
        else:
            note = json.loads(r["note"]) if r["note"] and r["note"].startswith("{") else {}
            item["candidates"].append(
                {
                    "individual_id": r["individual_id"],
                    "code": r["code"],
                    "name": r["name"],
                    "species": r["species"],
                    "score": round(r["score"], 4),
                    "rank": r["rank"],
                    "gallery_detection": note.get("gallery_detection"),
                    "reason": match_reason(
                        r["score"], note.get("appearance"), pattern_points(note), note.get("burst_photos", 1)
                    ),
                }
            )
    return [out[d] for d in detection_ids if d in out]


def pattern_points(note: dict) -> int | None:
    """The matched coat-pattern points a suggestion's note records (notes before 0.6.0 called them inliers)."""
    return note.get("pattern_points", note.get("pattern_inliers"))


def detection_crop(catalogue: Catalogue, detection_id: int) -> np.ndarray:
    """The crop of one detection exactly as it was embedded (box plus the pipeline's margin)."""
    row = catalogue.query(
        "SELECT d.x, d.y, d.w, d.h, m.path FROM detections d JOIN media m ON m.id = d.media_id WHERE d.id = ?",
        [detection_id],
    )[0]
    box = (row["x"], row["y"], row["w"], row["h"]) if row["w"] else None
    return crop(load_rgb(row["path"]), box, f"{row['path']} detection {detection_id}", CROP_MARGIN)


def explain_match(
    catalogue: Catalogue, query_detection: int, gallery_detection: int
) -> tuple[np.ndarray, PatternMatch]:
    """The query and a candidate's photo side by side with the matched coat-pattern points joined by lines."""
    crops = [detection_crop(catalogue, d) for d in (query_detection, gallery_detection)]
    store = PatternStore(catalogue)
    features = [
        store(d) or extract_pattern(c) for d, c in zip((query_detection, gallery_detection), crops, strict=True)
    ]
    found = match_pattern(*features)
    return draw_match(crops[0], crops[1], found), found
