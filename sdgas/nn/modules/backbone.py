"""The light ViT backbone of SD-GASNet ("MLVT", official `e_lvt_ds`): paper §3.3, official-arch.md §2.

Four stages give C2..C5 at strides 4/8/16/32 with 64/64/160/256 channels. Every stage is
`embed -> blocks -> LayerNorm`, and the normalised map is both the stage output and the next stage's input.
Between stages tensors are NCHW (ultralytics convention); inside a stage the blocks work on NHWC tokens.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

HEAD_DIM = 32  # every attention layer of e_lvt_ds uses 32 channels per head


class DownsamplingStem(nn.Module):
    """Conv downsampling stem of `lvt_ds` (stride 4), official-arch.md §2 "Stem".

    (B, c1, H, W) -> (B, c2, H/4, W/4): a 3x3/s2 conv, then a conv branch (1x1, 3x3/s2) beside a 2x2 average
    pool, concatenated and mixed by a 1x1 conv. All convs are Conv-BN-SiLU. There is no LayerNorm after it.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 3, 2)
        self.cv2 = Conv(c_, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 2)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True)
        self.cv4 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv4(torch.cat((self.cv3(self.cv2(x)), self.pool(x)), 1))


class OverlapPatchEmbed(nn.Module):
    """3x3/s2 conv with bias, then LayerNorm (PVT overlapping patch embedding). (B, c1, H, W) -> (B, c2, H/2, W/2)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.proj = nn.Conv2d(c1, c2, 3, 2, 1)
        self.norm = nn.LayerNorm(c2)

    def forward(self, x):
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CSA(nn.Module):
    """Convolutional self-attention of LVT stage 0 (outlook-style, 3x3 windows, stride 2), official-arch.md §2.

    Input/output NHWC (B, H, W, C). For each of the h*w = ceil(H/2)*ceil(W/2) windows, the attention over the 9
    window positions is predicted from the 2x2-average-pooled map (Linear C -> heads*81); the values are the
    unfolded 3x3 windows, each position mapped by its own CxC matrix (a grouped 1x1 conv); the attended windows
    are folded back (overlap-add) and projected.
    """

    def __init__(self, dim: int, heads: int, k: int = 3, stride: int = 2):
        super().__init__()
        self.heads, self.k, self.stride, self.pad = heads, k, stride, k // 2
        self.scale = (dim // heads) ** -0.5
        self.attn = nn.Linear(dim, heads * k**4)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True)
        self.v_pw = nn.Conv2d(k * k * dim, k * k * dim, 1, groups=k * k, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        k2, heads = self.k * self.k, self.heads
        h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)
        xc = x.permute(0, 3, 1, 2)
        attn = self.attn(self.pool(xc).permute(0, 2, 3, 1))  # (B, h, w, heads*81)
        attn = (attn.reshape(B, h * w, heads, k2, k2).transpose(1, 2) * self.scale).softmax(-1)
        v = F.unfold(xc, self.k, padding=self.pad, stride=self.stride)  # (B, C*9, L), channel-major
        v = v.reshape(B, C, k2, h * w).transpose(1, 2).reshape(B, k2 * C, h * w, 1)
        v = self.v_pw(v).reshape(B, k2, heads, C // heads, h * w).permute(0, 2, 4, 1, 3)  # (B, heads, L, 9, C/h)
        out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * k2, h * w)  # back to channel-major windows
        # int(): a constant output size, which ONNX export of fold (Col2Im, opset 18) requires
        out = F.fold(out, (int(H), int(W)), self.k, padding=self.pad, stride=self.stride)
        return self.proj(out.permute(0, 2, 3, 1))


class SRA(nn.Module):
    """Spatial-reduction attention (PVT), LVT stages 1-3, official-arch.md §2. RASA is inert in the official code.

    Input/output NHWC (B, H, W, C). Keys and values come from the map reduced by a kxk/sk conv + LayerNorm when
    sr > 1 (from x itself when sr == 1). Uses the fused scaled-dot-product kernel; scale = head_dim^-0.5.
    """

    def __init__(self, dim: int, heads: int, sr: int = 1):
        super().__init__()
        self.heads, self.sr = heads, sr
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.reduce = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        B, H, W, C = x.shape
        heads = self.heads
        q = self.q(x).reshape(B, H * W, heads, C // heads).transpose(1, 2)
        if self.sr > 1:
            x = self.norm(self.reduce(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        kv = self.kv(x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, heads, HW, C/heads)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))


class MLP(nn.Module):
    """Linear-GELU-Linear feed-forward of LVT stage 0. NHWC (B, H, W, C) -> same."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DWConvMLP(nn.Module):
    """LVT "depconv" feed-forward: 1x1 conv -> depthwise 3x3 -> GELU -> 1x1 conv (all with bias), stages 1-3.

    NHWC (B, H, W, C) -> same. There is no activation between fc1 and the depthwise conv (as in the official code).
    """

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        x = self.fc2(self.act(self.dw(self.fc1(x.permute(0, 3, 1, 2)))))
        return x.permute(0, 2, 3, 1)


class LVTBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). NHWC (B, H, W, C) -> same."""

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attn
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LVTStage(nn.Module):
    """One stage of the MLVT backbone (paper §3.3, official-arch.md §2): embed, `n` LVT blocks, LayerNorm.

    (B, c1, H, W) -> (B, c2, H/s, W/s), with s = 4 for the `stem` embedding and 2 for `patch`. Attention is
    `csa` (stage 0) or `sra` with reduction `sr` (stages 1-3); heads = c2 / 32. Stage 0 uses a plain MLP, the
    others the depthwise-conv MLP.

    Args:
        c1 (int): input channels.
        c2 (int): output channels.
        n (int): number of transformer blocks.
        attn (str): "csa" or "sra".
        mlp_ratio (int): hidden width of the feed-forward, as a multiple of c2.
        sr (int): spatial reduction of keys/values for "sra".
        embed (str): "stem" (conv downsampling stem, s4) or "patch" (overlapping 3x3/s2 patch embedding).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, attn: str = "sra", mlp_ratio: int = 4, sr: int = 1,
                 embed: str = "patch"):
        super().__init__()
        heads = max(c2 // HEAD_DIM, 1)
        self.embed = DownsamplingStem(c1, c2) if embed == "stem" else OverlapPatchEmbed(c1, c2)
        blocks = []
        for _ in range(n):
            if attn == "csa":
                blocks.append(LVTBlock(c2, CSA(c2, heads), MLP(c2, mlp_ratio)))
            else:
                blocks.append(LVTBlock(c2, SRA(c2, heads, sr), DWConvMLP(c2, mlp_ratio)))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(c2)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        """Official init: trunc_normal(0.02) for Linear, normal(0, sqrt(2/fan_out)) for attention/embed convs."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:  # the stem's Conv-BN layers keep torch's init
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # NHWC tokens
        return self.norm(self.blocks(x)).permute(0, 3, 1, 2)
