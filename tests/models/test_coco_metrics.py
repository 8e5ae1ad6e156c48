"""COCO metrics: sdgas' AP numbers equal a direct pycocotools evaluation of the same predictions.

SD-GASNet is trained briefly on a real NEU-DET subset and validated on its training images (tests/tiny_sdgas.py), so
that its predictions score a non-zero AP. The reference evaluation builds its own COCO ground truth from the YOLO
label files and reads sdgas' predictions.json; it shares no code with sdgas or ultralytics.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdgas import SDGAS
from sdgas.cli import main as sdgas_main
from sdgas.models.detect.val import COCO_AP, COCO_AR, PAPER_EVAL
from tiny_sdgas import TRAIN, tiny_sdgas, val_images

pytest.importorskip("pycocotools")  # the reference evaluator (a dev dependency)

VAL = dict(imgsz=128, batch=8, device="cpu", workers=0, plots=False, verbose=False, exist_ok=True)


@pytest.fixture(scope="module")
def trained(neu_subset, tmp_path_factory):
    """(best.pt, data.yaml validating on the subset's training images, runs folder)."""
    return tiny_sdgas(neu_subset, tmp_path_factory)


@pytest.fixture
def log_lines():
    """Messages ultralytics' LOGGER emits during the test (its handler writes to the stream of import time)."""
    import logging

    from ultralytics.utils import LOGGER

    lines, handler = [], logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield lines
    LOGGER.removeHandler(handler)


def yolo_to_coco(images: Path, names: list) -> dict:
    """COCO ground truth from a YOLO image folder and its labels/ twin: original pixels, category = class + 1."""
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    labels = images.parent.parent / "labels" / images.name
    for image_id, file in enumerate(sorted(images.glob("*.jpg")), 1):
        h, w = cv2.imread(str(file)).shape[:2]
        gt["images"].append({"id": image_id, "file_name": file.name, "width": w, "height": h})
        for line in (labels / f"{file.stem}.txt").read_text().splitlines():
            c, xc, yc, bw, bh = map(float, line.split())
            bw, bh = bw * w, bh * h
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                      "bbox": [xc * w - bw / 2, yc * h - bh / 2, bw, bh], "area": bw * bh,
                                      "iscrowd": 0})
    return gt


def pycocotools_stats(images: Path, names: list, predictions: Path, tmp: Path) -> np.ndarray:
    """The 12 COCO numbers of predictions.json (keyed by file name) against the YOLO labels, by pycocotools alone."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict = yolo_to_coco(images, names)
    (tmp / "gt.json").write_text(json.dumps(gt_dict))
    ids = {im["file_name"]: im["id"] for im in gt_dict["images"]}
    dets = [{**d, "image_id": ids[d["file_name"]]} for d in json.loads(predictions.read_text())]
    gt = COCO(str(tmp / "gt.json"))
    cocoeval = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
    cocoeval.evaluate()
    cocoeval.accumulate()
    cocoeval.summarize()
    return cocoeval.stats


@pytest.mark.slow  # trains a model
def test_ap_equals_direct_pycocotools(trained, tmp_path, log_lines):
    """sdgas val (faster-coco-eval) returns, prints and writes the COCO numbers of an independent pycocotools run."""
    backend = "faster-coco-eval"
    best, data, runs = trained
    metrics = SDGAS(best).val(data=str(data), project=str(runs), name=f"val-{backend}", **VAL)

    predictions = metrics.save_dir / "predictions.json"
    dets = json.loads(predictions.read_text())
    assert dets and min(d["score"] for d in dets) < PAPER_EVAL["conf"]  # default conf 0.001, not the paper's
    reference = pycocotools_stats(val_images(data)[0].parent, list(metrics.names.values()), predictions, tmp_path)
    ours = np.array([metrics.coco_stats[k] for k in COCO_AP + COCO_AR])
    print(f"{backend}: sdgas {np.round(ours[:6], 4).tolist()}  pycocotools {np.round(reference[:6], 4).tolist()}  "
          f"max |diff| {np.abs(ours - reference).max():.2e}")
    assert metrics.coco["AP"] >= 0.001 and metrics.coco["AP50"] >= 0.01, f"AP too close to 0: {metrics.coco}"
    np.testing.assert_allclose(ours, reference, rtol=0, atol=5e-4)  # equal to 3 decimals
    assert metrics.coco == {k: metrics.coco_stats[k] for k in COCO_AP}
    assert f"COCO ({backend}): " + "  ".join(f"{k} {metrics.coco[k]:.3f}" for k in COCO_AP) in log_lines

    stats = metrics.results_dict  # the stats dict, with ultralytics' own keys first
    assert list(stats)[:4] == ["metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"]
    assert all(stats[f"metrics/{k}(B)"] == metrics.coco[k] for k in COCO_AP)
    header, row = (metrics.save_dir / "results.csv").read_text().splitlines()
    written = dict(zip(header.split(","), map(float, row.split(","))))
    assert all(written[f"metrics/{k}(B)"] == pytest.approx(metrics.coco[k], abs=1e-5) for k in COCO_AP)
    assert metrics.complexity["params"] > 1e6 and metrics.complexity["GFLOPs"] > 1  # fused model at 640


@pytest.mark.slow  # trains a model
def test_training_results_csv_has_coco_columns(trained):
    """Each epoch's results.csv row carries metrics/AP(B) ... metrics/APl(B), also on epochs without validation."""
    best, _, _ = trained
    rows = (best.parent.parent / "results.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert [f"metrics/{k}(B)" for k in COCO_AP] == [h for h in header if h.startswith("metrics/AP")]
    assert not any("mAP_small" in h for h in header)  # ultralytics' duplicate size columns are dropped
    assert len(rows) == 1 + TRAIN["epochs"] and all(len(r.split(",")) == len(header) for r in rows[1:])
    last = dict(zip(header, map(float, rows[-1].split(","))))  # the final epoch is always validated
    assert last["metrics/AP50(B)"] > 0


@pytest.mark.slow  # trains a model
def test_paper_eval_from_the_cli(trained, log_lines):
    """`sdgas val ... paper_eval=True` validates with conf 0.03, NMS IoU 0.65, max_det 300 and reports COCO AP."""
    best, data, runs = trained
    args = ["val", f"model={best}", f"data={data}", f"project={runs}", "name=paper", "paper_eval=True"]
    assert sdgas_main(args + [f"{k}={v}" for k, v in VAL.items()]) == 0
    assert any(line.startswith("COCO (faster-coco-eval): AP ") for line in log_lines)
    dets = json.loads((runs / "paper" / "predictions.json").read_text())
    assert dets and min(d["score"] for d in dets) >= PAPER_EVAL["conf"] - 1e-5
    header, row = (runs / "paper" / "results.csv").read_text().splitlines()
    assert "metrics/AP(B)" in header.split(",")

    model, seen = SDGAS(best), {}  # the Python API: the validator receives exactly the paper's settings
    model.add_callback("on_val_start", lambda validator: seen.update(vars(validator.args)))
    model.val(data=str(data), project=str(runs), name="paper-api", paper_eval=True, **VAL)
    assert {k: seen[k] for k in PAPER_EVAL} == PAPER_EVAL


@pytest.mark.slow  # trains a model
def test_paper_eval_reaches_the_training_validator(trained):
    """`sdgas train ... paper_eval=True` validates every epoch with the paper's settings (sdgas key stripped)."""
    from sdgas.models.detect import SDGASTrainer

    _, data, runs = trained
    trainer = SDGASTrainer(overrides=dict(model="sdgasnet.yaml", data=str(data), paper_eval=True, project=str(runs),
                                          name="paper-train", exist_ok=True, device="cpu"))
    trainer.test_loader = None  # built by _setup_train; the validator does not need it to be constructed
    args = trainer.get_validator().args
    assert {k: getattr(args, k) for k in PAPER_EVAL} == PAPER_EVAL and not hasattr(args, "paper_eval")


def test_validation_nms_has_no_time_limit(monkeypatch):
    """ultralytics' NMS stops after 2 s + 0.05 s/image and drops the rest of the batch; on a slow CPU that silently
    lowers the AP. SDGASValidator keeps every image's detections however long NMS takes (here: a clock that jumps
    10 s per reading)."""
    import torch
    from ultralytics.utils import nms

    from sdgas.models.detect.val import SDGASValidator

    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(nms.time, "time", lambda: float(next(clock)))
    validator = SDGASValidator(args={"conf": 0.001, "iou": 0.7, "max_det": 300})
    validator.end2end = False
    torch.manual_seed(0)
    boxes = torch.rand(4, 4, 500) * 100 + torch.tensor([0, 0, 20, 20]).view(1, 4, 1)
    scores = torch.rand(4, 6, 500)
    outputs = validator.postprocess(torch.cat([boxes, scores], 1))
    assert len(outputs) == 4 and all(len(o["bboxes"]) > 0 for o in outputs)
