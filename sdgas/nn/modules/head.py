"""SDHead: the decoupled anchor-free head of SD-GASNet (paper §3.3, official `effidehead.py`, docs/official-arch.md §4)."""

import math

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv, Detect


class SDHead(Detect):
    """Decoupled anchor-free detection head with DFL regression (paper §3.3; official EffiDeHead).

    Inputs: neck maps [P3 (B, c_3, H/8, W/8), P4 (B, c_4, H/16, W/16), P5 (B, c_5, H/32, W/32)]. Per level: a
    1x1 Conv-BN-SiLU stem shared by both branches, then a 3x3 Conv-BN-SiLU and a 1x1 prediction conv for the
    classes (nc) and for the box distribution (4 * reg_max bins). reg_max = 17 bins (0..16) is the official
    `reg_max=16`. Training output is ultralytics' dict {"boxes": (B, 4*reg_max, A), "scores": (B, nc, A),
    "feats": stems}; inference decodes the DFL expectation into (B, 4 + nc, A) boxes-and-scores, like Detect.

    The official student has an extra 4-channel ltrb branch used only for its own inference; SDHead follows the
    official teacher (GASNet) head, which decodes the DFL distribution.
    """

    legacy = True  # pin: ultralytics' Detect.legacy is process-wide state set by whatever was built last

    def __init__(self, nc: int = 80, reg_max: int = 17, end2end: bool = False, ch: tuple = ()):
        super().__init__(nc, reg_max, end2end, ch)
        self.stems = nn.ModuleList(Conv(c, c, 1) for c in ch)
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c, 3), nn.Conv2d(c, 4 * reg_max, 1)) for c in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c, 3), nn.Conv2d(c, nc, 1)) for c in ch)

    def forward_head(self, x, box_head=None, cls_head=None):
        """Apply the shared stems, then ultralytics' per-branch heads and output dict."""
        if box_head is None or cls_head is None:
            return {}
        return super().forward_head([stem(xi) for stem, xi in zip(self.stems, x)], box_head, cls_head)

    def _inference(self, x):
        """ultralytics' decode, in float32 when the network ran in BF16 (weights or autocast): BF16 box distances
        times the stride would be off by up to a few pixels. FP16 (GPU) keeps ultralytics' behaviour."""
        device = x["boxes"].device.type
        if x["boxes"].dtype != torch.bfloat16 and not torch.is_autocast_enabled(device):
            return super()._inference(x)
        if any(p.dtype != torch.float32 for p in self.dfl.parameters()):
            self.dfl.float()  # the fixed (non-trainable) DFL expectation kernel
        with torch.autocast(device, enabled=False):
            feats = [f[:, :0].float() for f in x["feats"]]  # the anchors need only the map sizes
            return super()._inference({**x, "boxes": x["boxes"].float(), "scores": x["scores"].float(),
                                       "feats": feats})

    def bias_init(self):
        """Official init: prediction weights 0, box bias 1.0, class bias -ln(99) (prior 0.01)."""
        for box, cls in zip(self.cv2, self.cv3):
            for conv, bias in ((box[-1], 1.0), (cls[-1], -math.log((1 - 0.01) / 0.01))):
                nn.init.zeros_(conv.weight)
                nn.init.constant_(conv.bias, bias)
