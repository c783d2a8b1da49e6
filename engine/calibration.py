"""Turn the two scores of a candidate into one calibrated probability that it is the same individual.

A candidate individual has an appearance score (cosine similarity of global embeddings, aggregated per
individual by engine.match) and a pattern score (RANSAC-verified coat-pattern matches, engine.pattern). Their
scales mean nothing to each other, so they are fused as WildFusion does: a logistic regression fitted on
training identities' (query, candidate) pairs, p = sigmoid(a * appearance + b * log(1 + inliers) + c).
The fit lives in trainer/fusion.py (scikit-learn); the coefficients and the 'probably new' threshold are stored in
the model card under "fusion", so the app needs only numpy to apply them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .pattern import MATCH_METHOD, PATTERN_METHOD


@dataclass(frozen=True)
class Fusion:
    appearance_weight: float
    pattern_weight: float
    intercept: float
    threshold: float  # below this probability the best candidate is 'probably new'
    candidates: int = 20  # global top-k individuals that are pattern-verified
    photos_per_candidate: int = 3  # each candidate's best photos (by appearance) that are verified
    method: str = PATTERN_METHOD
    matcher: str = MATCH_METHOD

    @classmethod
    def from_card(cls, card: dict) -> Fusion | None:
        """The card's fusion, or None when the card has none or it was fitted on another pattern recipe or matcher
        (its weights would mean something else: suggestions then rest on appearance alone)."""
        data = card.get("fusion")
        if not data or data.get("method") != PATTERN_METHOD or data.get("matcher") != MATCH_METHOD:
            return None
        keys = ("appearance_weight", "pattern_weight", "intercept", "threshold")
        optional = {k: data[k] for k in ("candidates", "photos_per_candidate") if k in data}
        return cls(*(float(data[k]) for k in keys), **optional, method=data["method"], matcher=data["matcher"])

    def logit(self, appearance: float, inliers: int) -> float:
        return self.appearance_weight * appearance + self.pattern_weight * math.log1p(inliers) + self.intercept

    def probability(self, appearance: float, inliers: int) -> float:
        z = self.logit(appearance, inliers)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def as_card(self) -> dict:
        return {
            "method": self.method,
            "matcher": self.matcher,
            "appearance_weight": self.appearance_weight,
            "pattern_weight": self.pattern_weight,
            "intercept": self.intercept,
            "threshold": self.threshold,
            "candidates": self.candidates,
            "photos_per_candidate": self.photos_per_candidate,
        }
