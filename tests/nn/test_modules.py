"""Each SD-GASNet module: output shape, gradient flow to every parameter, and the paper's stated behaviour."""

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from sdgas.nn.modules import CS, FGPEM, MFA, SDHead, BepC3, BiFusion, BottleRep, Inject, LVTStage, PDCTFilter
from sdgas.nn.modules.neck import pdct_frequencies


def assert_all_parameters_get_gradients(module, out):
    """Backpropagate a random projection of the output; every trainable parameter must get a non-zero gradient."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("args, size, expected", [
    ((3, 64, 1, "csa", 4, 1, "stem"), (2, 3, 64, 96), (2, 64, 16, 24)),
    ((64, 64, 1, "sra", 8, 4, "patch"), (2, 64, 16, 24), (2, 64, 8, 12)),
    ((64, 160, 2, "sra", 4, 2, "patch"), (2, 64, 8, 12), (2, 160, 4, 6)),
    ((160, 256, 2, "sra", 4, 1, "patch"), (1, 160, 5, 7), (1, 256, 3, 4)),
])
def test_lvt_stage_shapes_and_gradients(args, size, expected):
    stage = LVTStage(*args)
    out = stage(torch.randn(size))
    assert out.shape == expected
    assert_all_parameters_get_gradients(stage, out)


def test_csa_handles_odd_sizes():
    """CSA folds back to the exact input size, also when H, W are odd (ceil windows)."""
    stage = LVTStage(3, 64, 1, "csa", 4, 1, "stem")
    assert stage(torch.randn(1, 3, 36, 44)).shape == (1, 64, 9, 11)


def test_backbone_stage_parameter_counts():
    """Per-stage parameters equal the official e_lvt_ds build (docs/official-arch.md §2)."""
    stages = [LVTStage(3, 64, 1, "csa", 4, 1, "stem"), LVTStage(64, 64, 1, "sra", 8, 4, "patch"),
              LVTStage(64, 160, 2, "sra", 4, 2, "patch"), LVTStage(160, 256, 2, "sra", 4, 1, "patch")]
    counts = [sum(p.numel() for p in s.parameters()) / 1e6 for s in stages]
    assert [round(c, 3) for c in counts] == [0.101, 0.191, 0.929, 1.968]


def test_mfa_aligns_to_stride16_grid():
    mfa = MFA([64, 64, 160, 256], 128, 3)
    xs = [torch.randn(2, c, s, s) for c, s in ((64, 32), (64, 16), (160, 8), (256, 4))]
    out = mfa(xs)
    assert out.shape == (2, 128, 8, 8)
    assert_all_parameters_get_gradients(mfa, out)


def test_fgpem_shapes_gradients_and_size():
    fgpem = FGPEM(128, grid=10, components=8)
    out = fgpem(torch.randn(2, 128, 16, 20))
    assert out.shape == (2, 128, 16, 20)
    assert_all_parameters_get_gradients(fgpem, out)
    assert sum(p.numel() for p in fgpem.parameters()) < 20_000


def test_pdct_frequency_sets_match_paper():
    low, high = pdct_frequencies(8, 10)
    assert low == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert high == [(9, 9), (9, 8), (8, 9), (8, 8)]
    assert [len(pdct_frequencies(k, 10)[0]) for k in (4, 8, 16, 32)] == [2, 4, 8, 16]


@pytest.mark.parametrize("h, w", [(40, 40), (16, 16), (30, 40), (13, 21)])
def test_pdct_response_equals_orthonormal_dct2(h, w):
    """R[b, c] is the scipy.fft.dctn(norm='ortho') coefficient of channel c at its scaled frequency (paper Eq. 5-8)."""
    low, high = pdct_frequencies(8, 10)
    freqs = low + high
    pdct = PDCTFilter(64, freqs, grid=10).double()
    x = torch.randn(3, 64, h, w, dtype=torch.float64)
    response = pdct(x).numpy()
    coeffs = dctn(x.numpy(), axes=(2, 3), norm="ortho")  # (B, C, ky, kx)
    scaled = pdct.scaled_frequencies(h, w)
    for c in range(64):
        u, v = scaled[c // 8]  # u horizontal (width axis), v vertical (height axis)
        np.testing.assert_allclose(response[:, c], coeffs[:, c, v, u], rtol=1e-10, atol=1e-10)
    assert scaled[4] == (9 * w // 10, 9 * h // 10)  # (9, 9) scaled to the feature size


def test_pdct_basis_follows_the_map_size():
    """The basis is computed from each input's size (no state): the DC response of ones is sqrt(H * W)."""
    pdct = PDCTFilter(8, [(0, 0), (9, 9)], grid=10)
    a = pdct(torch.ones(1, 8, 16, 16))
    b = pdct(torch.ones(1, 8, 40, 30))
    assert torch.allclose(a[0, 0], torch.tensor(16.0)) and torch.allclose(b[0, 0], torch.tensor(40 * 30) ** 0.5)


def test_inject_two_independent_parts():
    inject_h, inject_l = Inject([64, 128], 64, 0), Inject([64, 128], 64, 1)
    x_local, x_global = torch.randn(2, 64, 16, 16), torch.randn(2, 128, 8, 8)
    out = inject_l([x_local, x_global])
    assert out.shape == (2, 64, 16, 16)
    assert_all_parameters_get_gradients(inject_l, out)
    assert not torch.allclose(inject_h([x_local, x_global]), out)


def test_bifusion_shape():
    fusion = BiFusion([64, 160, 64], 64)
    out = fusion([torch.randn(1, 64, 4, 4), torch.randn(1, 160, 8, 8), torch.randn(1, 64, 16, 16)])
    assert out.shape == (1, 64, 8, 8)
    assert_all_parameters_get_gradients(fusion, out)


def test_cs_widens_to_384_and_reduces():
    """The C5 CS module: 1x1 192 -> 384, three chunks of 128, six kept maps (768) -> 1x1 -> 256 (Eq. 21-22)."""
    cs = CS(192, 256, 4)
    assert cs.cv1.conv.out_channels == 384 and cs.cv2.conv.in_channels == 768
    assert [len(chain) for chain in cs.chains] == [0, 1, 2]
    out = cs(torch.randn(2, 192, 5, 5))
    assert out.shape == (2, 256, 5, 5)
    assert_all_parameters_get_gradients(cs, out)
    assert abs(sum(p.numel() for p in cs.parameters()) / 1e6 - 1.601) < 0.001


def test_bottlerep_scale_is_learnable():
    unit = BottleRep(16)
    out = unit(torch.randn(1, 16, 6, 6))
    assert_all_parameters_get_gradients(unit, out)
    assert unit.alpha.requires_grad and unit.alpha.grad.abs() > 0


def test_bepc3_shape():
    block = BepC3(128, 128, 4)
    out = block(torch.randn(1, 128, 6, 6))
    assert out.shape == (1, 128, 6, 6)
    assert_all_parameters_get_gradients(block, out)


def test_sdhead_training_and_inference_outputs():
    head = SDHead(nc=6, reg_max=17, ch=(64, 128, 256))
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    xs = [torch.randn(2, c, s, s) for c, s in ((64, 8), (128, 4), (256, 2))]
    train_out = head(xs)
    assert train_out["boxes"].shape == (2, 68, 84) and train_out["scores"].shape == (2, 6, 84)
    for box, cls in zip(head.cv2, head.cv3):  # official init randomised so every parameter sees a gradient
        torch.nn.init.normal_(box[-1].weight, std=0.01)
        torch.nn.init.normal_(cls[-1].weight, std=0.01)
    train_out = head(xs)
    assert_all_parameters_get_gradients(head, [train_out["boxes"], train_out["scores"]])
    head.eval()
    y, _ = head(xs)
    assert y.shape == (2, 4 + 6, 84)
