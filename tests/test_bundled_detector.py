"""The bundled animal detector on real trail-camera frames, against boxes drawn by eye (tests/data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.detect import CocoOnnxDetector, fold_detections, in_data_strip, load_detector, normalised_boxes
from engine.imageio import load_rgb, load_rgb_reduced
from engine.metrics import box_iou, detection_scores
from engine.pipeline import Pipeline

LABELS = json.loads((Path(__file__).parent / "data" / "trailcam_boxes.json").read_text())["frames"]


def labelled(name: str) -> dict:
    return next(f for f in LABELS if f["path"].endswith(name))


@pytest.fixture(scope="module")
def detector() -> CocoOnnxDetector:
    return load_detector()  # the default: what `herdbook import` uses


def animal_boxes(detector, data_dir, frame) -> np.ndarray:
    boxes = normalised_boxes(detector, data_dir / frame["path"])
    return np.asarray([b[:4] for b in boxes if b[5] == "animal"]).reshape(-1, 4)


@pytest.mark.parametrize(
    "name",
    [
        "2021-08-08_RCNX0063_fox.JPG",  # night infrared, fox at ~20% of the frame width
        "idaho-camera-traps.jpg",  # cougar in snow, day
        "mousedeer.JPG",  # the camtrapR full-size frame with its data strip, night flash
        "IMAG0104_wolf.JPG",
    ],
)
def test_labelled_animal_gets_a_box_on_it(detector, data_dir, name):
    frame = labelled(name)
    found = animal_boxes(detector, data_dir, frame)
    truth = np.asarray([b["box"] for b in frame["boxes"]])
    assert len(found), f"{name}: no animal found"
    assert box_iou(found[:1], truth).max() >= 0.5, f"{name}: best box {found[0]} misses {truth}"


def test_frame_without_animals_gets_no_animal_box(detector, data_dir):
    # A tour vehicle on a road (Browning trail camera): a vehicle, never an animal.
    frame = labelled("human_vehicle.jpg")
    assert len(animal_boxes(detector, data_dir, frame)) == 0
    assert [b[5] for b in normalised_boxes(detector, data_dir / frame["path"])] == ["vehicle"]


def test_night_camtrapr_thumbnails_mostly_found(detector, data_dir):
    # The 100x75 px camtrapR frames (leopard cats, mouse-deer, moonrats at night): measured, not assumed.
    night = [f for f in LABELS if f["path"].startswith("camtrapr/") and f["light"] == "night"]
    scores = detection_scores(night, [normalised_boxes(detector, data_dir / f["path"]) for f in night])
    assert scores["recall"] >= 0.5 and scores["precision"] >= 0.5, scores


def test_reduced_decode_keeps_full_size_and_orientation(data_dir):
    path = data_dir / "camtraps/animl/examples/Southwest/2021-06-30_SYFR0218_cougar.JPG"
    small, full = load_rgb_reduced(path, 512)
    assert full == (4032, 3024)
    assert 512 <= min(small.shape[:2]) < 3024 // 2  # decoded at 1/4, not at full size
    rotated = next((data_dir / "exif/jpg/orientation").glob("*_6.jpg"))
    small, full = load_rgb_reduced(rotated, 64)
    upright = load_rgb(rotated)
    assert full == (upright.shape[1], upright.shape[0])
    assert (small.shape[0] > small.shape[1]) == (upright.shape[0] > upright.shape[1])


def test_folding_adds_one_animals_class_scores_and_drops_parts():
    boxes = np.asarray([[10, 10, 110, 60], [10, 10, 110, 60], [20, 15, 50, 45], [300, 300, 320, 320]], float)
    scores = np.asarray([0.33, 0.22, 0.30, 0.2])
    found = fold_detections(boxes, scores, ["animal"] * 4, conf=0.25)
    assert len(found) == 1 and found[0][1] == pytest.approx(0.55)  # the head inside it and the weak one go
    assert in_data_strip(np.asarray([[0, 0, 50, 20], [0, 0, 50, 200], [0, 950, 40, 1000]], float), 1000).tolist() == [
        True,
        False,
        True,
    ]


def test_default_import_boxes_animals_and_lists_empty_frames(catalogue, data_dir, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    for name in ("2021-08-08_RCNX0063_fox.JPG", "Asian Plains_S012_2022-08-25_human_vehicle.jpg"):
        shutil.copy(data_dir / "camtraps/animl/examples/Southwest" / name, card / name)
    summary = Pipeline(catalogue).run(card)
    assert summary.stages["detect"].empty == 1
    assert any("1 with no animal" in line for line in summary.lines())
    rows = catalogue.query(
        "SELECT m.file_name, d.label, d.w, m.width FROM detections d JOIN media m ON m.id = d.media_id"
    )
    fox = [r for r in rows if r["file_name"].startswith("2021")]
    assert [r["label"] for r in fox] == ["animal"] and fox[0]["w"] < 0.5 * fox[0]["width"]  # a box, not the frame
    embedded = catalogue.query("SELECT count(*) AS n FROM embeddings")[0]["n"]
    assert embedded == 1  # the vehicle is not sent to re-identification
