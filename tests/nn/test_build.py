"""YAML builds of every variant: complexity against the paper/official code, fusion, stock modules, loss settings."""

import copy

import pytest
import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import get_flops

from sdgas.nn.loss import GIoUBboxLoss, VarifocalBCE, loss_settings
from sdgas.nn.modules import SDHead
from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.utils import MODELS_DIR, sdgas_default_cfg

from random_weights import randomised

VARIANTS = sorted(p.name for p in MODELS_DIR.glob("*.yaml"))


def params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def sdgasnet():
    return SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_builds_and_runs(name):
    model = SDGASDetectionModel(name, nc=3, verbose=False)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert isinstance(model.model[-1], SDHead)
    model.eval()
    y, _ = model(torch.zeros(1, 3, 128, 160))
    assert y.shape == (1, 4 + 3, (16 * 20) + (8 * 10) + (4 * 5))


def test_sdgasnet_complexity_matches_official_build(sdgasnet):
    """nc=6 at 640: params within 3% of 7.97 M; GFLOPs within 3% of 21.47 (ultralytics' counter, official build)."""
    assert abs(params(sdgasnet) / 1e6 - 7.97) / 7.97 < 0.03
    assert abs(get_flops(sdgasnet, 640) - 21.47) / 21.47 < 0.03


def test_ablation_ordering_of_tables_4_and_7():
    p = {name: params(SDGASDetectionModel(name, nc=6, verbose=False)) for name in VARIANTS}
    full = p["sdgasnet.yaml"]
    assert p["sdgasnet-baseline.yaml"] < min(p["sdgasnet-figa.yaml"], p["sdgasnet-cs.yaml"])
    assert max(p["sdgasnet-figa.yaml"], p["sdgasnet-cs.yaml"]) < full
    assert p["sdgasnet-pafpn.yaml"] < full < p["sdgasnet-fpn.yaml"]


@pytest.mark.parametrize("shape", [(1, 3, 640, 640), (2, 3, 256, 320)])
def test_fused_model_gives_same_outputs(sdgasnet, shape):
    model = copy.deepcopy(sdgasnet)
    randomised(model)
    x = torch.rand(shape)
    with torch.no_grad():
        reference = model(x)[0]
        fused = copy.deepcopy(model).fuse(verbose=False)
        out = fused(x)[0]
    repconvs = [m for m in fused.modules() if type(m).__name__ == "RepConv"]
    assert fused.is_fused() and repconvs  # MFA's RepVGG blocks, reparameterized into one 3x3 conv each
    assert not any(hasattr(m, "conv1") or hasattr(m, "conv2") for m in repconvs) and all(hasattr(m, "conv")
                                                                                         for m in repconvs)
    assert params(fused) < params(model)
    assert ((out - reference).abs() / (reference.abs() + 1e-6)).max().item() < 1e-4


@pytest.mark.parametrize("name", ["yolov8.yaml", "yolo11.yaml", "yolov8.yaml"])  # v8 again after v11: no leaked state
def test_stock_yaml_builds_identically_through_the_extended_builder(name):
    """A stock ultralytics YAML built by sdgas' builder equals ultralytics' own build."""
    ours = SDGASDetectionModel(_stock_yaml(name), nc=2, verbose=False)
    stock = DetectionModel(_stock_yaml(name), nc=2, verbose=False)
    assert params(ours) == params(stock)
    assert [type(m).__name__ for m in ours.model] == [type(m).__name__ for m in stock.model]


@pytest.mark.parametrize("name", ["yolov8.yaml", "yolo11.yaml"])
def test_stock_repeats_are_depth_scaled_once(name):
    """A YAML with flat depth_multiple/width_multiple keys (no `scales:`): stock layers' repeats are scaled once.

    yolov8 's' (depth 0.33): C2f with n=6 -> 2 repeats, as ultralytics builds it; scaling twice gave 1.
    """
    d = _stock_yaml(name, scale="s")
    depth, width, max_channels = d.pop("scales")[d.pop("scale")]
    d.update(depth_multiple=depth, width_multiple=width, max_channels=max_channels)
    ours = SDGASDetectionModel(copy.deepcopy(d), nc=2, verbose=False)
    stock = DetectionModel(_stock_yaml(name, scale="s"), nc=2, verbose=False)
    assert [params(a) for a in ours.model] == [params(b) for b in stock.model]


def _stock_yaml(name, scale="n"):
    from ultralytics.nn.tasks import yaml_model_load

    d = yaml_model_load(name)
    d["scale"] = scale
    return d


def test_loss_settings_from_defaults_and_arguments(sdgasnet):
    model = copy.deepcopy(sdgasnet)
    model.args = get_cfg(sdgas_default_cfg())
    criterion = model.init_criterion()
    assert isinstance(criterion.bce, VarifocalBCE) and isinstance(criterion.bbox_loss, GIoUBboxLoss)
    assert (criterion.assigner.topk, criterion.assigner.alpha, criterion.assigner.beta) == (13, 1.0, 6.0)
    assert (criterion.hyp.box, criterion.hyp.cls, criterion.hyp.dfl) == (2.5, 1.0, 0.5)
    model.args = get_cfg(sdgas_default_cfg(), {"cls_loss": "bce", "iou_loss": "ciou", "tal_topk": 10})
    criterion = model.init_criterion()
    assert isinstance(criterion.bce, torch.nn.BCEWithLogitsLoss) and not isinstance(criterion.bbox_loss, GIoUBboxLoss)
    assert criterion.assigner.topk == 10
    model.args = {"imgsz": 640}  # a checkpoint's arguments from before the loss keys: cfg/default.yaml fills them
    assert vars(loss_settings(model)) == {"cls_loss": "vfl", "iou_loss": "giou", "tal_topk": 13, "tal_alpha": 1.0,
                                          "tal_beta": 6.0}


def test_varifocal_matches_hand_computation():
    logits = torch.tensor([[[0.3, -1.2]]])
    target = torch.tensor([[[0.8, 0.0]]])
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log())
    weight = torch.tensor([[[0.8, 0.75 * p[0, 0, 1].item() ** 2]]])
    assert torch.allclose(VarifocalBCE()(logits, target), bce * weight, atol=1e-6)


def test_scales_resolve_the_ultralytics_way():
    """`sdgasnet-n.yaml` is sdgasnet.yaml at scale n (half width, one block per stage); the bare name is the paper's
    model (scale s, listed first); a scale the YAML does not list is an error naming the ones it does."""
    full, small = SDGASDetectionModel("sdgasnet.yaml", verbose=False), SDGASDetectionModel("sdgasnet-n.yaml", verbose=False)
    assert (full.yaml["scale"], small.yaml["scale"]) == ("s", "n") and small.model_name == "sdgasnet-n"
    assert [m.norm.normalized_shape[0] for m in small.model[:4]] == [32, 32, 80, 128]  # LVTStage widths halved
    assert [len(m.blocks) for m in small.model[:4]] == [1, 1, 1, 1]
    params = [sum(p.numel() for p in m.parameters()) for m in (full, small)]
    assert params[1] < 0.3 * params[0]
    with pytest.raises(ValueError, match="no scale 'x'.*scales: s, n"):
        SDGASDetectionModel("sdgasnet-x.yaml", verbose=False)
