"""Where is the coat-pattern verifier's evidence lost? Cheap probes of a true pair against its look-alikes.

The open-set targets of issue 11 are missed because a never-seen animal's best chance match among 40 look-alikes x
8 photos scores like a known animal's true match (trainer.fusion's test third: the best chance evidence of a
never-seen query has median 33, a true match 35). Each probe below changes one thing in how a pair's evidence is
made and asks whether it separates the truth from the look-alikes better. The probe is quicker than the product's
path (bench/pattern_scale.py, ~4 min a variant) and meant to rule ideas out; what survives it must then pass that.

Pairs: trainer.fusion's calibration individuals of nyala/train (split by identity, seed 0; the test third is not
read). 150 seeded query photos with another encounter of their individual; for each, its true photos (same side,
other encounters, outside its sighting session, engine.metrics.SESSION_WINDOW; up to 8) and the 20 other
individuals most alike by appearance (the bundled embedding; one photo each, same side, outside the session).
Per query the best true evidence against the best look-alike evidence:
  win      share of queries whose truth beats all 20 look-alikes (a top-1 among 21);
  AUC      AUROC of best-true against best-look-alike evidence over queries (how the open set sees it).

Probes (each against the shipped evidence, engine.pattern.match: verified + guided matches):
  geometric prior   the similarity model drawn only from plausible motions (rotation, scale and shift of the
                    flank's centre bounded; 5-95 % of true pairs with 15+ verified matches: within 12 deg, scale
                    0.81-1.14, shift -0.08..0.08 across and -0.13..0.21 down, as shares of the width),
                    every 2-match hypothesis tried;
  cohort z-norm     log evidence standardised by the query's (qz), the gallery photo's (gz) or both photos' (S-norm)
                    evidence against 30 random other individuals (score normalisation as in speaker verification);
  keypoint idf      each matched query point weighted by how rarely it matches those 30 cohort photos (a point on
                    a species-wide marking matches everyone);
  shift null        evidence minus the guided matches the same model finds shifted by 16 px in 8 directions
                    (an a-contrario estimate of chance matches for this pair);
  descriptors       learned descriptors at the same keypoints (opencv-contrib's VGG, BoostDesc, TEBLID, DAISY),
                    only with --descriptors and opencv-contrib-python-headless in place of opencv-python-headless.

    python bench/verifier_probes.py [--descriptors]   # ~3 min (+15 min with --descriptors) on 2 cores
    # writes bench/results/verifier_probes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pattern_pairs import animal_crop, split_photos  # noqa: E402

from engine import pattern  # noqa: E402
from engine.evaluate import sighting_numbers  # noqa: E402
from engine.metrics import SESSION_WINDOW, auroc  # noqa: E402

QUERIES, LOOK_ALIKES, TRUE_PHOTOS, COHORT = 150, 20, 8, 30
PRIORS = {  # max |rotation| (deg), scale range, max |shift of the centre| (share of the width)
    "prior wide": (30.0, 0.6, 1.6, 0.30),
    "prior mid": (20.0, 0.7, 1.4, 0.20),
    "prior tight": (12.0, 0.8, 1.25, 0.12),
}
SHIFTS = [(16 * np.cos(t), 16 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
STATE: dict = {}


def learned_describers() -> dict:
    """name -> (descriptor extractor, image it reads, to unit vectors); opencv-contrib's, at SIFT keypoints."""
    x = cv2.xfeatures2d

    def unit(d):
        d = d.astype(np.float32)
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-7)

    def bits(d):  # Hamming distance as a cosine of +-1 vectors
        return unit(np.unpackbits(d, axis=1).astype(np.float32) * 2 - 1)

    return {
        "rootsift on the grey crop": (cv2.SIFT_create, "gray", lambda d: unit(np.sqrt(np.maximum(d, 0)))),
        "VGG-120 on the stripe image": (lambda: x.VGG_create(scale_factor=6.75), "stripe", unit),
        "VGG-120 on the grey crop": (lambda: x.VGG_create(scale_factor=6.75), "gray", unit),
        "BoostDesc on the grey crop": (lambda: x.BoostDesc_create(scale_factor=6.75), "gray", bits),
        "BoostDesc on the stripe image": (lambda: x.BoostDesc_create(scale_factor=6.75), "stripe", bits),
        "TEBLID-512 on the grey crop": (lambda: x.TEBLID_create(6.75, x.TEBLID_SIZE_512_BITS), "gray", bits),
        "DAISY on the grey crop": (x.DAISY_create, "gray", unit),
    }


def _features(i):
    """The product's pattern of photo i, and with --descriptors other descriptors at the same keypoints."""
    cv2.setNumThreads(1)
    rgb = animal_crop(STATE["paths"][i], STATE["boxes"][i])
    shipped = pattern.extract(rgb)
    out = {"shipped": (shipped.points, shipped.root_sift)}
    if STATE["descriptors"]:
        stripe = pattern.stripe_image(rgb)
        size = (pattern.WORK_WIDTH, stripe.shape[0])
        gray = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        keypoints = cv2.SIFT_create(nfeatures=pattern.MAX_KEYPOINTS).detect(stripe, pattern.foreground(rgb, size[1]))
        for name, (make, source, to_unit) in learned_describers().items():
            kept, d = make().compute(stripe if source == "stripe" else gray, list(keypoints))
            out[name] = (np.float32([k.pt for k in kept]), to_unit(d)) if d is not None and len(kept) else None
    return out


def similarity_from_pairs(pa, pb, prior):
    """engine.pattern.match's similarity model, but drawn from every 2-match hypothesis whose motion ``prior``
    allows (see PRIORS); (2 x 3 model, inlier mask) or (None, None)."""
    za, zb = pa[:, 0] + 1j * pa[:, 1], pb[:, 0] + 1j * pb[:, 1]
    i, j = np.triu_indices(len(pa), 1)
    far = np.abs(za[j] - za[i]) > 4.0
    i, j = i[far], j[far]
    a = (zb[j] - zb[i]) / (za[j] - za[i])
    b = zb[i] - a * za[i]
    ca, cb = np.median(za), np.median(zb)  # the flank's centre: the keypoints' median
    shift = (a * ca + b - cb) / pattern.WORK_WIDTH
    rotation, scale_min, scale_max, shift_max = prior
    ok = (np.abs(np.degrees(np.angle(a))) <= rotation) & (np.abs(a) >= scale_min) & (np.abs(a) <= scale_max)
    ok &= (np.abs(shift.real) <= shift_max) & (np.abs(shift.imag) <= shift_max)
    a, b = a[ok], b[ok]
    if not len(a):
        return None, None
    if len(a) > 4000:
        pick = np.random.default_rng(0).choice(len(a), 4000, replace=False)
        a, b = a[pick], b[pick]
    inliers = np.abs(a[:, None] * za[None] + b[:, None] - zb[None]) < pattern.RANSAC_PIXELS
    best = int(np.argmax(inliers.sum(1)))
    model = np.array([[a[best].real, -a[best].imag, b[best].real], [a[best].imag, a[best].real, b[best].imag]])
    return model, inliers[best]


def pair_detail(args):
    """Evidence of one pair under one descriptor and model: verified count, the query points matched (verified
    and guided, with repeats, as the evidence counts them) and the guided counts of the model shifted (SHIFTS)."""
    q, g, kind, prior = args
    a, b = STATE["features"][q][kind], STATE["features"][g][kind]
    empty = {"verified": 0, "guided": 0, "points": [], "shifted": [0] * len(SHIFTS)}
    if a is None or b is None or len(a[0]) < pattern.MIN_MATCHES or len(b[0]) < pattern.MIN_MATCHES:
        return empty
    sims = a[1] @ b[1].T
    rows, cols = pattern.ratio_test(sims)
    if len(rows) < pattern.MIN_MATCHES:
        return empty
    if prior is None:
        cv2.setRNGSeed(0)
        model, mask = pattern.fit_similarity(a[0][rows], b[0][cols])
    else:
        model, mask = similarity_from_pairs(a[0][rows], b[0][cols], PRIORS[prior])
    if mask is None:
        return empty
    gi, _ = pattern.guided_matches(a[0], b[0], sims, model)
    shifted = []
    if kind == "shipped" and prior is None:
        for dx, dy in SHIFTS:
            moved = model + np.array([[0, 0, dx], [0, 0, dy]])
            shifted.append(len(pattern.guided_matches(a[0], b[0], sims, moved)[0]))
    points = np.concatenate([rows[mask], gi]).tolist()
    return {"verified": int(mask.sum()), "guided": len(gi), "points": points, "shifted": shifted}


def calibration_photos():
    """trainer.fusion's calibration photos with their boxes and vectors (pattern_pairs.split_photos), and arrays of
    their individuals, sides, encounters and photo numbers, as choose_pairs takes them."""
    cal, boxes, vectors = split_photos()["calibration"]
    ids = np.array([s.individual for s in cal])
    side = np.array([str(s.viewpoint) for s in cal])
    enc = np.array([s.encounter for s in cal])
    return cal, boxes, vectors, (ids, side, enc, np.array(sighting_numbers(s.path for s in cal)))


def choose_pairs(ids, side, enc, number, vectors, rng):
    """(query, its true photos, its look-alikes) for QUERIES seeded queries, and a cohort of other individuals'
    photos for every photo met."""
    eligible = [q for q in range(len(ids)) if ((ids == ids[q]) & (enc != enc[q]) & (side == side[q])).any()]
    tasks = []
    for q in rng.choice(eligible, QUERIES, replace=False):
        ok = (np.abs(number - number[q]) > SESSION_WINDOW) & (side == side[q]) & (enc != enc[q])
        true = np.flatnonzero(ok & (ids == ids[q]))[:TRUE_PHOTOS]
        others = np.flatnonzero(ok & (ids != ids[q]))
        seen, alike = set(), []
        for j in others[np.argsort(-(vectors[others] @ vectors[q]))]:
            if ids[j] not in seen:
                seen.add(ids[j])
                alike.append(int(j))
            if len(alike) == LOOK_ALIKES:
                break
        tasks.append((int(q), [int(t) for t in true], alike))
    met = sorted({p for q, t, a in tasks for p in [q, *t, *a]})
    cohort = {}
    for p in met:
        ok = np.flatnonzero((ids != ids[p]) & (side == side[p]) & (np.abs(number - number[p]) > SESSION_WINDOW))
        cohort[p] = [int(c) for c in np.random.default_rng(p).choice(ok, COHORT, replace=False)]
    return tasks, cohort


def total(found: dict, minus: float = 0.0) -> float:
    """log(1 + evidence) of a pair_detail, less ``minus`` chance matches (never below 0)."""
    return float(np.log1p(max(found["verified"] + found["guided"] - minus, 0)))


def judged(tasks, score) -> dict:
    """win and AUC (module docstring) of a pair score ``score(query, gallery photo)``."""
    true_best = np.array([max(score(q, g) for g in t) for q, t, _ in tasks], float)
    alike_best = np.array([max(score(q, g) for g in a) for q, _, a in tasks], float)
    return {"win": float(np.mean(true_best > alike_best)), "auc": auroc(true_best, alike_best)}


def report(rows: dict, header: str, result: str, **facts) -> None:
    """Print the win / AUC table of ``rows`` and write them with ``facts`` to bench/results/<result>.json."""
    print(f"\n{header:66s} {'win':>6s} {'AUC':>6s}")
    for name, row in rows.items():
        print(f"{name:66s} {row['win']:6.3f} {row['auc']:6.3f}")
    out = {"seed": 0, **facts, "rows": rows}
    (ROOT / "bench" / "results" / f"{result}.json").write_text(json.dumps(out, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--descriptors", action="store_true", help="also opencv-contrib's learned descriptors")
    args = parser.parse_args(argv)
    if args.descriptors and not hasattr(cv2, "xfeatures2d"):
        parser.error("--descriptors needs opencv-contrib-python-headless (same version) instead of opencv-python")
    t0 = time.perf_counter()
    cal, boxes, vectors, (ids, side, enc, number) = calibration_photos()
    STATE.update(paths=[s.path for s in cal], boxes=boxes, descriptors=args.descriptors)
    with Pool(2) as pool:
        STATE["features"] = pool.map(_features, range(len(cal)), chunksize=16)
    print(f"patterns of {len(cal)} calibration photos: {time.perf_counter() - t0:.0f} s", flush=True)
    tasks, cohort = choose_pairs(ids, side, enc, number, vectors, np.random.default_rng(0))
    scored = [(q, g) for q, t, a in tasks for g in t + a]
    scored += [(p, c) for p in sorted({g for _, g in scored} | {q for q, _, _ in tasks}) for c in cohort[p]]
    scored = list(dict.fromkeys(scored))

    def details(kind, prior, pairs):
        with Pool(2) as pool:
            found = pool.map(pair_detail, [(q, g, kind, prior) for q, g in pairs], chunksize=32)
        return dict(zip(pairs, found, strict=True))

    rows = {}
    shipped = details("shipped", None, scored)
    log_evidence = {pair: total(found) for pair, found in shipped.items()}
    rows["shipped evidence (verified + guided)"] = judged(tasks, lambda q, g: log_evidence[q, g])
    rows["verified only"] = judged(tasks, lambda q, g: np.log1p(shipped[q, g]["verified"]))
    for prior in PRIORS:
        found = details("shipped", prior, [(q, g) for q, t, a in tasks for g in t + a])
        rows[f"geometric {prior}"] = judged(tasks, lambda q, g, f=found: total(f[q, g]))
    # the level and spread of each photo's evidence against its cohort, and of each query's against its look-alikes
    level = {p: np.array([log_evidence[p, c] for c in cohort[p]]) for p in cohort}
    mean, spread = {p: v.mean() for p, v in level.items()}, {p: v.std() + 0.1 for p, v in level.items()}
    alike = {q: np.array([log_evidence[q, g] for g in a]) for q, _, a in tasks}
    qz = lambda q, g: (log_evidence[q, g] - mean[q]) / spread[q]  # noqa: E731
    gz = lambda q, g: (log_evidence[q, g] - mean[g]) / spread[g]  # noqa: E731
    rows["cohort z-norm, query (qz)"] = judged(tasks, qz)
    rows["cohort z-norm, gallery photo (gz)"] = judged(tasks, gz)
    rows["cohort S-norm (mean of qz and gz)"] = judged(tasks, lambda q, g: (qz(q, g) + gz(q, g)) / 2)
    rows["z-score among the query's look-alikes"] = judged(
        tasks, lambda q, g: (log_evidence[q, g] - alike[q].mean()) / (alike[q].std() + 0.1)
    )
    weightings = {
        "idf": lambda n: np.log((COHORT + 1) / (n + 1)) / np.log(COHORT + 1),
        "1/(1+n)": lambda n: 1 / (1 + n),
    }
    for form, weight in weightings.items():
        weights = {}
        for q, _, _ in tasks:
            counts = np.zeros(len(STATE["features"][q]["shipped"][0]))
            for c in cohort[q]:
                counts[np.unique(np.asarray(shipped[q, c]["points"], int))] += 1
            weights[q] = weight(counts)
        rows[f"keypoint {form} over the cohort"] = judged(
            tasks, lambda q, g, w=weights: float(np.log1p(w[q][np.asarray(shipped[q, g]["points"], int)].sum()))
        )
    rows["shift null (evidence - mean guided of the model shifted 16 px)"] = judged(
        tasks, lambda q, g: total(shipped[q, g], minus=np.mean(shipped[q, g]["shifted"] or [0]))
    )
    if args.descriptors:
        for name in learned_describers():
            for similarity in (0.80, 0.90):  # the guided threshold means another thing for another descriptor
                pattern.GUIDED_SIMILARITY, keep = similarity, pattern.GUIDED_SIMILARITY
                found = details(name, None, [(q, g) for q, t, a in tasks for g in t + a])
                pattern.GUIDED_SIMILARITY = keep
                rows[f"{name}, guided at {similarity:.2f}"] = judged(tasks, lambda q, g, f=found: total(f[q, g]))
    report(
        rows,
        "probe",
        "verifier_probes",
        queries=QUERIES,
        look_alikes=LOOK_ALIKES,
        cohort=COHORT,
        calibration_photos=len(cal),
        seconds=time.perf_counter() - t0,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
