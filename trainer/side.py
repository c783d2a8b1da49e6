"""Fit engine.side's flank classifier: a logistic regression on engine.side.side_inputs (the embedding of a crop
minus its mirror's, then the crop's gradient histograms minus the mirror's).

Every labelled photo gives two examples (its inputs with its side, the negated inputs with the other), so the fit
has no intercept and a crop and its mirror get opposite answers. The confidence below which a side stays unknown
is chosen by 5-fold cross-validation grouped by individual, for TARGET_ACCURACY among the photos kept: a wrong
side costs more than none (a detection is then compared only with the other flank's photos).

Chosen on the calibration individuals (5-fold CV by individual; throwaway scripts, the test third printed beside;
the histograms there from Sobel gradients of an 8-bit resize, near the shipped ones), accuracy of every call:
- a logistic regression on the embedding itself: 74-82 % on the test third (C = 0.1-1, raw or standardised);
- the embedding's mirror difference: 93.0-94.2 % scaled x10-x30 (C = 0.1-100; unscaled, C = 0.1-1: 89.7-90.2 %);
  PCA-whitened (64-256 directions) 84-93 %, square-rooted 94.2 %, random Fourier features 52 %;
- the gradient histograms' mirror difference alone: 97.5 % (8 px cells; 16 px cells 96.5 %); the raw grey pixels'
  73-79 %;
- both (C = 1), the histograms weighted 0.1 / 0.2 / 0.3 / 0.5 / 1 / 3 against the embedding: 98.1 / 98.1 / 98.0 /
  97.6 / 97.5 / 97.2 %; 0.2 is used. Shipped (trainer.fusion, card 0.11.0): 98.2 % on calibration, 97.8 % on the test
  third, where 98.8 % of photos are kept, 98.3 % of them right.
"""

from __future__ import annotations

import numpy as np

from engine.side import SIDES, SideClassifier, side_figures

TARGET_ACCURACY = 0.985
MIN_PHOTOS_PER_SIDE = 10  # a model trained on a catalogue gets its own classifier only from this many of each side
# Each part of the inputs scaled so that one regularisation strength (C = 1) suits both: the difference of two
# unit embeddings is small (x10), the histograms' weighs 0.2 against it (above).
EMBEDDING_SCALE, SHAPE_SCALE, C, FOLDS = 10.0, 0.2, 1.0, 5


def _fit_weights(inputs: np.ndarray, left: np.ndarray, scale: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([inputs, -inputs]) * scale
    y = np.concatenate([left, ~left])
    model = LogisticRegression(C=C, max_iter=20000, fit_intercept=False).fit(x, y)
    return model.coef_[0] * scale


def fit_side_classifier(
    inputs: np.ndarray, embedding_dim: int, sides, individuals, species: tuple[str, ...]
) -> tuple[SideClassifier, dict]:
    """The classifier fitted on every photo with a known side (rows of engine.side.side_inputs, whose first
    ``embedding_dim`` columns are the embedding's), and its cross-validated figures on them."""
    from sklearn.model_selection import GroupKFold

    known = np.array([s in SIDES for s in sides])
    x = np.asarray(inputs, np.float64)[known]
    left = np.array([s == "left" for s in sides])[known]
    groups = np.asarray(individuals, dtype=object)[known]
    scale = np.where(np.arange(x.shape[1]) < embedding_dim, EMBEDDING_SCALE, SHAPE_SCALE)
    p_left = np.zeros(len(x))
    for train, held in GroupKFold(FOLDS).split(x, groups=groups):
        fold = SideClassifier(_fit_weights(x[train], left[train], scale), 0.0, species)
        p_left[held] = fold.probability_left(x[held])
    min_confidence = confidence_for_accuracy(p_left, left, TARGET_ACCURACY)
    classifier = SideClassifier(_fit_weights(x, left, scale), min_confidence, species)
    return classifier, side_figures(p_left, left, min_confidence) | {"photos": int(len(x))}


def can_fit_sides(sides, individuals) -> bool:
    """Whether photos with these sides (None: not known) are enough to fit and cross-validate a classifier: at
    least MIN_PHOTOS_PER_SIDE of each side, from at least FOLDS individuals."""
    known = [(s, i) for s, i in zip(sides, individuals, strict=True) if s in SIDES]
    counts = [sum(s == side for s, _ in known) for side in SIDES]
    return min(counts) >= MIN_PHOTOS_PER_SIDE and len({i for _, i in known}) >= FOLDS


def confidence_for_accuracy(p_left: np.ndarray, left: np.ndarray, target: float) -> float:
    """The lowest confidence at which the photos at least that sure are right ``target`` of the time."""
    confidence = np.abs(p_left - 0.5) * 2
    order = np.argsort(-confidence, kind="stable")
    right = ((p_left > 0.5) == left)[order]
    accuracy = np.cumsum(right) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(accuracy >= target)
    return float(confidence[order][ok[-1]]) if len(ok) else 1.0
