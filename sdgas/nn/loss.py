"""Stage-1 detection loss of SD-GASNet as the authors' code computes it (docs/official-arch.md §5, paper §3.4.2).

L = cls * VFL + box * (1 - GIoU) + dfl * DFL, TAL assigner with topk 13, alpha 1.0, beta 6.0, and gains
1.0 / 2.5 / 0.5. Built on ultralytics' v8DetectionLoss: only the classification term, the IoU form and the
assigner settings differ.
"""

from types import SimpleNamespace

import torch.nn as nn
import torch.nn.functional as F
from ultralytics.utils.loss import BboxLoss, v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import TaskAlignedAssigner, bbox2dist

from sdgas.utils import sdgas_setting

LOSS_KEYS = ("cls_loss", "iou_loss", "tal_topk", "tal_alpha", "tal_beta")  # defaults: cfg/default.yaml


class VarifocalBCE(nn.Module):
    """Element-wise varifocal loss (Zhang et al. 2021; official `VarifocalLoss`), a drop-in for BCE(reduction='none').

    logits, target: (B, A, nc); target holds the TAL soft scores q. The weight is alpha * p^gamma on negatives
    and q on positives (y = q > 0), as in the official code, where the sum is divided by sum(q) afterwards.
    """

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, target):
        logits, target = logits.float(), target.float()
        positive = (target > 0).float()
        weight = self.alpha * logits.sigmoid().pow(self.gamma) * (1 - positive) + target * positive
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight


class GIoUBboxLoss(BboxLoss):
    """1 - GIoU plus DFL on the foreground anchors, both weighted by the summed TAL score (official §5)."""

    def forward(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, target_scores_sum,
                fg_mask, imgsz, stride):
        fg = fg_mask.nonzero(as_tuple=True)
        weight = target_scores[fg].sum(-1, keepdim=True)
        iou = bbox_iou(pred_bboxes[fg], target_bboxes[fg], xywh=False, GIoU=True)
        loss_iou = ((1.0 - iou) * weight).sum() / target_scores_sum
        reg_max = self.dfl_loss.reg_max
        target_ltrb = bbox2dist(anchor_points, target_bboxes, reg_max - 1)
        loss_dfl = self.dfl_loss(pred_dist[fg].view(-1, reg_max), target_ltrb[fg]) * weight
        return loss_iou, loss_dfl.sum() / target_scores_sum


def loss_settings(model) -> SimpleNamespace:
    """The loss form of a model's train arguments, with cfg/default.yaml's values for keys they lack (a checkpoint's
    arguments may predate a key). The gains box/cls/dfl are ordinary train arguments."""
    args = getattr(model, "args", None)
    return SimpleNamespace(**{k: sdgas_setting(args, k) for k in LOSS_KEYS})


class SDDetectionLoss(v8DetectionLoss):
    """v8DetectionLoss with SD-GASNet's classification loss, IoU form, assigner and gains (docs/official-arch.md §5)."""

    def __init__(self, model):
        super().__init__(model)
        s = loss_settings(model)  # the gains box/cls/dfl come from the train arguments (self.hyp), as in ultralytics
        if s.cls_loss == "vfl":
            self.bce = VarifocalBCE()
        elif s.cls_loss != "bce":
            raise ValueError(f"cls_loss must be 'vfl' or 'bce', not '{s.cls_loss}'")
        if s.iou_loss == "giou":
            self.bbox_loss = GIoUBboxLoss(self.reg_max).to(self.device)
        elif s.iou_loss != "ciou":
            raise ValueError(f"iou_loss must be 'giou' or 'ciou', not '{s.iou_loss}'")
        self.assigner = TaskAlignedAssigner(topk=int(s.tal_topk), num_classes=self.nc, alpha=float(s.tal_alpha),
                                            beta=float(s.tal_beta), stride=self.stride.tolist())
