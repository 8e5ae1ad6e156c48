"""Tiled prediction on a large image built from NEU-DET val images: sdgas' tile= against SAHI's sliced prediction and
against predicting each small image alone; recall at IoU 0.5 on the labels, detections and time. Writes JSON.

    python benchmarks/tiling.py --model best.pt [--imgsz 160] [--conf 0.25] [--grid 4 6] [--start 0] [--max-det 300]
        [--out docs/tiling]

The large image holds every k-th val image (k = 360 // cells, so all six classes appear and every cell is filled),
from the `--start`-th on: another start gives a mosaic of other images.

SAHI (`pip install sahi`) is only needed for its row; it is not an sdgas dependency. Both tilers use 200-px
windows with 20% overlap; SAHI runs with its defaults (GREEDYNMM, IOS 0.5, plus a whole-image pass).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from sdgas import SDGAS
from sdgas.models.detect.tiling import read_labels
from ultralytics.utils.cpu import CPUInfo

NEU_VAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det" / "images" / "val"


def large_image(files: list, rows: int, cols: int) -> tuple:
    """(image, labels (m, 5): cls x0 y0 x1 y1 in its pixels, the small images' offsets)."""
    big, labels, offsets = np.zeros((rows * 200, cols * 200, 3), np.uint8), [], []
    for k, f in enumerate(files[:rows * cols]):
        r, c = divmod(k, cols)
        big[r * 200:(r + 1) * 200, c * 200:(c + 1) * 200] = cv2.imread(str(f))
        cls, boxes = read_labels(f, 200, 200)
        labels += [[cl, *(b + [c * 200, r * 200, c * 200, r * 200])] for cl, b in zip(cls, boxes)]
        offsets.append((c * 200, r * 200))
    return big, np.array(labels, float), offsets


def recall(det: torch.Tensor, labels: np.ndarray) -> float:
    """Share of labelled defects matched by a detection of their class at IoU >= 0.5."""
    if not len(det):
        return 0.0
    gt = torch.tensor(labels, dtype=torch.float32)
    hit = (box_iou(gt[:, 1:], det[:, :4].float()) >= 0.5) & (gt[:, :1] == det[None, :, 5])
    return float(hit.any(1).float().mean())


def per_image(model, files, offsets, imgsz, conf) -> torch.Tensor:
    dets = []
    for f, (x, y) in zip(files, offsets):
        d = model.predict(str(f), imgsz=imgsz, conf=conf, verbose=False)[0].boxes.data.clone().cpu()
        d[:, [0, 2]] += x
        d[:, [1, 3]] += y
        dets.append(d)
    return torch.cat(dets)


def sahi_prediction(weights, image, imgsz, conf) -> torch.Tensor:
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    detector = AutoDetectionModel.from_pretrained(model_type="ultralytics", model_path=str(weights),
                                                  confidence_threshold=conf, image_size=imgsz, device="cpu")
    result = get_sliced_prediction(image[..., ::-1].copy(), detector, slice_height=200, slice_width=200,
                                   overlap_height_ratio=0.2, overlap_width_ratio=0.2, verbose=0)
    return torch.tensor([[*p.bbox.to_xyxy(), p.score.value, p.category.id] for p in result.object_prediction_list]
                        or np.zeros((0, 6)), dtype=torch.float32)


def timed(fn, rounds: int):
    times, out = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 6))
    parser.add_argument("--start", type=int, default=0, help="first val image of the mosaic (another set of images)")
    parser.add_argument("--max-det", type=int, default=300, help="tile=: detections kept for the whole large image")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/tiling")
    args = parser.parse_args()
    rows, cols = args.grid
    files = sorted(NEU_VAL.glob("*.jpg"))
    files = files[args.start::max(1, len(files) // (rows * cols))][:rows * cols]
    image, labels, offsets = large_image(files, rows, cols)
    big = Path(tempfile.gettempdir()) / "sdgas-tiling-benchmark.png"  # lossless: a JPEG would change the pixels
    cv2.imwrite(str(big), image)
    model = SDGAS(args.model)
    model.predict(str(files[0]), imgsz=args.imgsz, verbose=False)  # warm-up
    runs = {
        "each small image alone": lambda: per_image(model, files, offsets, args.imgsz, args.conf),
        "sdgas tile=200": lambda: model.predict(str(big), tile=200, imgsz=args.imgsz, conf=args.conf,
                                                     max_det=args.max_det)[0].boxes.data,
    }
    try:
        import sahi  # noqa: F401

        runs["SAHI sliced (GREEDYNMM, IOS 0.5)"] = lambda: sahi_prediction(args.model, image, args.imgsz, args.conf)
    except ImportError:
        print("SAHI not installed: its row is skipped")
    rows_out = []
    for name, fn in runs.items():
        det, seconds = timed(fn, args.rounds)
        rows_out.append({"method": name, "recall@0.5": round(recall(det.cpu(), labels), 4), "detections": len(det),
                         "median_s": round(seconds, 3)})
    result = {"cpu": CPUInfo.name(), "model": str(args.model), "image": list(image.shape[:2]), "labels": len(labels),
              "images": [f.name for f in files],
              "imgsz": args.imgsz, "conf": args.conf, "max_det": args.max_det, "rounds": args.rounds, "rows": rows_out}
    print(f"{'method':<36}{'recall@0.5':>11}{'dets':>7}{'median s':>10}")
    for r in rows_out:
        print(f"{r['method']:<36}{r['recall@0.5']:>11}{r['detections']:>7}{r['median_s']:>10}")
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
