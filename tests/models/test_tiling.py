"""tile= for images larger than the model input: window geometry, merging across seams, and predict/val/train on
large images built from real NEU-DET images laid side by side (their boxes moved accordingly)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sdgas.models.detect.tiling import (clip_boxes_to_window, merge_windows, read_labels, tile_windows,
                                        window_starts)
from found_defects import found_at_iou50
from tiny_sdgas import tiny_sdgas


def test_windows_overlap_by_a_fifth_and_end_at_the_border():
    """200-px windows over 1200 px: a 160-px step, the last window aligned to the border; a short axis is one window."""
    assert window_starts(1200, 200) == [0, 160, 320, 480, 640, 800, 960, 1000]
    assert window_starts(150, 200) == [0] and window_starts(200, 200) == [0]
    windows = tile_windows(450, 1200, 200)
    assert len(windows) == 8 * 3 and windows[-1] == (1000, 250, 1200, 450)
    covered = np.zeros((450, 1200), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == 200 and y1 - y0 == 200
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_windows(120, 90, 200) == [(0, 0, 90, 120)]  # smaller than a window: the whole image


def test_a_box_crossing_a_seam_is_reported_once():
    """A defect seen whole by one window and cut by the inner edge of the next is one box; two separate defects of the
    same class side by side stay two; a duplicate seen whole by two windows is removed by NMS."""
    windows = torch.tensor([[0, 0, 200, 200], [160, 0, 360, 200], [0, 0, 200, 200], [160, 0, 360, 200]], dtype=float)
    det = torch.tensor([[100, 50, 190, 90, 0.9, 2],   # whole in window 0
                        [160, 52, 190, 88, 0.6, 2],   # its cut-off part in window 1 (touches x=160)
                        [20, 120, 60, 160, 0.8, 1],   # a defect of another class
                        [22, 121, 61, 160, 0.7, 1]],  # the same defect seen again (overlap area) -> NMS
                       dtype=float)
    merged = merge_windows(det, windows, 200, 360)
    assert len(merged) == 2
    assert merged[0].tolist() == [100, 50, 190, 90, 0.9, 2]
    apart = torch.tensor([[10, 10, 50, 50, 0.9, 0], [60, 10, 100, 50, 0.8, 0]], dtype=float)
    assert len(merge_windows(apart, windows[:2], 200, 360)) == 2


def test_seam_fusion_joins_the_parts_of_one_defect_and_keeps_a_defect_inside_another_apart():
    """The parts two neighbouring windows see of one defect (each cut by its window's inner edge, agreeing where both
    windows see the image) become their union; a small defect lying inside a larger cut one is kept apart, since the
    two disagree in the windows' shared region (intersection over the smaller box would fuse them)."""
    windows = torch.tensor([[0, 0, 200, 200], [160, 0, 360, 200]], dtype=float)
    parts = torch.tensor([[120, 40, 200, 100, 0.8, 3],    # cut by window 0's right edge (x=200)
                          [160, 42, 260, 98, 0.7, 3]],    # cut by window 1's left edge (x=160)
                         dtype=float)
    assert merge_windows(parts, windows, 200, 360).tolist() == [[120, 40, 260, 100, 0.8, 3]]
    nested = torch.tensor([[100, 20, 200, 180, 0.8, 1],   # a large defect cut by window 0's right edge
                           [165, 60, 185, 80, 0.7, 1]],   # a small one inside it, seen whole by window 1
                          dtype=float)
    assert len(merge_windows(nested, windows, 200, 360)) == 2


def test_training_boxes_are_clipped_by_the_visible_share_rule():
    """A box keeps its clipped part in a window when at least 40% of its area is inside."""
    boxes = np.array([[150, 10, 250, 60], [190, 10, 290, 60], [10, 10, 30, 30]], float)
    keep, clipped = clip_boxes_to_window(boxes, (0, 0, 200, 200))
    assert keep.tolist() == [True, False, True]  # 50% inside, 10% inside, whole
    assert clipped[0].tolist() == [150, 10, 200, 60]


def large_image_dataset(folder: Path, sources: list, grid=(2, 3)) -> Path:
    """Large images, each a grid of 200x200 NEU-DET images with their boxes moved into place, as a YOLO dataset."""
    rows, cols = grid
    per = rows * cols
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for k in range(len(sources) // per):
            big, lines = np.zeros((rows * 200, cols * 200, 3), np.uint8), []
            for i, src in enumerate(sources[k * per:(k + 1) * per]):
                r, c = divmod(i, cols)
                big[r * 200:(r + 1) * 200, c * 200:(c + 1) * 200] = cv2.resize(cv2.imread(str(src)), (200, 200))
                cls, boxes = read_labels(src, 200, 200)
                for cl, (x0, y0, x1, y1) in zip(cls, boxes + [c * 200, r * 200, c * 200, r * 200]):
                    w, h = cols * 200, rows * 200
                    lines.append(f"{int(cl)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}")
            cv2.imwrite(str(folder / "images" / split / f"big{k}.jpg"), big)
            (folder / "labels" / split / f"big{k}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: c{i}" for i in range(6))
    (folder / "data.yaml").write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnc: 6\nnames:\n{names}\n")
    return folder / "data.yaml"


@pytest.fixture(scope="module")
def large(neu_subset, tmp_path_factory):
    best, _, _ = tiny_sdgas(neu_subset, tmp_path_factory)
    sources = sorted((neu_subset.parent / "images" / "train").glob("*.jpg"))[:12]
    return best, large_image_dataset(tmp_path_factory.mktemp("large"), sources)


@pytest.mark.slow  # trains a model
def test_tiled_predict_val_and_train_on_large_images(large, tmp_path):
    """predict tile=200: one Results per large image, boxes in its pixels; val tile=200: evaluated against the large
    images' own labels; train tile=200: one epoch on windows cut from them."""
    from sdgas import SDGAS

    best, data = large
    images = data.parent / "images" / "val"
    model = SDGAS(best)
    results = model.predict(str(images), tile=200, imgsz=128, conf=0.01, save=True, project=str(tmp_path),
                            name="pred")
    assert [Path(r.path).name for r in results] == ["big0.jpg", "big1.jpg"]
    for r in results:
        assert r.orig_shape == (400, 600) and len(r.boxes)
        xyxy = r.boxes.xyxy
        assert (xyxy[:, [0, 2]] >= 0).all() and (xyxy[:, [0, 2]] <= 600).all() and (xyxy[:, [1, 3]] <= 400).all()
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["big0.jpg", "big1.jpg"]

    metrics = SDGAS(best).val(data=str(data), tile=200, imgsz=128, project=str(tmp_path), name="val")
    labelled = sum(len(read_labels(f, 400, 600)[0]) for f in images.glob("*.jpg"))
    assert metrics.nt_per_class.sum() == labelled and metrics.inspection["defective_images"] == 2
    assert 0 <= metrics.box.map50 <= 1 and set(metrics.coco) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}

    SDGAS("sdgasnet.yaml").train(data=str(data), tile=200, imgsz=128, epochs=1, batch=4, workers=0, plots=False,
                                 project=str(tmp_path), name="train", val=False)
    windows = data.parent / "tiles-200" / "train" / "images"
    assert len(list(windows.glob("*.jpg"))) == 2 * len(tile_windows(400, 600, 200))
    assert (tmp_path / "train" / "weights" / "last.pt").is_file()


@pytest.mark.slow  # uses the shipped trained weights on all 360 val images
def test_tile_finds_the_defects_each_small_image_finds_alone(neu_det, tmp_path):
    """Every NEU-DET val image, in name order, laid side by side in strips of 60 (200x12000 px, lossless): predict
    tile=200 on each strip finds the labelled defects at IoU 0.5 as well as predicting each image alone (recall
    within 2 points, pooled over the 360 images). Name order puts images of one class next to each other, the hard
    case for seam fusion (a neighbour's defect touching the seam looks like a continuation)."""
    from sdgas import SDGAS

    model, per_strip = SDGAS("sdgasnet-neu.pt"), 60
    files = sorted((neu_det / "images" / "val").glob("*.jpg"))
    alone_hits, tiled_hits = [], []
    for s in range(0, len(files), per_strip):
        strip, cls, boxes = np.zeros((200, 200 * per_strip, 3), np.uint8), [], []
        chunk = files[s:s + per_strip]
        for k, (f, r) in enumerate(zip(chunk, model.predict([str(f) for f in chunk], imgsz=160, verbose=False))):
            strip[:, 200 * k:200 * (k + 1)] = cv2.imread(str(f))
            c, b = read_labels(f, 200, 200)
            alone_hits.append(found_at_iou50(r.boxes.data.cpu(), c, b))
            cls.append(c)
            boxes.append(b + [200 * k, 0, 200 * k, 0])
        path = tmp_path / f"strip{s}.png"
        cv2.imwrite(str(path), strip)
        tiled = model.predict(str(path), tile=200, imgsz=160, max_det=1000)[0].boxes.data.cpu()
        tiled_hits.append(found_at_iou50(tiled, np.concatenate(cls), np.concatenate(boxes)))
    alone, tiled = torch.cat(alone_hits).float().mean(), torch.cat(tiled_hits).float().mean()
    assert len(torch.cat(alone_hits)) > 800 and alone > 0.6  # every val label, found by a trained model
    print(f"recall@0.5 each image alone {alone:.4f}, tile=200 on strips {tiled:.4f}")
    assert tiled >= alone - 0.02, f"tile=200 recall {tiled:.3f} vs each image alone {alone:.3f}"
