"""Offline mixed-precision check of SD-GASNet itself, replacing ultralytics' `check_amp` in SDGASTrainer.

ultralytics checks AMP by downloading a YOLO checkpoint and comparing its FP32 and autocast detections on bus.jpg;
offline the download fails, it only warns and enables AMP without having checked anything, and it never runs the
model being trained. Here the model itself runs a real NEU-DET demo image in FP32 and under autocast, and AMP is
enabled only if every neck output (the head's inputs) and the head's raw box and class outputs are finite and close.
"""

import contextlib
from copy import deepcopy

import cv2
import torch
from ultralytics.utils import LOGGER, colorstr
from ultralytics.utils.torch_utils import unwrap_model

from sdgas.nn.tasks import detect_head
from sdgas.utils import DATASETS_DIR

AMP_IMAGE = DATASETS_DIR / "neu-det-demo" / "images" / "val" / "crazing_100.jpg"
AMP_IMGSZ = 256
# relative L2 error allowed per output. Measured under CPU float16 autocast at 256 px (training mode, random init):
# SD-GASNet 1.2e-2 to 3.4e-2, YOLOv8s 1.1e-3 to 3.0e-2; an overflow or NaN gives inf, a module left wrong ~1
AMP_RTOL = 0.1


def image_batch(device, imgsz: int = AMP_IMGSZ, n: int = 2) -> torch.Tensor:
    """(n, 3, imgsz, imgsz) float32 in [0, 1]: the demo image, resized (NEU-DET images are square)."""
    im = cv2.resize(cv2.imread(str(AMP_IMAGE)), (imgsz, imgsz))[..., ::-1].copy()
    return torch.from_numpy(im).permute(2, 0, 1).float().div(255).expand(n, -1, -1, -1).contiguous().to(device)


def head_io(model, im) -> list:
    """The head's inputs (neck outputs) and its raw outputs, from one training-mode forward without gradients."""
    head, seen = detect_head(model), []
    handle = head.register_forward_hook(lambda m, args, out: seen.extend([*args[0], out["boxes"], out["scores"]]))
    try:
        with torch.no_grad():
            model(im)
    finally:
        handle.remove()
    return seen


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float32 (inf if `out` is not finite)."""
    out = out.float()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def amp_errors(model, device_type: str = "cuda", dtype=torch.float16) -> list:
    """Relative errors of autocast against FP32, per compared output, for a copy of `model` (training mode: what AMP
    training runs; the copy keeps the model's BatchNorm statistics untouched)."""
    model = deepcopy(getattr(unwrap_model(model), "student_model", unwrap_model(model))).float().train()
    im = image_batch(next(model.parameters()).device)
    ref = head_io(model, im)
    with torch.autocast(device_type, dtype=dtype):
        out = head_io(model, im)
    return [relative_error(a.float(), b) for a, b in zip(ref, out)]


def check_amp_offline(model) -> bool:
    """True if `model` may train with CUDA AMP (FP16 autocast): its own FP32 and autocast outputs agree.

    Like ultralytics' check_amp, False on CPU and MPS (AMP is used only on accelerators). Never downloads.
    """
    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    prefix = colorstr("AMP: ")
    errors = amp_errors(model, device.type)
    if max(errors) <= AMP_RTOL:
        LOGGER.info(f"{prefix}checks passed ✅ (SD-GASNet FP32 vs autocast, max relative error {max(errors):.2e})")
        return True
    LOGGER.warning(f"{prefix}checks failed ❌: this model's autocast outputs differ from FP32 (max relative error "
                   f"{max(errors):.2e} > {AMP_RTOL}); training in FP32 (amp=False).")
    return False


@contextlib.contextmanager
def offline_amp_check():
    """Within the block, ultralytics' trainer calls `check_amp_offline` instead of its downloading `check_amp`."""
    from ultralytics.engine import trainer

    stock = trainer.check_amp
    trainer.check_amp = check_amp_offline
    try:
        yield
    finally:
        trainer.check_amp = stock
