"""The INT8 accuracy gate of `sdgas export format=openvino quantize=8 data=...` (or `int8=True`).

Post-training quantization can cost a transformer backbone more accuracy than a CNN. After an INT8 OpenVINO export
with a dataset, the exported model is validated on the dataset's val split beside the PyTorch model it came from; a
drop of more than `MAX_DROP` mAP50-95 points is reported, and the export is redone with the first convolution (the
stem's `model.0.embed.cv1`, the one layer that sees the raw image) kept in floating point through NNCF's ignored
scope. The better of the two is kept, and the result is logged and returned. Measured on the long-budget SD-GASNet
(docs/int8.md): that one convolution in float recovers 0.66 of the 1.30 points INT8 loses, the whole backbone
0.73, its attention layers 0.02: the first layer, quantizing raw pixels, is the usual weak spot of PTQ. Calibration
images come from the train split (ultralytics takes them from val, the split the gate measures on) unless `split=`
says otherwise.
"""

import contextlib

from ultralytics.utils import LOGGER

MAX_DROP = 1.0  # mAP50-95 points an INT8 export may lose against its FP32 model
FIRST_CONV_SCOPE = r"__module\.model\.0\.embed\.cv1[./].*"  # OpenVINO op names of the stem's first convolution
VAL_BATCH = 16  # an exported OpenVINO model with a fixed batch of 1 is fed one image at a time by ultralytics anyway


@contextlib.contextmanager
def first_conv_kept_in_float():
    """NNCF quantizes everything but the first convolution while this is active (added to any ignored scope)."""
    import nncf

    quantize = nncf.quantize

    def quantize_without_first_conv(*args, ignored_scope=None, **kwargs):
        scope = ignored_scope or nncf.IgnoredScope()
        kept = nncf.IgnoredScope(names=scope.names, patterns=[*scope.patterns, FIRST_CONV_SCOPE], types=scope.types,
                                 validate=False)
        return quantize(*args, ignored_scope=kept, **kwargs)

    nncf.quantize = quantize_without_first_conv
    try:
        yield
    finally:
        nncf.quantize = quantize


def is_int8_openvino(kwargs: dict) -> bool:
    return str(kwargs.get("format", "")).lower() == "openvino" and str(kwargs.get("quantize")) in ("8", "int8")


def map50_95(model, kwargs: dict) -> float:
    """mAP50-95 (%) of a model (.pt in memory, or an exported folder) on the export's dataset and image size, on
    square letterboxes for both (ultralytics validates a fixed-shape export so; a .pt would get rectangular batches,
    whose padding alone moved SD-GASNet's NEU-DET AP by a point)."""
    args = {k: kwargs[k] for k in ("data", "imgsz", "device") if kwargs.get(k) is not None}
    metrics = model.val(**args, batch=VAL_BATCH, rect=False, plots=False, verbose=False, save_json=False)
    return 100 * float(metrics.box.map)


def partial_calibration_warning(kwargs: dict) -> str | None:
    """The warning for `fraction=` below 1: ultralytics calibrates on the first images of the split in name order,
    which in a dataset named by class (NEU-DET's crazing_*, inclusion_*, ...) leaves classes out. On the long-budget
    SD-GASNet, fraction=0.2 (crazing and inclusion only) lost 2.2 mAP50-95 points where the whole split lost 0.7."""
    fraction = kwargs.get("fraction", 1.0)
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction < 1:
        return (f"INT8 calibration with fraction={fraction} uses the first {fraction:.0%} of the "
                f"'{kwargs.get('split', 'train')}' images in name order, which may leave classes out; fraction=1.0 "
                "(the default) calibrates on them all")
    return None


def int8_gate(model, export, kwargs: dict) -> tuple:
    """(exported path, report) for an INT8 OpenVINO export: validated against `model` (FP32 PyTorch), re-exported
    with the first convolution kept in float when the drop exceeds MAX_DROP and that export is better.

    `export(**kwargs)` runs ultralytics' export of `model`; `model.val` and the facade's loader validate."""
    kwargs = {"split": "train", **kwargs}  # calibrate on train images: the gate measures on val
    if warning := partial_calibration_warning(kwargs):
        LOGGER.warning(warning)
    exported = export(**kwargs)
    fp32 = map50_95(model, kwargs)
    int8 = map50_95(type(model)(exported), kwargs)
    report = {"fp32_map50_95": round(fp32, 2), "int8_map50_95": round(int8, 2), "ignored_scope": None}
    if fp32 - int8 > MAX_DROP:
        LOGGER.warning(f"INT8 export loses {fp32 - int8:.2f} mAP50-95 points (FP32 {fp32:.2f}, INT8 {int8:.2f}), more "
                       f"than {MAX_DROP}; exporting again with the first convolution in float ({FIRST_CONV_SCOPE})")
        with first_conv_kept_in_float():
            exported = export(**kwargs)
        kept = map50_95(type(model)(exported), kwargs)
        report.update(int8_first_conv_float_map50_95=round(kept, 2))
        if kept >= int8:
            report["ignored_scope"] = FIRST_CONV_SCOPE
        else:  # the plain INT8 export was better after all: write it again
            exported = export(**kwargs)
    final = report.get("int8_first_conv_float_map50_95") if report["ignored_scope"] else int8
    verdict = "within" if fp32 - final <= MAX_DROP else "MORE than"
    kept_note = "; first convolution kept in float" if report["ignored_scope"] else ""
    LOGGER.info(f"INT8 accuracy gate: FP32 {fp32:.2f}, INT8 {final:.2f} mAP50-95 ({fp32 - final:+.2f} points, "
                f"{verdict} {MAX_DROP}){kept_note} -> {exported}")
    return exported, report
