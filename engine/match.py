"""Suggest which known individual a detection shows, or say 'probably a new individual'.

Policy (Herdbook's own):
* The gallery is every confirmed sighting embedded with the current model; an individual of another species is
  never suggested when both species are known (a generic label such as "animal" is not a species); only the
  same side of the animal is compared when both sides are known (a left flank says nothing
  about a right flank).
* An individual's score is the mean of its best ``top_n`` gallery similarities (default 3): one lucky photo
  does not outrank an individual that matches consistently.
* When the model card carries a fusion (engine.calibration), the global top ``fusion.candidates`` individuals are
  re-ranked by the calibrated probability that combines appearance with coat-pattern verification
  (engine.pattern) of each candidate's best photos; otherwise by appearance alone.
* Below the open-set threshold stored in the model card (a probability when fused) the detection is
  'probably new'.
* A burst (consecutive photos of one camera, each within BURST_SECONDS of the last and holding a single animal)
  is one animal. With a fusion, when its photos show both flanks (sides known), each detection's candidates are
  judged with the burst's other photos too (encounter_probabilities), and it is 'probably new' when its best
  candidate does not stand out from the second (log_odds_lead below the card's encounter_lead_threshold). A burst
  of one side, or of sides not known, is judged photo by photo: near-identical photos are no second opinion, and
  the lead's threshold would then flag too few new animals (measured below, log_odds_lead).
* Within one batch (an import), probably-new detections are linked when they look alike or were taken in one
  burst by one camera, so ten photos of one new animal become one proposal, not ten.
The catalogue's gallery is searched through engine.gallery_index (kept beside the catalogue; IVF from 50k rows);
a gallery made in memory (evaluations, grouping) exactly with numpy, or with a faiss HNSW index when very large.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from .calibration import Fusion
from .pattern import PatternFeatures
from .pattern import match as match_pattern

# Labels a detector or an import gives when nobody said which species it is.
GENERIC_SPECIES = {"", "animal", "unknown", "unid", "unidentified", "whole-frame"}


def known_species(species: str | None) -> str | None:
    """The species, or None when it is missing or only a generic label such as 'animal'."""
    if species is None or str(species).strip().casefold() in GENERIC_SPECIES:
        return None
    return str(species).strip()


# For galleries built in memory (the catalogue's own is engine.gallery_index's): bench/pipeline.py measured exact
# search at 2.6 ms a query at 100k vectors and 48 ms at 1M, an HNSW build at 35 s and 11 min, so it pays only
# for a million vectors searched once.
ANN_MIN_GALLERY = 1_000_000
ANN_MIN_GROUP = 20_000  # grouping new detections searches each against all the others: HNSW pays sooner


@dataclass
class Candidate:
    individual_id: int
    score: float  # what the ranking used: the fused probability when verified, else the appearance score
    best_detection_id: int  # the gallery photo that supports the suggestion best
    appearance: float = float("nan")  # mean of the individual's best top_n gallery similarities
    detection_ids: list[int] = field(default_factory=list)  # its best gallery detections by appearance
    # coat-pattern evidence with best_detection_id (pattern.PatternMatch.evidence; None: not verified), and the
    # matched points a person sees drawn
    pattern_evidence: int | None = None
    pattern_points: int | None = None


@dataclass
class Suggestion:
    detection_id: int
    candidates: list[Candidate]
    probably_new: bool
    best_score: float
    proposal: str | None = None


class VectorIndex:
    """Top-k inner-product search over L2-normalised vectors; exact below ``ann_min`` vectors, HNSW above."""

    def __init__(self, vectors: np.ndarray, ann_min: int = ANN_MIN_GALLERY, ef_search: int = 128):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ann = None
        if len(self.vectors) >= ann_min:
            try:
                import faiss
            except ImportError:  # the installer build leaves faiss out: exact search, just slower at 1M+
                return

            index = faiss.IndexHNSWFlat(self.vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.add(self.vectors)
            index.hnsw.efSearch = ef_search
            self.ann = index

    def __len__(self):
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (n_queries, k), best first; index -1 where fewer than k exist."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k_eff = min(k, len(self.vectors))
        if k_eff == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.ann is not None:
            return self.ann.search(queries, k_eff)
        return exact_top_k(queries, self.vectors, k_eff)


def exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, k: int, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, (scores, rows) each (n_queries, min(k, valid rows)), best first.

    A block of queries at a time, so the similarity block stays near 64 MB at any gallery size; ``valid`` masks
    rows out (a gallery row whose sighting no longer stands)."""
    k_eff = min(k, len(vectors) if valid is None else int(valid.sum()))
    out_s = np.zeros((len(queries), k_eff), np.float32)
    out_i = np.zeros((len(queries), k_eff), np.int64)
    if k_eff == 0:
        return out_s, out_i
    block = max(1, (1 << 24) // max(len(vectors), 1))
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ np.asarray(vectors).T
        if valid is not None:
            sims[:, ~valid] = -np.inf
        idx = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
        part = np.take_along_axis(sims, idx, 1)
        order = np.argsort(-part, axis=1)
        out_s[start : start + block] = np.take_along_axis(part, order, 1)
        out_i[start : start + block] = np.take_along_axis(idx, order, 1)
    return out_s, out_i


@dataclass
class Gallery:
    vectors: np.ndarray
    individual_ids: np.ndarray
    detection_ids: np.ndarray
    viewpoints: np.ndarray
    species: np.ndarray
    _index: VectorIndex | None = field(default=None, repr=False)

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            self._index = VectorIndex(self.vectors)
        return self._index


def rank_individuals(
    sims: np.ndarray, gallery_rows: np.ndarray, gallery: Gallery, k: int = 5, top_n: int = 3, keep_photos: int = 3
) -> list[Candidate]:
    """Aggregate per-vector similarities into per-individual scores (mean of each one's best top_n); each
    candidate lists its best ``keep_photos`` gallery detections (the ones pattern verification looks at).

    In numpy, one sort per query (a Python loop over the 200 neighbours cost 0.65 s per 1,000 queries): photos
    grouped by individual, best first (ties: the higher detection id); individuals tied on score keep the order
    in which the search met them."""
    rows = np.asarray(gallery_rows)
    valid = rows >= 0
    if not valid.any():
        return []
    rows, scores = rows[valid], np.asarray(sims, np.float64)[valid]
    inds, dets = gallery.individual_ids[rows], gallery.detection_ids[rows]
    _, first_seen, group = np.unique(inds, return_index=True, return_inverse=True)
    order = np.lexsort((-dets, -scores, first_seen[group]))  # by individual (as met), then best photo first
    group_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]])  # one per individual, as met
    ends = np.r_[starts[1:], len(order)]
    slot = np.repeat(np.arange(len(starts)), ends - starts)  # each sorted photo's individual, 0..
    best = np.arange(len(order)) - starts[slot] < top_n  # within its individual's best top_n
    means = np.bincount(slot[best], scores[order][best]) / np.bincount(slot[best])
    keep = max(top_n, keep_photos)
    cands = []
    for g in np.argsort(-means, kind="stable")[:k]:
        photos = [int(d) for d in dets[order[starts[g] : min(ends[g], starts[g] + keep)]]]
        score = float(means[g])
        cands.append(Candidate(int(inds[order[starts[g]]]), score, photos[0], score, photos))
    return cands


def suggest(
    query: np.ndarray,
    gallery: Gallery,
    threshold: float,
    viewpoint: str | None = None,
    species: str | None = None,
    k: int = 5,
    top_n: int = 3,
    search_depth: int = 200,
    exclude_detections: set[int] | None = None,
    fusion: Fusion | None = None,
    query_pattern: PatternFeatures | None = None,
    gallery_pattern=None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[Candidate], bool, float]:
    """Top-k individuals for one embedding; True when the best is below the open-set threshold.

    ``threshold`` is an appearance similarity. With ``fusion``, ``query_pattern`` and ``gallery_pattern``
    (detection id -> PatternFeatures or None), the candidates are verified and ranked by calibrated probability,
    and the fusion's threshold for the query's side decides 'new' instead (Fusion.threshold_for); a query without
    pattern features falls back to appearance.
    ``neighbours``: this query's (scores, rows) from a batched ``gallery.index.search`` of ``search_depth``."""
    if len(gallery.vectors) == 0:
        return [], True, float("-inf")
    if neighbours is None:
        neighbours = tuple(a[0] for a in gallery.index.search(query[None], min(search_depth, len(gallery.vectors))))
    scores, rows = neighbours
    keep = rows >= 0
    species = known_species(species)
    if species is not None:  # never another species' individual (individuals of unknown species may match)
        gs = gallery.species[np.maximum(rows, 0)]
        keep &= np.array([known_species(g) is None or g.casefold() == species.casefold() for g in gs], bool)
    if viewpoint is not None:
        vp = gallery.viewpoints[np.maximum(rows, 0)]
        keep &= (vp == viewpoint) | (vp == None)  # noqa: E711 (numpy object comparison)
    if exclude_detections:
        keep &= np.array([d not in exclude_detections for d in gallery.detection_ids[np.maximum(rows, 0)]], bool)
    verify = fusion is not None and query_pattern is not None and gallery_pattern is not None
    photos = fusion.photos_per_candidate if verify else top_n
    cands = rank_individuals(scores[keep], rows[keep], gallery, fusion.candidates if verify else k, top_n, photos)
    if verify:
        cands = verify_candidates(cands, query_pattern, gallery_pattern, fusion)[:k]
        threshold = fusion.threshold_for(viewpoint)
    best = cands[0].score if cands else float("-inf")
    return cands, best < threshold, best


def match_reason(score: float, appearance: float | None, pattern_points: int | None, photos: int = 1) -> str:
    """Why a candidate is suggested, in words a biologist can check against the photos (``photos``: how many
    photos of the detection's burst the probability rests on)."""
    if pattern_points is None:
        return f"appearance score {score:.2f}"
    points = f"{pattern_points} matching pattern point{'s' if pattern_points != 1 else ''} on the coat"
    judged = f" over {photos} photos of this burst" if photos > 1 else ""
    return f"{points}; appearance score {appearance:.2f}; match probability {probability_words(score)}{judged}"


def probability_words(p: float) -> str:
    """A calibrated probability as a person should read it: never a certain 100 % or 0 % (the fusion was fitted on
    118 nyala; rounding 0.996 up would promise what no fit can)."""
    if p >= 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{p:.0%}"


def verify_candidates(
    cands: list[Candidate], query_pattern: PatternFeatures, gallery_pattern, fusion: Fusion
) -> list[Candidate]:
    """Match the query's coat pattern against each candidate's best photos; rank by fused probability (the
    candidates are judged together: each one's lead over the best of the others counts)."""
    for c in cands:
        c.pattern_evidence, c.pattern_points = 0, 0
        for detection_id in c.detection_ids[: fusion.photos_per_candidate]:
            features = gallery_pattern(detection_id)
            if features is None:
                continue
            found = match_pattern(query_pattern, features)
            if found.evidence > c.pattern_evidence:
                c.pattern_evidence, c.pattern_points, c.best_detection_id = found.evidence, found.points, detection_id
    probabilities = fusion.probabilities([c.appearance for c in cands], [c.pattern_evidence for c in cands])
    for c, p in zip(cands, probabilities, strict=True):
        c.score = float(p)
    return sorted(cands, key=lambda c: -c.score)


def _log_odds(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def encounter_probabilities(own: dict[int, float], others: list[dict[int, float]]) -> dict[int, float]:
    """One photo's verified candidates (individual id -> fused probability) judged with the other photos of its
    encounter, the same animal photographed together (the other flank, a burst), each given as its own verified
    candidates: the mean of the photos' log-odds, a candidate that a photo did not list counted at that photo's
    least probable candidate. Only ``own``'s candidates are scored, so what the review draws stays this photo's.

    Why: a never-seen animal's best chance match on one flank is rarely its best on the other, while a known
    animal's true individual tops both; the mean, not the sum, keeps a burst of near-identical photos (the same
    chance matches) at what one of them says. On the 364 photos of the 61 unseen nyala that have their other
    flank in their encounter, judging both together raised top-1 57.7 -> 62.9 % and top-5 69.5 -> 76.6 %
    (python -m trainer.fusion, card 0.10.0).
    """
    photos = [own, *(o for o in others if o)]
    if len(photos) == 1:
        return dict(own)
    odds = [{i: _log_odds(p) for i, p in photo.items()} for photo in photos]
    floors = [min(photo.values()) for photo in odds]
    return {
        i: float(1.0 / (1.0 + np.exp(-np.mean([o.get(i, f) for o, f in zip(odds, floors, strict=True)])))) for i in own
    }


def log_odds_lead(probabilities) -> float:
    """How far the best of one detection's candidates' probabilities stands above the second, in log-odds (a lone
    candidate: above even odds). What 'probably new' rests on once a burst has been judged together: a
    known animal's true individual stands out on every photo, while a never-seen animal's chance best differs from
    photo to photo, so the mean log-odds bunch together. On those 364 photos it tells known from new with AUROC
    0.764, against 0.732 for the best judged-together probability and 0.709 for each photo alone (calibration
    individuals: 0.701, 0.672, 0.658); for a photo alone it does worse than the probability, whose fusion already
    has the leads (calibration 0.653 against 0.660). Hence only for independent views: judged with an identical
    copy of itself, a photo's lead at that threshold flags 48-49 % of new animals, against 65-69 % by its
    probability (calibration and test individuals)."""
    top = sorted(probabilities, reverse=True)[:2]
    if not top:
        return float("-inf")
    return _log_odds(top[0]) - (_log_odds(top[1]) if len(top) > 1 else 0.0)


def both_flanks(sides) -> bool:
    """Whether photos of one animal are independent views: every side known, and not all the same."""
    sides = list(sides)
    return all(side is not None for side in sides) and len(set(sides)) > 1


def judge_bursts(lists: list[list[Candidate]], groups: list[list[int]], sides: list[str | None]) -> list[int]:
    """Each list of one detection's verified candidates rescored in place with the other lists of its group (the
    detections of one burst: engine.match.bursts) by encounter_probabilities on the scores they had before, best
    first, when the group's verified detections show both flanks (``sides``, one per list: both_flanks). Empty
    lists and lists never verified (no pattern evidence) neither change nor count. Returns how many photos judged
    each list (1: itself alone)."""
    verified = [bool(c) and c[0].pattern_evidence is not None for c in lists]
    before = [{c.individual_id: c.score for c in cands} for cands in lists]
    photos = [1] * len(lists)
    for group in groups:
        judged = [i for i in group if verified[i]]
        if len(judged) < 2 or not both_flanks(sides[i] for i in judged):
            continue
        for i in judged:
            scores = encounter_probabilities(before[i], [before[j] for j in judged if j != i])
            for c in lists[i]:
                c.score = scores[c.individual_id]
            lists[i].sort(key=lambda c: -c.score)
            photos[i] = len(judged)
    return photos


def _parse(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(ts).replace(tzinfo=None) if ts else None
    except ValueError:
        return None


# Photos of one camera this close in time, each holding one animal, show the same animal (a trigger's burst).
BURST_SECONDS = 60.0


def burst_links(items: list[dict], burst_seconds: float = BURST_SECONDS) -> list[tuple[int, int]]:
    """Pairs of items (indices) in one burst: consecutive photos of one camera (deployment_id) in time order
    (taken_at), each within ``burst_seconds`` of the previous one, each holding a single animal (n_in_photo == 1:
    two animals in one burst may be two individuals). Linking these gives the same groups as every close pair."""
    times = [_parse(it.get("taken_at")) for it in items]
    singles = sorted(
        (i for i in range(len(items)) if times[i] and items[i]["n_in_photo"] == 1),
        key=lambda i: (str(items[i]["deployment_id"]), times[i]),
    )
    return [
        (a, b)
        for a, b in itertools.pairwise(singles)
        if items[a]["deployment_id"] == items[b]["deployment_id"]
        and (times[b] - times[a]).total_seconds() <= burst_seconds
    ]


def bursts(items: list[dict], burst_seconds: float = BURST_SECONDS) -> list[list[int]]:
    """The items (indices) grouped by burst (burst_links); an item in no burst is a group of its own."""
    group = list(range(len(items)))
    for a, b in burst_links(items, burst_seconds):
        group[b] = group[a]  # links run along each camera's time order: the run's first item names it
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    return list(members.values())


def group_new(
    items: list[dict],
    vectors: np.ndarray,
    threshold: float,
    burst_seconds: float = BURST_SECONDS,
    neighbours: int = 16,
) -> list[int]:
    """Connected components over probably-new detections: linked when similar (>= threshold) or in one burst.

    items: dicts with deployment_id, taken_at, media_id, n_in_photo (detections in that photo).
    A burst only links photos that hold a single animal each (two animals in one burst may be two individuals).
    No all-pairs matrix and no Python loop over pairs: similarity links come from each detection's ``neighbours``
    nearest (exact search in bounded blocks below ANN_MIN_GROUP detections, so still n^2 arithmetic there; HNSW,
    n log n, above), burst links from consecutive photos of one camera in time order (each within
    ``burst_seconds`` of the previous one: the same groups that linking every close pair gives).
    """
    n = len(items)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    if n > 1:
        scores, rows = VectorIndex(vectors, ann_min=ANN_MIN_GROUP).search(vectors, min(neighbours + 1, n))
        for i, rank in zip(*np.nonzero((scores >= threshold) & (rows >= 0)), strict=True):
            j = int(rows[i, rank])
            if j != i and items[i]["media_id"] != items[j]["media_id"]:  # two animals in one photo are two
                union(i, j)
    for a, b in burst_links(items, burst_seconds):
        union(a, b)
    return [find(i) for i in range(n)]
