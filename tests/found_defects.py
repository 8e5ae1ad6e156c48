"""Which labelled defects a set of detections finds (shared by tests that compare detections with labels)."""

import numpy as np
import torch
from torchvision.ops import box_iou


def found_at_iou50(det: torch.Tensor, cls: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """(m,) whether each labelled defect (class, xyxy pixel box) is found by a detection (n, 6: xyxy, conf, cls) of
    its class at IoU >= 0.5."""
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), det[:, :4].float())
    return ((iou >= 0.5) & (torch.as_tensor(cls)[:, None] == det[None, :, 5])).any(1)
