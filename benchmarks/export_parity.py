"""Do exported SD-GASNet models validate like the .pt? COCO AP on a dataset's val split of a checkpoint and of its ONNX
and OpenVINO FP32 exports, through `sdgas val`; writes a JSON (issue 19: within 0.1 AP in FP32).

A fixed-shape export is validated on square imgsz letterboxes (ultralytics turns rect off for it), while a .pt is
validated with rectangular batches by default (for 200-px NEU-DET images at imgsz 160: 192-px padded inputs). So the
.pt is validated both ways and the exports are compared with the .pt on the same square inputs (`rect=False`).

OpenVINO runs at its default precision in `sdgas val` (ultralytics' backend sets none), which is BF16 on CPUs with
AVX512-BF16 or AMX; the OpenVINO export is therefore validated twice, as `sdgas val` runs it and compiled with the
f32 precision hint (the FP32 model itself).

    python benchmarks/export_parity.py --model best.pt --data neu-det.yaml --imgsz 160 [--out docs/export_parity]
"""

import argparse
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)
from sdgas import SDGAS
from ultralytics.utils.cpu import CPUInfo

FORMATS = ("onnx", "openvino")


@contextlib.contextmanager
def openvino_f32():
    """OpenVINO compiles every model with the f32 precision hint while this is active."""
    import openvino as ov

    compile_model = ov.Core.compile_model

    def compile_f32(self, model, device_name=None, config=None):
        return compile_model(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"})

    ov.Core.compile_model = compile_f32
    try:
        yield
    finally:
        ov.Core.compile_model = compile_model


def coco(model: str, data: str, imgsz: int, folder: Path, rect: bool = False) -> dict:
    metrics = SDGAS(model).val(data=data, imgsz=imgsz, batch=1, rect=rect, plots=False, verbose=False,
                               project=str(folder), name="val", exist_ok=True)
    return {k: round(100 * v, 3) for k, v in metrics.coco.items()} | {"mAP50-95": round(100 * metrics.box.map, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--out", default="docs/export_parity")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / Path(a.model).name
        shutil.copyfile(a.model, weights)  # the exports are written beside it
        rows = {"pt": coco(str(weights), a.data, a.imgsz, Path(tmp)),
                "pt rect (sdgas val's default)": coco(str(weights), a.data, a.imgsz, Path(tmp), rect=True)}
        for fmt in FORMATS:
            exported = SDGAS(str(weights)).export(format=fmt, imgsz=a.imgsz)
            rows[fmt] = coco(str(exported), a.data, a.imgsz, Path(tmp))
            if fmt == "openvino":
                with openvino_f32():
                    rows["openvino f32 hint"] = coco(str(exported), a.data, a.imgsz, Path(tmp))
    diff = {fmt: round(max(abs(rows[fmt][k] - rows["pt"][k]) for k in rows["pt"]), 3)
            for fmt in rows if not fmt.startswith("pt")}
    result = {"cpu": CPUInfo.name(), "model": a.model, "data": a.data, "imgsz": a.imgsz, "batch": 1, "rows": rows,
              "max_abs_diff_points": diff}
    Path(a.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
    for fmt, r in rows.items():
        print(f"{fmt:30s} " + "  ".join(f"{k} {v:.2f}" for k, v in r.items()))
    print("max |difference| to the .pt, AP points:", diff)


if __name__ == "__main__":
    main()
