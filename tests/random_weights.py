"""Random weights that give fusion and the CPU inference forms something to get wrong (shared by tests)."""

import torch

from sdgas.nn.modules import CSA


def randomised(model):
    """Non-trivial BN statistics, BottleRep scales, LayerNorm affines, CSA attention biases and head prediction weights
    (ultralytics and the official init leave these at values where a wrong fusion or layout still gives the right
    answer). Returns the model in eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(m, torch.nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(m, CSA):
            m.attn.bias.data.uniform_(-1, 1)  # zero-initialised: make the attention depend on the bias layout too
        if hasattr(m, "alpha"):
            m.alpha.data.fill_(0.7)
    head = model.model[-1]
    for seq in [*head.cv2, *head.cv3]:
        torch.nn.init.normal_(seq[-1].weight, std=0.05)
    return model.eval()
