"""The light ViT backbone of SD-GASNet ("MLVT", official `e_lvt_ds`): paper §3.3, docs/official-arch.md §2.

Four stages give C2..C5 at strides 4/8/16/32 with 64/64/160/256 channels. Every stage is
`embed -> blocks -> LayerNorm`, and the normalised map is both the stage output and the next stage's input.
Between stages tensors are NCHW (ultralytics convention); inside a stage the blocks work on NHWC tokens.

Each layer with a faster CPU inference form keeps it beside the reference forward behind one boolean, `fused`
(as timm's `fused_attn`), which `fuse()` sets (via `SDGASDetectionModel.fuse`): `CSA.forward_taps`, the row bands of
`LVTBlock`, and the token Linear layers as `pointwise_linear`. Same values; docs/cpu_inference_forms.md says why each
form is faster and by how much.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

HEAD_DIM = 32  # every attention layer of e_lvt_ds uses 32 channels per head
BAND_TOKENS = 6400  # tokens per band of rows in a fused `LVTBlock` (docs/cpu_inference_forms.md)
ATTENTIONS = ("csa", "sra")  # LVTStage attention: convolutional (stage 0) or spatial-reduction (stages 1-3)
EMBEDDINGS = ("stem", "patch")  # LVTStage embedding: conv downsampling stem (s4) or overlapping patch embedding (s2)


def avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2/s2 average pooling with ceil_mode (a partial last window averages what it covers), NCHW.

    ceil_mode only matters for odd sizes; leaving it off for even ones gives the same values and lets ONNX Runtime
    use its fast pooling kernel. A traced export serves stride-aligned (even) sizes, so it leaves it off without
    testing the size (a test would freeze the traced size).
    """
    odd = not torch.jit.is_tracing() and bool(x.shape[-1] % 2 or x.shape[-2] % 2)
    return F.avg_pool2d(x, 2, 2, ceil_mode=odd)


def traced_for_export() -> bool:
    """Whether the graph is being recorded for an inference engine: ONNX export, or the TorchScript trace that
    ultralytics' OpenVINO export converts. Engines pick their own layouts, so they get the plain ops."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def pointwise_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` over the channels of an NHWC map (B, H, W, c1) -> (B, H, W, c2), as a 1x1 convolution on the CPU.

    The NHWC map is the channels-last view of an NCHW map, so the convolution needs no copy (oneDNN's 1x1 kernel
    beats the sgemm behind `F.linear` on x86 CPUs). Other devices keep `F.linear`, and so does a traced export, where
    a Conv would add two transposes around it (OpenVINO runs them as reference kernels: docs/int8.md).
    """
    if x.dim() != 4 or x.device.type != "cpu" or traced_for_export():
        return F.linear(x, weight, bias)
    return F.conv2d(x.permute(0, 3, 1, 2), weight[:, :, None, None], bias).permute(0, 2, 3, 1)


def window_taps(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The 9 taps of every 3x3/s2/p1 window of an NHWC map, tap-major: (B, H, W, C) -> (9, B, h, w, C).

    Tap (dy, dx) of window (i, j) is x[2i + dy - 1, 2j + dx - 1] (zero outside the map): the values of
    `F.unfold(x, 3, padding=1, stride=2)`, gathered by nine strided slices instead of an im2col copy.
    """
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))
    return torch.stack([xp[:, dy:dy + 2 * h - 1:2, dx:dx + 2 * w - 1:2] for dy in range(3) for dx in range(3)])


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Merge maps holding the even and the odd indices of axis `dim` into one axis of length `size`."""
    if torch.jit.is_tracing():  # an export for every stride-aligned size: even sizes, so no size test in the graph
        return torch.stack((even, odd), dim + 1).flatten(dim, dim + 1)
    if odd.shape[dim] < even.shape[dim]:  # odd size: the last odd index does not exist
        odd = F.pad(odd, [0, 0] * (odd.ndim - 1 - dim) + [0, even.shape[dim] - odd.shape[dim]])
    return torch.stack((even, odd), dim + 1).flatten(dim, dim + 1).narrow(dim, 0, size)


def _add_shifted(first: torch.Tensor, second: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """first[:n] + second[1:n+1] along `dim`, where second may run one short (zero beyond its end)."""
    if torch.jit.is_tracing():  # an export for every stride-aligned size: even sizes, second is always one short
        padded = F.pad(second, [0, 0] * (second.ndim - 1 - dim) + [0, 1])
        return first + padded[(slice(None),) * dim + (slice(1, None),)]
    tail = second.narrow(dim, 1, second.shape[dim] - 1)
    if tail.shape[dim] < n:
        tail = F.pad(tail, [0, 0] * (tail.ndim - 1 - dim) + [0, n - tail.shape[dim]])
    return first.narrow(dim, 0, n) + tail


def overlap_add(taps: torch.Tensor, size: tuple) -> torch.Tensor:
    """Sum 3x3/s2/p1 window taps back onto the map, NHWC: (9, B, h, w, C) -> (B, H, W, C); `F.fold` without col2im.

    Even output rows/cols receive only the centre tap of one window; odd ones the last tap of window i and the
    first of window i + 1. Each axis is merged from its parity halves by stacking, so no scatter is needed.
    """
    H, W = size
    t = taps.unflatten(0, (3, 3))
    cols = [_interleave(t[1, dx], _add_shifted(t[2, dx], t[0, dx], 1, H // 2), 1, H) for dx in range(3)]
    return _interleave(cols[1], _add_shifted(cols[2], cols[0], 2, W // 2), 2, W)


def records_cpu_training(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `module` runs a CPU training step on `x`: training mode, autograd recording, a CPU tensor, no export.

    The backbone's training forms (`CSA.forward_train`, `token_linear`) compute the reference arithmetic with
    backward passes that are cheaper on a CPU; under `torch.no_grad()` (validation of the EMA model, FLOP counters)
    and on other devices the reference forms run.
    """
    return (module.training and torch.is_grad_enabled() and x.device.type == "cpu"
            and not torch.onnx.is_in_onnx_export())


def token_linear(owner: nn.Module, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` over NHWC tokens, as `pointwise_linear` (a 1x1 convolution, forward and backward) when `owner` is
    fused or in a CPU training step: the same values as the matmuls behind `F.linear`."""
    if owner.fused or records_cpu_training(layer, x):
        return pointwise_linear(x, layer.weight, layer.bias)
    return layer(x)


class _WindowTaps(torch.autograd.Function):
    """`window_taps` whose backward is `overlap_add` of the gradient (the two maps are each other's transpose).

    Autograd's own backward of the nine strided slices writes nine zero-filled copies of the padded map.
    """

    @staticmethod
    def forward(ctx, x, h: int, w: int):
        ctx.size = (x.shape[1], x.shape[2])
        return window_taps(x, h, w)

    @staticmethod
    def backward(ctx, grad):
        return overlap_add(grad, ctx.size), None, None


class _OverlapAdd(torch.autograd.Function):
    """`overlap_add` whose backward is `window_taps` of the gradient (autograd's own writes full-size zero maps)."""

    @staticmethod
    def forward(ctx, taps, size: tuple):
        ctx.hw = (taps.shape[2], taps.shape[3])
        return overlap_add(taps, size)

    @staticmethod
    def backward(ctx, grad):
        return window_taps(grad, *ctx.hw), None


class DownsamplingStem(nn.Module):
    """Conv downsampling stem of `lvt_ds` (stride 4), docs/official-arch.md §2 "Stem".

    (B, c1, H, W) -> (B, c2, H/4, W/4): a 3x3/s2 conv, then a conv branch (1x1, 3x3/s2) beside a 2x2 average
    pool, concatenated and mixed by a 1x1 conv. All convs are Conv-BN-SiLU. There is no LayerNorm after it.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 3, 2)
        self.cv2 = Conv(c_, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 2)
        self.cv4 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv4(torch.cat((self.cv3(self.cv2(x)), avg_pool_2x2(x)), 1))


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
    """Convolutional self-attention of LVT stage 0 (outlook-style, 3x3 windows, stride 2), docs/official-arch.md §2.

    Input/output NHWC (B, H, W, C). For each of the h*w = ceil(H/2)*ceil(W/2) windows, the attention over the 9
    window positions is predicted from the 2x2-average-pooled map (Linear C -> heads*81); the values are the
    unfolded 3x3 windows, each position mapped by its own CxC matrix (a grouped 1x1 conv); the attended windows
    are folded back (overlap-add) and projected.

    `fused` (set by `fuse()`, 3x3/s2 windows only) runs `forward_taps` on the CPU and in ONNX export.
    """

    fused: bool = False  # a class default, so checkpoints pickled before the flag existed load unfused

    def __init__(self, dim: int, heads: int, k: int = 3, stride: int = 2):
        super().__init__()
        self.heads, self.k, self.stride, self.pad = heads, k, stride, k // 2
        self.scale = (dim // heads) ** -0.5
        self.attn = nn.Linear(dim, heads * k**4)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True)
        self.v_pw = nn.Conv2d(k * k * dim, k * k * dim, 1, groups=k * k, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        """`forward_reference`, computed as `forward_taps` when fused (CPU, ONNX export) or `forward_train` in a CPU
        training step."""
        if self.fused and (x.device.type == "cpu" or torch.onnx.is_in_onnx_export()):
            return self.forward_taps(x)
        if (self.k, self.stride) == (3, 2) and records_cpu_training(self, x):
            return self.forward_train(x)
        return self.forward_reference(x)

    def forward_reference(self, x):
        """The attention as the official code computes it: unfold, grouped 1x1 value conv, softmax, fold."""
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

    def forward_taps(self, x):
        """`forward_reference` with the same arithmetic laid out for a CPU (3x3/s2 windows only), used when fused.

        The attention logits come out key-tap-major (softmax over a strided axis; a traced export keeps the Linear's
        order, which ONNX Runtime and OpenVINO prefer), the window taps are strided slices (no unfold), the per-tap
        value maps one batched matmul, and the overlap-add is `overlap_add` (no fold); every tensor stays NHWC.
        """
        B, H, W, C = x.shape
        heads, d = self.heads, C // self.heads
        h, w = (H + 1) // 2, (W + 1) // 2  # integer ceil: stays a graph value in a traced (dynamic-shape) export
        n = B * h * w
        pooled = avg_pool_2x2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if traced_for_export():
            attn = (self.attn(pooled) * self.scale).view(n * heads, 9, 9).softmax(-1)  # (windows*heads, query, key)
        else:
            weight = self.attn.weight.view(heads, 9, 9, C).permute(2, 0, 1, 3).reshape(-1, C) * self.scale
            bias = self.attn.bias.view(heads, 9, 9).permute(2, 0, 1).reshape(-1) * self.scale
            attn = pointwise_linear(pooled, weight, bias).view(n, 9, heads, 9)  # (windows, key tap, heads, query tap)
            attn = attn.float().softmax(1).to(x.dtype)  # float32: strided BF16 softmax is several times slower
            attn = attn.permute(0, 2, 3, 1).reshape(n * heads, 9, 9)
        v = torch.bmm(window_taps(x, h, w).view(9, n, C), self.v_pw.weight.view(9, C, C).transpose(1, 2))
        out = torch.bmm(attn, v.view(9, n * heads, d).transpose(0, 1))  # (windows*heads, query tap, C/heads)
        out = out.view(B, h, w, heads, 9, d).permute(4, 0, 1, 2, 3, 5).reshape(9, B, h, w, C)
        return pointwise_linear(overlap_add(out, (H, W)), self.proj.weight, self.proj.bias)

    def forward_train(self, x):
        """`forward_reference` for a CPU training step (3x3/s2 windows): `forward_taps`' layout with cheap backwards.

        The logits come out key-tap-major (softmax over a strided axis, forward and backward); the window taps and
        the overlap-add are each other's backward (`_WindowTaps`, `_OverlapAdd`) instead of unfold/fold or autograd
        through strided slices; the per-tap value maps are one batched matmul; the output projection runs as a 1x1
        convolution. (B, H, W, C) NHWC -> same.
        """
        B, H, W, C = x.shape
        heads, d = self.heads, C // self.heads
        h, w = math.ceil(H / 2), math.ceil(W / 2)
        n = B * h * w
        pooled = avg_pool_2x2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        weight = self.attn.weight.view(heads, 9, 9, C).permute(2, 0, 1, 3).reshape(-1, C) * self.scale
        bias = self.attn.bias.view(heads, 9, 9).permute(2, 0, 1).reshape(-1) * self.scale
        attn = F.linear(pooled, weight, bias).view(n, 9, heads, 9).softmax(1)  # (windows, key tap, heads, query tap)
        attn = attn.permute(0, 2, 3, 1).reshape(n * heads, 9, 9)
        taps = _WindowTaps.apply(x, h, w).view(9, n, C)
        v = torch.bmm(taps, self.v_pw.weight.view(9, C, C).transpose(1, 2))  # (key tap, windows, C)
        out = torch.bmm(attn, v.view(9, n * heads, d).transpose(0, 1))  # (windows*heads, query tap, C/heads)
        out = out.view(B, h, w, heads, 9, d).permute(4, 0, 1, 2, 3, 5).reshape(9, B, h, w, C)
        return pointwise_linear(_OverlapAdd.apply(out, (H, W)), self.proj.weight, self.proj.bias)

    def fuse(self):
        """Use the inference form (`SDGASDetectionModel.fuse`); same outputs, parameters untouched."""
        self.fused = (self.k, self.stride) == (3, 2)


class SRA(nn.Module):
    """Spatial-reduction attention (PVT), LVT stages 1-3, docs/official-arch.md §2. RASA is inert in the official code.

    Input/output NHWC (B, H, W, C). Keys and values come from the map reduced by a kxk/sk conv + LayerNorm when
    sr > 1 (from x itself when sr == 1). Uses the fused scaled-dot-product kernel; scale = head_dim^-0.5.
    `fused` (set by `fuse()`) runs the token Linear layers as 1x1 convolutions on the CPU.
    """

    fused: bool = False

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
        q = token_linear(self, self.q, x).reshape(B, H * W, heads, C // heads).transpose(1, 2)
        if self.sr > 1:
            x = self.norm(self.reduce(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        kv = token_linear(self, self.kv, x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, heads, HW, C/heads)
        return token_linear(self, self.proj, out.transpose(1, 2).reshape(B, H, W, C))

    def fuse(self):
        self.fused = True


class MLP(nn.Module):
    """Linear-GELU-Linear feed-forward of LVT stage 0. NHWC (B, H, W, C) -> same. `fused` as in SRA."""

    fused: bool = False

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim)

    def forward(self, x):
        return token_linear(self, self.fc2, self.act(token_linear(self, self.fc1, x)))

    def fuse(self):
        self.fused = True


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
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). NHWC (B, H, W, C) -> same.

    `fused` (set by `fuse()` for CSA blocks with the token-wise MLP, stage 0) computes the block over bands of about
    `BAND_TOKENS` tokens (whole rows) on the CPU, so the wide MLP activations stay small enough for glibc's malloc to
    reuse instead of returning them to the OS (docs/cpu_inference_forms.md). Same values.
    """

    fused: bool = False

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attn
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp

    def forward(self, x):
        if self.fused and x.device.type == "cpu" and not torch.jit.is_tracing():  # a traced export fixes band sizes
            return self.forward_banded(x)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_banded(self, x):
        """`forward` one band of output rows [r0, r1) at a time (r0 even). The band needs the 3x3/s2 windows that
        cover it, whose taps span input rows r0-1 .. r1+1: the CSA runs on rows r0-2 .. r1+2 (an even start keeps
        the window grid aligned) and the band is cropped from its output."""
        B, H, W, _ = x.shape
        rows = max(2, BAND_TOKENS // (B * W) // 2 * 2)
        bands = []
        for r0 in range(0, H, rows):
            r1 = min(r0 + rows, H)
            s0, s1 = max(r0 - 2, 0), min(r1 + 2, H)
            y = x[:, r0:r1] + self.attn(self.norm1(x[:, s0:s1]))[:, r0 - s0:r1 - s0]
            bands.append(y + self.mlp(self.norm2(y)))
        return torch.cat(bands, 1)

    def fuse(self):
        """Inference forms (`SDGASDetectionModel.fuse`), same outputs: the attention and MLP fuse themselves, and a
        CSA block with the token-wise MLP computes in row bands."""
        for m in (self.attn, self.mlp):
            if hasattr(m, "fuse"):
                m.fuse()
        self.fused = isinstance(self.attn, CSA) and self.attn.fused and isinstance(self.mlp, MLP)


class LVTStage(nn.Module):
    """One stage of the MLVT backbone (paper §3.3, docs/official-arch.md §2): embed, `n` LVT blocks, LayerNorm.

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
        if attn not in ATTENTIONS or embed not in EMBEDDINGS:
            raise ValueError(f"LVTStage: attn must be one of {ATTENTIONS} and embed one of {EMBEDDINGS}, "
                             f"got attn={attn!r}, embed={embed!r}")
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
