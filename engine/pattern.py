"""Coat-pattern verification: does this crop show the same stripes and spots as that one?

What identifies a nyala (and most striped or spotted animals) is the layout of thin light stripes and spots on
the flank; backgrounds and body pose change between encounters, the pattern does not. So the verifier looks at
the pattern only:

1. The crop is scaled to a fixed width and reduced to its thin bright structures: a white top-hat with a short
   horizontal element keeps what is brighter than its surroundings and narrower than ``TOPHAT_WIDTH`` pixels
   across (near-vertical light stripes, spots, the throat bib), and drops grass, sky and the dark coat.
2. SIFT keypoints on that stripe image, only on the animal: GrabCut (Rother et al. 2004), started from the
   crop's inner box (the detector's box sits inside the pipeline's margin), separates the animal from grass and
   branches, whose bright thin blades otherwise hold many of the keypoints. Measured on the 118 calibration nyala
   (2-fold cross-validation, python bench/pattern_pairs.py): top-1 32.3 -> 36.0 %, AUROC known/new
   0.677 -> 0.732 (AUROCs of cards before 0.7.0 judged a never-seen animal beside its own true match, which
   flatters them; engine.evaluate.SuggestionRun.as_new). When GrabCut keeps too little of the crop to be the
   animal (about 40 % of nyala crops, where the animal fills the frame), the whole crop is used: GrabCut again
   from the crop's centre as certain animal keeps part of those flanks and does worse (CV top-1 36.1 -> 31.8 %).
   Keypoints are compared as RootSIFT (Arandjelović & Zisserman 2012). The points along a stripe, which SIFT's
   edge filter would drop, are kept (EDGE_THRESHOLD, card 0.12.0).
3. A pair of crops is matched by mutual nearest neighbours passing Lowe's ratio test, then verified by a
   similarity model (rotation, uniform scale, shift) fitted with RANSAC, with a 10 px tolerance that absorbs the
   stretch of a walking body. A full affine model (session 4) lets chance matches agree more often: on the 118
   calibration nyala (top-20 verified, pattern score only) top-1 21.8% -> 24.4% with the similarity model,
   AUROC known/new 0.557 -> 0.564; 6, 8 and 14 px and a scale limit did no better.
4. The fitted model then finds the matches the ratio test threw away (guided matching, as in HotSpotter's
   spatial re-matching): a stripe has look-alike neighbours, so its nearest descriptor is rarely far ahead of the
   second, but where the body's motion puts it there is one point that matches well. The pattern evidence is the
   verified count plus the guided count (PatternMatch.evidence; measured there), and every matched pair is kept
   so that a person can see it drawn between the two photos.

Measured on nyala individuals no model was fitted to (python -m trainer.fusion): see resources/models/README.md.
Same idea as HotSpotter's local-feature matching, made to look at stripes instead of the whole photo.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

# One name per feature recipe: features stored in a catalogue under another name are recomputed.
PATTERN_METHOD = "stripe-tophat7-grabcut-rootsift-1500-edges/5"
# One name per way of matching two feature sets: a fusion (engine.calibration) is fitted for one matcher.
MATCH_METHOD = "mutual-ratio-similarity-ransac-10px-guided-8px-0.90/3"
WORK_WIDTH = 288  # crops are compared at this width (chosen in bench/reid_fusion.py: 224 / 288 / 384 / 512)
# Light structures narrower than this (pixels at WORK_WIDTH) count as pattern. 9 was chosen in session 4 by looking
# at the test third; chosen again by two-fold CV over the 118 calibration nyala on the product's path with the
# stripes' points kept (session 20: a throwaway on cached crops and embeddings, which reproduced the bench's edge1000
# row to the digit; python bench/pattern_scale.py --variants tophat7e reproduces the 7 px row, and tophat5e / 6e / 12e
# are the others):
# 5 / 6 / 7 / 9 / 12 px gave top-1 48.6 / 51.2 / 52.1 / 50.1 / 47.2 %, top-5 62.6 / 65.5 / 63.9 / 62.5 / 62.8 %, AUROC
# known/new 0.686 / 0.695 / 0.695 / 0.683 / 0.676 (card 0.13.0). Contrast thresholds below SIFT's 0.04, a fourth scale
# layer and upright descriptors did no better (README).
TOPHAT_WIDTH = 7
# SIFT's strongest keypoints kept per crop. Chosen by two-fold CV over the 118 calibration nyala, the product's path
# (python bench/pattern_scale.py): 600 / 800 / 1000 / 1500 / 2000 gave top-1 37.8 / 41.3 / 42.5 / 44.8 / 44.7 %,
# top-5 55.8 / 57.7 / 57.6 / 60.0 / 60.3 %, AUROC known/new 0.625 / 0.647 / 0.656 / 0.659 / 0.661: a stripe the ratio
# test or guided matching can use has to be among the kept points, and the weak ones are most of a flank's stripes.
# SIFT's contrast threshold leaves few more: on 40 nyala crops 414 points on average at 600, 718 at 1500, 731 at
# 2000 (the same with 5000), so 1500 keeps nearly all of them. Width 224 / 384 and a two-scale top-hat did worse.
MAX_KEYPOINTS = 1500
# SIFT drops a point whose curvature is this much stronger across than along (OpenCV's default 10): a point on an
# edge slides along it, so it is rarely wanted. On a stripe image it is: the points along a stripe (about 5 % more
# points a crop) are the stripes themselves, and where they sit along the flank is what the similarity model
# checks. Chosen by two-fold CV over the 118 calibration nyala, the product's path (cached crops and embeddings,
# session 19): edge threshold 10 / 20 / 40 / 80 / 1000 (none dropped) gave top-1 44.8 / 48.5 / 48.6 / 49.8 / 50.1 %,
# top-5 60.0 / 61.0 / 61.2 / 61.7 / 62.5 %, AUROC known/new 0.659 / 0.672 / 0.679 / 0.684 / 0.683; dropping more
# than the default (5, 3) did worse on bench/verifier_probes' pairs (win 0.51 / 0.43 against 0.67), as did keeping
# only corner-like matched points.
EDGE_THRESHOLD = 1000.0
MASK_WIDTH = 144  # GrabCut runs at half the work width: 4x cheaper, and the mask is dilated anyway
MASK_INSET = 0.04  # GrabCut's "certainly background" is the crop's border of this share of its width and height
MASK_ITERATIONS = 3
MIN_FOREGROUND = 0.15  # a mask keeping less of the crop than this lost the animal: use the whole crop
RATIO = 0.85  # Lowe's ratio test
RANSAC_PIXELS = 10.0
MIN_MATCHES = 4
GUIDED_PIXELS = 8.0  # guided_matches: how far from where the similarity model puts it a point may lie
GUIDED_SIMILARITY = 0.90  # and how alike (RootSIFT cosine) the two points must be


@dataclass
class PatternFeatures:
    """Keypoints of one crop: positions in the work image (width WORK_WIDTH) and SIFT descriptors (uint8)."""

    points: np.ndarray  # (n, 2) float32, pixels of the work image
    descriptors: np.ndarray  # (n, 128) uint8, raw SIFT (integer-valued, so uint8 loses nothing)
    size: tuple[int, int]  # work image (width, height)

    def __len__(self) -> int:
        return len(self.points)

    @cached_property
    def root_sift(self) -> np.ndarray:
        """Unit-length RootSIFT vectors, computed once: a query is matched against ~60 gallery photos."""
        d = self.descriptors.astype(np.float32)
        return np.sqrt(d / np.maximum(d.sum(1, keepdims=True), 1e-7))

    def to_bytes(self) -> bytes:
        head = struct.pack("<III", len(self.points), *self.size)
        return head + self.points.astype("<f4").tobytes() + self.descriptors.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> PatternFeatures:
        n, width, height = struct.unpack_from("<III", blob)
        start = struct.calcsize("<III")
        points = np.frombuffer(blob, "<f4", n * 2, start).reshape(n, 2).astype(np.float32)
        descriptors = np.frombuffer(blob, np.uint8, n * 128, start + n * 8).reshape(n, 128)
        return cls(points, descriptors, (width, height))


@dataclass
class PatternMatch:
    inliers: int  # ratio-test matches the similarity model verified
    # (k, 4): x, y in the first crop and x, y in the second, both as fractions of their crop's width and height:
    # every matched pair, verified or guided, once
    lines: np.ndarray
    guided: int = 0  # matches the fitted model predicts (guided_matches); most verified ones are among them

    @property
    def points(self) -> int:
        """Distinct matched pairs, what a person sees drawn (draw_match)."""
        return len(self.lines)

    @property
    def evidence(self) -> int:
        """What the fusion weighs (engine.calibration): verified plus guided matches, so that a distinctive match
        the model confirms counts twice. Measured against either count alone on the 118 calibration nyala (two-fold
        cross-validation, top-40 x 8 photos): top-1 36.1 / 35.7 / 38.1 %, top-5 52.4 / 53.1 / 55.1 %, AUROC
        known/new 0.728 / 0.733 / 0.754 for verified / guided / both (judged as before 0.7.0: flattered, see
        engine.evaluate.SuggestionRun.as_new; the ranking figures stand)."""
        return self.inliers + self.guided


def stripe_image(crop_rgb: np.ndarray) -> np.ndarray:
    """The crop at WORK_WIDTH, reduced to its thin light structures (uint8, stretched to 0-255)."""
    h, w = crop_rgb.shape[:2]
    height = max(1, round(WORK_WIDTH * h / w))
    gray = cv2.cvtColor(cv2.resize(crop_rgb, (WORK_WIDTH, height), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (TOPHAT_WIDTH, 1))
    tophat = cv2.GaussianBlur(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel), (3, 3), 0)
    return cv2.normalize(tophat, None, 0, 255, cv2.NORM_MINMAX)


def extract(crop_rgb: np.ndarray) -> PatternFeatures:
    """Pattern keypoints of one animal crop (RGB uint8), on the animal only (see foreground)."""
    if crop_rgb.ndim != 3 or min(crop_rgb.shape[:2]) < 8:
        return PatternFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (WORK_WIDTH, 0))
    image = stripe_image(crop_rgb)
    return sift_features(image, foreground(crop_rgb, image.shape[0]))


def foreground(crop_rgb: np.ndarray, work_height: int) -> np.ndarray | None:
    """The animal's pixels in the crop, as a uint8 mask (255 = animal) of the work image (WORK_WIDTH x
    work_height); None when GrabCut keeps under MIN_FOREGROUND of the crop, which then counts whole."""
    h, w = crop_rgb.shape[:2]
    height = max(8, round(MASK_WIDTH * h / w))
    small = cv2.cvtColor(cv2.resize(crop_rgb, (MASK_WIDTH, height), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    labels = np.zeros(small.shape[:2], np.uint8)
    dx, dy = round(MASK_WIDTH * MASK_INSET), round(height * MASK_INSET)
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models by k-means from OpenCV's per-thread generator: reseeded, a crop gets the
    # same keypoints whatever was extracted before it (an import and a re-extraction agree).
    cv2.setRNGSeed(0)
    try:
        rect = (dx, dy, MASK_WIDTH - 2 * dx, height - 2 * dy)
        cv2.grabCut(small, labels, rect, *models, MASK_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # a crop of one flat colour has nothing to separate
        return None
    animal = np.where((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    if animal.mean() < 255 * MIN_FOREGROUND:
        return None
    animal = cv2.dilate(animal, np.ones((5, 5), np.uint8))  # keep the stripes along the animal's outline
    return cv2.resize(animal, (WORK_WIDTH, work_height), interpolation=cv2.INTER_NEAREST)


def sift_features(image: np.ndarray, mask: np.ndarray | None = None) -> PatternFeatures:
    """SIFT keypoints of a stripe image (stripe_image), only where ``mask`` is non-zero when given."""
    sift = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS, edgeThreshold=EDGE_THRESHOLD)
    keypoints, descriptors = sift.detectAndCompute(image, mask)
    if descriptors is None:
        return PatternFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), image.shape[::-1])
    points = np.float32([k.pt for k in keypoints])
    return PatternFeatures(points, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8), image.shape[::-1])


def match(a: PatternFeatures, b: PatternFeatures) -> PatternMatch:
    """Mutual ratio-test matches between two crops' patterns, verified by a similarity model under RANSAC, then
    completed by the matches that model predicts (guided_matches)."""
    empty = PatternMatch(0, np.zeros((0, 4), np.float32))
    if len(a) < MIN_MATCHES or len(b) < MIN_MATCHES:
        return empty
    sims = a.root_sift @ b.root_sift.T  # RootSIFT vectors have unit length: distance^2 = 2 - 2 * sim
    rows, cols = ratio_test(sims)
    if len(rows) < MIN_MATCHES:
        return empty
    model, inlier = fit_similarity(a.points[rows], b.points[cols])
    if model is None:
        return empty
    gi, gj = guided_matches(a.points, b.points, sims, model)
    # every matched pair once, whether the ratio test or the model found it
    pairs = np.union1d(rows[inlier] * len(b) + cols[inlier], gi * len(b) + gj)
    i, j = np.divmod(pairs, len(b))
    lines = np.hstack([a.points[i] / np.float32(a.size), b.points[j] / np.float32(b.size)]).astype(np.float32)
    return PatternMatch(int(inlier.sum()), lines, len(gi))


def fit_similarity(points_a: np.ndarray, points_b: np.ndarray, iterations: int = 500):
    """The body's motion between matched positions (row k of each is one match): a similarity model (rotation,
    uniform scale, shift; 2 x 3, a -> b) fitted with RANSAC at RANSAC_PIXELS, and which matches agree with it (a
    boolean mask); (None, None) when none can be fitted. OpenCV's generator draws the samples (cv2.setRNGSeed)."""
    model, mask = cv2.estimateAffinePartial2D(
        points_a,
        points_b,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PIXELS,
        maxIters=iterations,
        refineIters=0,
    )
    if mask is None:
        return None, None
    return model, mask.ravel().astype(bool)


def guided_matches(
    points_a: np.ndarray, points_b: np.ndarray, sims: np.ndarray, model: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (in points_a, in points_b) of the pairs that agree with the fitted similarity ``model`` (2 x 3,
    a -> b): each point of a projected into b, its most similar point of b (``sims``: RootSIFT cosines) within
    GUIDED_PIXELS, kept when the two are at least GUIDED_SIMILARITY alike and the choice is mutual. The ratio test
    rejects a stripe whose neighbours look alike; once the body's motion is known, position tells them apart."""
    # Only points with a partner that alike anywhere can have one nearby; and a point that blocks another's
    # mutual choice is at least as alike, so dropping the others changes nothing (same pairs on 1590 nyala pairs,
    # 1.2 -> 1.0 ms each).
    rows = np.flatnonzero(sims.max(1) >= GUIDED_SIMILARITY)
    cols = np.flatnonzero(sims.max(0) >= GUIDED_SIMILARITY)
    projected = points_a[rows] @ model[:, :2].T + model[:, 2]
    i, j = pairs_within(projected, points_b[cols], GUIDED_PIXELS)
    i, j = rows[i], cols[j]
    similarity = sims[i, j]
    # each point's most similar nearby partner, both ways (ties to the lower index, as argmax does)
    by_a = np.lexsort((j, -similarity, i))
    by_a = by_a[np.r_[True, i[by_a][1:] != i[by_a][:-1]]] if len(by_a) else by_a
    by_b = np.lexsort((i, -similarity, j))
    by_b = by_b[np.r_[True, j[by_b][1:] != j[by_b][:-1]]] if len(by_b) else by_b
    mutual = np.intersect1d(by_a, by_b, assume_unique=True)
    mutual = mutual[similarity[mutual] >= GUIDED_SIMILARITY]
    return i[mutual], j[mutual]


def pairs_within(p: np.ndarray, q: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (in p, in q) of the point pairs closer than ``radius``. q is sorted into horizontal bands
    ``radius`` high, by x within a band, so only the pairs in three bands and a 2 x radius window of x are
    measured (at 600 x 600 points a full distance matrix cost 8.7 ms against 0.7-1.5 ms, in one run)."""
    span = 4.0 * (max(np.abs(p[:, 0]).max(initial=0), np.abs(q[:, 0]).max(initial=0)) + radius)
    key = np.floor(q[:, 1] / radius) * span + q[:, 0]  # bands never overlap: |x| + radius < span / 2
    order = np.argsort(key, kind="stable")
    keys = key[order]
    band = np.floor(p[:, 1] / radius)
    found_i, found_j = [], []
    for step in (-1.0, 0.0, 1.0):  # a point within radius lies in the band of p or the one above or below
        centre = (band + step) * span + p[:, 0]
        lo = np.searchsorted(keys, centre - radius, "left")
        counts = np.searchsorted(keys, centre + radius, "right") - lo
        starts = np.cumsum(counts) - counts
        found_i.append(np.repeat(np.arange(len(p)), counts))
        found_j.append(order[np.repeat(lo - starts, counts) + np.arange(counts.sum())])
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    close = ((p[i] - q[j]) ** 2).sum(1) < radius**2
    return i[close], j[close]


def ratio_matches(a: PatternFeatures, b: PatternFeatures, ratio: float = RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in a, in b) of the mutual nearest-neighbour RootSIFT matches that pass Lowe's ratio test."""
    if len(a) < MIN_MATCHES or len(b) < MIN_MATCHES:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    rows, cols = ratio_test(a.root_sift @ b.root_sift.T, ratio)
    return a.points[rows], b.points[cols]


def ratio_test(sims: np.ndarray, ratio: float = RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rows, columns) of the mutual nearest neighbours in a RootSIFT cosine matrix that pass Lowe's
    ratio test on their distances. ``sims`` is changed during the call and restored (a copy costs more)."""
    rows = np.arange(len(sims))
    best = sims.argmax(1)
    s1 = sims[rows, best]
    sims[rows, best] = -2.0
    s2 = sims.max(1)
    sims[rows, best] = s1
    d1, d2 = np.sqrt(np.maximum(2 - 2 * s1, 0)), np.sqrt(np.maximum(2 - 2 * s2, 0))
    good = (d1 < ratio * d2) & (sims.argmax(0)[best] == rows)
    return rows[good], best[good]


def draw_match(crop_a: np.ndarray, crop_b: np.ndarray, found: PatternMatch, height: int = 360) -> np.ndarray:
    """The two crops side by side (RGB, same height) with a line between each pair of matched pattern points."""
    scaled = [cv2.resize(c, (max(1, round(c.shape[1] * height / c.shape[0])), height)) for c in (crop_a, crop_b)]
    picture = np.hstack(scaled)
    offset = scaled[0].shape[1]
    (wa, wb) = (scaled[0].shape[1], scaled[1].shape[1])
    for i, (xa, ya, xb, yb) in enumerate(found.lines):
        colour = tuple(int(v) for v in cv2.applyColorMap(np.uint8([[i * 37 % 256]]), cv2.COLORMAP_TURBO)[0, 0])
        a = (round(xa * wa), round(ya * height))
        b = (offset + round(xb * wb), round(yb * height))
        cv2.line(picture, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(picture, a, 3, colour, 1, cv2.LINE_AA)
        cv2.circle(picture, b, 3, colour, 1, cv2.LINE_AA)
    return picture
