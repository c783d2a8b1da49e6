"""Measure Herdbook on any folder of identified photos before trusting it: `herdbook evaluate --data DIR`.

Layouts: DIR/<individual>/<photo> (nyala's '<n>_leftphoto.jpg' names give encounter and flank), or
DIR/<individual>/<encounter>/<photo> (one folder per encounter). Every photo goes the app's way (detector crop,
embedding, coat pattern) and is matched across encounters through engine.match.suggest: a photo never counts as
found through another photo of its own encounter (same place, light and background), nor judged against the other
animals of its own sighting session (numbered photos: SESSION_WINDOW). Open set: each photo's best score is its
'known' score, and its best score among other individuals is its score as a never-seen animal, at the model
card's threshold (its threshold for photos of no known side where the side is not known). The photos whose
encounter shows both flanks are also judged together, as the app judges such a burst (encounter_figures).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import Fusion
from .demo import nyala_photo, viewpoint_from_name
from .detect import load_detector
from .imageio import crop, load_rgb
from .ingest import IMAGE_SUFFIXES, sha256_of
from .match import Gallery, both_flanks, encounter_probabilities, log_odds_lead, suggest
from .metrics import SESSION_WINDOW, auroc, encounter_exclusion, queryable, reid_protocol
from .pattern import PatternFeatures, extract
from .pipeline import CROP_MARGIN
from .reid import Embedder
from .side import SideClassifier, embedded_side_inputs, side_figures


def sighting_numbers(paths) -> list[int | None]:
    """Per photo, its number in the order photos were taken where its name gives one (nyala's
    '<n>_leftphoto.jpg'), else None: the sighting sessions of engine.metrics.encounter_exclusion."""
    out = []
    for path in paths:
        nyala = nyala_photo(Path(path).name)
        out.append(int(nyala[0]) if nyala and nyala[0].isdigit() else None)
    return out


@dataclass(frozen=True)
class IdentifiedPhoto:
    path: Path
    individual: str
    encounter: str
    viewpoint: str | None


def identified_photos(root: str | Path) -> list[IdentifiedPhoto]:
    """Distinct photos (by content) under a folder per individual, with their encounter and side."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out, seen = [], set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            digest = sha256_of(path)
            if digest in seen:
                continue
            seen.add(digest)
            rel = path.relative_to(folder)
            nyala = nyala_photo(path.name)
            if len(rel.parts) > 1:
                encounter = f"{folder.name}/{rel.parts[0]}"
            elif nyala:
                encounter = f"{folder.name}/{nyala[0]}"
            else:
                encounter = f"{folder.name}/{path.stem}"
            out.append(IdentifiedPhoto(path, folder.name, encounter, viewpoint_from_name(path.name, folder.name)))
    return out


def best_animal_box(image: np.ndarray, detector) -> tuple[float, float, float, float] | None:
    """The detector's most confident, largest animal box (x, y, w, h pixels); None when it finds no animal."""
    animals = [b for b in detector(image) if b.label == "animal"]
    if not animals:
        return None
    b = max(animals, key=lambda b: b.score * b.w * b.h)
    return (b.x, b.y, b.w, b.h)


def animal_crop(path, detector) -> np.ndarray:
    """A photo's crop as the product makes it: best_animal_box (the whole photo when none) with the pipeline's
    margin."""
    image = load_rgb(path)
    return crop(image, best_animal_box(image, detector), str(path), CROP_MARGIN)


def photo_features(
    paths: list[str], detector, embedder: Embedder, workers: int = 2, progress=None, with_side_inputs: bool = False
):
    """Per photo, what the product stores: its animal_crop, that crop's embedding and its coat-pattern features.
    ``with_side_inputs``: also what the side classifier reads (engine.side.side_inputs), as a third array."""

    def one(path):
        animal = animal_crop(path, detector)
        return animal, extract(animal)

    vectors, patterns, sides_read = [], [], []
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), 64):
            done = list(pool.map(one, paths[start : start + 64]))
            vectors.append(embedder.embed([c for c, _ in done]))
            if with_side_inputs:
                sides_read.append(embedded_side_inputs(embedder, vectors[-1], [c for c, _ in done]))
            patterns += [p for _, p in done]
            if progress:
                progress(start + len(done), len(paths))
    empty = np.zeros((0, embedder.dim), np.float32)
    stacked = np.concatenate(vectors) if vectors else empty
    if with_side_inputs:
        return stacked, patterns, np.concatenate(sides_read) if sides_read else np.zeros((0, 0))
    return stacked, patterns


def evaluate_folder(
    root: str | Path,
    model: str | Path | None = None,
    progress=None,
    detector: str | Path | None = "bundled",
    species: str | None = None,
) -> dict:
    """Herdbook's figures on a folder of identified photos, the product's way: detector crop, embedding, coat
    pattern, suggestions with the card's fusion and 'probably new' threshold. A photo whose name gives no side
    gets the side the app would infer for ``species`` (engine.side), as an import's detection does."""
    photos = identified_photos(root)
    if len({p.individual for p in photos}) < 2:
        raise ValueError(f"{root}: needs photos of at least two individuals")
    ids, enc, sides = [p.individual for p in photos], [p.encounter for p in photos], [p.viewpoint for p in photos]
    numbers = sighting_numbers(p.path for p in photos)
    if not queryable(ids, encounter_exclusion(enc, sightings=numbers)).any():
        raise ValueError(
            f"{root}: no individual has photos of two encounters (photos taken apart), so no suggestion can be "
            "measured across encounters; put each encounter's photos in a folder of its own inside the "
            "individual's folder (INDIVIDUAL/ENCOUNTER/photo.jpg)"
        )
    embedder = Embedder(model)
    classifier = SideClassifier.from_card(embedder.card.data)
    applies = classifier is not None and classifier.applies_to(species)
    features = photo_features(
        [str(p.path) for p in photos], load_detector(detector), embedder, progress=progress, with_side_inputs=applies
    )
    emb, patterns = features[0], features[1]
    recorded = sum(side is not None for side in sides)
    checked = None
    if applies:
        # The classifier checked against the sides the names give, then used where they give none.
        named = np.array([side is not None for side in sides])
        if named.any():
            truly_left = np.array([side == "left" for side in sides])[named]
            p_left = classifier.probability_left(features[2][named])
            checked = side_figures(p_left, truly_left, classifier.min_confidence) | {"photos": int(named.sum())}
        sides = [side or guess for side, guess in zip(sides, classifier.sides(features[2]), strict=True)]
    out = reid_protocol(emb, ids, enc, sides, numbers)  # appearance alone, photo against photo
    out |= card_suggestions(embedder.card.data, emb, ids, enc, sides, patterns, numbers)
    out["photos"], out["individuals"] = len(photos), len(set(ids))
    out["encounters"] = len(set(enc))
    out["sides"] = {"from_names": recorded, "inferred": sum(side is not None for side in sides) - recorded}
    if checked:
        out["sides"]["inferred_against_names"] = checked
    out["model"] = f"{embedder.card['name']} {embedder.card['version']}"
    return out


def card_suggestions(card: dict, vectors, identities, encounters, viewpoints, patterns, sightings) -> dict:
    """{"suggestions": suggestion_figures, "fused": whether the card's fusion was used}: the photos' suggestions
    as the app makes them with this model card (its fusion, k and photos per candidate, and 'probably new'
    threshold; appearance alone and the card's open_set_threshold when it has no fusion for this pattern recipe).
    With a card whose fusion has an encounter lead threshold, also "photos_with_encounter" (encounter_figures)."""
    fusion = Fusion.from_card(card)
    threshold = fusion.threshold if fusion else float(card.get("open_set_threshold") or 0.5)
    unsided = fusion.unsided_threshold if fusion else None
    verified = (fusion.candidates, fusion.photos_per_candidate) if fusion else ()
    run = run_suggestions(
        vectors, identities, encounters, viewpoints, patterns if fusion else None, *verified, sightings=sightings
    )
    out = {
        "suggestions": suggestion_figures(run, fusion, threshold, unsided_threshold=unsided),
        "fused": fusion is not None,
    }
    if fusion is not None and fusion.encounter_lead_threshold is not None:
        out["photos_with_encounter"] = encounter_figures(run, fusion)
    if fusion is not None:
        out["as_the_app_judges"] = decision_figures(run, fusion)
    return out


@dataclass
class SuggestionRun:
    """The candidates the product's suggestion path gave for every query photo of a held-out set.

    Per query: (appearance, pattern evidence or -1 when not verified, is the true individual) for the global
    top ``candidates + 1`` individuals, all verified. The first ``candidates`` are what the product verifies for
    the query as a known animal; the first ``candidates`` other individuals are exactly what it verifies when the
    query's individual is not in the catalogue (as_new). Fused scores are computed from these, so one verified
    pass measures global-only ranking, any fusion, and the open set."""

    queries: list[list[tuple[float, int, bool]]]
    seconds_per_query: float
    candidates: int
    individuals: list[list[int]] = field(default_factory=list)  # each query's candidates' individuals, in order
    encounters: list = field(default_factory=list)  # each query's encounter (its photos show one animal)
    sides: list = field(default_factory=list)  # each query's side (None: not known)

    def as_known(self) -> list[list[tuple[float, int, bool]]]:
        """Each query's candidates with its own individual in the gallery."""
        return [q[: self.candidates] for q in self.queries]

    def as_new(self) -> list[list[tuple[float, int, bool]]]:
        """Each query's candidates had its individual never been catalogued: the others, judged among themselves.
        (Scoring the others inside the known list instead would measure each one's lead against the true match,
        which a never-seen animal does not have: card 0.6.0's AUROC 0.817 was that, 0.638 judged this way.)"""
        return [[c for c in q if not c[2]][: self.candidates] for q in self.queries]

    def encounter_partners(self) -> list[list[int]]:
        """Per query, the other queries of its encounter when they show both flanks (engine.match.both_flanks:
        the app judges a burst's photos together only then)."""
        members = defaultdict(list)
        for q, e in enumerate(self.encounters):
            members[e].append(q)
        sides = self.sides or [None] * len(self.encounters)
        together = {e: both_flanks(sides[q] for q in m) for e, m in members.items()}
        return [[o for o in members[e] if o != q] if together[e] else [] for q, e in enumerate(self.encounters)]

    def paired(self) -> SuggestionRun:
        """The queries judged with others of their encounter (encounter_partners; their partners are among them)."""
        keep = [q for q, others in enumerate(self.encounter_partners()) if others]
        sides = self.sides or [None] * len(self.queries)
        return SuggestionRun(
            [self.queries[q] for q in keep],
            self.seconds_per_query,
            self.candidates,
            [self.individuals[q] for q in keep],
            [self.encounters[q] for q in keep],
            [sides[q] for q in keep],
        )


def run_suggestions(
    vectors: np.ndarray,
    identities,
    encounters,
    viewpoints,
    patterns: list[PatternFeatures] | None = None,
    candidates: int = 20,
    photos_per_candidate: int = 3,
    sightings=None,
    session_window: int = SESSION_WINDOW,
) -> SuggestionRun:
    """Every photo as a query against all the others outside its own encounter, through engine.match.suggest
    (same side only when sides are known; each candidate's best photos pattern-verified when ``patterns``).
    ``sightings`` (sighting_numbers) also leaves out each photo's sighting session (engine.metrics.
    encounter_exclusion, ``session_window``). One candidate more than the product's ``candidates`` is kept
    (SuggestionRun.as_new)."""
    names = sorted(set(identities))
    code = {n: i for i, n in enumerate(names)}
    ids = np.array([code[i] for i in identities], np.int64)
    gallery = Gallery(
        np.ascontiguousarray(vectors, np.float32),
        ids,
        np.arange(len(ids), dtype=np.int64),
        np.asarray(viewpoints, dtype=object),
        np.array([None] * len(ids), dtype=object),
    )
    exclude = encounter_exclusion(encounters, sightings=sightings, session_window=session_window)
    kept = candidates + 1
    # Ranking by appearance (weight 1, pattern 0): the verified top-k are the product's, in appearance order.
    probe = Fusion(1.0, 0.0, 0.0, float("-inf"), kept, photos_per_candidate) if patterns is not None else None
    queries, individuals, query_encounters, sides = [], [], [], []
    t0 = time.perf_counter()
    for q in np.flatnonzero(queryable(ids, exclude)):  # the others have no other encounter: cannot be re-identified
        excluded = exclude[q]
        cands, _, _ = suggest(
            vectors[q],
            gallery,
            float("-inf"),
            viewpoints[q],
            k=kept,
            exclude_detections=set(np.flatnonzero(excluded).tolist()),
            fusion=probe,
            query_pattern=patterns[q] if patterns is not None else None,
            gallery_pattern=(lambda i: patterns[i]) if patterns is not None else None,
        )
        # suggest re-sorts by the probe's probability, which is appearance order: restore it exactly (ties)
        cands.sort(key=lambda c: -c.appearance)
        individuals.append([c.individual_id for c in cands])
        query_encounters.append(encounters[q])
        sides.append(viewpoints[q])
        queries.append(
            [
                (c.appearance, -1 if c.pattern_evidence is None else c.pattern_evidence, c.individual_id == ids[q])
                for c in cands
            ]
        )
    seconds = (time.perf_counter() - t0) / max(len(queries), 1)
    return SuggestionRun(queries, seconds, candidates, individuals, query_encounters, sides)


def candidate_scores(queries, fusion: Fusion | None) -> list[np.ndarray]:
    """Each query's candidate scores: appearance alone, or the fusion's probability (candidates judged together)."""
    if fusion is None:
        return [np.array([a for a, _, _ in q]) for q in queries]
    return [fusion.probabilities([a for a, _, _ in q], [max(n, 0) for _, n, _ in q]) for q in queries]


def query_outcomes(
    run: SuggestionRun, fusion: Fusion | None, with_encounter: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: the true individual's 1-based rank (0 when not listed), the best score (the query as a known
    animal), and the best score it would get as a never-seen animal (its individual left out of the gallery).
    ``with_encounter`` (needs a fusion): each photo judged with the other photos of its encounter, as the app
    judges a burst (engine.match.encounter_probabilities), and its open-set scores are what the app then decides
    on, the best candidate's lead over the second (engine.match.log_odds_lead)."""
    known_lists, new_lists = run.as_known(), run.as_new()
    known_scores, new_scores = candidate_scores(known_lists, fusion), candidate_scores(new_lists, fusion)
    if with_encounter and fusion is not None:
        known_ids = [i[: run.candidates] for i in run.individuals]
        new_ids = [
            [i for i, c in zip(ids, q, strict=True) if not c[2]][: run.candidates]
            for ids, q in zip(run.individuals, run.queries, strict=True)
        ]
        known_scores = _with_encounter(known_scores, known_ids, run.encounter_partners())
        new_scores = _with_encounter(new_scores, new_ids, run.encounter_partners())
        open_set = log_odds_lead
    else:
        open_set = max
    ranks = []
    for q, scores in zip(known_lists, known_scores, strict=True):
        order = np.argsort(-scores, kind="stable")
        ranks.append(next((r for r, i in enumerate(order, 1) if q[i][2]), 0))
    known, new = ([open_set(s) if len(s) else float("-inf") for s in scores] for scores in (known_scores, new_scores))
    return np.array(ranks), np.array(known, float), np.array(new, float)


def _with_encounter(scores: list[np.ndarray], ids: list[list[int]], partners: list[list[int]]) -> list[np.ndarray]:
    """Each query's candidate probabilities judged with its encounter partners' (encounter_probabilities)."""
    photos = [dict(zip(i, s.tolist(), strict=True)) for i, s in zip(ids, scores, strict=True)]
    out = []
    for q, others in enumerate(partners):
        judged = encounter_probabilities(photos[q], [photos[o] for o in others])
        out.append(np.array([judged[i] for i in ids[q]]))
    return out


def flagged_by_first_suggestion(ranks: np.ndarray, flagged: np.ndarray) -> dict:
    """Known animals flagged 'probably new', apart by whether their first suggestion was right. A known animal
    whose first suggestion is another individual scores like a never-seen one (its best is a look-alike), so it is
    flagged about as often as new ones are: the share of known animals flagged can go no lower than (1 - top-1)
    times that, whatever the threshold. It is the first suggestion, not the open-set score, that bounds it."""
    right = np.asarray(ranks) == 1
    flagged = np.asarray(flagged, bool)
    return {
        "known_flagged_when_first_right": float(np.mean(flagged[right])) if right.any() else None,
        "known_flagged_when_first_wrong": float(np.mean(flagged[~right])) if (~right).any() else None,
    }


def suggestion_figures(
    run: SuggestionRun,
    fusion: Fusion | None,
    threshold: float,
    with_encounter: bool = False,
    unsided_threshold: float | None = None,
) -> dict:
    """Top-1, top-5 and mean reciprocal rank of the true individual, and the open set at ``threshold``
    (``unsided_threshold`` for the photos whose side is not known, when given); every held-out photo serves as a
    known and as a new animal (query_outcomes). ``with_encounter``: each photo judged with the other photos of its
    encounter, 'probably new' when its best candidate leads the second by less than ``threshold`` (meant for
    run.paired())."""
    r, known, new = query_outcomes(run, fusion, with_encounter)
    unsided = unsided_threshold is not None and not with_encounter
    sides = run.sides or [None] * len(r)
    cut = np.array([unsided_threshold if unsided and side is None else threshold for side in sides], float)
    return {
        "top1": float(np.mean(r == 1)),
        "top5": float(np.mean((r >= 1) & (r <= 5))),
        "mrr": float(np.mean(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0))),
        "queries": int(len(r)),
        "auroc_known_vs_new": auroc(known, new),
        "threshold": threshold,
        **({"unsided_threshold": unsided_threshold} if unsided else {}),
        "open_set_score": "best candidate's lead over the second (log-odds)" if with_encounter else "best score",
        "known_wrongly_flagged": float(np.mean(known < cut)),
        "new_flagged": float(np.mean(new < cut)),
        **flagged_by_first_suggestion(r, known < cut),
        "ms_per_query": 1000 * run.seconds_per_query,
    }


def encounter_figures(run: SuggestionRun, fusion: Fusion) -> dict:
    """On the photos that have another photo of their encounter: suggestion_figures judging each photo alone
    (the card's threshold) and judged together (its encounter lead threshold), as the app judges a burst."""
    paired = run.paired()
    return {
        "alone": suggestion_figures(paired, fusion, fusion.threshold),
        "together": suggestion_figures(paired, fusion, fusion.encounter_lead_threshold, with_encounter=True),
    }


def decision_figures(run: SuggestionRun, fusion: Fusion) -> dict:
    """Every photo judged as the app judges it: with the other photos of its encounter when they show both flanks
    (the lead, encounter_lead_threshold), otherwise alone at the threshold for its side (Fusion.threshold_for).
    The open set is ranked on each photo's margin above the threshold it is judged at, so the AUROC is over the
    decisions the app makes, whichever rule made each."""
    r_alone, known_alone, new_alone = query_outcomes(run, fusion)
    if fusion.encounter_lead_threshold is not None:
        r_together, known_together, new_together = query_outcomes(run, fusion, with_encounter=True)
        together = np.array([bool(p) for p in run.encounter_partners()], bool)
    else:
        r_together, known_together, new_together = r_alone, known_alone, new_alone
        together = np.zeros(len(r_alone), bool)
    sides = run.sides or [None] * len(r_alone)
    alone_cut = np.array([fusion.threshold_for(side) for side in sides], float)
    lead_cut = fusion.encounter_lead_threshold or 0.0
    ranks = np.where(together, r_together, r_alone)
    known = np.where(together, known_together - lead_cut, known_alone - alone_cut)
    new = np.where(together, new_together - lead_cut, new_alone - alone_cut)
    return {
        "top1": float(np.mean(ranks == 1)),
        "top5": float(np.mean((ranks >= 1) & (ranks <= 5))),
        "mrr": float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0))),
        "queries": int(len(ranks)),
        "judged_together": int(together.sum()),
        "side_known": int(sum(side is not None for side in sides)),
        "auroc_known_vs_new": auroc(known, new),
        "open_set_score": "margin above the threshold the photo is judged at",
        "known_wrongly_flagged": float(np.mean(known < 0)),
        "new_flagged": float(np.mean(new < 0)),
        **flagged_by_first_suggestion(ranks, known < 0),
    }


def report_lines(result: dict) -> list[str]:
    a, s, g = result["across_encounters"], result["same_side"], result["suggestions"]
    how = "appearance + coat pattern" if result["fused"] else "appearance"
    return [
        f"{result['photos']} photos, {result['individuals']} individuals, {result['encounters']} encounters; "
        f"model {result['model']}",
        f"suggestions ({how}), across encounters: top-1 {g['top1']:.1%}, top-5 {g['top5']:.1%}, "
        f"MRR {g['mrr']:.3f} ({g['queries']} queries, {g['ms_per_query']:.0f} ms each)",
        f"new individual:    AUROC {g['auroc_known_vs_new']:.2f}; at threshold {g['threshold']:.3f}, "
        f"{g['known_wrongly_flagged']:.0%} of known animals flagged new, {g['new_flagged']:.0%} of new ones flagged",
        *([_encounter_line(result["photos_with_encounter"])] if "photos_with_encounter" in result else []),
        *([_decision_line(result)] if "as_the_app_judges" in result else []),
        f"appearance alone, photo against photo: top-1 {a['rank1']:.1%}, top-5 {a['rank5']:.1%}, mAP {a['mAP']:.1%}; "
        f"same side only top-1 {s['rank1']:.1%}, top-5 {s['rank5']:.1%}",
        *(
            [_side_line(result["sides"]["inferred_against_names"])]
            if "inferred_against_names" in result.get("sides", {})
            else []
        ),
    ]


def _side_line(checked: dict) -> str:
    kept = share(checked["accuracy_kept"], 1)
    return (
        f"sides inferred from the crops, checked against the {checked['photos']} the names give: "
        f"{checked['accuracy_all']:.1%} right; the app keeps the {checked['kept']:.0%} it is sure of, {kept} of "
        "them right"
    )


def _encounter_line(figures: dict) -> str:
    alone, together = figures["alone"], figures["together"]
    return (
        f"photos with another photo of their encounter ({together['queries']}): alone top-1 {alone['top1']:.1%}, "
        f"top-5 {alone['top5']:.1%}, AUROC {alone['auroc_known_vs_new']:.2f}; judged together as a burst top-1 "
        f"{together['top1']:.1%}, top-5 {together['top5']:.1%}, AUROC {together['auroc_known_vs_new']:.2f}, "
        f"{together['known_wrongly_flagged']:.0%} of known flagged new, {together['new_flagged']:.0%} of new"
    )


def share(value: float | None, digits: int = 0) -> str:
    """A share as a percentage, or "none" where it is undefined (no photo to take it over)."""
    return "none" if value is None else f"{value:.{digits}%}"


def _decision_line(result: dict) -> str:
    d, sides = result["as_the_app_judges"], result.get("sides", {})
    return (
        f"every photo as the app judges it ({d['judged_together']} with their other flank; sides from names "
        f"{sides.get('from_names', d['side_known'])}, inferred {sides.get('inferred', 0)}): top-1 {d['top1']:.1%}, "
        f"top-5 {d['top5']:.1%}, AUROC {d['auroc_known_vs_new']:.2f}, {d['known_wrongly_flagged']:.0%} of known "
        f"flagged new ({share(d['known_flagged_when_first_right'])} of those whose first suggestion is right, "
        f"{share(d['known_flagged_when_first_wrong'])} of the others), {d['new_flagged']:.0%} of new"
    )
