"""Validation NMS bounded by candidates, not by time (issue 22): every image is processed, the work per image is
bounded, and the detections are those of an unbounded NMS down to the last candidate kept."""

import math

import pytest
import torch
from ultralytics.utils import nms

from sdgas.models.detect.val import NMS_CANDIDATES_PER_DETECTION, SDGASValidator


def predictions(images: int = 3, anchors: int = 2100, classes: int = 6, spread: float = 300) -> torch.Tensor:
    """Raw head output (B, 4 + nc, anchors), xywh boxes scattered over a `spread`-pixel square: every anchor-class
    pair above conf 0.001, as from an untrained model at imgsz 320 (12600 candidates per image)."""
    torch.manual_seed(0)
    xy, wh = torch.rand(images, 2, anchors) * spread, torch.rand(images, 2, anchors) * 40 + 4
    return torch.cat([xy, wh, torch.rand(images, classes, anchors) * 0.9 + 0.01], 1)


def validator(max_det: int = 300) -> SDGASValidator:
    v = SDGASValidator(args={"conf": 0.001, "iou": 0.7, "max_det": max_det})
    v.end2end = False
    return v


def as_set(rows: torch.Tensor) -> set:
    return {tuple(r) for r in rows.tolist()}


def unbounded_nms(preds, max_det):
    return nms.non_max_suppression(preds, 0.001, 0.7, multi_label=True, max_det=max_det, max_time_img=math.inf,
                                   max_nms=10**9)


@pytest.mark.parametrize("max_det, spread", [(300, 300), (300, 60), (30, 300)])
def test_bounded_nms_equals_unbounded_nms_down_to_the_last_candidate(max_det, spread):
    """Detections equal an unbounded NMS's that score at least the k-th best candidate (k = 10 * max_det); with
    spread 60 so many boxes overlap that fewer than max_det survive within the top k."""
    preds = predictions(spread=spread)
    k = NMS_CANDIDATES_PER_DETECTION * max_det
    bounded, reference = validator(max_det).postprocess(preds), unbounded_nms(preds, max_det)
    for out, ref, scores in zip(bounded, reference, preds[:, 4:]):
        kth_score = scores.flatten().topk(k).values[-1]
        expected = ref[ref[:, 4] >= kth_score]
        assert len(out["conf"]) == len(expected) > 0 and torch.equal(out["conf"], expected[:, 4])
        rows = torch.cat([out["bboxes"], out["conf"][:, None], out["cls"][:, None]], 1)
        assert as_set(rows) == as_set(expected[:, :6])  # equal scores may come in another order


def test_nms_sees_at_most_the_bound_per_image(monkeypatch):
    """torchvision's NMS receives at most 10 * max_det boxes per image, from every image of the batch."""
    import torchvision

    sizes, nms_op = [], torchvision.ops.nms
    monkeypatch.setattr(torchvision.ops, "nms", lambda b, s, t: sizes.append(len(b)) or nms_op(b, s, t))
    outputs = validator().postprocess(predictions(images=4))
    assert sizes == [NMS_CANDIDATES_PER_DETECTION * 300] * 4
    assert all(len(o["conf"]) == 300 for o in outputs)
