"""Grad-CAM heatmaps of the neck outputs (paper Figure 9) for AES-FPN, FPN and PAFPN variants."""

import pytest
import torch

from sdgas.engine.model import DEMO_IMAGES
from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.tools.heatmap import load_image, neck_gradcam, save_heatmaps


def model_with_live_head(name):
    """A random-weight model whose zero-initialised prediction convs are randomised, so scores depend on features."""
    torch.manual_seed(0)
    model = SDGASDetectionModel(name, nc=6, verbose=False)
    for seq in [*model.model[-1].cv2, *model.model[-1].cv3]:
        torch.nn.init.normal_(seq[-1].weight, std=0.05)
    return model


@pytest.mark.parametrize("name", ["sdgasnet.yaml", "sdgasnet-fpn.yaml", "sdgasnet-pafpn.yaml"])
def test_gradcam_maps_cover_each_neck_level(name):
    image = next(DEMO_IMAGES.glob("*.jpg"))
    _, tensor = load_image(image, 128)
    maps = neck_gradcam(model_with_live_head(name), tensor, topk=50)
    assert [m.shape for m in maps] == [(16, 16), (8, 8), (4, 4)]
    for cam in maps:  # a level whose weighted sum is negative everywhere is all zero after Grad-CAM's ReLU
        assert cam.min() >= 0 and (abs(cam.max() - 1) < 1e-6 or cam.max() == 0)
    assert any(cam.std() > 0 for cam in maps)


def test_every_level_is_explained_by_its_own_detections():
    """With fewer top-k scores than the finest grid has anchors, the coarse levels still get a map: each level's
    target is its own top-k (a single global top-k would all land on P3 and leave P4/P5 without gradient)."""
    _, tensor = load_image(next(DEMO_IMAGES.glob("*.jpg")), 128)
    maps = neck_gradcam(model_with_live_head("sdgasnet.yaml"), tensor, topk=20)  # P3 alone has 256 anchors
    assert all(cam.std() > 0 for cam in maps)


def test_save_heatmaps_writes_one_overlay_per_level(tmp_path):
    image = next(DEMO_IMAGES.glob("*.jpg"))
    written = save_heatmaps(model_with_live_head("sdgasnet.yaml"), image, tmp_path, imgsz=96)
    assert [p.name for p in written] == [f"{image.stem}_{lvl}.jpg" for lvl in ("P3", "P4", "P5")]
    assert all(p.stat().st_size > 0 for p in written)
