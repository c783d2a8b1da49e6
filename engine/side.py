"""Which flank a detection shows, told from its crop and the crop's mirror image.

A left flank mirrored looks like a right flank, so the difference between a crop's embedding and its mirror's
embedding keeps which way the animal faces and cancels most of what is that individual's own:

    P(left) = sigmoid(w . (embed(crop) - embed(mirror(crop))))

with no intercept, so a crop and its mirror always get opposite answers. ``w`` is a logistic regression fitted by
trainer/side.py (run from trainer.fusion) on the calibration individuals' photos and their mirrors (both labels
from every photo); the card stores it under "side_classifier" with the confidence below which the side stays
unknown. On nyala (seed 0, 61 test individuals never fitted, 406 photos) a logistic regression on the embedding
itself tells the side of 74-82 % of photos; the mirror difference 93.6 %, and 98.8 % of the 81 % it is sure of.

Why it matters: a detection's side decides which gallery photos it is compared with (a left flank says nothing
about a right flank), its 'probably new' threshold, and whether a burst showing both flanks is judged together
(engine.match). Imports carry no side; a person who records one is never overruled (only missing sides are
inferred). Applied only to the species the classifier was fitted on.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

SIDES = ("right", "left")  # P(left) above 0.5 -> "left"


def mirrored(crop: np.ndarray) -> np.ndarray:
    """The crop flipped left to right (a contiguous copy, as the embedder wants)."""
    return np.ascontiguousarray(crop[:, ::-1])


@dataclass(frozen=True)
class SideClassifier:
    weights: np.ndarray  # over embedding - mirrored embedding
    min_confidence: float  # |P(left) - 0.5| * 2 below this: side not known
    species: tuple[str, ...]  # the species it was fitted on (its common and scientific names)

    @classmethod
    def from_card(cls, card: dict) -> SideClassifier | None:
        """The card's side classifier, or None when it has none."""
        data = card.get("side_classifier")
        if not data:
            return None
        return cls(
            np.frombuffer(base64.b64decode(data["weights_float32_le_base64"]), "<f4").astype(np.float64),
            float(data["min_confidence"]),
            tuple(str(s) for s in data["species"]),
        )

    def applies_to(self, species: str | None) -> bool:
        """Whether detections of this species get an inferred side (never a species it was not fitted on)."""
        return species is not None and str(species).strip().casefold() in {s.casefold() for s in self.species}

    def probability_left(self, vectors: np.ndarray, mirrored_vectors: np.ndarray) -> np.ndarray:
        """P(left flank) for each crop, from its embedding and its mirror's (same model)."""
        diff = np.asarray(vectors, np.float64) - np.asarray(mirrored_vectors, np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(diff @ self.weights, -700, 700)))

    def sides(self, vectors: np.ndarray, mirrored_vectors: np.ndarray) -> list[str | None]:
        """Each crop's side, None where the classifier is less sure than min_confidence."""
        p = self.probability_left(vectors, mirrored_vectors)
        return [SIDES[int(x > 0.5)] if abs(x - 0.5) * 2 >= self.min_confidence else None for x in p]

    def as_card(self, figures: dict | None = None) -> dict:
        return {
            "input": "embedding(crop) - embedding(mirrored crop)",
            # one weight per embedding dimension: compact, and exactly what the app applies
            "weights_float32_le_base64": base64.b64encode(self.weights.astype("<f4").tobytes()).decode("ascii"),
            "min_confidence": self.min_confidence,
            "species": list(self.species),
            **({"figures": figures} if figures else {}),
        }
