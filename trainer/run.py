"""`herdbook train`: from a folder tree or a catalogue to an exported, checked, documented model.

data -> Trainer.fit (checkpoints, evaluation) -> best/last checkpoint -> ONNX + parity check -> model card,
with the open-set threshold calibrated on the held-out identities when there are any.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from engine.catalogue import Catalogue
from engine.metrics import cosine_similarity, encounter_exclusion, open_set_scores
from engine.reid import ModelCard, ModelError, default_model_path

from .data import Sample, catalogue_samples, folder_samples, split_by_identity
from .export_onnx import export_onnx, load_checkpoint, parity_check, write_card
from .fusion import REFIT_PHOTOS, REFIT_SECONDS_PER_PHOTO, can_refit, refit_photos
from .train import Trainer, TrainResult, load_config


def samples_from_dirs(dirs: list[str]) -> list[Sample]:
    """Folder-per-individual trees; with several trees, identities are prefixed by the tree's dataset name."""
    out = []
    for d in dirs:
        prefix = Path(d).resolve().parent.name + ":" if len(dirs) > 1 else ""
        out += [
            Sample(s.path, prefix + s.individual, s.viewpoint, prefix + (s.encounter or ""), s.box)
            for s in folder_samples(d)
        ]
    return out


def open_set_calibration(trainer: Trainer) -> dict | None:
    """Split the held-out identities in two: half known (in the gallery), half new. The threshold flags 90% of
    the new ones; the card keeps it so the app can say 'probably a new individual'."""
    if trainer.val_cache is None:
        return None
    emb = trainer.embed(trainer.val_cache)
    s = trainer.val_samples
    ids = np.array([x.individual for x in s], dtype=object)
    unique = sorted(set(ids))
    rng = np.random.default_rng(0)
    new_ids = set(rng.permutation(unique)[: len(unique) // 2])
    is_new = np.array([i in new_ids for i in ids])
    sim = cosine_similarity(emb, emb)
    exclude = encounter_exclusion([x.encounter for x in s])
    best = []
    for q in range(len(s)):
        valid = ~exclude[q] & ~is_new  # the gallery holds only the known half
        if not valid.any():
            continue
        if not is_new[q] and not (valid & (ids == ids[q])).any():
            continue  # a known individual with no other encounter cannot be re-identified
        j = np.flatnonzero(valid)[np.argmax(sim[q, valid])]
        best.append((sim[q, j], is_new[q], ids[j] == ids[q]))
    arr = np.array([b[0] for b in best])
    new_mask = np.array([b[1] for b in best])
    ok = np.array([b[2] for b in best])
    return open_set_scores(arr[~new_mask], ok[~new_mask], arr[new_mask], 0.9)


class ProductFeatures(NamedTuple):
    vectors: np.ndarray  # the pipeline's crops, embedded
    patterns: list  # their coat patterns (engine.pattern.extract), or [] when not asked for
    ranking: np.ndarray | None  # the crops as training saw them, embedded, when asked for
    side_inputs: np.ndarray | None  # what a side classifier reads (engine.side.side_inputs), when asked for


def product_features(
    embedder,
    samples: list[Sample],
    patterns: bool = True,
    ranking: bool = False,
    deadline: float | None = None,
    sides: bool = False,
) -> ProductFeatures:
    """The photos as the app sees them: each box cropped with the pipeline's margin, embedded by ``embedder``, its
    coat pattern extracted (``patterns``); with ``ranking``, also the crops as training saw them, embedded; with
    ``sides``, the side classifier's inputs (one more embedding, of the mirrored crop). Past ``deadline``
    (time.time()) no further batch of 32 photos is started: the vectors then cover only the first photos."""
    from engine.imageio import crop, load_rgb
    from engine.pattern import extract
    from engine.pipeline import CROP_MARGIN
    from engine.side import embedded_side_inputs

    ranked, product, found, sided = [], [], [], []
    for i in range(0, len(samples), 32):  # a batch of photos at a time: camera-trap frames are large
        if deadline is not None and i and time.time() > deadline:
            break
        photos = [(s, load_rgb(s.path)) for s in samples[i : i + 32]]
        if ranking:
            ranked.append(embedder.embed([crop(image, s.box, s.path) for s, image in photos]))
        crops = [crop(image, s.box, s.path, CROP_MARGIN) for s, image in photos]
        product.append(embedder.embed(crops))
        found += [extract(c) for c in crops] if patterns else []
        if sides:
            sided.append(embedded_side_inputs(embedder, product[-1], crops))
    return ProductFeatures(
        np.concatenate(product),
        found,
        np.concatenate(ranked) if ranking else None,
        np.concatenate(sided) if sides else None,
    )


def model_on_held_out(model_path: Path | None, val: list[Sample], appearance: bool = True) -> dict | None:
    """A model measured on the held-out photos the way the app uses it, so that a new model is accepted for what it
    gains, not for a number on its own: its appearance ranking (the crops as training saw them), and the
    suggestions the app would make (engine.match.suggest on the pipeline's crops, with the coat-pattern fusion
    when the model's card has one: a model is not judged without the verifier it ships with).
    ``appearance=False`` skips the ranking (the new model's own is measured by its trainer)."""
    if not val or model_path is None or not Path(model_path).is_file():
        return None
    from engine.calibration import Fusion
    from engine.evaluate import card_suggestions, sighting_numbers
    from engine.metrics import reid_protocol
    from engine.reid import Embedder

    embedder = Embedder(model_path)
    fusion = Fusion.from_card(embedder.card.data)
    vectors, patterns, ranking, _ = product_features(embedder, val, patterns=fusion is not None, ranking=appearance)
    ids, enc, sides = [s.individual for s in val], [s.encounter for s in val], [s.viewpoint for s in val]
    numbers = sighting_numbers(s.path for s in val)
    return {
        "model": f"{embedder.card['name']} {embedder.card['version']}",
        **(reid_protocol(ranking, ids, enc, sides, numbers) if appearance else {}),
        **card_suggestions(embedder.card.data, vectors, ids, enc, sides, patterns, numbers),
    }


def side_species(photos: list[Sample], species: list[str], current_card: dict | None) -> tuple[str, ...]:
    """The species whose photos' sides a new side classifier is fitted on (an individual is 'species:code' in a
    catalogue; photos from folders, the model's ``species``), with the other names the current model's classifier
    knows them by (nyala, Tragelaphus angasii)."""
    from engine.side import SIDES, SideClassifier

    sided = [s.individual for s in photos if s.viewpoint in SIDES]
    named = {i.split(":", 1)[0] for i in sided if ":" in i} if all(":" in i for i in sided) else set(species)
    current = SideClassifier.from_card(current_card or {})
    aliases = current.species if current and any(current.applies_to(n) for n in named) else ()
    return tuple(sorted(named | set(aliases)))


def model_extras(
    onnx_path: Path,
    photos: list[Sample],
    seconds: float | None = None,
    current_card: dict | None = None,
    species: list[str] | tuple[str, ...] = (),
) -> dict:
    """What a newly trained model's card needs beside its weights, fitted with its own embedding on these photos of
    its training individuals (never the held-out ones): its coat-pattern fusion (trainer.fusion.fit_model_fusion)
    and its side classifier (trainer.side, on the photos whose side is known). Each is left out when the photos
    are too few to fit it on: without a fusion suggestions rest on appearance alone, without a side classifier the
    app infers no sides (the current model's reads the current model's embedding). Within ``seconds`` (a training
    budget's share): the photos are read, embedded and their patterns extracted for 60% of it (then verified,
    the rest), so a slower machine fits on fewer of them."""
    from engine.reid import Embedder

    from .fusion import fit_model_fusion
    from .side import can_fit_sides, fit_side_classifier

    def side_labels(part):
        return [s.viewpoint for s in part], [s.individual for s in part]

    want_fusion, want_sides = can_refit(photos), can_fit_sides(*side_labels(photos))
    if not want_fusion and not want_sides:
        return {}
    deadline = time.time() + 0.6 * seconds if seconds is not None else None
    embedder = Embedder(onnx_path)
    read = product_features(embedder, photos, patterns=want_fusion, deadline=deadline, sides=want_sides)
    photos = photos[: len(read.vectors)]  # those read by the deadline
    extras = {}
    fusion = fit_model_fusion(read.vectors, read.patterns, photos) if want_fusion else None  # None: too few read
    if fusion:
        extras["fusion"] = fusion.as_card()
    if want_sides and can_fit_sides(*side_labels(photos)):
        fitted_on = side_species(photos, list(species), current_card)
        classifier, figures = fit_side_classifier(read.side_inputs, embedder.dim, *side_labels(photos), fitted_on)
        extras["side_classifier"] = classifier.as_card(figures)
    return extras


def train_and_export(
    config: dict,
    train: list[Sample],
    val: list[Sample],
    out_dir: Path,
    name: str,
    version: str,
    species: list[str],
    trained_on: str,
    init_from: Path | None = None,
    resume: bool = False,
    progress=None,
    cancel: threading.Event | None = None,
    compare_with: Path | None = None,
) -> dict:
    """Train, export and document a model. A time budget covers the whole run: reading the photos before
    training and the export and evaluation after it are taken out of the training's share."""
    started = time.time()
    if progress:
        progress({"stage": f"reading {len(train) + len(val)} photos"})
    trainer = Trainer(config, train, out_dir, val=val, init_from=init_from)
    if resume:
        trainer.resume()
    budget_min = config["training"].get("time_budget_minutes")
    left = None  # training's share of the budget (the config, saved with the model, keeps the user's budget)
    # the new model's coat-pattern fusion and side classifier are fitted on these (model_extras); in a short run on
    # fewer, at most 40% of the budget
    limit = min(REFIT_PHOTOS, int(0.4 * budget_min * 60 / REFIT_SECONDS_PER_PHOTO)) if budget_min else REFIT_PHOTOS
    refit = refit_photos(train, limit)
    if budget_min:
        reserve = min(120.0, 0.2 * budget_min * 60)  # export, parity check, both models' evaluations
        reserve += REFIT_SECONDS_PER_PHOTO * len(refit) if can_refit(refit) else 0.0
        left = max(budget_min * 60 - (time.time() - started) - reserve, 10.0)
    result: TrainResult = trainer.fit(progress=progress, cancel=cancel, budget_s=left)
    if cancel is not None and cancel.is_set():
        return {"cancelled": True, "out_dir": str(out_dir)}
    # The end of phase 2 is the model: picking best.pt by the held-out score would bias the reported numbers.
    checkpoint = out_dir / "last.pt"
    model, _ = load_checkpoint(checkpoint)
    trainer.model = model
    if progress:
        progress({"stage": "measuring and exporting the new model"})
    measuring = time.time()  # the current model's measurement on the held-out photos: the new one's takes as long
    current = model_on_held_out(compare_with, val)
    measuring = time.time() - measuring
    metrics = {
        "held_out": trainer.evaluate(),
        "current_model_held_out": current,
        "open_set": open_set_calibration(trainer),
        "train_images_per_s": round(result.images_per_second, 2),
        "epochs": result.epochs,
        "train_seconds": round(result.seconds, 1),
        "checkpoint": checkpoint.name,
    }
    onnx_path = export_onnx(model, out_dir / f"{name}.onnx")
    probe = [s.path for s in (val or train)[:2] if s.box is None] or [train[0].path]
    metrics["onnx_parity_max_abs_diff"] = parity_check(model, onnx_path, probe)
    extra = {
        "backbone": config["model"]["backbone"],
        "ipaid": config["model"]["use_ipaid"],
        "iicl": config["training"]["losses"]["iicl"]["enabled"],
        "label": config["data"]["label"],
        "open_set_threshold": (metrics["open_set"] or {}).get("threshold"),
        "held_out_individuals": sorted({s.individual for s in val}),
        "training_command": " ".join(shlex.quote(a) for a in sys.argv),
    }
    write_card(onnx_path, model, name, version, species, trained_on, metrics, extra)
    # Its own coat-pattern fusion and side classifier, fitted with its own embedding on its training individuals
    # (never the held-out ones that measure it): without them its suggestions would rest on appearance alone and
    # no side would be inferred.
    if progress:
        progress({"stage": "fitting the coat-pattern fusion and the side classifier on the training individuals"})
    # What is left of the budget, less the new model's own measurement to come (as long as the current one's took),
    # and never under a quarter of the share kept for it: a model without a fusion would suggest far worse.
    fusion_seconds = None
    if budget_min:
        kept = REFIT_SECONDS_PER_PHOTO * len(refit)
        left_now = budget_min * 60 - (time.time() - started) - measuring
        fusion_seconds = max(left_now, 0.25 * kept)
    current_card = None  # the current model's side classifier names the species it knows by other names too
    if compare_with is not None:
        with contextlib.suppress(ModelError, OSError, ValueError):
            current_card = ModelCard.load(compare_with).data
    extras = model_extras(onnx_path, refit, fusion_seconds, current_card, species)
    metrics["new_model_infers_sides"] = "side_classifier" in extras
    if extras:
        extra |= extras
        write_card(onnx_path, model, name, version, species, trained_on, metrics, extra)
    # The new model's own suggestions, through its card as the app will run it: the card written above is what
    # model_on_held_out loads, so the card is written again with the figures it gives.
    if metrics["current_model_held_out"]:
        mine = model_on_held_out(onnx_path, val, appearance=False)
        metrics["new_model_suggestions_held_out"], metrics["new_model_fused"] = mine["suggestions"], mine["fused"]
        write_card(onnx_path, model, name, version, species, trained_on, metrics, extra)
    # Weights for later fine-tuning (half precision halves the file; fine-tuning restarts in float32).
    torch.save(
        {
            "model": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
            "config": config,
            "classes": trainer.classes,
        },
        out_dir / f"{name}.pt",
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run_train(args, progress=None, cancel=None) -> dict:
    overrides = {}
    if args.budget_minutes is not None:
        overrides.setdefault("training", {})["time_budget_minutes"] = args.budget_minutes
    if args.val_fraction is not None:
        overrides.setdefault("data", {})["val_fraction"] = args.val_fraction
    config = load_config(args.config, overrides)
    out_dir = Path(args.out)
    init_from = None
    if args.catalogue_source:
        with Catalogue(args.catalogue_source, create=False) as cat:
            samples = catalogue_samples(cat)
        species = sorted({s.individual.split(":", 1)[0] for s in samples})
        trained_on = f"confirmed sightings of catalogue {args.catalogue_source}"
        current = default_model_path().with_suffix(".pt") if not args.init else Path(args.init)
        init_from = current if current.is_file() else None
        if init_from and not args.config:  # fine-tune the current model's own architecture
            from .train import deep_merge

            config = deep_merge(torch.load(init_from, map_location="cpu", weights_only=False)["config"], overrides)
    else:
        samples = samples_from_dirs(args.data)
        species = sorted({Path(d).resolve().parent.name for d in args.data})
        trained_on = ", ".join(args.data)
        init_from = Path(args.init) if args.init else None
    if len({s.individual for s in samples}) < 2:
        raise ValueError("training needs confirmed photos of at least two individuals (two photos each)")
    train, val = split_by_identity(samples, config["data"]["val_fraction"], config["training"]["seed"])
    return train_and_export(
        config,
        train,
        val,
        out_dir,
        args.name,
        args.version,
        species,
        trained_on,
        init_from=init_from,
        resume=args.resume,
        progress=progress,
        cancel=cancel,
        compare_with=Path(args.compare_model) if getattr(args, "compare_model", None) else default_model_path(),
    )
