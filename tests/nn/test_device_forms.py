"""Inference forms chosen per device (issue 17): after fuse(), the CPU-tuned forms run only on CPU tensors (and in ONNX
export); any other device runs the reference forwards. Their values are equal (tests/nn/test_speed_equivalence.py);
here, which form runs where. A "meta" tensor stands in for a CUDA one: any device that is not the CPU. The same
holds for the neck's deterministic upsampling (CUDA under deterministic=True)."""

import pytest
import torch
import torch.nn.functional as F

from sdgas.nn.modules import CSA
from sdgas.nn.modules.backbone import MLP, LVTBlock
from sdgas.nn.modules.neck import upsample2x_bilinear


def fused_csa_block(device):
    """A stage-0 block after fuse() (which also fuses its CSA and MLP)."""
    block = LVTBlock(64, CSA(64, 2), MLP(64, 4)).to(device).eval()
    block.fuse()
    return block


def test_fused_forms_run_only_on_cpu_tensors(monkeypatch):
    calls = []
    for name in ("forward_taps", "forward_reference"):
        original = getattr(CSA, name)
        monkeypatch.setattr(CSA, name, lambda self, x, f=original, n=name: calls.append(n) or f(self, x))
    with torch.no_grad():
        cpu_block = fused_csa_block("cpu")
        cpu_out = cpu_block(torch.rand(1, 40, 40, 64))
        assert "forward_taps" in calls and "forward_reference" not in calls
        calls.clear()
        meta_out = fused_csa_block("meta")(torch.empty(1, 40, 40, 64, device="meta"))
        assert "forward_reference" in calls and "forward_taps" not in calls
    assert meta_out.shape == cpu_out.shape
    assert cpu_block.fused and cpu_block.attn.fused and cpu_block.mlp.fused


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 20, 20), (1, 2, 1, 3)])
def test_deterministic_upsampling_equals_bilinear_interpolate(shape):
    """The 2x bilinear upsampling used on CUDA under deterministic=True (CUDA's interpolate backward uses atomics)
    gives interpolate's values and gradients (float64: equal to rounding)."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out = upsample2x_bilinear(x)
    weights = torch.randn_like(ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad((out * weights).sum(), x)[0],
                               torch.autograd.grad((ref * weights).sum(), x)[0], rtol=0, atol=1e-13)
