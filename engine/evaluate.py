"""Measure Herdbook on any folder of identified photos before trusting it: `herdbook evaluate --data DIR`.

Layouts: DIR/<individual>/<photo> (nyala's '<n>_leftphoto.jpg' names give encounter and flank), or
DIR/<individual>/<encounter>/<photo> (one folder per encounter). Every photo is embedded with the model the app
uses (onnxruntime, the app's preprocessing) and matched across encounters: a photo never counts as found
through another photo of its own encounter (same place, light and background). Open set: half of the
individuals (seeded) play 'known', the other half 'new', at the model card's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .demo import nyala_photo, viewpoint_from_name
from .imageio import load_rgb
from .ingest import IMAGE_SUFFIXES, sha256_of
from .metrics import auroc, cosine_similarity, known_new_queries, reid_protocol
from .reid import Embedder


@dataclass(frozen=True)
class IdentifiedPhoto:
    path: Path
    individual: str
    encounter: str
    viewpoint: str | None


def identified_photos(root: str | Path) -> list[IdentifiedPhoto]:
    """Distinct photos (by content) under a folder per individual, with their encounter and side."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out, seen = [], set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            digest = sha256_of(path)
            if digest in seen:
                continue
            seen.add(digest)
            rel = path.relative_to(folder)
            nyala = nyala_photo(path.name)
            if len(rel.parts) > 1:
                encounter = f"{folder.name}/{rel.parts[0]}"
            elif nyala:
                encounter = f"{folder.name}/{nyala[0]}"
            else:
                encounter = f"{folder.name}/{path.stem}"
            out.append(IdentifiedPhoto(path, folder.name, encounter, viewpoint_from_name(path.name, folder.name)))
    return out


def evaluate_folder(root: str | Path, model: str | Path | None = None, progress=None) -> dict:
    photos = identified_photos(root)
    if len({p.individual for p in photos}) < 2:
        raise ValueError(f"{root}: needs photos of at least two individuals")
    embedder = Embedder(model)
    vectors = []
    for i in range(0, len(photos), 32):
        vectors.append(embedder.embed([load_rgb(p.path) for p in photos[i : i + 32]]))
        if progress:
            progress(min(i + 32, len(photos)), len(photos))
    emb = np.concatenate(vectors)
    ids, enc = [p.individual for p in photos], [p.encounter for p in photos]
    out = reid_protocol(emb, ids, enc, [p.viewpoint for p in photos])
    threshold = float(embedder.card.data.get("open_set_threshold") or 0.5)
    q = known_new_queries(cosine_similarity(emb, emb), ids, enc)
    known, new = q["best"][~q["is_new"]], q["best"][q["is_new"]]
    out["open_set"] = {
        "auroc_known_vs_new": auroc(known, new),
        "threshold": threshold,
        "known_wrongly_flagged": float(np.mean(known < threshold)) if len(known) else float("nan"),
        "new_flagged": float(np.mean(new < threshold)) if len(new) else float("nan"),
    }
    out["photos"], out["individuals"] = len(photos), len(set(ids))
    out["encounters"] = len(set(enc))
    out["model"] = f"{embedder.card['name']} {embedder.card['version']}"
    return out


def report_lines(result: dict) -> list[str]:
    a, s, o = result["across_encounters"], result["same_side"], result["open_set"]
    return [
        f"{result['photos']} photos, {result['individuals']} individuals, {result['encounters']} encounters; "
        f"model {result['model']}",
        f"across encounters: top-1 {a['rank1']:.1%}, top-5 {a['rank5']:.1%}, mAP {a['mAP']:.1%} "
        f"({a['queries']} queries, {a['queries_skipped']} without another encounter)",
        f"same side only:    top-1 {s['rank1']:.1%}, top-5 {s['rank5']:.1%}, mAP {s['mAP']:.1%}",
        f"new individual:    AUROC {o['auroc_known_vs_new']:.2f}; at threshold {o['threshold']:.3f}, "
        f"{o['known_wrongly_flagged']:.0%} of known animals flagged new, {o['new_flagged']:.0%} of new ones flagged",
    ]
