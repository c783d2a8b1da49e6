"""Does the animal's foreground mask (engine.pattern.foreground, GrabCut) help the appearance embedding too?

Every photo of nyala/train goes the product's way (bundled detector's best box + pipeline margin, cached by
bench/pattern_pairs.py in bench/work/pattern_pairs/photos.npz), and is embedded by the bundled model three ways:
as it is (what ships), with the background GrabCut finds filled by the crop's mean colour, and the two vectors
averaged. Appearance alone, photo against photo across encounters (engine.metrics.reid_protocol), on both parts
of trainer.fusion's split (seed 0: 118 calibration individuals, which would choose, and the 61 test individuals).

    python bench/masked_embedding.py   # prints a table, writes bench/results/masked_embedding.json
"""

from __future__ import annotations

import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pattern_pairs import animal_crop, photo_table  # noqa: E402  (the same cached boxes and plain vectors)

from engine import pattern  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.metrics import reid_protocol  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402


def masked_crop(args):
    """The crop with what GrabCut calls background filled by the crop's mean colour (unchanged when the mask
    falls back to the whole crop); the mask is made at the pattern's work size and scaled to the crop."""
    path, box = args
    rgb = animal_crop(path, box)
    mask = pattern.foreground(rgb, pattern.stripe_image(rgb).shape[0])
    if mask is None:
        return rgb, False
    keep = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    out = np.empty_like(rgb)
    out[:] = rgb.reshape(-1, 3).mean(0).astype(np.uint8)
    out[keep] = rgb[keep]
    return out, True


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> int:
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    boxes, plain = photo_table(samples)
    t0 = time.perf_counter()
    with Pool(2) as pool:
        done = pool.map(masked_crop, [(s.path, b) for s, b in zip(samples, boxes, strict=True)], chunksize=16)
    embedder = Embedder()
    masked = np.concatenate([embedder.embed([c for c, _ in done[i : i + 64]]) for i in range(0, len(done), 64)])
    print(
        f"{len(samples)} photos masked and embedded in {time.perf_counter() - t0:.0f} s; "
        f"{sum(m for _, m in done)} with a foreground mask",
        flush=True,
    )
    ways = {
        "as cropped (shipped)": unit(plain),
        "background filled": unit(masked),
        "mean of both": unit(unit(plain) + unit(masked)),
    }
    index = {s.path: i for i, s in enumerate(samples)}
    cal, test = split_by_identity(samples, 0.34, 0)
    rows = []
    print(f"\n{'embedding':24s} | calibration: rank-1 rank-5 mAP | test: rank-1 rank-5 mAP")
    for name, vectors in ways.items():
        row = {"embedding": name}
        for part_name, part in (("calibration", cal), ("test", test)):
            idx = [index[s.path] for s in part]
            r = reid_protocol(
                vectors[idx], [s.individual for s in part], [s.encounter for s in part], [s.viewpoint for s in part]
            )["across_encounters"]
            row[part_name] = {k: r[k] for k in ("rank1", "rank5", "mAP")}
        rows.append(row)
        c, t = row["calibration"], row["test"]
        print(
            f"{name:24s} | {c['rank1']:.3f} {c['rank5']:.3f} {c['mAP']:.3f} | {t['rank1']:.3f} {t['rank5']:.3f} "
            f"{t['mAP']:.3f}"
        )
    out = ROOT / "bench" / "results" / "masked_embedding.json"
    out.write_text(json.dumps({"seed": 0, "split": [len(cal), len(test)], "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
