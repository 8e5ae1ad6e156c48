"""Grad-CAM heatmaps of the neck outputs (the head's inputs), as in the paper's Figure 9 (FPN vs PAFPN vs AES-FPN).

For each neck level feeding the head, the gradient of the summed top-k class scores with respect to that feature
map is averaged over space to weight its channels (Grad-CAM, Selvaraju et al. 2017); the ReLU of the weighted sum,
normalised and resized to the image, is overlaid on it.

    sdgas heatmap model=best.pt source=image.jpg imgsz=640 topk=100 project=runs name=heatmap
"""

from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.data.augment import LetterBox

from sdgas.engine.model import DEMO_IMAGES, SDGAS
from sdgas.nn.tasks import detect_head


def load_image(path, imgsz: int):
    """BGR image and its letterboxed (1, 3, imgsz, imgsz) float tensor in [0, 1]."""
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read image '{path}'")
    boxed = LetterBox((imgsz, imgsz), auto=False)(image=image)
    tensor = torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    return boxed, tensor


def neck_gradcam(model, tensor: torch.Tensor, topk: int = 100) -> list:
    """Grad-CAM maps (H_i, W_i) in [0, 1] for every input level of the detection head, finest first.

    Each level is explained by its own detections: the target of level i is the sum of the top-k best class scores
    among that level's anchors. (One target over all anchors would leave the coarse levels blank on small images,
    where the top-k all sit on the finest grid.)
    """
    head = detect_head(model)
    taps = [model.model[i] for i in head.f]
    features = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: features.__setitem__(i, out)) for i, m in
             enumerate(taps)]
    model.eval()
    try:
        with torch.enable_grad():
            tensor = tensor.clone().requires_grad_(True)
            y = model(tensor)
            y = y[0] if isinstance(y, (tuple, list)) else y
            scores = y[0, 4:4 + head.nc].amax(0)  # best class score per anchor, anchors level by level
            levels = [features[i] for i in range(len(taps))]
            per_level = scores.split([f.shape[2] * f.shape[3] for f in levels])
            grads = [torch.autograd.grad(s.topk(min(topk, s.numel())).values.sum(), f, retain_graph=True)[0]
                     for s, f in zip(per_level, levels)]
    finally:
        for h in hooks:
            h.remove()
    maps = []
    for feature, grad in zip(levels, grads):
        cam = torch.relu((grad.mean((2, 3), keepdim=True) * feature).sum(1))[0]
        maps.append((cam / cam.max().clamp(min=1e-12)).detach().numpy())
    return maps


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] map, resized to the image, as a JET colour map over a BGR image."""
    heat = cv2.applyColorMap((cv2.resize(cam, image.shape[1::-1]) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def save_heatmaps(model, source, out_dir: Path, imgsz: int = 640, topk: int = 100) -> list:
    """Write `<stem>_P3.jpg`, `_P4`, `_P5` overlays for one image or every image of a folder; returns the paths."""
    from ultralytics.data.utils import IMG_FORMATS

    source = Path(source)
    images = sorted(p for p in source.iterdir() if p.suffix[1:].lower() in IMG_FORMATS) if source.is_dir() else [source]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        boxed, tensor = load_image(path, imgsz)
        for level, cam in zip(("P3", "P4", "P5"), neck_gradcam(model, tensor, topk)):
            target = out_dir / f"{path.stem}_{level}.jpg"
            cv2.imwrite(str(target), overlay(boxed, cam))
            written.append(target)
    return written


def cli(overrides: dict) -> int:
    """`sdgas heatmap model=... source=... [imgsz=640 topk=100 project=runs name=heatmap]`."""

    unknown = set(overrides) - {"model", "source", "imgsz", "topk", "project", "name"}
    if unknown:
        raise SyntaxError(f"'sdgas heatmap' does not take {sorted(unknown)}; it takes model, source, imgsz, topk, "
                          f"project, name")
    if "model" not in overrides:
        raise ValueError("'sdgas heatmap' needs model=, a .pt checkpoint or a model YAML")
    model = SDGAS(overrides["model"]).model.float()
    out_dir = Path(overrides.get("project", "runs")) / str(overrides.get("name", "heatmap"))
    written = save_heatmaps(model, overrides.get("source", DEMO_IMAGES), out_dir, int(overrides.get("imgsz", 640)),
                            int(overrides.get("topk", 100)))
    print(f"{len(written)} heatmaps written to {out_dir}")
    return 0
