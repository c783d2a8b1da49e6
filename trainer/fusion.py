"""Fit and measure the fusion of appearance (global embedding) with coat-pattern verification, on nyala.

Protocol (the bundled model card's): nyala/train split by identity, seed 0 (split_by_identity, 0.34): the
calibration individuals fit the logistic regression and choose the 'probably new' threshold; the test
individuals, never used to fit or choose anything, give the figures. Every photo goes the product's way: the
bundled detector's best animal box, cropped with the pipeline's margin, embedded by the bundled model, its
pattern extracted by engine.pattern; every photo is a query against the others outside its own encounter and
its sighting session (photos numbered within engine.metrics.SESSION_WINDOW of it: the herd-mates photographed at
the same place and minute), through engine.match.suggest with the global top-40 individuals verified.

    python -m trainer.fusion [--data DIR] [--write-card] [--session-window N]
    # prints the table, writes bench/results/reid_fusion.json (--session-window 0: the protocol of cards <= 0.7.0)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from engine.calibration import FEATURES, Fusion, feature_columns
from engine.demo import find_data_dir
from engine.detect import load_detector
from engine.evaluate import (
    decision_figures,
    encounter_figures,
    photo_features,
    query_outcomes,
    run_suggestions,
    share,
    sighting_numbers,
    suggestion_figures,
)
from engine.metrics import SESSION_WINDOW, threshold_for_new_share
from engine.pattern import MATCH_METHOD, PATTERN_METHOD
from engine.reid import Embedder, default_model_path
from engine.side import side_figures

from .data import folder_samples, split_by_identity
from .side import fit_side_classifier

SEED, TEST_FRACTION = 0, 0.34
# Individuals verified per query, chosen on the calibration individuals only (118, a larger gallery than the
# test third): k = 10 / 20 / 30 / 40 gave top-1 15.2 / 21.8 / 24.6 / 25.6 % and top-5 28.5 / 40.6 / 45.4 / 47.9 %
# there: the true individual is often 21st-40th by appearance. Twice the matching time of k = 20, still within
# the 1 s budget (bench/suggest_speed.py).
CANDIDATES = 40
# Photos verified per candidate individual (its best by appearance), and the leads in the fusion
# (engine.calibration), chosen by two-fold cross-validation over the calibration individuals (fit on one half's
# queries, measure on the other's; python bench/fusion_variants.py), top-40 verified, a never-seen animal judged
# with its individual left out of the gallery:
#   photos 3 / 5 / 8, all features: top-1 34.8 / 38.3 / 38.4 %, top-5 51.3 / 55.3 / 55.4 %, AUROC 0.617 / 0.632 / 0.638;
#   8 photos, inliers only: AUROC 0.571; + pattern lead 0.614; + appearance lead 0.616; + evidence above the
#   query's median 0.638 (known flagged at 60 % new flagged: 50.9 / 44.4 / 44.2 / 39.8 %). k = 20 was worse
#   throughout (top-1 30.7 %). A StripeSpotter-like stripe profile (light vertical stripes sampled in three
#   bands along the flank, compared by normalised correlation over scale and shift) separated a test photo's own
#   individual from its 5 most similar others no better than chance (AUC 0.50 against 0.62 for the inliers on the
#   same pairs, bench/stripe_code.py): not used.
PHOTOS_PER_CANDIDATE = 8
TARGET_NEW_FLAGGED = 0.65  # issue 11: >= 60 % of new animals flagged while <= 25 % of known ones are
# The card's version with this fusion (0.3.1: top-40 verified; 0.3.2: similarity RANSAC; 0.4.0: 8 photos per
# candidate and the leads; 0.5.0: pattern keypoints on the GrabCut foreground only; 0.6.0: guided matches in
# the pattern evidence; 0.7.0: the open set measured with the query's individual left out, the threshold
# chosen so, and each candidate's evidence above the query's median in the fusion; 0.8.0: fitted and measured
# with each query's sighting session left out, engine.metrics.SESSION_WINDOW; 0.9.0: 1500 pattern keypoints a crop
# instead of 600, engine.pattern.MAX_KEYPOINTS): same ONNX file as 0.2.0, but suggestions change, so catalogues
# re-suggest.
# 0.10.0: the same fusion; a burst whose photos show both flanks judged together (engine.match.
# encounter_probabilities), 'probably new' on the best candidate's lead (encounter_lead_threshold), and a threshold
# of its own for photos of no known side (unsided_threshold).
# 0.11.0: the same fusion; a detection's side, when nobody recorded it, inferred from its crop and the crop's mirror
# (engine.side: embeddings and gradient histograms, fitted here on the calibration photos), for nyala.
# 0.12.0: pattern keypoints along the stripes kept (engine.pattern.EDGE_THRESHOLD; a new PATTERN_METHOD), the fusion,
# thresholds and side classifier fitted again.
# 0.13.0: a 7 px top-hat instead of 9 (engine.pattern.TOPHAT_WIDTH, chosen on calibration; a new PATTERN_METHOD), the
# fusion, thresholds and side classifier fitted again.
RELEASE_VERSION = "0.13.0"
SIDE_SPECIES = ("nyala", "Tragelaphus angasii")
BASELINE, FUSED = "appearance only (ImageNet features off the shelf)", "appearance + pattern (fused)"
# The photos that have their other flank in their encounter (a burst in the app), judged alone and together.
ALONE, TOGETHER = "fused, photos with their other flank: each alone", "fused, photos with their other flank: together"
# Every photo with its side not known, as an import's are, at the threshold chosen so on calibration (and at the
# sided threshold, as cards before 0.10.0 judged them).
UNSIDED = "fused, sides not known (as imports)"
UNSIDED_CARD_THRESHOLD = "fused, sides not known, sided threshold (<= 0.9.0)"
# Every photo judged as the app judges it (engine.evaluate.decision_figures): with its other flank when its
# encounter shows both, else alone at its side's threshold; sides from the file names, or inferred (engine.side).
APP_SIDES_KNOWN = "as the app judges, sides recorded"
APP_SIDES_INFERRED = "as the app judges, sides inferred from the crops"
ROOT = Path(__file__).resolve().parent.parent


def fit_fusion(run, features=FEATURES, threshold: float = 0.5) -> Fusion:
    """Logistic regression on the (query, candidate) pairs of a verified run -> P(same individual), on the
    features of engine.calibration that ``features`` names (the others get weight 0). The inputs are standardised
    for the fit (one regularisation strength for all) and the weights folded back onto raw inputs for the card."""
    from sklearn.linear_model import LogisticRegression

    chosen = [FEATURES.index(name) for name in features]
    columns, same = [], []
    for q in run.as_known():
        columns.append(feature_columns([a for a, _, _ in q], [n for _, n, _ in q])[:, chosen])
        same += [s for _, _, s in q]
    x = np.concatenate(columns)
    mean, std = x.mean(0), x.std(0) + 1e-9
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / std, np.asarray(same, bool))
    weights = model.coef_[0] / std
    intercept = float(model.intercept_[0] - (weights * mean).sum())
    fitted = {name: float(w) for name, w in zip(features, weights, strict=True)}
    return Fusion(
        **({name: 0.0 for name in FEATURES} | fitted),
        intercept=intercept,
        threshold=threshold,
        candidates=CANDIDATES,
        photos_per_candidate=PHOTOS_PER_CANDIDATE,
    )


# A newly trained model gets its fusion (and side classifier) refitted on at most this many of its training photos
# (whole individuals, seeded), and a training budget keeps this much time a photo for it (crop, embedding, pattern,
# verification on a 2-core CPU; bench/user_loop.py).
REFIT_PHOTOS = 800
REFIT_SECONDS_PER_PHOTO = 0.4
REFIT_MIN_INDIVIDUALS = 10  # with two encounters or more: fewer give the regression too few true matches


def can_refit(samples) -> bool:
    """Whether the photos hold enough individuals seen in two encounters to fit a fusion on."""
    encounters: dict[str, set] = {}
    for s in samples:
        encounters.setdefault(s.individual, set()).add(s.encounter)
    return sum(len(e) >= 2 for e in encounters.values()) >= REFIT_MIN_INDIVIDUALS


def fit_model_fusion(vectors, patterns, samples, session_window: int = SESSION_WINDOW) -> Fusion | None:
    """The coat-pattern fusion for another embedding (a model trained on a catalogue): the bundled card's recipe
    (k, photos per candidate, features, the share of new animals flagged, the encounter lead), refitted on photos
    of the model's own training individuals, whose appearance scores are that model's. The pattern evidence is
    the same recipe's. None when the photos hold too few individuals seen twice to fit on (can_refit). Without it
    a trained model's suggestions would rest on appearance alone, far below the bundled model's fused ones
    (bench/user_loop.py with card 0.9.0: 15.4% top-1 against 64.4%)."""
    if not can_refit(samples):
        return None
    run = part_suggestions(samples, vectors, patterns, [s.viewpoint for s in samples], session_window)
    fusion = fit_fusion(run)
    fusion = dataclasses.replace(fusion, threshold=new_threshold(run, fusion))
    paired = run.paired()
    if paired.queries:
        lead = new_threshold(paired, fusion, with_encounter=True)
        fusion = dataclasses.replace(fusion, encounter_lead_threshold=lead)
    return fusion


def new_threshold(run, fusion: Fusion | None, with_encounter: bool = False) -> float:
    """The 'probably new' score that flags TARGET_NEW_FLAGGED of the run's queries judged as never-seen animals
    (``with_encounter``: the best candidate's lead, photos judged with their encounter's, as the app judges a
    burst)."""
    _, _, new = query_outcomes(run, fusion, with_encounter=with_encounter)
    return threshold_for_new_share(new, TARGET_NEW_FLAGGED)


def refit_photos(samples, limit: int = REFIT_PHOTOS, seed: int = SEED) -> list:
    """Whole individuals (seeded order) until ``limit`` photos: a season's catalogue is not verified in full."""
    by_individual: dict[str, list] = {}
    for s in samples:
        by_individual.setdefault(s.individual, []).append(s)
    out = []
    for name in np.random.default_rng(seed).permutation(sorted(by_individual)):
        if len(out) + len(by_individual[name]) > limit and out:
            break
        out += by_individual[name]
    return out


def part_suggestions(part, vectors, patterns, sides, session_window: int):
    """engine.evaluate.run_suggestions over these photos (samples) with these sides, the card's k and photos."""
    return run_suggestions(
        vectors,
        [s.individual for s in part],
        [s.encounter for s in part],
        sides,
        patterns=patterns,
        candidates=CANDIDATES,
        photos_per_candidate=PHOTOS_PER_CANDIDATE,
        sightings=sighting_numbers(s.path for s in part),
        session_window=session_window,
    )


def write_card(result: dict) -> Path:
    """Store the measured fusion, its figures beside the same run's baseline, and the individuals it never saw
    in the bundled model card."""
    card_path = default_model_path().with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["version"] = RELEASE_VERSION
    card["fusion"] = result["fusion"]
    card["side_classifier"] = result["side_classifier"]
    card["metrics"]["suggestions_unseen_individuals"] = {
        "protocol": result["protocol"],
        "baseline_imagenet_off_the_shelf_same_run": BASELINE,
        **result["test"],
    }
    # The fusion was fitted on the calibration individuals: only the test ones are unseen by the model now.
    card["held_out_individuals"] = result["test_individuals"]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="nyala/train (default: ../shared/data)")
    parser.add_argument("--write-card", action="store_true", help="store the fusion in the bundled model card")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reid_fusion.json")
    parser.add_argument(
        "--session-window",
        type=int,
        default=SESSION_WINDOW,
        help="photos numbered within this of a query are its sighting session, never judged against it (0: only "
        "its own number, the protocol of cards up to 0.7.0)",
    )
    args = parser.parse_args(argv)
    data = args.data or find_data_dir() / "nyala" / "train"
    samples = folder_samples(data)
    calibration, test = split_by_identity(samples, TEST_FRACTION, SEED)
    embedder, detector = Embedder(), load_detector("bundled")
    t0 = time.perf_counter()
    runs, unsided, features = {}, {}, {}
    for name, part in (("calibration", calibration), ("test", test)):
        paths = [s.path for s in part]
        vectors, patterns, side_inputs = photo_features(paths, detector, embedder, with_side_inputs=True)
        features[name] = vectors, patterns, side_inputs
        for sides, into in (([s.viewpoint for s in part], runs), ([None] * len(part), unsided)):
            # sides not known, as every import's detections are: verified against both flanks' photos
            into[name] = part_suggestions(part, vectors, patterns, sides, args.session_window)
        print(
            f"{name}: {len(part)} photos, {len({s.individual for s in part})} individuals, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    cal = runs["calibration"]
    fitted: dict[str, Fusion | None] = {
        BASELINE: None,
        "pattern only (calibrated evidence and lead)": fit_fusion(cal, ("pattern_weight", "pattern_lead_weight")),
        "appearance + pattern, no leads (card 0.3.2's features)": fit_fusion(cal, FEATURES[:2]),
        "appearance + pattern + leads (card 0.6.0's features)": fit_fusion(cal, FEATURES[:4]),
        FUSED: fit_fusion(cal),
    }
    table, variants = {}, {}
    for name, fusion in fitted.items():
        threshold = new_threshold(runs["calibration"], fusion)
        variants[name] = dataclasses.replace(fusion, threshold=threshold) if fusion else None
        figures = suggestion_figures(runs["test"], variants[name], threshold)
        figures.pop("ms_per_query")  # one verified pass serves every row: its time is in the protocol, not a row's
        table[name] = figures
    # The app judges a burst's photos together (one animal): here a nyala number's other flank. 'Probably new' then
    # rests on the best candidate's lead over the second, its threshold flagging the same share of the calibration
    # photos that have their other flank.
    lead_threshold = new_threshold(cal.paired(), variants[FUSED], with_encounter=True)
    variants[FUSED] = dataclasses.replace(variants[FUSED], encounter_lead_threshold=lead_threshold)
    paired = encounter_figures(runs["test"], variants[FUSED])
    for name, key in ((ALONE, "alone"), (TOGETHER, "together")):
        table[name] = paired[key]
        table[name].pop("ms_per_query")
    # Sides not known (every import's detections): the same fusion, its threshold chosen again on calibration.
    unsided_threshold = new_threshold(unsided["calibration"], variants[FUSED])
    variants[FUSED] = dataclasses.replace(variants[FUSED], unsided_threshold=unsided_threshold)
    fused = variants[FUSED]
    # Sides inferred where nobody recorded them (every photo here, as an import's): the classifier fitted on the
    # calibration photos, the test photos' sides told from their crops alone.
    vectors, _, side_inputs = features["calibration"]
    sides, side_cv = fit_side_classifier(
        side_inputs,
        vectors.shape[1],
        [s.viewpoint for s in calibration],
        [s.individual for s in calibration],
        SIDE_SPECIES,
    )
    vectors, patterns, side_inputs = features["test"]
    inferred = sides.sides(side_inputs)
    truly_left = np.array([s.viewpoint == "left" for s in test])
    side_test = side_figures(sides.probability_left(side_inputs), truly_left, sides.min_confidence)
    inferred_run = part_suggestions(test, vectors, patterns, inferred, args.session_window)
    print(
        f"sides: calibration (5-fold by individual) {side_cv['accuracy_all']:.1%} right, {side_cv['kept']:.0%} "
        f"kept at confidence {sides.min_confidence:.3f}, {side_cv['accuracy_kept']:.1%} of those right; test "
        f"{side_test['accuracy_all']:.1%}, {side_test['kept']:.0%} kept, {side_test['accuracy_kept']:.1%} right"
    )
    table[APP_SIDES_KNOWN] = decision_figures(runs["test"], fused)
    table[APP_SIDES_INFERRED] = decision_figures(inferred_run, fused)
    table[UNSIDED] = suggestion_figures(
        unsided["test"], fused, fused.threshold, unsided_threshold=fused.unsided_threshold
    )
    table[UNSIDED_CARD_THRESHOLD] = suggestion_figures(unsided["test"], fused, fused.threshold)
    for name in (UNSIDED, UNSIDED_CARD_THRESHOLD):
        table[name].pop("ms_per_query")
    print(
        f"\ntest individuals never fitted on: {len({s.individual for s in test})}, {len(test)} photos, "
        f"{table[FUSED]['queries']} queries across encounters (seed {SEED})"
    )
    print(
        f"{'variant':50s} {'photos':>6s} {'top-1':>6s} {'top-5':>6s} {'MRR':>6s} {'AUROC':>6s} {'known->new':>10s}"
        f" {'new flagged':>11s} {'flagged|1st right':>17s} {'flagged|1st wrong':>17s}"
    )
    for name, f in table.items():
        print(
            f"{name[:50]:50s} {f['queries']:6d} {f['top1']:6.1%} {f['top5']:6.1%} {f['mrr']:6.3f} "
            f"{f['auroc_known_vs_new']:6.3f} {f['known_wrongly_flagged']:10.1%} {f['new_flagged']:11.1%} "
            f"{share(f['known_flagged_when_first_right'], 1):>17s} {share(f['known_flagged_when_first_wrong'], 1):>17s}"
        )
    result = {
        "protocol": {
            "data": "nyala/train",
            "seed": SEED,
            "split": "split_by_identity(samples, 0.34, seed=0)",
            "calibration": [len(calibration), len({s.individual for s in calibration})],
            "test": [len(test), len({s.individual for s in test})],
            "unseen": "the test individuals were never used to fit the fusion or to choose its threshold, k or "
            "matcher; the embedding (ImageNet MobileNetV2 off the shelf) never trained on any nyala",
            "queries": "every test photo with another encounter of its individual, against all other test photos "
            "outside its own encounter (a nyala number's left and right photos are one encounter) and its sighting "
            f"session (photos numbered within {args.session_window} of it: the herd-mates photographed at the same "
            "place and minute; engine.metrics.SESSION_WINDOW), same side only",
            "session_window": args.session_window,
            "candidates_verified": fused.candidates,
            "photos_per_candidate": fused.photos_per_candidate,
            "open_set": f"threshold flags {TARGET_NEW_FLAGGED:.0%} of calibration 'new' scores; a query's 'new' "
            "score is its best with its own individual left out of the gallery (the top-k other individuals "
            "verified and judged among themselves, as the app judges a never-seen animal). The photos that have their "
            "other flank in their encounter (as the app judges a burst): each alone, and judged together (each "
            "candidate at the mean log-odds of both photos', engine.match.encounter_probabilities; 'probably new' "
            "when the best leads the second by less than the encounter lead threshold, engine.match.log_odds_lead, "
            "which flags the same share of the calibration photos that have their other flank). Sides not known "
            "(every import's detections): every photo verified against both flanks' photos, its threshold chosen "
            "so on calibration (fusion.unsided_threshold)",
            "as_the_app_judges": "every photo judged as the app judges it (engine.evaluate.decision_figures): "
            "together with its other flank when its encounter's photos show both sides, otherwise alone at the "
            "threshold for its side; AUROC over each photo's margin above the threshold it is judged at. Sides "
            "recorded: from the file names. Sides inferred: engine.side's classifier fitted on the calibration "
            "photos (embedding of the crop minus its mirror's), a side left unknown below its confidence; the "
            "thresholds are the ones chosen above (not chosen again for inferred sides)",
            "crop": "bundled detector's best animal box + pipeline margin",
            "pattern_method": PATTERN_METHOD,
            "matcher": MATCH_METHOD,
            "ms_per_query_cpu_all_verified": 1000 * runs["test"].seconds_per_query,
            "command": "python -m trainer.fusion --write-card",
        },
        "test": table,
        "fusion": fused.as_card(),
        "side_classifier": sides.as_card(
            {
                "calibration_5_fold_by_individual": side_cv,
                "test_individuals": side_test | {"photos": len(test)},
                "command": "python -m trainer.fusion --write-card",
            }
        ),
        "test_individuals": sorted(f"nyala:{i}" for i in {s.individual for s in test}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.write_card:
        print(f"fusion written to {write_card(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
