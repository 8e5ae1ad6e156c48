"""Inspection metrics (FROC, escape/overkill rates) and per-class thresholds that travel with the model."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdgas.models.detect.inspection import (class_thresholds, conf_for_escape_rate, froc, image_rates,
                                            recall_at_false_calls)
from tiny_sdgas import tiny_sdgas


def image(conf, cls, hit, targets):
    """One image's validation stats: hits at IoU 0.5 only (column 0 of ultralytics' 10-threshold tp)."""
    tp = np.zeros((len(conf), 10), bool)
    tp[:, 0] = hit
    return {"conf": np.array(conf, float), "pred_cls": np.array(cls, float), "tp": tp,
            "target_cls": np.array(targets, float)}


@pytest.fixture
def three_images():
    """A: defects of class 0 and 1; B: one defect of class 0; C: defect-free. Worked through by hand below."""
    return [image([0.9, 0.6, 0.3], [0, 1, 1], [True, False, True], [0, 1]),
            image([0.8, 0.2], [0, 0], [False, True], [0]),
            image([0.7], [1], [False], [])]


def test_froc_and_image_rates_match_a_hand_computation(three_images):
    """Pooled by score: .9 hit, .8 false, .7 false, .6 false, .3 hit, .2 hit; 3 defects, 3 images."""
    thresholds, false_calls, recall = froc(three_images)
    assert thresholds.tolist() == [0.9, 0.8, 0.7, 0.6, 0.3, 0.2]
    assert np.allclose(false_calls, [0, 1 / 3, 2 / 3, 1, 1, 1])
    assert np.allclose(recall, [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert recall_at_false_calls(three_images) == pytest.approx({0.1: 1 / 3, 0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0})
    assert recall_at_false_calls(three_images, cls=0) == pytest.approx({0.1: 0.5, 0.5: 1.0, 1.0: 1.0, 2.0: 1.0})
    assert math.isnan(recall_at_false_calls(three_images, cls=5)[1.0])  # no labels of that class
    assert image_rates(three_images, 0.5) == {"escape_rate": 0.0, "overkill_rate": 1.0, "defective_images": 2,
                                              "good_images": 1}
    assert image_rates(three_images, 0.85)["escape_rate"] == 0.5 and image_rates(three_images, 0.85)[
        "overkill_rate"] == 0.0
    assert conf_for_escape_rate(three_images, 0.0) == 0.8  # B's strongest call: above it B escapes
    assert conf_for_escape_rate(three_images, 0.5) == 0.9
    assert class_thresholds(three_images, 1.0, 2) == {0: 0.2, 1: 0.3}
    assert class_thresholds(three_images, 0.5, 2) == {0: 0.9, 1: 0.3}
    assert image_rates(three_images, 0.0, {0: 0.95, 1: 0.95})["escape_rate"] == 1.0  # all calls under their class's


@pytest.fixture(scope="module")
def with_good_images(neu_subset, tmp_path_factory):
    """The tiny model's train-as-val set plus four defect-free images (flat noise, empty label files)."""
    best, data, _ = tiny_sdgas(neu_subset, tmp_path_factory)
    folder = tmp_path_factory.mktemp("good")
    text = data.read_text()
    root = Path(next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("path:")))
    images, labels = folder / "images" / "val", folder / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for src in sorted((root / "images" / "train").glob("*.jpg")):
        (images / src.name).symlink_to(src)
        (labels / f"{src.stem}.txt").write_text((root / "labels" / "train" / f"{src.stem}.txt").read_text())
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(images / f"good_{i}.jpg"), (128 + rng.normal(0, 4, (200, 200))).clip(0, 255).astype(np.uint8))
        (labels / f"good_{i}.txt").write_text("")
    yaml = folder / "data.yaml"
    yaml.write_text(text.replace(f"path: {root}", f"path: {folder}").replace("val: images/train", "val: images/val")
                    .replace("train: images/train", "train: images/val"))
    return best, yaml


@pytest.mark.slow  # trains a model
def test_val_reports_inspection_metrics_and_class_thresholds_round_trip(with_good_images, tmp_path):
    """`sdgas val recall=0.5` on NEU-DET images plus defect-free ones: FROC and escape/overkill rates printed,
    returned and saved; per-class thresholds meet the target recall on that set, are saved into the .pt, reload in a
    fresh process, apply in predict unless conf= is given, and travel into safetensors and ONNX exports."""
    best, data = with_good_images
    model_file = tmp_path / "best.pt"
    model_file.write_bytes(best.read_bytes())
    result = subprocess.run([sys.executable, "-m", "sdgas.cli", "val", f"model={model_file}", f"data={data}",
                             "imgsz=128", "batch=4", "recall=0.5", f"project={tmp_path}", "name=val", "plots=True"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "Defect recall (IoU 0.5) at 0.1 FP/img" in log and "overkill rate" in log and "Per-class thresholds" in log
    report = json.loads((tmp_path / "val" / "inspection.json").read_text())
    assert report["good_images"] == 4 and report["defective_images"] == 24
    assert 0 <= report["overkill_rate"] <= 1 and (tmp_path / "val" / "FROC_curve.png").is_file()
    class_conf = {int(k): v for k, v in report["class_conf"].items()}
    assert class_conf and all(0 < t <= 1 for t in class_conf.values())

    probe = f"""
import json, sys
from sdgas import SDGAS
model = SDGAS({str(model_file)!r})
auto = model.predict({str(data.parent / 'images' / 'val')!r}, imgsz=128, verbose=False)
low = model.predict({str(data.parent / 'images' / 'val')!r}, imgsz=128, verbose=False, conf=0.001)
st = SDGAS(model.export(format="safetensors"))
onnx = SDGAS(model.export(format="onnx", imgsz=128))
onnx_auto = onnx.predict({str(data.parent / 'images' / 'val')!r}, imgsz=128, verbose=False)
print(json.dumps({{"class_conf": model.model.class_conf, "st": st.model.class_conf,
                   "auto": [[float(b.conf), int(b.cls)] for r in auto for b in r.boxes],
                   "onnx_auto": [[float(b.conf), int(b.cls)] for r in onnx_auto for b in r.boxes],
                   "low": sum(len(r.boxes) for r in low)}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert {int(k): v for k, v in fresh["class_conf"].items()} == pytest.approx(class_conf)
    assert {int(k): v for k, v in fresh["st"].items()} == pytest.approx(class_conf)
    for key in ("auto", "onnx_auto"):
        assert all(conf >= class_conf.get(cls, 0.0) - 1e-6 for conf, cls in fresh[key]), key
    assert fresh["low"] > len(fresh["auto"])  # conf= given: thresholds not applied


@pytest.mark.slow  # trains a model
def test_class_thresholds_meet_the_recall_target_on_val(with_good_images, tmp_path):
    """At its threshold, each class keeps at least the target share of its labelled defects (IoU 0.5) on the set the
    thresholds were chosen on, recomputed from a fresh validation's per-image stats."""
    from sdgas import SDGAS
    from sdgas.models.detect.val import SDGASValidator

    best, data = with_good_images
    seen = {}

    class Recording(SDGASValidator):
        def inspect(self, images):
            seen["images"] = images
            super().inspect(images)

    metrics = SDGAS(best).val(data=str(data), imgsz=128, batch=4, plots=False, recall=0.5, validator=Recording,
                              project=str(tmp_path), name="v")
    images = seen["images"]
    assert metrics.class_conf
    for c, t in metrics.class_conf.items():
        hits = sum(int(((im["pred_cls"] == c) & im["tp"][:, 0] & (im["conf"] >= t)).sum()) for im in images)
        labelled = sum(int((im["target_cls"] == c).sum()) for im in images)
        best_recall = sum(int(((im["pred_cls"] == c) & im["tp"][:, 0]).sum()) for im in images) / labelled
        assert hits / labelled >= min(0.5, best_recall) - 1e-9, (c, t)
