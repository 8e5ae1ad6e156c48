"""Tiled inference and training for images much larger than the model input (`tile=`, ultralytics' meaning).

A PCB scan of 3000x2000 px with 10-30 px defects loses them when resized to 640. With `tile=True` the model looks at
windows of `imgsz` pixels, with `tile=N` at windows of N pixels (resized to imgsz); windows overlap by 20% and the
last ones are aligned to the image border, so every pixel is seen at full resolution; an image smaller than the
window is one window.

- Prediction (`tiled_predict`): every window is predicted, boxes are shifted back into the image, and the windows'
  detections are merged (`merge_windows`): NMS at `iou` removes the duplicates two windows both see whole, and a box
  cut by a window's inner edge is fused (union box) with a box of its class from a neighbouring window that reaches
  beyond that edge, when the two agree where both windows see the same pixels (IoU >= `iou`, NMS' own "same
  object" threshold, of the boxes clipped to the windows' shared region), so a defect crossing a seam is reported
  once. A weaker agreement (0.5) fused the defects of neighbouring images and cost 1.6 recall points on NEU-DET
  strips (docs/tiling.md). Judging the match only where both windows see the same pixels keeps a
  small defect apart from a larger one around it (intersection over the smaller box, SAHI's GREEDYNMM match, fuses
  them and loses both on NEU-DET). One Results per original image.
- Training (`tile_dataset`): windows are cut from the training and validation images once, with their boxes
  clipped to the window; a box keeps its clipped part when at least KEEP_VISIBLE of its area is inside the window
  (a sliver of a defect at a window's edge teaches nothing and would be an unfair target).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

from sdgas.data.check import list_images
from sdgas.models.detect.val import per_image_stats

OVERLAP = 0.2  # share of a window shared with its neighbour
KEEP_VISIBLE = 0.4  # a training box is kept in a window when this share of its area is inside the window
EDGE_PX = 2  # a box within this many pixels of a window's inner edge is taken as cut by it


def window_starts(length: int, size: int, overlap: float = OVERLAP) -> list:
    """Offsets of windows of `size` along an axis of `length`: a step of size * (1 - overlap), the last window
    aligned to the end; one window at 0 when the axis is not longer than a window."""
    if length <= size:
        return [0]
    step = max(1, round(size * (1 - overlap)))
    return sorted({*range(0, length - size, step), length - size})


def tile_windows(height: int, width: int, size: int, overlap: float = OVERLAP) -> list:
    """(x0, y0, x1, y1) of every window over an image, row by row."""
    return [(x, y, min(x + size, width), min(y + size, height))
            for y in window_starts(height, size, overlap) for x in window_starts(width, size, overlap)]


def inner_edge_cuts(boxes: torch.Tensor, windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 4) whether each box touches its window's left, top, right, bottom edge where that edge is not the image
    border (the box may be the cut-off part of a defect that goes on beyond it)."""
    x0, y0, x1, y1 = windows.T
    return torch.stack([(boxes[:, 0] - x0 < EDGE_PX) & (x0 > 0), (boxes[:, 1] - y0 < EDGE_PX) & (y0 > 0),
                        (x1 - boxes[:, 2] < EDGE_PX) & (x1 < width), (y1 - boxes[:, 3] < EDGE_PX) & (y1 < height)], 1)


def continues_past_cut(det: torch.Tensor, windows: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """(n, n) whether box j reaches beyond an edge that cuts box i: j shows what i's window could not see."""
    boxes, edges = det[None, :, :4], windows[:, None, :]
    beyond = torch.cat([boxes[..., :2] < edges[..., :2] - EDGE_PX, boxes[..., 2:] > edges[..., 2:] + EDGE_PX], 2)
    return (cuts[:, None, :] & beyond).any(2)


def clip_to(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(n, 4) each xyxy box clipped to its xyxy region (an empty region or no overlap gives a box of no area)."""
    return torch.cat([torch.max(boxes[:, :2], regions[:, :2]), torch.min(boxes[:, 2:], regions[:, 2:])], 1)


def area(boxes: torch.Tensor) -> torch.Tensor:
    """(n,) area of xyxy boxes, 0 for an empty one."""
    return (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(1)


def shared_region_iou(a: torch.Tensor, b: torch.Tensor, window_a: torch.Tensor, window_b: torch.Tensor) -> torch.Tensor:
    """(n,) IoU of the pairs of boxes a[k], b[k] clipped to the region their windows both cover (0 where none)."""
    shared = clip_to(window_a, window_b)
    a, b = clip_to(a, shared), clip_to(b, shared)
    inter = area(clip_to(a, b))
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def seam_pairs(det: torch.Tensor, windows: torch.Tensor, groups: torch.Tensor, cuts: torch.Tensor,
               iou: float) -> torch.Tensor:
    """(n, n) whether boxes i and j are one defect crossing a seam: same class group, one cut by an inner edge of its
    window and the other reaching beyond that edge, and IoU >= `iou` where both windows see the image. (Two boxes
    that merely both touch an edge are two guesses at one view, not two parts: fusing them only inflates the box.)"""
    candidates = (box_iou(det[:, :4], det[:, :4]) > 0) & (groups[:, None] == groups[None, :])
    completes = continues_past_cut(det, windows, cuts)
    candidates &= completes | completes.T
    i, j = torch.nonzero(candidates, as_tuple=True)
    agree = shared_region_iou(det[i, :4], det[j, :4], windows[i], windows[j]) >= iou
    pairs = torch.zeros_like(candidates)
    pairs[i[agree], j[agree]] = True
    return pairs


def merge_windows(det: torch.Tensor, windows: torch.Tensor, height: int, width: int, iou: float = 0.7,
                  agnostic: bool = False, max_det: int = 300) -> torch.Tensor:
    """One set of detections (n, 6: xyxy, conf, cls in image pixels) from the windows' overlapping ones.

    `windows` (n, 4) is the window each detection came from. NMS at `iou` first; then, highest confidence first, a
    box is fused (union box, the higher confidence) with the boxes `seam_pairs` finds to be the same defect.
    """
    if not len(det):
        return det
    groups = torch.zeros_like(det[:, 5]) if agnostic else det[:, 5]
    keep = batched_nms(det[:, :4], det[:, 4], groups, iou)
    det, windows, groups = det[keep].clone(), windows[keep], groups[keep]
    fuse = seam_pairs(det, windows, groups, inner_edge_cuts(det[:, :4], windows, height, width), iou)
    alive = torch.ones(len(det), dtype=torch.bool)
    for i in range(len(det)):  # highest confidence first (NMS returns them sorted)
        if not alive[i]:
            continue
        partners = fuse[i] & alive
        partners[i] = False
        if partners.any():
            det[i, :2] = torch.min(det[i, :2], det[partners, :2].min(0).values)
            det[i, 2:4] = torch.max(det[i, 2:4], det[partners, 2:4].max(0).values)
            alive &= ~partners
    return det[alive][:max_det]


def image_files(source) -> list:
    """Image paths of a file, a folder (sorted) or a list of them."""
    from ultralytics.data.utils import IMG_FORMATS

    items = source if isinstance(source, (list, tuple)) else [source]
    files = []
    for item in map(Path, items):
        files += sorted(p for p in item.iterdir() if p.suffix[1:].lower() in IMG_FORMATS) if item.is_dir() else [item]
    return files


def window_detections(model, img: np.ndarray, size: int, batch: int = 8, **kwargs) -> tuple:
    """(detections (n, 6: xyxy, conf, cls in image pixels), windows (n, 4): the window each came from) of every
    window of `size` over `img`, before the windows are merged."""
    window_kwargs = {**kwargs, "save": False, "verbose": False, "stream": False}
    windows = tile_windows(*img.shape[:2], size)
    dets, origins = [], []
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        crops = [img[y0:y1, x0:x1] for x0, y0, x1, y1 in chunk]
        for (x0, y0, x1, y1), r in zip(chunk, model.predict(crops, **window_kwargs)):
            d = r.boxes.data.clone().cpu()
            d[:, [0, 2]] += x0
            d[:, [1, 3]] += y0
            dets.append(d)
            origins.append(torch.tensor([[x0, y0, x1, y1]], dtype=d.dtype).expand(len(d), 4))
    return torch.cat(dets), torch.cat(origins)


def tiled_predict(model, source, size: int, batch: int = 8, **kwargs) -> list:
    """One ultralytics Results per image of `source`, predicted window by window (module doc)."""
    from ultralytics.engine.results import Results

    iou, agnostic = kwargs.get("iou") or 0.7, bool(kwargs.get("agnostic_nms"))
    max_det = kwargs.get("max_det") or 300
    results = []
    for file in image_files(source):
        img = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"tiled prediction: cannot read image '{file}'")
        det, windows = window_detections(model, img, size, batch, **kwargs)
        det = merge_windows(det, windows, *img.shape[:2], iou, agnostic, max_det)
        results.append(Results(img, path=str(file), names=model.names, boxes=det))
    return results


def read_labels(file: Path, height: int, width: int) -> tuple:
    """(classes (m,), xyxy pixel boxes (m, 4)) of an image's YOLO label file (empty for a defect-free image)."""
    from ultralytics.data.utils import img2label_paths

    label = Path(img2label_paths([str(file)])[0])
    rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
    xywh = rows[:, 1:5] * [width, height, width, height]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    return rows[:, 0], xyxy


def coco_dicts(records: list, names: dict) -> tuple:
    """COCO ground truth and detections (original pixels) of the tiled validation, as ultralytics builds them."""
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in names.items()]}
    dt = []
    for image_id, (cls, boxes, det) in enumerate(records):
        gt["images"].append({"id": image_id})
        for k, (c, (x0, y0, x1, y1)) in enumerate(zip(cls, boxes)):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(c),
                                      "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                      "iscrowd": 0})
        dt += [{"image_id": image_id, "category_id": int(d[5]), "bbox": [d[0], d[1], d[2] - d[0], d[3] - d[1]],
                "score": d[4]} for d in det.tolist()]
    return gt, dt


def tiled_val(model, validator, size: int, **kwargs):
    """Validate on the original (large) images of the dataset's val split: each image predicted window by window and
    merged, then matched against its own labels; ultralytics' metrics, the COCO APs and the inspection metrics."""

    data = validator.data
    files = [Path(f) for f in list_images(data["val"])]
    validator.names = validator.metrics.names = model.names
    validator.nc, validator.seen = len(model.names), 0
    records = []
    for file, r in zip(files, tiled_predict(model, files, size, **kwargs)):
        h, w = r.orig_shape
        cls, boxes = read_labels(file, h, w)
        det = r.boxes.data.cpu()
        pred = {"bboxes": det[:, :4], "conf": det[:, 4], "cls": det[:, 5]}
        truth = {"bboxes": torch.tensor(boxes, dtype=torch.float32), "cls": torch.tensor(cls, dtype=torch.float32)}
        validator.metrics.update_stats({**validator._process_batch(pred, truth), "target_cls": cls,
                                        "target_img": np.unique(cls), "conf": pred["conf"].numpy(),
                                        "pred_cls": pred["cls"].numpy(), "im_name": file.name})
        validator.seen += 1
        records.append((cls, boxes, det))
    validator.inspect(per_image_stats(validator.metrics.stats))
    validator.metrics.process(save_dir=validator.save_dir, plot=False)
    validator.gdict, dt = coco_dicts(records, model.names)
    validator.metrics.coco_stats = validator.run_cocoeval(dt, validator.gdict)
    validator.metrics.coco = {k: validator.metrics.coco_stats[k] for k in validator.metrics.coco}
    validator.print_results()
    return validator.metrics


def clip_boxes_to_window(boxes: np.ndarray, window) -> tuple:
    """(kept mask, boxes clipped to the window in window pixels) for pixel xyxy boxes; a box is kept when at least
    KEEP_VISIBLE of its area lies inside the window and the clipped part is at least 2 px wide and high."""
    x0, y0, x1, y1 = window
    clipped = np.stack([boxes[:, 0].clip(x0, x1), boxes[:, 1].clip(y0, y1), boxes[:, 2].clip(x0, x1),
                        boxes[:, 3].clip(y0, y1)], 1) - [x0, y0, x0, y0]
    wh, full = clipped[:, 2:] - clipped[:, :2], (boxes[:, 2:] - boxes[:, :2]).prod(1).clip(min=1e-9)
    keep = (wh.prod(1) / full >= KEEP_VISIBLE) & (wh >= 2).all(1)
    return keep, clipped


def tile_split(files: list, size: int, out: Path) -> int:
    """Cut every image of a split into windows under out/images, with clipped YOLO labels under out/labels."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    n = 0
    for file in files:
        img = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if img is None:
            continue  # the dataset check reports unreadable images; a window of nothing teaches nothing
        h, w = img.shape[:2]
        cls, boxes = read_labels(Path(file), h, w)
        for window in tile_windows(h, w, size):
            x0, y0, x1, y1 = window
            keep, clipped = clip_boxes_to_window(boxes, window)
            name = f"{Path(file).stem}_{x0}_{y0}"
            cv2.imwrite(str(out / "images" / f"{name}.jpg"), img[y0:y1, x0:x1])
            ww, wh = x1 - x0, y1 - y0
            rows = [f"{int(c)} {(b[0] + b[2]) / 2 / ww:.6f} {(b[1] + b[3]) / 2 / wh:.6f} {(b[2] - b[0]) / ww:.6f} "
                    f"{(b[3] - b[1]) / wh:.6f}" for c, b in zip(cls[keep], clipped[keep])]
            (out / "labels" / f"{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
            n += 1
    return n


def tile_dataset(data_yaml, size: int) -> str:
    """A dataset YAML of windows cut from `data_yaml`'s train and val images (cached beside the dataset, rebuilt
    when the source YAML changes); training on it computes the loss on windows (module doc)."""
    import json

    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER, YAML

    data = check_det_dataset(str(data_yaml))
    root = Path(data["path"]) / f"tiles-{size}"
    stamp = {"source": str(Path(data_yaml).resolve()), "mtime": Path(data_yaml).stat().st_mtime, "size": size}
    yaml = root / "data.yaml"
    if yaml.is_file() and (root / "source.json").is_file() and json.loads((root / "source.json").read_text()) == stamp:
        return str(yaml)
    counts = {split: tile_split(list_images(data[split]), size, root / split) for split in ("train", "val")}
    YAML.save(yaml, {"path": str(root), "train": "train/images", "val": "val/images", "nc": data["nc"],
                     "names": data["names"]})
    (root / "source.json").write_text(json.dumps(stamp))
    LOGGER.info(f"tile={size}: {counts['train']} training and {counts['val']} validation windows in {root}")
    return str(yaml)
