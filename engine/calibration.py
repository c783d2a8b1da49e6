"""Turn a candidate's scores into one calibrated probability that it is the same individual.

A candidate individual has an appearance score (cosine similarity of global embeddings, aggregated per
individual by engine.match) and a pattern score (coat-pattern evidence: RANSAC-verified plus guided matches,
engine.pattern.PatternMatch.evidence). Their scales mean nothing to each other, so they are fused as WildFusion
does: a logistic regression fitted on training identities' (query, candidate) pairs,

    p = sigmoid(a * appearance + b * log(1 + evidence) + c * pattern_lead + d * appearance_lead
                + f * pattern_above_median + e)

where a candidate's lead is how far it stands above the best *other* verified candidate of the same query
(negative for all but the best), and pattern_above_median how far its log(1 + evidence) stands above the median
of the query's verified candidates (the level of chance matches for this photo: a blurred or small crop matches
everything weakly). Both carry the open-set decision: a known animal's true match stands out from the crowd of
chance matches, a never-seen animal's best match is only the top of that crowd. Chosen on 118 calibration nyala
(two-fold by identity, a never-seen animal judged without its individual in the gallery; bench/fusion_variants.py).
The fit lives in trainer/fusion.py (scikit-learn); the coefficients and the 'probably new' threshold are stored
in the model card under "fusion", so the app needs only numpy to apply them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pattern import MATCH_METHOD, PATTERN_METHOD


def _leads(values: np.ndarray) -> np.ndarray:
    """Each value minus the largest of the others (0 for a lone value)."""
    if len(values) < 2:
        return np.zeros_like(values)
    order = np.argsort(-values, kind="stable")
    first, second = values[order[0]], values[order[1]]
    others_best = np.full_like(values, first)
    others_best[order[0]] = second
    return values - others_best


# The fusion's inputs, in the order of feature_columns; all but the first two are optional in a card (newer cards').
FEATURES = (
    "appearance_weight",
    "pattern_weight",
    "pattern_lead_weight",
    "appearance_lead_weight",
    "pattern_median_weight",
)
OPTIONAL_WEIGHTS = FEATURES[2:]


def feature_columns(appearance, evidence) -> np.ndarray:
    """One query's verified candidates as the fusion sees them, one column per FEATURES entry: appearance,
    log(1 + evidence), both leads, and log(1 + evidence) above the candidates' median."""
    appearance = np.asarray(appearance, np.float64)
    pattern = np.log1p(np.maximum(np.asarray(evidence, np.float64), 0))
    median = np.median(pattern) if len(pattern) else 0.0
    return np.stack([appearance, pattern, _leads(pattern), _leads(appearance), pattern - median], 1)


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
    pattern_lead_weight: float = 0.0  # 0 in cards before 0.4.0: the fusion of appearance and inliers alone
    appearance_lead_weight: float = 0.0
    pattern_median_weight: float = 0.0  # 0 in cards before 0.7.0
    # A detection judged with the other photos of its encounter (both flanks, a burst: engine.match.
    # encounter_probabilities) is 'probably new' when its best candidate stands less than this above the second
    # (log-odds; engine.match.log_odds_lead). None (cards before 0.10.0): ``threshold`` on the best alone.
    encounter_lead_threshold: float | None = None
    # The 'probably new' probability for a detection whose side is not known (every import's until someone records
    # it): it is then verified against both flanks' photos, whose scores spread differently. None: ``threshold``.
    unsided_threshold: float | None = None

    @classmethod
    def from_card(cls, card: dict) -> Fusion | None:
        """The card's fusion, or None when the card has none or it was fitted on another pattern recipe or matcher
        (its weights would mean something else: suggestions then rest on appearance alone)."""
        data = card.get("fusion")
        if not data or data.get("method") != PATTERN_METHOD or data.get("matcher") != MATCH_METHOD:
            return None
        keys = ("appearance_weight", "pattern_weight", "intercept", "threshold")
        optional = {k: data[k] for k in ("candidates", "photos_per_candidate") if k in data}
        optional |= {
            k: float(data[k]) for k in (*OPTIONAL_WEIGHTS, "encounter_lead_threshold", "unsided_threshold") if k in data
        }
        return cls(*(float(data[k]) for k in keys), **optional, method=data["method"], matcher=data["matcher"])

    def logits(self, appearance, evidence) -> np.ndarray:
        """Logits of one query's verified candidates (arrays of their appearance scores and pattern evidence)."""
        return feature_columns(appearance, evidence) @ np.array([getattr(self, f) for f in FEATURES]) + self.intercept

    def probabilities(self, appearance, evidence) -> np.ndarray:
        """P(same individual) for each of one query's verified candidates, judged together (the leads)."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(appearance, evidence), -700, 700)))

    def threshold_for(self, side: str | None) -> float:
        """The 'probably new' probability for a detection of this side (None: not known)."""
        return self.unsided_threshold if side is None and self.unsided_threshold is not None else self.threshold

    def as_card(self) -> dict:
        return {
            "method": self.method,
            "matcher": self.matcher,
            "appearance_weight": self.appearance_weight,
            "pattern_weight": self.pattern_weight,
            "pattern_lead_weight": self.pattern_lead_weight,
            "appearance_lead_weight": self.appearance_lead_weight,
            "pattern_median_weight": self.pattern_median_weight,
            "intercept": self.intercept,
            "threshold": self.threshold,
            **{
                name: getattr(self, name)
                for name in ("encounter_lead_threshold", "unsided_threshold")
                if getattr(self, name) is not None
            },
            "candidates": self.candidates,
            "photos_per_candidate": self.photos_per_candidate,
        }
