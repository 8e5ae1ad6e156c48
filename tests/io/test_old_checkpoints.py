"""Checkpoints saved before sdgas' classes moved (issue 21) still load and compute what they computed then.

tests/assets/sdgasnet-pre-move.pt was written at commit 91573ff (before the redesign): sdgasnet.yaml at width 0.25,
randomised weights (tests/random_weights.py), saved in half precision as training saves it, with a fixed input and
the output the model gave for it at that commit.
"""

from pathlib import Path

import torch

from sdgas import SDGAS

PRE_MOVE = Path(__file__).parents[1] / "assets" / "sdgasnet-pre-move.pt"


def saved_example():
    """The input and output stored beside the model (read as plain tensors, no classes involved)."""
    ckpt = torch.load(PRE_MOVE, map_location="cpu", weights_only=False)
    return ckpt["input"], ckpt["output"]


def test_pre_move_checkpoint_loads_and_computes_the_same():
    x, expected = saved_example()
    model = SDGAS(str(PRE_MOVE)).model.float().eval()
    with torch.no_grad():
        out = model(x)[0]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)


def test_pre_move_checkpoint_fuses_to_the_same_output():
    x, expected = saved_example()
    model = SDGAS(str(PRE_MOVE)).model.float().eval().fuse(verbose=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], expected, atol=1e-3, rtol=1e-3)
