"""engine.side on real nyala photos through the bundled ONNX model: its gradient histograms are scikit-image's,
a crop and its mirror get opposite answers, and the card's classifier tells the flank of individuals it never saw."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.demo import viewpoint_from_name
from engine.imageio import load_rgb
from engine.reid import Embedder, default_model_path
from engine.side import HOG_BINS, HOG_CELL, HOG_SIZE, SideClassifier, gradient_histograms, mirrored, side_inputs
from tests.conftest import held_out_individuals

pytestmark = pytest.mark.skipif(not default_model_path().is_file(), reason="bundled model not built yet")


@pytest.fixture(scope="module")
def unseen_photos(data_dir):
    """Two photos (one number's two flanks where it has both) of each of 20 individuals the classifier never saw."""
    photos = []
    for individual in held_out_individuals()[:20]:
        files = sorted((data_dir / "nyala/train" / individual).glob("*.jpg"))
        photos += [(f, viewpoint_from_name(f.name, individual)) for f in files[:2]]
    return photos


def test_the_gradient_histograms_are_scikit_images_hog(unseen_photos):
    from skimage.feature import hog  # the independent oracle (a test dependency, not the app's)

    for path, _ in unseen_photos[:6]:
        gray = cv2.resize(cv2.cvtColor(load_rgb(path), cv2.COLOR_RGB2GRAY), HOG_SIZE, interpolation=cv2.INTER_AREA)
        ours = gradient_histograms(gray)
        theirs = hog(gray, HOG_BINS, (HOG_CELL, HOG_CELL), (1, 1), block_norm="L2", feature_vector=True)
        assert ours.shape == theirs.shape == (HOG_SIZE[0] * HOG_SIZE[1] // HOG_CELL**2 * HOG_BINS,)
        assert np.abs(ours - theirs).max() < 1e-6  # they differ only in the normalisation's epsilon


def test_a_crop_and_its_mirror_get_opposite_sides(unseen_photos):
    embedder = Embedder()
    classifier = SideClassifier.from_card(embedder.card.data)
    crops = [load_rgb(f) for f, _ in unseen_photos]
    flipped = [mirrored(c) for c in crops]
    vectors, mirrors = embedder.embed(crops), embedder.embed(flipped)
    inputs = side_inputs(vectors, mirrors, crops)
    p = classifier.probability_left(inputs)
    assert np.allclose(p + classifier.probability_left(side_inputs(mirrors, vectors, flipped)), 1.0, atol=1e-4)
    truth = [side for _, side in unseen_photos]
    assert all(side in ("left", "right") for side in truth)
    # every call: card 97.8 % on the unseen third (the embedding difference alone 93.6 %)
    assert np.mean([("left" if x > 0.5 else "right") == t for x, t in zip(p, truth, strict=True)]) >= 0.85
    told = [(s, t) for s, t in zip(classifier.sides(inputs), truth, strict=True) if s is not None]
    assert len(told) >= 0.7 * len(truth)
    assert sum(s == t for s, t in told) >= 0.9 * len(told)


def test_the_side_classifier_comes_from_the_card_and_knows_its_species():
    assert SideClassifier.from_card({}) is None
    species = ("nyala", "Tragelaphus angasii")
    classifier = SideClassifier(np.array([2.0, -1.0]), 0.5, species)
    assert classifier.applies_to(" Nyala") and classifier.applies_to("tragelaphus angasii")
    assert not classifier.applies_to("lion") and not classifier.applies_to(None)
    # sigmoid(2) = 0.88 -> confidence 0.76, kept; sigmoid(0.2) = 0.55 -> 0.10, not known; sigmoid(-2): right
    assert classifier.sides(np.array([[1.0, 0.0], [0.1, 0.0], [0.0, 2.0]])) == ["left", None, "right"]
    card = {"side_classifier": classifier.as_card()}
    again = SideClassifier.from_card(card)
    assert np.array_equal(again.weights, classifier.weights)
    assert (again.min_confidence, again.species) == (classifier.min_confidence, classifier.species)
    card["side_classifier"]["input"] = "embedding(crop) - embedding(mirrored crop)"  # 0.11.0's first inputs
    assert SideClassifier.from_card(card) is None  # its weights would be read against the wrong inputs


def test_the_cut_keeps_the_surest_photos_while_they_are_right_often_enough():
    from engine.side import side_figures
    from trainer.side import confidence_for_accuracy

    p_left = np.array([0.99, 0.05, 0.9, 0.8, 0.6, 0.45])  # confidences 0.98, 0.90, 0.80, 0.60, 0.20, 0.10
    left = np.array([True, False, True, False, True, True])  # the fourth (0.8 -> left) is wrong
    assert confidence_for_accuracy(p_left, left, 1.0) == pytest.approx(0.8)  # the three surest, all right
    assert confidence_for_accuracy(p_left, left, 0.8) == pytest.approx(0.2)  # 4 of 5 right down to 0.2
    assert confidence_for_accuracy(np.array([0.9]), np.array([False]), 0.985) == 1.0  # nothing is sure enough
    figures = side_figures(p_left, left, 0.8)
    assert figures["kept"] == pytest.approx(0.5) and figures["accuracy_kept"] == 1.0
    assert figures["accuracy_all"] == pytest.approx(4 / 6)
