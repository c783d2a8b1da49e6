"""`herdbook evaluate --data DIR`: figures for any folder of identified photos, through the app's embedder."""

from __future__ import annotations

import json
import shutil

from tests.conftest import herdbook


def test_evaluate_a_folder_of_identified_photos(tmp_path, data_dir):
    root = tmp_path / "mine"
    individuals = sorted(p.name for p in (data_dir / "nyala/train").iterdir())[:8]
    for ind in individuals:
        shutil.copytree(data_dir / "nyala/train" / ind, root / ind)
    files = {p.read_bytes() for p in root.rglob("*.jpg")}  # distinct by content
    res = herdbook("evaluate", "--data", root, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["photos"] == len(files) and out["individuals"] == 8
    a = out["across_encounters"]
    assert 0.0 <= a["rank1"] <= a["rank5"] <= 1.0 and a["queries"] > 0
    g = out["suggestions"]  # the product's path: detector crop, embedding, coat pattern, calibrated fusion
    assert out["fused"] and 0.0 <= g["top1"] <= g["top5"] <= 1.0 and g["queries"] == a["queries"]
    assert 0.0 <= g["auroc_known_vs_new"] <= 1.0 and 0.0 <= g["new_flagged"] <= 1.0
    text = herdbook("evaluate", "--data", root)
    assert "suggestions (appearance + coat pattern), across encounters: top-1" in text.stdout
    assert "new individual" in text.stdout


def test_evaluate_names_a_missing_folder(tmp_path):
    res = herdbook("evaluate", "--data", tmp_path / "nope")
    assert res.returncode == 1 and "nope: no such folder" in res.stderr
