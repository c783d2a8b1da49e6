"""The same animal under two codes: after a sync, propose merging individuals that two catalogues named apart.

Station 1 calls a nyala "N12", station 2 meets it later and calls it "B7". Both reach the central catalogue
as two individuals of different origins (engine.sync). Each individual is compared with every individual of
the same species from *another* origin the way a photo is compared with the gallery (engine.match):

* appearance: the best cosine similarity between any photo of one and any photo of the other;
* coat pattern: RANSAC-verified keypoint matches (engine.pattern) on the most similar photo pairs;
* both fused by the model card's calibration (engine.calibration), the candidates of one individual judged
  together (the leads), as a query's are.

A pair is proposed when each is the other's best candidate (mutual best: a chance look-alike is rarely
mutual) and its fused probability reaches the card's threshold. Proposals are only proposals: a person
accepts one with ``engine.decisions.merge`` (logged and undoable, both histories kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import Fusion
from .catalogue import Catalogue
from .match import known_species, match_reason
from .pattern import PATTERN_METHOD, PatternFeatures
from .pattern import match as match_pattern

CANDIDATES = 200  # other-origin individuals (nearest by appearance) that are pattern-verified for each one
PHOTO_PAIRS = 8  # most similar photo pairs of a candidate pair that are verified


class ProposalsCancelled(Exception):
    """Raised from the progress callback to stop a search (nothing is written by one)."""


@dataclass
class MergeProposal:
    keep_id: int  # catalogued first: the code that survives
    keep_code: str
    merge_id: int
    merge_code: str
    species: str
    probability: float
    appearance: float
    pattern_points: int  # coat-pattern points matched between the pair's best photos (0: not verified)
    reason: str


def _individuals(cat: Catalogue, model_id: int) -> dict[int, dict]:
    """Standing individuals with their gallery vectors (unit length) and origin."""
    rows = cat.query(
        """SELECT i.id, i.code, i.species, i.created_at, COALESCE(i.origin, ?) AS origin, s.detection_id, e.vector,
                  d.viewpoint
           FROM individuals i JOIN sighting_state s ON s.individual_id = i.id
           JOIN detections d ON d.id = s.detection_id
           JOIN embeddings e ON e.detection_id = s.detection_id AND e.model_id = ?
           WHERE i.merged_into IS NULL ORDER BY i.id, s.detection_id""",
        [cat.uuid, model_id],
    )
    out: dict[int, dict] = {}
    for r in rows:
        ind = out.setdefault(r["id"], {k: r[k] for k in ("id", "code", "species", "created_at", "origin")})
        ind.setdefault("detections", []).append(r["detection_id"])
        ind.setdefault("vectors", []).append(np.frombuffer(r["vector"], np.float32))
        ind.setdefault("sides", []).append(r["viewpoint"])
    for ind in out.values():
        v = np.vstack(ind["vectors"])
        ind["vectors"] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return out


def _same_side(a: dict, b: dict, sims: np.ndarray) -> np.ndarray:
    """Photo pairs of different flanks (both known) compare two different coats: left out, as engine.match
    does for a query."""
    sa, sb = np.array(a["sides"], object), np.array(b["sides"], object)
    known = (sa[:, None] != None) & (sb[None, :] != None)  # noqa: E711 (element-wise)
    return np.where(known & (sa[:, None] != sb[None, :]), -np.inf, sims)


def _patterns(cat: Catalogue, detection_ids: list[int]) -> dict[int, PatternFeatures]:
    out = {}
    for start in range(0, len(detection_ids), 500):
        chunk = detection_ids[start : start + 500]
        for det, blob in cat.db.execute(
            f"SELECT detection_id, features FROM patterns WHERE method = ? AND detection_id IN "
            f"({', '.join('?' * len(chunk))})",
            [PATTERN_METHOD, *chunk],
        ).fetchall():
            out[det] = PatternFeatures.from_bytes(bytes(blob))
    return out


def propose_merges(cat: Catalogue, model_id: int, fusion: Fusion | None, progress=None) -> list[MergeProposal]:
    """Merge proposals across origins, most probable first (see the module's docstring)."""
    inds = _individuals(cat, model_id)
    ids = list(inds)
    patterns = _patterns(cat, [d for i in inds.values() for d in i["detections"]]) if fusion else {}
    scored: dict[int, list[tuple[int, float, float, int]]] = {}
    for n, a in enumerate(ids):
        if progress:
            progress("merge proposals", n, len(ids))
        ia = inds[a]
        others = [
            b
            for b in ids
            if inds[b]["origin"] != ia["origin"]
            and (not known_species(ia["species"]) or inds[b]["species"].casefold() == ia["species"].casefold())
        ]
        if not others:
            continue
        sims = [_same_side(ia, inds[b], ia["vectors"] @ inds[b]["vectors"].T) for b in others]
        appearance = np.array([s.max() for s in sims])
        top = np.argsort(-appearance, kind="stable")[:CANDIDATES]
        evidence, points = np.zeros(len(top), int), np.zeros(len(top), int)
        if fusion:
            for k, t in enumerate(top):
                s, b = sims[t], inds[others[t]]
                for flat in np.argsort(-s, axis=None, kind="stable")[:PHOTO_PAIRS]:
                    if not np.isfinite(s.flat[flat]):
                        break
                    i, j = np.unravel_index(flat, s.shape)
                    pa, pb = patterns.get(ia["detections"][i]), patterns.get(b["detections"][j])
                    if pa is not None and pb is not None:
                        found = match_pattern(pa, pb)
                        if found.evidence > evidence[k]:
                            evidence[k], points[k] = found.evidence, found.points
            probability = fusion.probabilities(appearance[top], evidence)
        else:
            probability = appearance[top]
        scored[a] = sorted(
            (
                (others[t], float(p), float(appearance[t]), int(q))
                for t, p, q in zip(top, probability, points, strict=True)
                if np.isfinite(appearance[t])  # no photo of the same side: these two cannot be compared
            ),
            key=lambda x: -x[1],
        )
    threshold = fusion.threshold if fusion else 0.0
    proposals, seen = [], set()
    for a, cands in scored.items():
        if not cands:
            continue
        b, p, app, q = cands[0]
        if (b, a) in seen or not scored.get(b) or scored[b][0][0] != a or p < threshold:
            continue
        seen.add((a, b))
        p = min(p, scored[b][0][1])  # the pair is as sure as its less sure side
        keep, gone = sorted((inds[a], inds[b]), key=lambda i: (i["created_at"] or "", i["id"]))
        proposals.append(
            MergeProposal(
                keep["id"],
                keep["code"],
                gone["id"],
                gone["code"],
                keep["species"],
                p,
                app,
                q,
                match_reason(p, app, q if fusion else None),
            )
        )
    return sorted(proposals, key=lambda m: -m.probability)


def propose_for_current_model(cat: Catalogue, reid_model=None, progress=None) -> list[MergeProposal]:
    """Proposals with the model the pipeline embeds with (the bundled one unless given), its fusion too."""
    from .pipeline import Pipeline

    pipeline = Pipeline(cat, detector="whole-frame", reid_model=reid_model)
    return propose_merges(cat, pipeline.reid_model_id, pipeline.fusion, progress)
