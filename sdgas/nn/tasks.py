"""SDGASDetectionModel and the extended YAML builder.

ultralytics' `parse_model` finds layer classes in its own namespace and tracks channels with identity-checked
rules, so it cannot build layers it does not know. `parse_model` here walks the YAML itself, builds sdgas layers
from `SDGAS_MODULES`, and hands every stock layer, one at a time, to ultralytics' own `parse_model` (which keeps
owning width/depth scaling, repeats and activation handling). Output channels are traced by running each new
layer once on a 256x256 dummy input instead of duplicating channel rules.
"""

import contextlib
import copy
import re
from pathlib import Path

import torch
import torch.nn as nn
import ultralytics.nn.tasks as ultralytics_tasks
from ultralytics.nn.modules import Detect
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, YAML
from ultralytics.utils.ops import make_divisible
from ultralytics.utils.torch_utils import get_flops

from sdgas.nn.loss import SDDetectionLoss
from sdgas.nn.modules import CS, FGPEM, MFA, BepC3, BiFusion, Inject, LVTBlock, LVTStage, SDHead
from sdgas.utils import MODELS_DIR, resolve_cfg_file

SDGAS_MODULES = {m.__name__: m for m in (LVTStage, MFA, FGPEM, Inject, BiFusion, CS, BepC3, SDHead)}
HEADS = {SDHead, Detect}  # take [nc] from YAML; reg_max, end2end and the input channel list are appended
MODERN_BLOCKS = {"C3k2", "A2C2f", "C2fCIB"}  # ultralytics builds a non-legacy Detect when any of these is present
WIDTH_SCALED = {LVTStage, MFA, Inject, BiFusion, CS, BepC3}  # first YAML argument is the output width c2
DEPTH_SCALED = {LVTStage}  # second YAML argument is the number of blocks
INFERENCE_FORMS = (LVTBlock,)  # sdgas layers whose `fuse()` turns on a faster, equivalent forward (and their parts')
_ultralytics_parse_model = ultralytics_tasks.parse_model
TRACE_SIZE = 256
SCALED_NAME = re.compile(r"^(?P<base>.+)-(?P<scale>[nslmx])$")  # sdgasnet-n -> sdgasnet.yaml, scale n


def load_model_yaml(cfg) -> dict:
    """Load a model YAML by path or by the bare name of a packaged one, with its scale resolved the ultralytics way:
    `sdgasnet-n.yaml` is `sdgasnet.yaml` at scale `n`; a bare `sdgasnet.yaml` takes its first listed scale."""
    name = Path(str(cfg))
    scaled = SCALED_NAME.match(name.stem)
    try:
        path, scale = resolve_cfg_file(cfg, MODELS_DIR, "model YAML"), None
    except FileNotFoundError:
        if not scaled:
            raise
        path = resolve_cfg_file(name.with_name(scaled["base"] + ".yaml"), MODELS_DIR, "model YAML")
        scale = scaled["scale"]
    d = YAML.load(path)
    if scale:
        if not d.get("scales"):
            raise ValueError(f"model YAML '{path.name}' declares no scales, so '{name.name}' names none")
        d["scale"] = scale
    d["yaml_file"] = str(path.with_name(name.name if scale else path.name))
    return apply_scale(d, path.name)


def apply_scale(d: dict, source="model YAML") -> dict:
    """Set depth_multiple, width_multiple and max_channels from the YAML's `scales` at its `scale` (the first listed
    one when none is chosen), so that sdgas' builder and the stock layers it delegates scale once, alike."""
    scales = d.get("scales")
    if scales:
        scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise ValueError(f"{source} has no scale '{scale}' (scales: {', '.join(scales)})")
        d["scale"] = scale
        d["depth_multiple"], d["width_multiple"], d["max_channels"] = scales[scale]
    return d


def _resolve(arg, nc):
    """'nc' -> the class count; 'nn.ReLU()' -> an nn.ReLU instance (stock YAML has no per-layer activation)."""
    if arg == "nc":
        return nc
    if isinstance(arg, str) and arg.startswith("nn.") and arg.endswith("()"):
        act = getattr(nn, arg[3:-2], None)
        if isinstance(act, type) and issubclass(act, nn.Module):
            return act()
        raise ValueError(f"unknown activation '{arg}' in model YAML")
    return arg


def _build_sdgas_layer(cls, args, c_in, d, from_list):
    """Instantiate an sdgas layer: heads get ultralytics' Detect signature, others (c1, *args) with c2 scaled."""
    args = [_resolve(a, d["nc"]) for a in args]
    if cls in HEADS:
        return cls(*args, d.get("reg_max", 16), False, c_in)
    if cls in WIDTH_SCALED:
        args[0] = make_divisible(min(args[0], d.get("max_channels", float("inf"))) * d.get("width_multiple", 1.0), 8)
    if cls in DEPTH_SCALED and args[1] > 1:  # as ultralytics scales a row's repeats
        args[1] = max(round(args[1] * d.get("depth_multiple", 1.0)), 1)
    return cls(c_in if from_list else c_in[0], *args)


def _build_stock_layer(d, m, n, args, from_list, c_in):
    """Delegate one stock layer to ultralytics' parse_model, wired to `-1` and given its real input channels.

    `n` comes already depth-scaled from `parse_model`, so ultralytics gets depth 1 and no `scales` (it would scale
    the repeats again: a C2f of 6 repeats at depth 0.33 got 1 instead of 2); widths it scales itself, once.
    """
    base = {k: v for k, v in d.items() if k not in ("backbone", "head", "scales", "scale")}
    base["depth_multiple"] = 1.0
    f = [-1] * len(c_in) if from_list else -1
    one_layer = {**base, "backbone": [[f, n, m, [_resolve(a, d["nc"]) for a in args]]], "head": []}
    return _ultralytics_parse_model(one_layer, c_in[0], verbose=False)[0][0]


def parse_model(d, ch, verbose=True):
    """Build an nn.Sequential and its save list from a model dict; same contract as ultralytics' parse_model."""
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
    d = apply_scale(dict(d))
    image = torch.zeros(1, ch, TRACE_SIZE, TRACE_SIZE)
    outputs, layers, save = [], [], []
    layer_rows = d["backbone"] + d["head"]
    for i, (f, n, m, args) in enumerate(layer_rows):
        from_list = isinstance(f, list)
        inputs = [outputs[s] if (i > 0 or s != -1) else image for s in (f if from_list else [f])]
        c_in = [x.shape[1] for x in inputs]
        n = max(round(n * d.get("depth_multiple", 1.0)), 1) if n > 1 else n
        if m in SDGAS_MODULES:
            cls = SDGAS_MODULES[m]
            layer = nn.Sequential(*(_build_sdgas_layer(cls, args, c_in, d, from_list) for _ in range(n))) if n > 1 \
                else _build_sdgas_layer(cls, args, c_in, d, from_list)
            type_name = f"sdgas.{m}"
        elif m == "Detect":  # stock head: needs the real per-level channels, which one-layer delegation loses
            Detect.legacy = not any(row[2] in MODERN_BLOCKS for row in layer_rows)  # as ultralytics' parse_model
            layer, type_name = _build_sdgas_layer(Detect, args, c_in, d, from_list), "Detect"
        else:
            layer = _build_stock_layer(d, m, n, args, from_list, c_in)
            type_name = layer.type
        layer.i, layer.f, layer.type = i, f, type_name
        layer.np = sum(p.numel() for p in layer.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{f!s:>20}{n:>3}{layer.np:10.0f}  {type_name:<45}{args!s:<30}")
        save.extend(x % i for x in (f if from_list else [f]) if x != -1)
        layers.append(layer)
        if i < len(layer_rows) - 1:  # trace output channels; the head (last layer) needs no trace
            outputs.append(_trace(layer, inputs if from_list else inputs[0]))
    return nn.Sequential(*layers), sorted(save)


@torch.no_grad()
def _trace(layer, x):
    """Run a freshly built layer once in eval mode to learn its output (and hence its channel count)."""
    layer.eval()
    try:
        return layer(x)
    finally:
        layer.train()


@contextlib.contextmanager
def _sdgas_parse_model():
    """Route ultralytics' model initialisation through the extended builder, restoring it afterwards."""
    ultralytics_tasks.parse_model = parse_model
    try:
        yield
    finally:
        ultralytics_tasks.parse_model = _ultralytics_parse_model


class SDGASDetectionModel(DetectionModel):
    """A DetectionModel whose YAML may name sdgas modules (SD-GASNet and its ablations) beside stock ones.

    Everything after building (stride computation, bias and weight init, fuse, info, predict) is ultralytics'.
    """

    def __init__(self, cfg="sdgasnet.yaml", ch=3, nc=None, verbose=True):
        cfg = cfg if isinstance(cfg, dict) else load_model_yaml(cfg)
        with _sdgas_parse_model():
            super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)

    def fuse(self, verbose=True, imgsz=640):
        """ultralytics' fusion (Conv+BN folding, RepConv reparameterization), then sdgas' layers switch to their
        inference forms (`LVTBlock.fuse` and its attention and MLP: same arithmetic, faster layout); parameters and outputs
        are unchanged."""
        super().fuse(verbose=verbose, imgsz=imgsz)
        for m in self.modules():
            if isinstance(m, INFERENCE_FORMS):
                m.fuse()
        return self

    def init_criterion(self):
        """SD-GASNet's stage-1 loss: VFL + GIoU + DFL with the official TAL settings (docs/official-arch.md §5)."""
        return SDDetectionLoss(self)

    @property
    def model_name(self) -> str:
        return Path(self.yaml.get("yaml_file", "sdgasnet.yaml")).stem


def detect_head(model: nn.Module) -> Detect:
    """The Detect head (SDHead or a stock one) of a detection model, else a clear error."""
    head = next((m for m in getattr(model, "model", []) if isinstance(m, Detect)), None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no Detect head; an sdgas model needs one")
    return head


def model_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """ultralytics' GFLOPs count (module hooks) of a model, fused or not.

    sdgas' inference forms compute Linear layers and the CSA's value maps as convolutions and batched matmuls that
    module hooks cannot see, so a fused model is counted on a copy with those forms off: the count of ultralytics'
    fusion alone.
    """
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if hasattr(m, "fused") and isinstance(m.fused, bool):  # sdgas' inference forms, not ultralytics' Conv fusion
            m.fused = False
    return get_flops(reference, imgsz)


def optimize_for_cpu(model: nn.Module, precision: str = "fp32", channels_last: bool = True) -> nn.Module:
    """Put a detection model (sdgas or stock ultralytics) into its fastest CPU inference form, in place; same outputs.

    `fuse()` folds Conv+BN and reparameterizes RepVGG blocks, and turns on sdgas' inference forms; channels-last
    memory makes the NHWC tokens of the LVT stages free views of the convolution maps (ultralytics' AutoBackend does
    both for `sdgas predict/val` on x86). `precision="bf16"` stores weights in BF16 (feed it `prepare_input(x,
    "bf16")`); SDHead decodes boxes in float32.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', not '{precision}'")
    model.eval().fuse(verbose=False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        model.to(torch.bfloat16)
    return model


def prepare_input(x: torch.Tensor, precision: str = "fp32", channels_last: bool = True) -> torch.Tensor:
    """A (B, 3, H, W) float image batch in the dtype and memory format `optimize_for_cpu` expects."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.bfloat16() if precision == "bf16" else x
