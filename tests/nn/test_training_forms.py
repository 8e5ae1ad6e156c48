"""The backbone's CPU training forms (issue 22) compute what the reference forms compute, forward and backward.

`CSA.forward_train`, `token_linear` (MLP, SRA and CSA projections as 1x1 convolutions) and the adjoint pair
`_WindowTaps` / `_OverlapAdd` run in CPU training steps only; every test compares them with the reference forms on
random weights, and a seeded short training run gives the same losses with either.
"""

import pytest
import torch

import sdgas.nn.modules.backbone as backbone
from sdgas.nn.modules.backbone import CSA, MLP, SRA, _OverlapAdd, _WindowTaps, overlap_add, window_taps

SIZES = [(2, 16, 16), (1, 9, 12), (1, 7, 5), (2, 1, 3)]  # even, odd and single-row maps


def reference_forms(monkeypatch):
    """Make every module take its reference form, as if no CPU training step were recorded."""
    monkeypatch.setattr(backbone, "records_cpu_training", lambda module, x: False)


def outputs_and_grads(module, x, weight):
    """The module's output and the gradients of a weighted sum of it w.r.t. the input and every parameter."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    (out * weight).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]


def max_relative_difference(a: list, b: list) -> float:
    return max(((u - v).abs().max() / v.abs().max().clamp_min(1e-12)).item() for u, v in zip(a, b))


@pytest.mark.parametrize("b, h, w", SIZES)
def test_window_taps_and_overlap_add_are_adjoint(b, h, w):
    """<window_taps(x), t> == <x, overlap_add(t)>: each is the other's backward, odd sizes included."""
    torch.manual_seed(0)
    x = torch.randn(b, h, w, 8, dtype=torch.float64)
    taps = torch.randn(9, b, (h + 1) // 2, (w + 1) // 2, 8, dtype=torch.float64)
    lhs = (window_taps(x, (h + 1) // 2, (w + 1) // 2) * taps).sum()
    rhs = (x * overlap_add(taps, (h, w))).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b, h, w", SIZES)
def test_window_taps_functions_give_autograd_gradients(b, h, w):
    """The custom backwards equal autograd's through the strided slices and the interleaving (float64)."""
    torch.manual_seed(0)
    hh, ww = (h + 1) // 2, (w + 1) // 2
    x = torch.randn(b, h, w, 8, dtype=torch.float64, requires_grad=True)
    taps = torch.randn(9, b, hh, ww, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _WindowTaps.apply(t, hh, ww), (x,))
    assert torch.autograd.gradcheck(lambda t: _OverlapAdd.apply(t, (h, w)), (taps,))


@pytest.mark.parametrize("b, h, w", SIZES)
def test_csa_training_form_equals_reference(monkeypatch, b, h, w):
    """CSA in a CPU training step (`forward_train`) vs `forward_reference`: output and all gradients."""
    torch.manual_seed(0)
    csa = CSA(64, 2).train()
    torch.nn.init.uniform_(csa.attn.bias, -1, 1)  # zero-initialised: make the logit layout matter
    torch.nn.init.normal_(csa.attn.weight, std=0.2)
    x, weight = torch.randn(b, h, w, 64), torch.randn(b, h, w, 64)
    train = outputs_and_grads(csa, x, weight)
    reference_forms(monkeypatch)
    ref = outputs_and_grads(csa, x, weight)
    assert max_relative_difference(train, ref) < 1e-5


def test_csa_training_form_runs_only_when_autograd_records():
    """forward_train in a training step; the reference under no_grad (EMA validation, FLOP counters) and in eval."""
    csa, x = CSA(64, 2), torch.randn(1, 6, 6, 64)
    seen = []
    csa.forward_train = lambda t: seen.append("train") or CSA.forward_train(csa, t)
    csa.forward_reference = lambda t: seen.append("reference") or CSA.forward_reference(csa, t)
    csa(x)
    with torch.no_grad():
        csa(x)
    csa.eval()(x)
    assert seen == ["train", "reference", "reference"]


@pytest.mark.parametrize("module", [lambda: MLP(64, 4), lambda: SRA(64, 2, 4), lambda: SRA(160, 5, 2)])
def test_linear_training_forms_equal_reference(monkeypatch, module):
    """MLP and SRA with their Linear layers as 1x1 convolutions in a training step vs F.linear."""
    torch.manual_seed(0)
    m = module().train()
    c = m.fc1.in_features if isinstance(m, MLP) else m.q.in_features
    x, weight = torch.randn(2, 12, 8, c), torch.randn(2, 12, 8, c)
    train = outputs_and_grads(m, x, weight)
    reference_forms(monkeypatch)
    assert max_relative_difference(train, outputs_and_grads(m, x, weight)) < 1e-5


def seeded_losses(project, name) -> list:
    """Per-iteration (box, cls, dfl) losses of a seeded 27-iteration SD-GASNet training on the demo images, one
    optimizer step per iteration (nbs = batch), so every loss after the first depends on the previous backward.

    SGD at lr 0.001: at lr 0.01 float rounding alone flips task-aligned assignments within a few steps (the
    reference forms with and without oneDNN convolutions differ by 2.7e-4 at the 7th step and by 0.2 at the 10th).
    """
    from sdgas import SDGAS

    losses = []
    model = SDGAS("sdgasnet.yaml")
    model.add_callback("on_train_batch_end", lambda trainer: losses.append([float(v) for v in
                                                                             trainer.loss_items.values()]))
    model.train(data="neu-det-demo.yaml", imgsz=64, epochs=3, batch=4, nbs=4, optimizer="SGD", lr0=0.001,
                warmup_epochs=0, workers=0, device="cpu", seed=0, deterministic=True, val=False, plots=False,
                project=str(project), name=name, exist_ok=True, verbose=False)
    return losses


@pytest.mark.slow  # trains a model
def test_seeded_training_losses_equal_reference_forms(monkeypatch, tmp_path):
    """27 seeded iterations and optimizer steps (36 demo images, batch 4, 3 epochs): the same losses within 1e-4
    relative with the training forms as with the reference forms, and the training forms did run."""
    calls = []
    forward_train = CSA.forward_train
    monkeypatch.setattr(CSA, "forward_train", lambda self, x: calls.append(1) or forward_train(self, x))
    fast = seeded_losses(tmp_path, "training-forms")
    assert len(fast) >= 20 and calls
    reference_forms(monkeypatch)
    calls.clear()
    ref = seeded_losses(tmp_path, "reference-forms")
    assert not calls
    fast, ref = torch.tensor(fast), torch.tensor(ref)
    assert fast.shape == ref.shape
    assert ((fast - ref).abs() / ref.abs()).max().item() < 1e-4
