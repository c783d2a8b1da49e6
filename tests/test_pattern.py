"""Coat-pattern verification (engine.pattern) and its fusion with appearance, on real nyala photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.calibration import Fusion
from engine.catalogue import Catalogue
from engine.imageio import crop, load_rgb
from engine.match import Candidate, Gallery, match_reason, probability_words, suggest, verify_candidates
from engine.pattern import (
    MAX_KEYPOINTS,
    PATTERN_METHOD,
    PatternFeatures,
    draw_match,
    extract,
    foreground,
    guided_matches,
    match,
    pairs_within,
    sift_features,
    stripe_image,
)
from engine.reid import ModelCard, default_model_path


@pytest.fixture(scope="module")
def nyala(data_dir):
    root = data_dir / "nyala" / "train"
    return {
        "a1": load_rgb(root / "100" / "124_leftphoto.jpg"),
        "b1": load_rgb(root / "101" / "125_leftphoto.jpg"),
        "c1": load_rgb(root / "102" / sorted(p.name for p in (root / "102").glob("*left*"))[0]),
    }


def rewalked(image: np.ndarray) -> np.ndarray:
    """A derived fixture: the same animal seen a little larger, sheared as a walking body is, and darker."""
    h, w = image.shape[:2]
    m = np.float32([[1.08, 0.06, -10], [0.02, 1.05, -6]])
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)


def test_features_survive_the_catalogue_blob(nyala):
    f = extract(nyala["a1"])
    assert 100 < len(f) <= MAX_KEYPOINTS
    back = PatternFeatures.from_bytes(f.to_bytes())
    assert back.size == f.size
    np.testing.assert_array_equal(back.descriptors, f.descriptors)
    np.testing.assert_allclose(back.points, f.points)


def test_same_coat_under_another_pose_and_light_matches_far_better_than_other_animals(nyala):
    a = extract(nyala["a1"])
    same = match(a, extract(rewalked(nyala["a1"])))
    others = [match(a, extract(nyala[k])).inliers for k in ("b1", "c1")]
    assert same.inliers >= 40, same.inliers
    assert same.inliers > 4 * max(others), (same.inliers, others)
    # the lines join the same place of the coat: rewalked()'s map, in fractions of the crop, sends one end to the other
    xa, ya, xb, yb = same.lines.T
    h, w = nyala["a1"].shape[:2]
    assert np.median(np.abs(xb - (1.08 * xa + 0.06 * ya * h / w - 10 / w))) < 0.01
    assert np.median(np.abs(yb - (0.02 * xa * w / h + 1.05 * ya - 6 / h))) < 0.01
    assert match(a, extract(rewalked(nyala["a1"]))).inliers == same.inliers  # deterministic


def test_pattern_keypoints_stay_on_the_animal_not_the_snow_and_trees(data_dir):
    # A real day frame; the cougar's box is the one drawn by eye in tests/data/trailcam_boxes.json, cropped with a
    # wide margin so that the crop holds snow and trees around the animal.
    name = "camtraps/animl/examples/Southwest/IMAG0004_cougar.JPG"
    image = load_rgb(data_dir / name)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = 0.72, 0.4, 0.97, 0.52
    margin = 0.25
    animal = crop(image, (x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h), name, margin)
    stripes = stripe_image(animal)
    mask = foreground(animal, stripes.shape[0])
    assert mask is not None and mask.shape == stripes.shape
    mh, mw = mask.shape
    # the torso (where the cougar is, by eye, in the crop: x 0.35-0.70, y 0.35-0.62) is kept ...
    assert (mask[int(0.35 * mh) : int(0.62 * mh), int(0.35 * mw) : int(0.70 * mw)] > 0).mean() > 0.9
    # ... and the margin outside the drawn box, snow and branches only, is dropped
    edge = margin / (1 + 2 * margin)
    inside = np.zeros(mask.shape, bool)
    inside[int(edge * mh) : int((1 - edge) * mh), int(edge * mw) : int((1 - edge) * mw)] = True
    assert (mask[~inside] > 0).mean() < 0.05

    def outside_the_box(features: PatternFeatures) -> float:
        x, y = (features.points / np.float32(features.size)).T
        return float(((x < edge) | (x > 1 - edge) | (y < edge) | (y > 1 - edge)).mean())

    masked, whole = extract(animal), sift_features(stripes)
    assert len(masked) >= 50
    assert outside_the_box(whole) > 0.3  # without the mask, twigs in the snow hold many of the keypoints
    assert outside_the_box(masked) < 0.05
    # GrabCut starts from random k-means centres: seeded, a crop's keypoints do not depend on what came before
    extract(animal[:, ::-1].copy())
    np.testing.assert_array_equal(extract(animal).descriptors, masked.descriptors)


def test_points_along_the_stripes_are_kept(nyala):
    """SIFT's default edge filter drops the points that lie along a line; on the stripe image those are stripes and
    the gaps between them, the pattern itself (engine.pattern.EDGE_THRESHOLD): the verifier keeps them."""
    image = stripe_image(nyala["a1"])
    mask = foreground(nyala["a1"], image.shape[0])
    kept = sift_features(image, mask).points
    default = np.float32([k.pt for k in cv2.SIFT_create(nfeatures=MAX_KEYPOINTS).detect(image, mask)])
    nearest = np.sqrt(((kept[:, None, :] - default[None, :, :]) ** 2).sum(-1)).min(1)
    extra = kept[nearest > 1.0]
    assert len(extra) >= 20, len(extra)
    # How line-like the image is around a point: the smaller over the larger eigenvalue of its gradients' structure
    # tensor (0 on a straight line, 1 on a round spot).
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
    gx, gy = cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)

    def roundness(point) -> float:
        x, y = np.round(point).astype(int)
        window = (slice(max(0, y - 2), y + 3), slice(max(0, x - 2), x + 3))
        a, b, c = (gx[window] ** 2).sum(), (gy[window] ** 2).sum(), (gx[window] * gy[window]).sum()
        spread = np.sqrt(max((a - b) ** 2 / 4 + c * c, 0.0))
        return float(((a + b) / 2 - spread) / ((a + b) / 2 + spread + 1e-9))

    assert np.median([roundness(p) for p in extra]) < 0.1 < np.median([roundness(p) for p in default])


def test_an_animal_filling_the_whole_crop_keeps_the_whole_crop(nyala):
    # This nyala touches every edge of its photo, so GrabCut's "certainly background" border is the animal
    # itself and it loses the animal: the pattern then comes from the whole crop, as before the mask.
    photo = nyala["a1"]
    stripes = stripe_image(photo)
    assert foreground(photo, stripes.shape[0]) is None
    np.testing.assert_array_equal(extract(photo).descriptors, sift_features(stripes).descriptors)
    assert foreground(np.full((120, 200, 3), 90, np.uint8), 173) is None  # nothing to separate: no error


def test_pairs_within_finds_exactly_the_close_pairs():
    rng = np.random.default_rng(0)
    p = rng.uniform(-20, 300, (400, 2)).astype(np.float32)  # projected points may fall outside the crop
    q = rng.uniform(0, 288, (500, 2)).astype(np.float32)
    q[:50] = p[:50] + 7.9 / np.sqrt(2)  # pairs just inside the radius, across band edges
    i, j = pairs_within(p, q, 8.0)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    close = np.nonzero(np.sqrt(((p[:, None] - q[None]) ** 2).sum(-1)) < 8.0)
    assert found == set(zip(close[0].tolist(), close[1].tolist(), strict=True))  # as a full distance matrix
    assert {(k, k) for k in range(50)} <= found


def test_guided_matches_follow_the_fitted_motion(nyala):
    a = extract(nyala["a1"])
    sims = a.root_sift @ a.root_sift.T
    still = np.float32([[1, 0, 0], [0, 1, 0]])
    i, j = guided_matches(a.points, a.points, sims, still)
    assert len(i) >= 0.95 * len(a) and (i == j).all()  # every point finds itself
    moved = np.float32([[1, 0, 40], [0, 1, 0]])  # a model 40 px off puts each point where its twin is not
    assert len(guided_matches(a.points, a.points, sims, moved)[0]) < 0.1 * len(a)


def test_guided_matches_add_stripes_the_ratio_test_rejected(nyala):
    a = extract(nyala["a1"])
    same = match(a, extract(rewalked(nyala["a1"])))
    assert same.points > same.inliers  # pairs the ratio test had thrown away, on the same coat
    assert max(same.inliers, same.guided) <= same.points <= same.inliers + same.guided
    assert same.evidence == same.inliers + same.guided
    others = [match(a, extract(nyala[k])) for k in ("b1", "c1")]
    assert same.evidence > 4 * max(o.evidence for o in others), (same.evidence, [o.evidence for o in others])


def test_empty_or_tiny_crops_give_no_match_not_an_error(nyala):
    tiny = extract(nyala["a1"][:5, :5])
    assert len(tiny) == 0
    assert match(tiny, extract(nyala["a1"])).inliers == 0
    flat = extract(np.full((120, 200, 3), 90, np.uint8))
    assert match(flat, flat).inliers == 0


def test_match_picture_joins_the_points(nyala):
    a, b = nyala["a1"], rewalked(nyala["a1"])
    found = match(extract(a), extract(b))
    picture = draw_match(a, b, found, height=200)
    assert picture.shape[0] == 200 and picture.shape[1] > 300
    plain = np.hstack([cv2.resize(c, (round(c.shape[1] * 200 / c.shape[0]), 200)) for c in (a, b)])
    assert (picture != plain).any(axis=2).sum() > 50 * found.inliers  # lines were drawn


def test_pattern_evidence_reorders_candidates_and_explains_itself(nyala):
    """With the bundled card's fusion and threshold: a look-alike of another coat falls below 'probably new' (its
    chance matches lead nothing), the same coat rises above it."""
    fusion = Fusion.from_card(ModelCard.load(default_model_path()).data)
    query = extract(nyala["a1"])
    store = {1: extract(nyala["b1"]), 2: extract(rewalked(nyala["a1"])), 3: None}
    cands = [
        Candidate(10, 0.80, 1, 0.80, [1]),  # looks most alike, other coat
        Candidate(20, 0.74, 2, 0.74, [2, 3]),  # a little less alike, same coat; one photo without features
    ]
    ranked = verify_candidates(cands, query, store.get, fusion)
    assert [c.individual_id for c in ranked] == [20, 10]
    assert ranked[0].pattern_points >= 40 and ranked[0].best_detection_id == 2
    assert ranked[0].score > fusion.threshold > ranked[1].score
    reason = match_reason(ranked[0].score, ranked[0].appearance, ranked[0].pattern_points)
    assert f"{ranked[0].pattern_points} matching pattern points" in reason and "appearance score 0.74" in reason


def test_a_query_without_pattern_features_falls_back_to_the_appearance_threshold(nyala):
    fusion = Fusion(appearance_weight=10.0, pattern_weight=1.5, intercept=-12.0, threshold=0.5)
    vectors = np.eye(3, dtype=np.float32)
    gallery = Gallery(
        vectors, np.array([1, 2, 3]), np.array([7, 8, 9]), np.array([None] * 3, object), np.array([None] * 3, object)
    )
    store = {7: extract(nyala["a1"]), 8: extract(nyala["b1"]), 9: extract(nyala["c1"])}.get
    query = np.array([0.6, 0.8, 0.0], np.float32)  # appearance 0.8 with individual 2, 0.6 with 1
    cands, is_new, best = suggest(query, gallery, 0.9, fusion=fusion, query_pattern=None, gallery_pattern=store)
    assert cands[0].individual_id == 2 and cands[0].pattern_evidence is None
    assert best == pytest.approx(0.8) and is_new  # 0.8 < the appearance threshold 0.9; not compared with 0.5
    cands, is_new, best = suggest(query, gallery, 0.9, fusion=fusion, query_pattern=store(8), gallery_pattern=store)
    assert cands[0].individual_id == 2 and cands[0].pattern_evidence > 100  # same photo's features
    alone = fusion.probabilities([c.appearance for c in cands], [c.pattern_evidence for c in cands])
    assert not is_new and best == pytest.approx(alone.max())


def test_a_candidate_that_stands_out_is_more_probable_than_the_same_scores_in_a_crowd():
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_lead_weight=1.5, appearance_lead_weight=3.0)
    clear = fusion.probabilities([0.7, 0.5, 0.5], [40, 5, 4])  # a known animal: one candidate well ahead
    crowd = fusion.probabilities([0.7, 0.69, 0.68], [40, 38, 37])  # the same best scores among look-alikes
    assert clear.argmax() == crowd.argmax() == 0
    assert clear[0] > 0.5 > crowd[0]  # the lead decides 'probably new', not the raw inliers
    plain = Fusion(2.0, 0.5, -4.0, 0.5)  # a card without leads (0.3.x) keeps its per-candidate probabilities
    assert plain.probabilities([0.7, 0.5], [40, 5])[0] == pytest.approx(plain.probabilities([0.7, 0.69], [40, 38])[0])
    assert fusion.probabilities([0.7], [40]).shape == (1,) and fusion.probabilities([], []).shape == (0,)


def test_evidence_counts_for_how_far_it_stands_above_the_photos_chance_matches():
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_median_weight=1.2)
    sharp = fusion.probabilities([0.7, 0.6, 0.6, 0.6], [30, 2, 2, 1])  # chance matches find little on this photo
    smeared = fusion.probabilities([0.7, 0.6, 0.6, 0.6], [30, 20, 18, 18])  # a photo that matches everything
    assert sharp[0] > 0.5 > smeared[0]
    card = {"fusion": fusion.as_card()}
    assert Fusion.from_card(card) == fusion and card["fusion"]["pattern_median_weight"] == 1.2


def test_fusion_is_read_from_a_card_only_for_its_own_recipe():
    card = {"fusion": Fusion(8.0, 1.2, -9.0, 0.3, pattern_lead_weight=0.7).as_card()}
    assert Fusion.from_card(card) == Fusion(8.0, 1.2, -9.0, 0.3, pattern_lead_weight=0.7)
    old = {k: v for k, v in card["fusion"].items() if "lead" not in k}  # a 0.3.x card
    assert Fusion.from_card({"fusion": old}) == Fusion(8.0, 1.2, -9.0, 0.3)
    assert Fusion.from_card({"fusion": {**card["fusion"], "method": "older-recipe/0"}}) is None
    assert Fusion.from_card({"fusion": {**card["fusion"], "matcher": "affine/1"}}) is None  # fitted for another
    assert Fusion.from_card({"fusion": {k: v for k, v in card["fusion"].items() if k != "matcher"}}) is None
    assert Fusion.from_card({}) is None
    assert card["fusion"]["method"] == PATTERN_METHOD


def test_schema_4_adds_the_pattern_table_to_an_existing_catalogue(tmp_path):
    import sqlite_utils

    from engine.catalogue import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    db = sqlite_utils.Database(path)  # a catalogue as schema 3 left it
    db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
    for version in (1, 2, 3):
        MIGRATIONS[version](db)
        db["schema_version"].insert({"version": version, "applied_at": "2026-01-01"})
    assert "patterns" not in db.table_names()
    db.close()
    with Catalogue(path) as cat:
        assert cat.version == SCHEMA_VERSION
        assert {c.name for c in cat.db["patterns"].columns} == {"detection_id", "method", "features"}


def test_a_match_probability_is_never_shown_as_certain():
    assert (
        match_reason(0.9962, 0.91, 108)
        == "108 matching pattern points on the coat; appearance score 0.91; match probability >99%"
    )
    assert [probability_words(p) for p in (0.004, 0.5, 0.994)] == ["<1%", "50%", "99%"]
    assert match_reason(0.42, None, None) == "appearance score 0.42"


def test_a_card_carries_thresholds_for_both_flanks_judged_together_and_for_a_photo_of_no_known_side():
    fusion = Fusion(8.0, 1.2, -9.0, 0.3, encounter_lead_threshold=0.6, unsided_threshold=0.2)
    card = {"fusion": fusion.as_card()}
    assert Fusion.from_card(card) == fusion
    assert card["fusion"]["encounter_lead_threshold"] == 0.6 and card["fusion"]["unsided_threshold"] == 0.2
    assert fusion.threshold_for("left") == 0.3 and fusion.threshold_for(None) == 0.2
    before = Fusion(8.0, 1.2, -9.0, 0.3)  # a card before 0.10.0: one threshold for every photo
    assert "unsided_threshold" not in before.as_card() and before.threshold_for(None) == 0.3
