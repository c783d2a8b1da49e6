"""Fit engine.side's flank classifier: a logistic regression on embedding(crop) - embedding(mirror(crop)).

Every labelled photo gives two examples (its difference with its side, the negated difference with the other),
so the fit has no intercept and a crop and its mirror get opposite answers. The confidence below which a side
stays unknown is chosen by 5-fold cross-validation grouped by individual, for TARGET_ACCURACY among the photos
kept: a wrong side costs more than none (a detection is then compared only with the other flank's photos).
Measured on nyala (seed 0, trainer.fusion): the embedding alone (logistic regression) 74-82 % right on the test
third; the mirror difference 93.6 %; at the chosen confidence 98.8 % of the 80 % kept.
"""

from __future__ import annotations

import numpy as np

from engine.side import SIDES, SideClassifier

TARGET_ACCURACY = 0.985
# The difference of two unit vectors is small: scaled so that one regularisation strength (C = 1) fits it (x10,
# C = 1 and x1, C = 100 were within 0.3 points of each other on calibration; C = 0.1-10 at x10 within 1.2 points).
SCALE, C, FOLDS = 10.0, 1.0, 5


def _fit_weights(diff: np.ndarray, left: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([diff, -diff]) * SCALE
    y = np.concatenate([left, ~left])
    model = LogisticRegression(C=C, max_iter=20000, fit_intercept=False).fit(x, y)
    return model.coef_[0] * SCALE


def fit_side_classifier(
    vectors: np.ndarray, mirrored_vectors: np.ndarray, sides, individuals, species: tuple[str, ...]
) -> tuple[SideClassifier, dict]:
    """The classifier fitted on every photo with a known side, and its cross-validated figures on them."""
    from sklearn.model_selection import GroupKFold

    known = np.array([s in SIDES for s in sides])
    diff = (np.asarray(vectors, np.float64) - np.asarray(mirrored_vectors, np.float64))[known]
    left = np.array([s == "left" for s in sides])[known]
    groups = np.asarray(individuals, dtype=object)[known]
    p_left = np.zeros(len(diff))
    for train, held in GroupKFold(FOLDS).split(diff, groups=groups):
        weights = _fit_weights(diff[train], left[train])
        p_left[held] = 1.0 / (1.0 + np.exp(-np.clip(diff[held] @ weights, -700, 700)))
    min_confidence = confidence_for_accuracy(p_left, left, TARGET_ACCURACY)
    classifier = SideClassifier(_fit_weights(diff, left), min_confidence, species)
    return classifier, side_figures(p_left, left, min_confidence) | {"photos": int(len(diff))}


def confidence_for_accuracy(p_left: np.ndarray, left: np.ndarray, target: float) -> float:
    """The lowest confidence at which the photos at least that sure are right ``target`` of the time."""
    confidence = np.abs(p_left - 0.5) * 2
    order = np.argsort(-confidence, kind="stable")
    right = ((p_left > 0.5) == left)[order]
    accuracy = np.cumsum(right) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(accuracy >= target)
    return float(confidence[order][ok[-1]]) if len(ok) else 1.0


def side_figures(p_left: np.ndarray, left: np.ndarray, min_confidence: float) -> dict:
    """Accuracy of every call, and the share kept at ``min_confidence`` with its accuracy."""
    right = (p_left > 0.5) == left
    kept = np.abs(p_left - 0.5) * 2 >= min_confidence
    return {
        "accuracy_all": float(right.mean()),
        "kept": float(kept.mean()),
        "accuracy_kept": float(right[kept].mean()) if kept.any() else None,
    }
