"""Training data: samples from a folder-per-individual tree or from a catalogue's confirmed sightings,
an in-memory image cache, light augmentation, and the P x K sampler."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.catalogue import Catalogue
from engine.imageio import crop, load_rgb


@dataclass(frozen=True)
class Sample:
    path: str
    individual: str
    viewpoint: str | None = None
    encounter: str | None = None  # photos of one encounter share place, light and background
    box: tuple[float, float, float, float] | None = None

    def label(self, mode: str) -> str:
        """The training class: the individual, or the individual seen from one side."""
        if mode == "individual_viewpoint" and self.viewpoint:
            return f"{self.individual}|{self.viewpoint}"
        return self.individual


def folder_samples(root: str | Path, individuals: Sequence[str] | None = None) -> list[Sample]:
    """One sample per distinct image (by content) under root/<individual>/* (engine.evaluate's layouts)."""
    from engine.evaluate import identified_photos

    return [
        Sample(str(p.path), p.individual, p.viewpoint, p.encounter)
        for p in identified_photos(root)
        if individuals is None or p.individual in individuals
    ]


def catalogue_samples(catalogue: Catalogue, min_per_individual: int = 2) -> list[Sample]:
    """Confirmed sightings with a box: the curated individuals a biologist has built up."""
    rows = catalogue.query(
        """SELECT d.x, d.y, d.w, d.h, d.viewpoint, m.path, m.id AS media_id,
                  COALESCE(mi.species, i.species) || ':' || COALESCE(mi.code, i.code) AS individual
           FROM sightings s JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id
           JOIN individuals i ON i.id = s.individual_id LEFT JOIN individuals mi ON mi.id = i.merged_into
           WHERE m.status = 'ok' ORDER BY s.detection_id"""
    )
    counts = defaultdict(int)
    for r in rows:
        counts[r["individual"]] += 1
    return [
        Sample(
            r["path"],
            r["individual"],
            r["viewpoint"],
            f"media{r['media_id']}",
            (r["x"], r["y"], r["w"], r["h"]) if r["w"] else None,
        )
        for r in rows
        if counts[r["individual"]] >= min_per_individual
    ]


def split_by_identity(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list, list]:
    ids = sorted({s.individual for s in samples})
    rng = random.Random(seed)
    rng.shuffle(ids)
    val_ids = set(ids[: int(round(len(ids) * val_fraction))])
    return [s for s in samples if s.individual not in val_ids], [s for s in samples if s.individual in val_ids]


class ImageCache:
    """Every sample decoded once, resized a little larger than the network input, kept as uint8 in memory."""

    def __init__(self, samples: Sequence[Sample], input_size: tuple[int, int], margin: float = 1.12, workers=4):
        self.samples = list(samples)
        self.size = (int(input_size[0] * margin), int(input_size[1] * margin))

        def load(s: Sample) -> np.ndarray:
            img = crop(load_rgb(s.path), s.box, source=s.path)
            return cv2.resize(img, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)

        with ThreadPoolExecutor(workers) as pool:
            self.images = list(pool.map(load, self.samples))

    def __len__(self):
        return len(self.images)


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def center_batch(cache: ImageCache, indices: Sequence[int], input_size) -> torch.Tensor:
    """Evaluation view: the whole cached crop resized to the input size (what the app does)."""
    h, w = input_size
    return to_tensor([cv2.resize(cache.images[i], (w, h), interpolation=cv2.INTER_AREA) for i in indices])


def augment_batch(
    cache: ImageCache,
    indices: Sequence[int],
    input_size,
    rng: np.random.Generator,
    erase_prob: float = 0.5,
    strength: str = "light",
) -> torch.Tensor:
    """Training views. No flips: a mirrored left flank is not a right flank.

    light: random crop (scale 0.8-1), mild colour jitter, random erasing.
    strong: crop (scale 0.55-1, aspect 0.8-1.25), small rotation and shear, strong colour jitter, blur,
    grey (night infrared) and erasing: the network must find the coat pattern, not the photo's look."""
    h, w = input_size
    strong = strength == "strong"
    out = []
    for i in indices:
        img = cache.images[i]
        ih, iw = img.shape[:2]
        s = rng.uniform(0.55, 1.0) if strong else rng.uniform(0.8, 1.0)
        aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25))) if strong else 1.0
        ch, cw = min(ih, int(ih * s / np.sqrt(aspect))), min(iw, int(iw * s * np.sqrt(aspect)))
        y0, x0 = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
        view = img[y0 : y0 + ch, x0 : x0 + cw]
        if strong and rng.random() < 0.5:  # the animal turned a little, or the camera was tilted
            m = cv2.getRotationMatrix2D((cw / 2, ch / 2), rng.uniform(-10, 10), 1.0)
            m[0, 1] += rng.uniform(-0.1, 0.1)
            view = cv2.warpAffine(view, m, (cw, ch), borderMode=cv2.BORDER_REFLECT101)
        view = cv2.resize(view, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        if strong:
            view = view * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
            view = view * rng.uniform(0.85, 1.15, size=3)
            grey = view.mean(axis=2, keepdims=True)
            view = grey + (view - grey) * rng.uniform(0.5, 1.5)  # saturation
            if rng.random() < 0.15:  # night infrared frames are grey
                view = np.repeat(view.mean(axis=2, keepdims=True), 3, axis=2)
            if rng.random() < 0.3:
                view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.3, 1.5))
        else:
            view = view * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)  # contrast/brightness
            view = view * rng.uniform(0.93, 1.07, size=3)  # colour cast
        if rng.random() < erase_prob:  # occlusion by vegetation: erase a random rectangle
            eh, ew = int(h * rng.uniform(0.1, 0.4)), int(w * rng.uniform(0.1, 0.4))
            ey, ex = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            view[ey : ey + eh, ex : ex + ew] = rng.uniform(0, 255, size=3)
        out.append(np.clip(view, 0, 255).astype(np.uint8))
    return to_tensor(out)


class PKSampler:
    """Batches of P classes x K images; within a class, images of different encounters come first, so the
    network cannot lean on a shared background to pull positives together."""

    def __init__(self, labels: Sequence[int], encounters: Sequence[str], p: int, k: int, seed: int):
        self.by_class: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            self.by_class[label].append(i)
        self.encounters = list(encounters)
        self.p, self.k = p, k
        self.rng = random.Random(seed)
        self.classes = [c for c, idx in self.by_class.items() if len(idx) >= 2] or list(self.by_class)
        self.batches_per_epoch = max(1, len(labels) // (p * k))

    def _pick(self, cls: int) -> list[int]:
        idx = self.by_class[cls][:]
        self.rng.shuffle(idx)
        chosen, used = [], set()
        for i in idx:  # first pass: one per encounter
            if self.encounters[i] not in used:
                chosen.append(i)
                used.add(self.encounters[i])
        chosen += [i for i in idx if i not in chosen]
        while len(chosen) < self.k:  # small classes repeat (augmentation makes the copies differ)
            chosen.append(self.rng.choice(idx))
        return chosen[: self.k]

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches_per_epoch):
            classes = self.rng.sample(self.classes, min(self.p, len(self.classes)))
            yield [i for c in classes for i in self._pick(c)]

    def __len__(self):
        return self.batches_per_epoch
