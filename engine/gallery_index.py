"""The confirmed gallery's vectors and search index, kept on disk beside the catalogue and updated incrementally.

Why: a season's catalogue holds hundreds of thousands of confirmed sightings. Reading every vector from SQLite and
building a search index for each suggestion run cost more than the suggestions themselves (issue 13: 7.9 s for
1,000 new detections at 100k detections, most of it the gallery's load). Here a run reads from the catalogue only
which sightings stand now (a few columns, no vectors) and the vectors of sightings confirmed since the last run.

Layout, one folder per re-identification model: ``<catalogue>.gallery/model-<id>/``
* ``detections.i64``, ``vectors.f32`` and ``viewpoints.u8``: append-only rows, one per detection ever confirmed
  with this model's embedding (an embedding never changes, so a row is never rewritten; a detection's side can,
  when a reviewer corrects it: the changes logged in ``side_changes`` since the folder's ``side_mark`` are
  written into its byte of ``viewpoints.u8``);
* ``ivf.faiss``: from ``IVF_MIN`` rows, a faiss inverted-file index (vectors kept in fp16) over the first
  ``indexed`` rows; rows appended since are searched exactly beside it and folded into the index once they are
  a fifth of it (so an ordinary run writes only its new rows, never the whole index);
* ``meta.json``: how many rows are valid, written last (a run killed mid-append leaves a tail that is ignored).

What stands (confirmed, not undone, which individual after merges) is always read from the catalogue, never from
these files: a row whose sighting no longer stands is masked out of every search, so a stale or foreign folder
cannot suggest an undone or merged-away sighting. The folder is a cache: deleted, damaged, or made by another
model, it is rebuilt from the catalogue. Without faiss (the installer build) every search is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .match import Gallery, exact_top_k

FORMAT = 4  # 4: side_mark
# Below this many rows exact search over the memory-mapped vectors is fast enough: 1,000 queries against 70k
# 1280-d rows take 1.0 s on this 2-core CPU.
IVF_MIN = 50_000
# Inverted lists searched per query. At 1M detections (bench/scale.py's gallery of 700k rows grown around real
# nyala photos) 8 lists found exact search's best photo and best individual for 200 of 200 queries, at 1.7 ms a
# query (24 lists: 5.0 ms); the tests hold it to >= 97 % of exact top-1 on clustered vectors.
NPROBE = 8
FOLD_SHARE = 0.2  # rows searched exactly beside the index are folded into it once they are this share of it
READ_CHUNK = 20_000  # vectors read from the catalogue per query when catching up


@dataclass
class _Meta:
    rows: int = 0
    dim: int = 0
    indexed: int = 0  # rows in ivf.faiss
    sides: list = field(default_factory=lambda: [None])  # viewpoints.u8 code -> side (0: not known)
    side_mark: int = 0  # the last side_changes row whose side the files hold

    @classmethod
    def read(cls, path: Path) -> _Meta:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                return cls()
            return cls(int(data["rows"]), int(data["dim"]), int(data["indexed"]), data["sides"], int(data["side_mark"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, **self.__dict__}))
        os.replace(tmp, path)


def _faiss():
    try:
        import faiss
    except ImportError:  # the installer build leaves faiss out: exact search
        return None
    return faiss


@contextlib.contextmanager
def _locked(folder: Path):
    """One writer at a time (two app windows, an import beside a review); readers of a stale folder are safe."""
    try:
        import fcntl
    except ImportError:  # Windows: one Herdbook process per catalogue is the rule there
        yield
        return
    with open(folder / "lock", "a+") as handle:  # a lock file of our own, never the catalogue's file
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a share without locks (some NFS mounts): one writer is then the user's rule
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gallery_folder(catalogue_path: str | Path, model_id: int) -> Path:
    return Path(f"{catalogue_path}.gallery") / f"model-{model_id}"


class GallerySearch:
    """Top-k over the gallery's rows that stand now: the IVF index for its rows, exact search for the rest."""

    def __init__(self, vectors: np.ndarray, standing: np.ndarray, index=None, indexed: int = 0):
        self.vectors, self.standing, self.index, self.indexed = vectors, standing, index, indexed
        self._selector = None
        if index is not None:
            faiss = _faiss()
            self._bits = np.packbits(standing[:indexed], bitorder="little")
            self._selector = faiss.IDSelectorBitmap(indexed, faiss.swig_ptr(self._bits))
            self._params = faiss.SearchParametersIVF(sel=self._selector, nprobe=NPROBE)

    def __len__(self) -> int:
        return int(self.standing.sum())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (n_queries, k), best first; row -1 where fewer than k stand."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        start = self.indexed if self.index is not None else 0
        scores, rows = exact_top_k(queries, self.vectors[start:], k, self.standing[start:])
        rows = np.where(rows >= 0, rows + start, -1)
        if self.index is None:
            return scores, rows
        ivf_scores, ivf_rows = self.index.search(queries, k, params=self._params)
        both_s, both_r = np.hstack([ivf_scores, scores]), np.hstack([ivf_rows, rows])
        both_s = np.where(both_r >= 0, both_s, -np.inf)
        order = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        out_s, out_r = np.take_along_axis(both_s, order, 1), np.take_along_axis(both_r, order, 1)
        return out_s.astype(np.float32), np.where(np.isfinite(out_s), out_r, -1)


def _standing(catalogue) -> dict[str, np.ndarray]:
    """The sightings that stand now (detection -> individual as confirmed) and every individual's merged-into id
    and species: two plain table reads, no joins (700k sightings in 0.4 s at 1M detections)."""
    rows = catalogue.db.execute("SELECT detection_id, individual_id FROM sighting_state").fetchall()
    sightings = np.array(rows, np.int64).reshape(-1, 2)
    people = catalogue.db.execute("SELECT id, COALESCE(merged_into, id), species FROM individuals ORDER BY id")
    people = people.fetchall()
    return {
        "detection_ids": sightings[:, 0],
        "individuals": sightings[:, 1],
        "people": np.array([p[0] for p in people], np.int64),
        "resolved": np.array([p[1] for p in people], np.int64),
        "species": np.array([p[2] for p in people], dtype=object),
    }


def _embedding_rows(catalogue, model_id: int, detection_ids):
    """(detection ids, vectors, sides) of these detections' embeddings by ``model_id``, READ_CHUNK at a time;
    detections without one (a tag sighting with no box) are left out."""
    for start in range(0, len(detection_ids), READ_CHUNK):
        chunk = [int(d) for d in detection_ids[start : start + READ_CHUNK]]
        found = catalogue.db.execute(
            "SELECT e.detection_id, e.vector, d.viewpoint FROM embeddings e JOIN detections d ON d.id = "
            f"e.detection_id WHERE e.model_id = ? AND e.detection_id IN ({','.join('?' * len(chunk))})",
            [model_id, *chunk],
        ).fetchall()
        if found:
            ids, blobs, sides = zip(*found, strict=True)
            dim = len(blobs[0]) // 4
            yield np.array(ids, np.int64), np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim), sides


def _append_missing(catalogue, model_id: int, folder: Path, meta: _Meta, missing: np.ndarray) -> tuple:
    """Append the vectors and sides of ``missing`` detections to the files; returns the new meta (not yet
    written) and the detection ids appended."""
    names = ("detections.i64", "vectors.f32", "viewpoints.u8")
    sizes = (8, meta.dim * 4, 1)
    handles = [open(folder / n, "r+b" if meta.rows else "wb") for n in names]  # noqa: SIM115 (closed below)
    appended = []
    try:
        for handle, size in zip(handles, sizes, strict=True):
            handle.truncate(meta.rows * size)  # drop a tail a killed run left behind
            handle.seek(0, os.SEEK_END)
        dim, sides = meta.dim, list(meta.sides)
        for ids, vectors, chunk_sides in _embedding_rows(catalogue, model_id, missing):
            dim = dim or vectors.shape[1]
            sides += [side for side in dict.fromkeys(chunk_sides) if side not in sides]
            handles[0].write(ids.tobytes())
            handles[1].write(np.ascontiguousarray(vectors).tobytes())
            handles[2].write(np.array([sides.index(side) for side in chunk_sides], np.uint8).tobytes())
            appended.append(ids)
        for handle in handles:
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        for handle in handles:
            handle.close()
    added = np.concatenate(appended) if appended else np.zeros(0, np.int64)
    return dataclasses.replace(meta, rows=meta.rows + len(added), dim=dim, sides=sides), added


def _patch_sides(catalogue, folder: Path, meta: _Meta, known: np.ndarray, up_to: int) -> _Meta:
    """Write the sides changed since ``meta.side_mark`` (up to ``up_to``) into the rows of their detections."""
    # The side that stands now, not the new rows' own: a row synced from another catalogue may be older than it.
    latest = dict(
        catalogue.db.execute(
            "SELECT d.id, d.viewpoint FROM detections d WHERE d.id IN "
            "(SELECT detection_id FROM side_changes WHERE id > ? AND id <= ?)",
            [meta.side_mark, up_to],
        ).fetchall()
    )
    order = np.argsort(known)
    ids = np.array(list(latest), np.int64)
    pos = np.minimum(np.searchsorted(known[order], ids), len(known) - 1)
    held = known[order][pos] == ids
    if not held.any():
        return meta
    sides = list(meta.sides)
    sides += [side for side in dict.fromkeys(latest.values()) if side not in sides]
    with open(folder / "viewpoints.u8", "r+b") as handle:
        for detection, row in zip(ids[held], order[pos[held]], strict=True):
            handle.seek(int(row))
            handle.write(bytes([sides.index(latest[int(detection)])]))
        handle.flush()
        os.fsync(handle.fileno())
    return dataclasses.replace(meta, sides=sides)


def _files_hold(folder: Path, meta: _Meta) -> bool:
    """Are the files at least as long as the meta says (a tail beyond it is a killed run's, and is dropped)?"""
    try:
        sizes = [(folder / n).stat().st_size for n in ("detections.i64", "vectors.f32", "viewpoints.u8")]
    except OSError:
        return False
    return meta.dim > 0 and sizes[0] >= meta.rows * 8 and sizes[1] >= meta.rows * meta.dim * 4 and sizes[2] >= meta.rows


def _sample_matches(catalogue, model_id: int, folder: Path, meta: _Meta, known: np.ndarray, n: int = 32) -> bool:
    """Do the files hold this catalogue's vectors? A sample of rows is compared with the embeddings table (a
    catalogue restored from a backup reuses detection ids for other photos)."""
    rows = np.random.default_rng().choice(meta.rows, min(n, meta.rows), replace=False)
    vectors = np.memmap(folder / "vectors.f32", np.float32, "r", shape=(meta.rows, meta.dim))
    for row in rows:
        found = catalogue.db.execute(
            "SELECT vector FROM embeddings WHERE detection_id = ? AND model_id = ?", [int(known[row]), model_id]
        ).fetchone()
        if found is not None and found[0] != vectors[row].tobytes():
            return False
    return True


def _build_index(vectors: np.ndarray, rows: int):
    """A new IVF index (inner product, fp16 vectors) trained on a sample of the gallery and holding all rows."""
    faiss = _faiss()
    nlist = int(np.clip(4 * np.sqrt(rows), 64, 4096))
    dim = vectors.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    sample = np.random.default_rng(0).choice(rows, min(rows, 40 * nlist), replace=False)
    index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    for start in range(0, rows, 100_000):
        index.add(np.ascontiguousarray(vectors[start : min(rows, start + 100_000)]))
    return index


def open_gallery(catalogue, model_id: int, ivf_min: int = IVF_MIN) -> Gallery:
    """The gallery of ``model_id`` for suggestions: the folder beside the catalogue brought up to date with it
    (new confirmations appended, the index folded when due), and what stands now read from the catalogue.
    From ``ivf_min`` rows the search goes through the IVF index (with faiss), below it exactly."""
    folder = gallery_folder(catalogue.path, model_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _from_folder(catalogue, model_id, folder, ivf_min)
    except OSError:  # a read-only card or share, a full disk: no cache, the gallery is read whole as before
        return _in_memory(catalogue, model_id)


def _from_folder(catalogue, model_id: int, folder: Path, ivf_min: int) -> Gallery:
    standing = _standing(catalogue)
    with _locked(folder):
        meta = _Meta.read(folder / "meta.json")
        ids_path = folder / "detections.i64"
        if meta.rows and not _files_hold(folder, meta):
            meta = _Meta()  # damaged (a full disk, a copy that stopped half-way): rebuild
        known = np.fromfile(ids_path, np.int64, meta.rows) if meta.rows else np.zeros(0, np.int64)
        if meta.rows and not _sample_matches(catalogue, model_id, folder, meta, known):
            meta, known = _Meta(), np.zeros(0, np.int64)  # another catalogue's rows (a restored backup): rebuild
        # read before the rows are: a side changed meanwhile is in the rows, or patched next time (latest wins)
        side_mark = catalogue.db.execute("SELECT COALESCE(max(id), 0) FROM side_changes").fetchone()[0]
        if meta.rows and side_mark > meta.side_mark:
            meta = _patch_sides(catalogue, folder, meta, known, side_mark)
        meta.side_mark = side_mark
        missing = np.setdiff1d(standing["detection_ids"], known, assume_unique=True)  # both are sets of ids
        if len(missing):
            meta, added = _append_missing(catalogue, model_id, folder, meta, missing)
            known = np.concatenate([known, added])
        if meta.rows == 0:
            return _empty()
        vectors = np.memmap(folder / "vectors.f32", np.float32, "r", shape=(meta.rows, meta.dim))
        index, faiss = None, _faiss()
        if faiss is not None and meta.rows >= ivf_min:
            index = _current_index(faiss, folder, meta, vectors)
        meta.write(folder / "meta.json")
        sides = np.array(meta.sides, dtype=object)[np.fromfile(folder / "viewpoints.u8", np.uint8, meta.rows)]
    return _gallery(vectors, known, sides, standing, index, meta.indexed if index is not None else 0)


def _current_index(faiss, folder: Path, meta: _Meta, vectors: np.ndarray):
    """The IVF index over the first ``meta.indexed`` rows, memory-mapped (2.5 s to read 1.8 GB at 1M
    detections, 0.1 s mapped); rows appended since are folded in once they are a fifth of it."""
    index_path = folder / "ivf.faiss"
    index = None
    if meta.indexed and index_path.exists():
        try:
            index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP)
        except RuntimeError:
            index = None
        if index is None or index.ntotal != meta.indexed:
            index, meta.indexed = None, 0
    if index is None or meta.rows - meta.indexed >= FOLD_SHARE * max(meta.indexed, 1):
        if index is None or meta.rows > 16 * meta.indexed:  # (re)train when the gallery outgrew its lists
            index = _build_index(vectors, meta.rows)
        else:
            index = faiss.read_index(str(index_path))  # in memory: a mapped index cannot grow
            index.add(np.ascontiguousarray(vectors[meta.indexed : meta.rows]))
        meta.indexed = meta.rows
        tmp = folder / "ivf.faiss.tmp"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, index_path)
    return index


def _empty() -> Gallery:
    none = np.zeros(0, dtype=object)
    return Gallery(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), none, none)


def _gallery(vectors, row_detections: np.ndarray, row_sides: np.ndarray, standing: dict, index, indexed: int):
    """Gallery arrays aligned with the file's rows; rows whose sighting does not stand get individual -1 and are
    never returned by the search. Individuals are resolved through merges; species are the individual's own."""
    n = len(row_detections)
    individual_ids = np.full(n, -1, np.int64)
    species = np.full(n, None, dtype=object)
    hit = np.zeros(n, bool)
    if len(standing["detection_ids"]):
        order = np.argsort(standing["detection_ids"])
        sorted_ids = standing["detection_ids"][order]
        pos = np.minimum(np.searchsorted(sorted_ids, row_detections), len(sorted_ids) - 1)
        hit = sorted_ids[pos] == row_detections
        raw = standing["individuals"][order[pos[hit]]]
        person = np.searchsorted(standing["people"], raw)  # individuals are read ordered by id
        individual_ids[hit] = standing["resolved"][person]
        species[hit] = standing["species"][person]
    search = GallerySearch(vectors, hit, index, indexed)
    return Gallery(vectors, individual_ids, row_detections, np.where(hit, row_sides, None), species, _index=search)


def _in_memory(catalogue, model_id: int) -> Gallery:
    """Every standing sighting's vector read from the catalogue (no folder beside it can be written)."""
    standing = _standing(catalogue)
    parts = list(_embedding_rows(catalogue, model_id, standing["detection_ids"]))
    if not parts:
        return _empty()
    ids, vectors, sides = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _gallery(vectors, ids, np.array(sides, dtype=object), standing, None, 0)
