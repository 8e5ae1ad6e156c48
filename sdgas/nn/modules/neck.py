"""AES-FPN, the neck of SD-GASNet: paper §3.1-3.2 (FIGA = MFA + FGPEM + Inject, the CS module), docs/official-arch.md §3."""

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv, RepConv


class MFA(nn.Module):
    """Multi-scale Feature Alignment (paper §3.1, Eq. 1-4; official `low_FAM` + `low_IFM`).

    Inputs [C2, C3, C4, C5] of shapes (B, c_i, H_i, W_i) are aligned to the grid of the third one (stride 16):
    average pooling for finer maps (`pool_to_grid`), bilinear resizing for coarser ones. The concatenation (B, sum c_i,
    H4, W4) goes through 1x1 Conv-BN-SiLU -> `n` RepVGG blocks -> 1x1 Conv-BN-SiLU, giving (B, c2, H4, W4).

    A RepVGG block (ultralytics `RepConv` with an identity BN and ReLU) sums a 3x3 conv-BN, a 1x1 conv-BN and an
    identity BN in training and fuses into one 3x3 conv at `model.fuse()`. The paper's Eq. 3 writes this sum as a
    concatenation; the official code (and RepVGG) sum the branches.
    """

    def __init__(self, c1: list, c2: int, n: int = 3, ref: int = 2):
        super().__init__()
        self.ref = ref  # index of the input whose grid the others are aligned to
        self.cv1 = Conv(sum(c1), c2, 1)
        self.blocks = nn.Sequential(*(RepConv(c2, c2, 3, act=nn.ReLU(), bn=True) for _ in range(n)))
        self.cv2 = Conv(c2, c2, 1)

    def align(self, xs: list) -> torch.Tensor:
        """Resample every input to the reference grid and concatenate (paper Eq. 1-2)."""
        size = xs[self.ref].shape[2:]
        finer, coarser = xs[:self.ref], xs[self.ref + 1:]  # inputs run fine to coarse (C2 .. C5): no size tests
        out = [pool_to_grid(x, size) for x in finer] + [xs[self.ref]]
        out += [resize_to(x, size) for x in coarser]
        return torch.cat(out, 1)

    def forward(self, xs):
        return self.cv2(self.blocks(self.cv1(self.align(xs))))


def pool_to_grid(x: torch.Tensor, size) -> torch.Tensor:
    """Average-pool a finer (B, C, H, W) map onto the coarser `size` grid (MFA, paper Eq. 1).

    Exact k x k means (an average pool) where the grids divide, which they always do for inputs at a multiple of
    the model stride: k is then the same for every input size, so an export traced at one size serves all of
    them (adaptive pooling has no dynamic-shape export). Adaptive pooling where the grids do not divide.
    """
    kh, kw = x.shape[2] // size[0], x.shape[3] // size[1]
    if torch.jit.is_tracing():  # the pool's kernel must be a constant of the graph; k is one for all sizes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return F.avg_pool2d(x, (int(kh), int(kw)))
    if (kh * size[0], kw * size[1]) == tuple(x.shape[2:]):
        return F.avg_pool2d(x, (kh, kw))
    return F.adaptive_avg_pool2d(x, size)


def upsample2x_bilinear(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W), the values of `F.interpolate(x, scale_factor=2, mode="bilinear",
    align_corners=False)` as fixed blends: output 2i = 0.75 x[i] + 0.25 x[i-1], 2i+1 = 0.75 x[i] + 0.25 x[i+1], edges
    clamped, per axis. Its backward is deterministic on CUDA; interpolate's accumulates with atomics."""
    for dim in (2, 3):
        n = x.shape[dim]
        before = torch.cat((x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)), dim)
        after = torch.cat((x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)), dim)
        x = torch.stack((0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after), dim + 1).flatten(dim, dim + 1)
    return x


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of a (B, C, h, w) map to `size` (paper Eq. 2 and 13).

    With torch's deterministic algorithms on (ultralytics `deterministic=True`) on CUDA, an exact 2x upsampling (the
    only one SD-GASNet does at stride-aligned sizes) runs as `upsample2x_bilinear`: same values, and a backward that
    is deterministic.
    """
    if x.is_cuda and torch.are_deterministic_algorithms_enabled() and tuple(size) == (2 * x.shape[2], 2 * x.shape[3]):
        return upsample2x_bilinear(x)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pdct_frequencies(components: int, grid: int = 10) -> tuple:
    """Preset frequency positions of the PDCT filter (paper §3.1): `components/2` low and `components/2` high ones.

    Low frequencies fill the top-left corner of the grid in order of (max(u, v), u + v, v): (0,0), (0,1), (1,0),
    (1,1), (0,2), ...; high ones mirror them into the bottom-right corner: (9,9), (9,8), (8,9), (8,8), ... for a
    10x10 grid. Returns (low, high), each a list of (u, v) pairs with u horizontal and v vertical.
    """
    half = components // 2
    cells = sorted(((u, v) for u in range(grid) for v in range(grid)), key=lambda p: (max(p), sum(p), p[0]))
    low = cells[:half]
    high = [(grid - 1 - u, grid - 1 - v) for u, v in low]
    return low, high


def dct_basis_1d(freq: int, t: torch.Tensor, grid: int, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II basis vector over positions t = 0 .. L-1 (int64) at the grid frequency `freq` scaled to L.

    f = min(freq * L // grid, L - 1) (paper Eq. 8), b(t) = cos(pi f (t + 0.5) / L) / sqrt(L), times sqrt(2) for
    f > 0. L is read from `t`, so in a traced export it is a graph value. The angle is reduced exactly in integers,
    pi * (f (2t + 1) mod 4L) / 2L, so float32 keeps its precision at any map size.
    """
    length = t[-1:] + 1
    f = torch.minimum(freq * length // grid, length - 1)
    n = f * (2 * t + 1) % (4 * length)
    size = length.to(dtype)
    b = torch.cos(n.to(dtype) * (math.pi / 2) / size) * size.rsqrt()
    return b * (1 + (math.sqrt(2.0) - 1) * (f > 0).to(dtype))


class PDCTFilter(nn.Module):
    """Preset-position DCT filter (paper §3.1, Eq. 5-8): one fixed 2-D DCT-II coefficient per channel.

    (B, C, H, W) -> (B, C). Channels are split into len(freqs) equal groups; group g responds to the grid
    frequency freqs[g] = (u, v), scaled to the feature size as (int(u * W / grid), int(v * H / grid)). The
    response R[b, c] = sum_{y,x} X[b, c, y, x] * W[c, y, x] equals the orthonormal 2-D DCT-II coefficient of
    channel c at that frequency. The fixed basis W is computed from the feature size in every forward (a few
    hundred cosines), so any input size works (train at 256, validate at 640, rectangular batches, one exported
    model for every size).
    """

    def __init__(self, channels: int, freqs: list, grid: int = 10):
        super().__init__()
        assert channels % len(freqs) == 0, f"{channels} channels cannot be split into {len(freqs)} frequency groups"
        self.channels, self.freqs, self.grid = channels, list(freqs), grid

    def scaled_frequencies(self, h: int, w: int) -> list:
        """Grid frequencies scaled to an h x w map (paper Eq. 8), clamped to the map."""
        return [(min(u * w // self.grid, w - 1), min(v * h // self.grid, h - 1)) for u, v in self.freqs]

    def dct_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(groups, H, W) basis for the map x: each group's separable DCT-II basis, in float32 (float64 for float64
        maps), cast to x's dtype."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        ty, tx = (torch.arange(n, device=x.device) for n in x.shape[2:])
        rows = [dct_basis_1d(v, ty, self.grid, dtype)[:, None] * dct_basis_1d(u, tx, self.grid, dtype)[None]
                for u, v in self.freqs]
        return torch.stack(rows).to(x.dtype)

    def forward(self, x):
        groups = x.unflatten(1, (len(self.freqs), -1))  # (B, groups, C / groups, H, W)
        return (groups * self.dct_basis(x)[:, None]).sum((3, 4)).flatten(1)


class FrequencyAttention(nn.Module):
    """One FGPEM branch (paper §3.1, Eq. 9-10, Figure 4): PDCT response -> two-linear-layer channel attention.

    (B, C, H, W) -> (B, C, H, W): Y = X + X * sigmoid(W2 ReLU(W1 R + b1) + b2), R = PDCT(X).
    """

    def __init__(self, channels: int, freqs: list, grid: int, reduction: int = 16):
        super().__init__()
        self.pdct = PDCTFilter(channels, freqs, grid)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction), nn.ReLU(), nn.Linear(channels // reduction, channels),
            nn.Sigmoid()
        )

    def forward(self, x):
        a = self.fc(self.pdct(x))[..., None, None]
        return x + x * a


class FGPEM(nn.Module):
    """Frequency-Guided Perception Enhancement Module (paper §3.1, Figure 4), reconstructed per docs/official-arch.md §3.

    (B, c1, H, W) -> (B, c1, H, W). The MFA output is split into two halves: the first is filtered with the
    high-frequency PDCT set and becomes Hf (injected at stride 16), the second with the low-frequency set and
    becomes Lf (injected at stride 8). The output is [Hf | Lf]; `Inject` selects its half.

    Args:
        c1 (int): input channels (even).
        grid (int): frequency quantization grid (paper Table 5; 10 is the paper's choice).
        components (int): total number of frequency components, half low and half high (paper Table 6; 8).
        reduction (int): channel reduction of the attention MLP.
    """

    def __init__(self, c1: int, grid: int = 10, components: int = 8, reduction: int = 16):
        super().__init__()
        low, high = pdct_frequencies(components, grid)
        self.high = FrequencyAttention(c1 // 2, high, grid, reduction)
        self.low = FrequencyAttention(c1 // 2, low, grid, reduction)

    def forward(self, x):
        xh, xl = x.chunk(2, 1)
        return torch.cat((self.high(xh), self.low(xl)), 1)


class Inject(nn.Module):
    """Gated injection of global features into local ones (paper §3.2, Eq. 12-13; GOLD-YOLO style).

    Inputs [x_local (B, c_l, H, W), x_global (B, c_g, h, w)]; `part` selects the global channel slice
    (0 = Hf, 1 = Lf of the FGPEM output split into `parts`). Output (B, c2, H, W):
    BN(conv1x1(x_local)) * resize(h_sigmoid(BN(conv1x1(g)))) + resize(BN(conv1x1(g))).
    """

    def __init__(self, c1: list, c2: int, part: int = 0, parts: int = 2):
        super().__init__()
        c_local, c_global = c1[0], c1[1] // parts
        self.part, self.parts = part, parts
        self.local_embedding = Conv(c_local, c2, 1, act=False)
        self.global_embedding = Conv(c_global, c2, 1, act=False)
        self.global_act = Conv(c_global, c2, 1, act=False)

    def forward(self, xs):
        x_local, x_global = xs
        g = x_global.chunk(self.parts, 1)[self.part]
        size = x_local.shape[2:]
        gate, glob = F.hardsigmoid(self.global_act(g)), self.global_embedding(g)
        if torch.jit.is_tracing() or gate.shape[2:] != size:  # traced: a size test would freeze the export's size
            gate, glob = resize_to(gate, size), resize_to(glob, size)
        return self.local_embedding(x_local) * gate + glob


class BiFusion(nn.Module):
    """Bi-directional fusion of three neighbouring levels (official `BiFusion`, the "+" of paper Eq. 14-15).

    Inputs [top (B, c_t, H/2, W/2), lateral (B, c_l, H, W), bottom (B, c_b, 2H, 2W)] -> (B, c2, H, W):
    the top map is upsampled by a 2x2 transposed conv, the bottom one reduced by a 1x1 conv and a 3x3/s2 conv,
    the lateral one by a 1x1 conv; the three are concatenated and mixed by a 1x1 conv (all Conv-BN-ReLU).
    """

    def __init__(self, c1: list, c2: int):
        super().__init__()
        relu = nn.ReLU()
        self.up = nn.ConvTranspose2d(c1[0], c2, 2, 2)
        self.lateral = Conv(c1[1], c2, 1, act=relu)
        self.bottom = Conv(c1[2], c2, 1, act=relu)
        self.down = Conv(c2, c2, 3, 2, act=relu)
        self.fuse = Conv(3 * c2, c2, 1, act=relu)

    def forward(self, xs):
        top, lateral, bottom = xs
        return self.fuse(torch.cat((self.up(top), self.lateral(lateral), self.down(self.bottom(bottom))), 1))


class BottleRep(nn.Module):
    """Bottle Rep unit of the CS module (paper §3.2, Eq. 20, Figure 6; official `BottleRep3`).

    (B, c, H, W) -> (B, c, H, W): `n` 3x3 Conv-BN-SiLU layers plus alpha * input. alpha is a learnable scalar
    (init 1; the paper's beta), kept out of weight decay by the trainer. The official optimizer never collected it,
    so it stayed at 1 there; here it trains. The paper's C/4-bottleneck form is not what the authors' code builds
    (docs/official-arch.md §3); sdgas follows the code.
    """

    def __init__(self, c: int, n: int = 3):
        super().__init__()
        self.convs = nn.Sequential(*(Conv(c, c, 3) for _ in range(n)))
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.convs(x) + self.alpha.to(x.dtype) * x  # a float32 alpha would promote autocast outputs to it


class CS(nn.Module):
    """Channel Split module (paper §3.2, Eq. 21-22, Figure 5; official `MBLABlock`), the AES-FPN stage block.

    (B, c1, H, W) -> (B, c2, H, W). A 1x1 conv widens to k*c (c = c2*e, k = n//2 + 1 chunks; 3*128 = 384 at C5),
    the result is split into k chunks, chunk i passes through i chained BottleReps (ELAN style) and every
    intermediate is kept; the k(k+1)/2 maps are concatenated and reduced by a 1x1 conv. All convs Conv-BN-SiLU.
    """

    def __init__(self, c1: int, c2: int, n: int = 4, e: float = 0.5):
        super().__init__()
        c, k = int(c2 * e), n // 2 + 1
        self.c, self.k = c, k
        self.cv1 = Conv(c1, k * c, 1)
        self.chains = nn.ModuleList(nn.Sequential(*(BottleRep(c) for _ in range(i))) for i in range(k))
        self.cv2 = Conv(c * k * (k + 1) // 2, c2, 1)

    def forward(self, x):
        kept = []
        for chunk, chain in zip(self.cv1(x).chunk(self.k, 1), self.chains):
            kept.append(chunk)
            for unit in chain:
                kept.append(unit(kept[-1]))
        return self.cv2(torch.cat(kept, 1))


class BepC3(nn.Module):
    """CSP block of BottleRep pairs (YOLOv6 `BepC3`), the stage block of the ablations without CS (paper Table 4).

    (B, c1, H, W) -> (B, c2, H, W): two 1x1 branches of c2*e channels, one through n//2 two-conv BottleReps,
    concatenated and mixed by a 1x1 conv (Conv-BN-SiLU, the official `conv_silu` mode).
    """

    def __init__(self, c1: int, c2: int, n: int = 4, e: float = 0.5):
        super().__init__()
        c = int(c2 * e)
        self.cv1, self.cv2 = Conv(c1, c, 1), Conv(c1, c, 1)
        self.m = nn.Sequential(*(BottleRep(c, n=2) for _ in range(max(n // 2, 1))))
        self.cv3 = Conv(2 * c, c2, 1)

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))
