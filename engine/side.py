"""Which flank a detection shows, told from its crop and the crop's mirror image.

A left flank mirrored looks like a right flank, so what changes between a crop and its mirror is which way the
animal faces, and what stays is most of what belongs to that individual. Two such differences are used:
- the embedding of the crop minus the embedding of its mirror;
- the crop's outline and shading as gradient histograms (HOG, ``gradient_histograms``) minus the mirror's: where
  the head, neck and rump lie, which the pooled embedding mostly averages away.

    P(left) = sigmoid(w . [embed(crop) - embed(mirror), hog(crop) - hog(mirror)])

No intercept: a crop and its mirror always get opposite answers. ``w`` is a logistic regression fitted by
trainer/side.py (run from trainer.fusion) on the calibration individuals' photos and their mirrors (both labels
from every photo). The card stores it under "side_classifier", with the confidence below which the side stays
unknown. On nyala (seed 0, 61 test individuals never fitted, 406 photos): a logistic regression on the embedding
itself 74-82 %; the embedding difference alone 93.6 %; with the gradient histograms 97.8 %, and 98.3 % of the
98.8 % it is sure enough of (the card's figures; 0.9 ms a crop for the histograms, one embedding for the mirror).

Why it matters: a detection's side decides which gallery photos it is compared with (a left flank says nothing
about a right flank), its 'probably new' threshold, and whether a burst showing both flanks is judged together
(engine.match). Imports carry no side; a side someone recorded is never overruled (only missing sides are
inferred). Applied only to the species the classifier was fitted on.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np

SIDES = ("right", "left")  # P(left) above 0.5 -> "left"
# The crop as the gradient histograms see it: grey, 128 x 64 (W x H, a standing animal's flank), 8 px cells,
# 9 unsigned orientations, each cell's histogram L2-normalised: 16 x 8 x 9 = 1152 values.
HOG_SIZE, HOG_CELL, HOG_BINS = (128, 64), 8, 9


def mirrored(crop: np.ndarray) -> np.ndarray:
    """The crop flipped left to right (a contiguous copy, as the embedder wants)."""
    return np.ascontiguousarray(crop[:, ::-1])


def gradient_histograms(gray: np.ndarray, cell: int = HOG_CELL, bins: int = HOG_BINS) -> np.ndarray:
    """Histograms of oriented gradients of a grey image, one per ``cell`` x ``cell`` cell, each L2-normalised:
    scikit-image's ``hog(gray, bins, (cell, cell), (1, 1), block_norm="L2")`` (the test holds the two equal).
    Written here because OpenCV 5 has no HOGDescriptor in its main module, and scikit-image would bring itself,
    SciPy and more into the app and its installer for these twenty lines."""
    image = np.asarray(gray, np.float64)
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    g_row, g_col = np.zeros_like(image), np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]  # central differences, zero on the border
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]
    magnitude = np.hypot(g_col, g_row)[: rows * cell, : cols * cell]
    orientation = (np.rad2deg(np.arctan2(g_row, g_col)) % 180)[: rows * cell, : cols * cell]
    which = np.minimum((orientation // (180 / bins)).astype(np.int64), bins - 1)
    cell_of = (np.arange(rows * cell)[:, None] // cell) * cols + np.arange(cols * cell)[None, :] // cell
    hist = np.bincount((cell_of * bins + which).ravel(), magnitude.ravel(), rows * cols * bins) / cell**2
    hist = hist.reshape(rows * cols, bins)
    return (hist / np.sqrt((hist**2).sum(1, keepdims=True) + 1e-10)).ravel()


def shape_difference(crop: np.ndarray) -> np.ndarray:
    """The crop's gradient histograms minus its mirror's (grey, HOG_SIZE). Resized in floating point: rounding to
    8 bits would make the mirror's resize differ from the resize's mirror, and a crop and its mirror would then
    not get exactly opposite answers."""
    gray = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray.astype(np.float32), HOG_SIZE, interpolation=cv2.INTER_AREA)
    return gradient_histograms(small) - gradient_histograms(mirrored(small))


def side_inputs(vectors: np.ndarray, mirrored_vectors: np.ndarray, crops) -> np.ndarray:
    """What the classifier reads, one row per crop: its embedding minus its mirror's, then shape_difference."""
    shapes = np.stack([shape_difference(c) for c in crops]) if len(crops) else np.zeros((0, 0))
    diff = np.asarray(vectors, np.float64) - np.asarray(mirrored_vectors, np.float64)
    return np.hstack([diff, shapes.reshape(len(diff), -1)])


def embedded_side_inputs(embedder, vectors: np.ndarray, crops) -> np.ndarray:
    """side_inputs for crops whose embeddings are ``vectors``: the embedder embeds their mirrors (one more
    embedding a crop, the only extra cost of inferring a side)."""
    return side_inputs(vectors, embedder.embed([mirrored(c) for c in crops]), crops)


@dataclass(frozen=True)
class SideClassifier:
    weights: np.ndarray  # over side_inputs
    min_confidence: float  # |P(left) - 0.5| * 2 below this: side not known
    species: tuple[str, ...]  # the species it was fitted on (its common and scientific names)

    @classmethod
    def from_card(cls, card: dict) -> SideClassifier | None:
        """The card's side classifier, or None when it has none or one of another input (an older card's)."""
        data = card.get("side_classifier")
        if not data or data.get("input") != INPUT:
            return None
        return cls(
            np.frombuffer(base64.b64decode(data["weights_float32_le_base64"]), "<f4").astype(np.float64),
            float(data["min_confidence"]),
            tuple(str(s) for s in data["species"]),
        )

    def applies_to(self, species: str | None) -> bool:
        """Whether detections of this species get an inferred side (never a species it was not fitted on)."""
        return species is not None and str(species).strip().casefold() in {s.casefold() for s in self.species}

    def probability_left(self, inputs: np.ndarray) -> np.ndarray:
        """P(left flank) for each row of side_inputs."""
        return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(inputs, np.float64) @ self.weights, -700, 700)))

    def sides(self, inputs: np.ndarray) -> list[str | None]:
        """Each crop's side, None where the classifier is less sure than min_confidence."""
        p = self.probability_left(inputs)
        return [SIDES[int(x > 0.5)] if abs(x - 0.5) * 2 >= self.min_confidence else None for x in p]

    def as_card(self, figures: dict | None = None) -> dict:
        return {
            "input": INPUT,
            # one weight per input: compact, and exactly what the app applies
            "weights_float32_le_base64": base64.b64encode(self.weights.astype("<f4").tobytes()).decode("ascii"),
            "min_confidence": self.min_confidence,
            "species": list(self.species),
            **({"figures": figures} if figures else {}),
        }


def side_figures(p_left: np.ndarray, left: np.ndarray, min_confidence: float) -> dict:
    """How well P(left) tells the sides ``left`` (True: a left flank): accuracy of every call, and the share kept
    at ``min_confidence`` with its accuracy."""
    right = (np.asarray(p_left) > 0.5) == np.asarray(left)
    kept = np.abs(np.asarray(p_left) - 0.5) * 2 >= min_confidence
    return {
        "accuracy_all": float(right.mean()),
        "kept": float(kept.mean()),
        "accuracy_kept": float(right[kept].mean()) if kept.any() else None,
    }


INPUT = (
    f"embedding(crop) - embedding(mirror), then gradient histograms (grey {HOG_SIZE[0]}x{HOG_SIZE[1]}, "
    f"{HOG_CELL} px cells, {HOG_BINS} orientations, L2 per cell) of the crop - of the mirror"
)
