"""Inference forms chosen per device (issue 17): after fuse(), the CPU-tuned forms run only on CPU tensors (and in ONNX
export); any other device runs the reference forwards. Their values are equal (tests/test_speed_equivalence.py);
here, which form runs where. A "meta" tensor stands in for a CUDA one: any device that is not the CPU."""

import torch

from sdgas.nn.modules import CSA
from sdgas.nn.modules.backbone import LVTBlock, MLP, PointwiseLinear


def fused_csa_block(device):
    """A stage-0 block after fuse() (SDGASDetectionModel.fuse fuses the block and its CSA)."""
    block = LVTBlock(64, CSA(64, 2), MLP(64, 4)).to(device).eval()
    block.fuse()
    block.attn.fuse()
    return block


def test_fused_forms_run_only_on_cpu_tensors(monkeypatch):
    calls = []
    for name in ("forward_taps", "forward"):
        original = getattr(CSA, name)
        monkeypatch.setattr(CSA, name, lambda self, x, f=original, n=name: calls.append(n) or f(self, x))
    with torch.no_grad():
        cpu_block = fused_csa_block("cpu")
        cpu_out = cpu_block(torch.rand(1, 40, 40, 64))
        assert "forward_taps" in calls and "forward" not in calls
        calls.clear()
        meta_out = fused_csa_block("meta")(torch.empty(1, 40, 40, 64, device="meta"))
        assert "forward" in calls and "forward_taps" not in calls
    assert meta_out.shape == cpu_out.shape
    assert all(type(m) is PointwiseLinear for m in cpu_block.modules() if isinstance(m, torch.nn.Linear))
