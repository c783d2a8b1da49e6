"""The gallery kept beside the catalogue (engine.gallery_index): it catches up with new confirmations by appending
only them, never suggests a sighting that no longer stands (undo, merge), rebuilds itself when its files are
damaged or belong to another catalogue, and its IVF index finds what exact search finds."""

from __future__ import annotations

import numpy as np

from engine.catalogue import Catalogue
from engine.decisions import merge
from engine.gallery_index import _Meta, gallery_folder, open_gallery
from engine.match import VectorIndex, suggest
from tests.conftest import grow_detections

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _catalogue(tmp_path, n=300, individuals=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(individuals, DIM)))
    owner = np.arange(n) % individuals
    vectors = _unit(centres[owner] + 0.06 * rng.normal(size=(n, DIM)))  # photos of one animal lie near each other
    cat = Catalogue(tmp_path / "c.sqlite")
    model = cat.ensure_model("reid", "1", "reid")
    dets = grow_detections(cat, model, vectors)
    inds = [cat.ensure_individual(f"N{i}", "nyala") for i in range(individuals)]
    return cat, model, dets, inds, owner, vectors


def _confirm_true(cat, dets, inds, owner, photos: slice) -> None:
    """A reviewer confirms these photos as the individuals they really show, in one transaction."""
    with cat.transaction():
        for d in dets[photos]:
            cat.confirm(d, inds[owner[d - dets[0]]], "ann")


def test_the_folder_catches_up_with_new_confirmations_by_appending_them_only(tmp_path):
    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path)
    _confirm_true(cat, dets, inds, owner, np.s_[:200])
    gallery = open_gallery(cat, model)
    folder = gallery_folder(cat.path, model)
    assert _Meta.read(folder / "meta.json").rows == 200 and len(gallery.index) == 200
    first = (folder / "vectors.f32").read_bytes()
    _confirm_true(cat, dets, inds, owner, np.s_[200:210])
    gallery = open_gallery(cat, model)
    now = (folder / "vectors.f32").read_bytes()
    assert _Meta.read(folder / "meta.json").rows == 210 and now[: len(first)] == first  # appended, not rewritten
    # A query equal to a newly confirmed photo's vector finds that photo first, as its individual.
    scores, rows = gallery.index.search(vectors[205], 5)
    assert gallery.detection_ids[rows[0, 0]] == dets[205] and scores[0, 0] > 0.999
    assert gallery.individual_ids[rows[0, 0]] == inds[owner[205]]
    cat.close()


def test_an_undone_or_merged_away_sighting_is_never_suggested_although_its_row_stays(tmp_path):
    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path)
    _confirm_true(cat, dets, inds, owner, np.s_[:100])
    open_gallery(cat, model)
    cat.undo_last("ann", detection_id=dets[42])  # the confirmation of photo 42 is cancelled
    merge(cat, inds[1], inds[2], "ann")  # individual N2 is N1 now
    gallery = open_gallery(cat, model)
    assert _Meta.read(gallery_folder(cat.path, model) / "meta.json").rows == 100  # photo 42's row is still there
    scores, rows = gallery.index.search(vectors[:100], 100)
    found = {int(gallery.detection_ids[r]) for r in rows.ravel() if r >= 0}
    assert dets[42] not in found and len(found) == 99
    cands, _, _ = suggest(vectors[42], gallery, 0.0, k=40)
    assert all(c.best_detection_id != dets[42] for c in cands)
    assert inds[2] not in {c.individual_id for c in cands}  # merged away: suggested as N1
    n2_photos = [d for d in dets[:100] if owner[d - dets[0]] == 2 and d != dets[42]]
    assert {int(i) for i, d in zip(gallery.individual_ids, gallery.detection_ids, strict=True) if d in n2_photos} == {
        inds[1]
    }
    cat.close()


def test_damaged_or_foreign_files_are_rebuilt_from_the_catalogue(tmp_path):
    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path)
    _confirm_true(cat, dets, inds, owner, np.s_[:120])
    open_gallery(cat, model)
    folder = gallery_folder(cat.path, model)
    with open(folder / "vectors.f32", "r+b") as f:
        f.truncate(1000)  # a disk that filled up, a copy that stopped half-way
    gallery = open_gallery(cat, model)
    scores, rows = gallery.index.search(vectors[:120], 1)
    assert (gallery.detection_ids[rows[:, 0]] == np.array(dets[:120])).all()
    # Files of another catalogue under the same name (a backup restored over this one): vectors differ.
    other = np.memmap(folder / "vectors.f32", np.float32, "r+", shape=(120, DIM))
    other[:] = _unit(np.random.default_rng(9).normal(size=(120, DIM)))
    other.flush()
    del other
    (folder / "meta.json").write_text("not json")  # and a broken meta on top: still no crash
    gallery = open_gallery(cat, model)
    scores, rows = gallery.index.search(vectors[:120], 1)
    assert (gallery.detection_ids[rows[:, 0]] == np.array(dets[:120])).all() and scores.min() > 0.999
    cat.close()


def test_the_ivf_index_finds_what_exact_search_finds_and_new_rows_are_searched_beside_it(tmp_path):
    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path, n=3000, individuals=300)
    _confirm_true(cat, dets, inds, owner, np.s_[:2500])
    gallery = open_gallery(cat, model, ivf_min=1000)
    folder = gallery_folder(cat.path, model)
    assert gallery.index.index is not None and (folder / "ivf.faiss").exists()
    queries = _unit(vectors[2500:] + 0.05 * np.random.default_rng(3).normal(size=(500, DIM)))
    _, exact = VectorIndex(vectors[:2500], ann_min=10**9).search(queries, 1)
    _, approx = gallery.index.search(queries, 1)
    agree = np.mean(gallery.detection_ids[approx[:, 0]] == np.array(dets)[exact[:, 0]])
    assert agree >= 0.97, agree
    # A few new confirmations: appended and searched exactly beside the index, which is not rewritten.
    stamp = (folder / "ivf.faiss").stat().st_mtime_ns
    _confirm_true(cat, dets, inds, owner, np.s_[2500:2510])
    gallery = open_gallery(cat, model, ivf_min=1000)
    assert (folder / "ivf.faiss").stat().st_mtime_ns == stamp
    _, rows = gallery.index.search(vectors[2500:2510], 1)
    assert list(gallery.detection_ids[rows[:, 0]]) == dets[2500:2510]
    # Once the rows beside the index are more than a fifth of it, they are folded into it.
    _confirm_true(cat, dets, inds, owner, np.s_[2510:])
    gallery = open_gallery(cat, model, ivf_min=1000)
    assert (folder / "ivf.faiss").stat().st_mtime_ns != stamp
    assert gallery.index.indexed == gallery.index.index.ntotal == 3000
    _, rows = gallery.index.search(vectors[2900:], 1)
    assert np.mean(gallery.detection_ids[rows[:, 0]] == np.array(dets[2900:])) >= 0.97
    cat.close()


def test_a_gallery_folder_that_cannot_be_written_falls_back_to_reading_the_catalogue(tmp_path):
    import os

    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path)
    _confirm_true(cat, dets, inds, owner, np.s_[:50])
    place = gallery_folder(cat.path, model).parent
    if os.geteuid() == 0:  # root writes anywhere: a file where the folder should be makes mkdir fail
        place.write_text("not a folder")
    else:  # a read-only card or share
        place.mkdir()
        place.chmod(0o500)
    gallery = open_gallery(cat, model)
    _, rows = gallery.index.search(vectors[:50], 1)
    assert list(gallery.detection_ids[rows[:, 0]]) == dets[:50]
    cat.close()


def test_a_side_corrected_after_confirmation_reaches_the_gallery_files(tmp_path):
    """A detection's side is written once when its row is appended; a reviewer's later correction (side_changes)
    is patched into that row's byte, and only the changes since the folder's mark are read."""
    from engine.decisions import set_detection_side

    cat, model, dets, inds, owner, vectors = _catalogue(tmp_path)
    set_detection_side(cat, dets[3], "left", "model:reid-1")
    _confirm_true(cat, dets, inds, owner, np.s_[:50])
    gallery = open_gallery(cat, model)
    row = {int(d): r for r, d in enumerate(gallery.detection_ids)}
    assert gallery.viewpoints[row[dets[3]]] == "left" and gallery.viewpoints[row[dets[4]]] is None
    folder = gallery_folder(cat.path, model)
    vectors_before = (folder / "vectors.f32").read_bytes()
    set_detection_side(cat, dets[3], "right", "ann")  # the reviewer corrects it after confirmation
    set_detection_side(cat, dets[4], "left", "ann")
    set_detection_side(cat, dets[4], None, "ann")  # and takes one back
    set_detection_side(cat, dets[60], "left", "ann")  # a detection not in the gallery: nothing to patch
    gallery = open_gallery(cat, model)
    assert gallery.viewpoints[row[dets[3]]] == "right" and gallery.viewpoints[row[dets[4]]] is None
    assert (folder / "vectors.f32").read_bytes() == vectors_before
    last = cat.db.execute("SELECT max(id) FROM side_changes").fetchone()[0]
    assert _Meta.read(folder / "meta.json").side_mark == last
    # the same query of the files, left only with its side: the corrected row answers for 'right' now
    cands, _, _ = suggest(vectors[3], gallery, 0.0, viewpoint="right", k=5)
    assert cands and cands[0].best_detection_id == dets[3]
    cands, _, _ = suggest(vectors[3], gallery, 0.0, viewpoint="left", k=5)
    assert all(c.best_detection_id != dets[3] for c in cands)
    cat.close()
