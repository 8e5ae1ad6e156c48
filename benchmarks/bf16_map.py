"""Accuracy of SD-GASNet's CPU inference forms on a validation set: FP32 as built, FP32 optimized, BF16 (issue 5).

Acceptance: the BF16 path changes mAP by less than 0.5 points on NEU-DET val. Every form runs through sdgas'
validator (ultralytics' DetectionValidator plus COCO AP) with the same settings; the model is wrapped so that the
validator's AutoBackend neither fuses it again nor casts it back to float32.

    python benchmarks/bf16_map.py runs/detect/train/weights/best.pt \\
        --data ../shared/datasets/neu-det/data.yaml --imgsz 256 --out docs/bf16_map.json
"""

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)
import torch
import torch.nn as nn

from sdgas import SDGAS
from sdgas.models.detect import SDGASValidator
from sdgas.nn.tasks import optimize_for_cpu, prepare_input
from sdgas.utils import bf16_supported

FORMS = ("fp32-built", "fp32-optimized", "bf16", "bf16-autocast")


class InferenceForm(nn.Module):
    """A detection model in one inference form, presented to ultralytics' AutoBackend as a plain module.

    "fp32-built": the model as built (training-form layers, CSA unfold/fold, NCHW); "fp32-optimized":
    `optimize_for_cpu(model)`; "bf16": BF16 weights, channels-last; "bf16-autocast": the optimized FP32 model
    under CPU autocast to BF16. Images arrive as float32 NCHW, as the validator makes them.
    """

    def __init__(self, model: nn.Module, form: str):
        super().__init__()
        self.form = form
        model = copy.deepcopy(model).float().eval()
        if form != "fp32-built":
            optimize_for_cpu(model, "bf16" if form == "bf16" else "fp32")
        self.model, self.stride, self.names, self.yaml = model, model.stride, model.names, model.yaml

    def forward(self, im, **kwargs):
        if self.form == "bf16-autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model(prepare_input(im))
        return self.model(prepare_input(im, "bf16" if self.form == "bf16" else "fp32", self.form != "fp32-built"))

    def _apply(self, fn, recurse=True):
        """Keep the form's dtype and memory format: AutoBackend casts PyTorch models with .float() and .to()."""
        return self


def validate(model: nn.Module, form: str, data: str, imgsz: int, batch: int, project: str) -> dict:
    """COCO and ultralytics metrics of one inference form on the val split."""
    args = dict(data=data, imgsz=imgsz, batch=batch, conf=0.001, iou=0.7, max_det=300, plots=False, device="cpu",
                mode="val", split="val", verbose=False, project=project, name=form, exist_ok=True)
    validator = SDGASValidator(args=args)
    t0 = time.perf_counter()
    stats = validator(model=InferenceForm(model, form))
    return {"form": form, "mAP50-95": round(stats["metrics/mAP50-95(B)"] * 100, 2),
            "mAP50": round(stats["metrics/mAP50(B)"] * 100, 2),
            "COCO_AP": round(validator.metrics.coco.get("AP", float("nan")) * 100, 2),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(weights: str, data: str, imgsz: int, batch: int, forms: list, out: Path):
    model = SDGAS(weights).model.float()
    with tempfile.TemporaryDirectory() as project:
        rows = [validate(model, form, data, imgsz, batch, project) for form in forms
                if not form.startswith("bf16") or bf16_supported()]
    base = next(r for r in rows if r["form"] == "fp32-built")
    for r in rows:
        r["delta_mAP50-95_points"] = round(r["mAP50-95"] - base["mAP50-95"], 2)
        r["delta_mAP50_points"] = round(r["mAP50"] - base["mAP50"], 2)
        r["delta_COCO_AP_points"] = round(r["COCO_AP"] - base["COCO_AP"], 2)
    result = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "weights": str(weights), "data": data,
              "imgsz": imgsz, "bf16_native": bf16_supported(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/neu-det/data.yaml"))
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "bf16_map.json")
    a = parser.parse_args()
    main(a.weights, a.data, a.imgsz, a.batch, a.forms.split(","), a.out)
