"""The INT8 accuracy gate (sdgas/engine/int8.py): an INT8 OpenVINO export with data= is validated against its FP32
model, and a drop beyond the gate re-exports with the first convolution kept in floating point."""

import re

import pytest

from sdgas import SDGAS
from sdgas.engine import int8

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def quantized_ops(folder) -> tuple:
    """(quantized first convolutions, all FakeQuantize nodes) of an exported OpenVINO model: a convolution
    is quantized when NNCF put a FakeQuantize on its weights (`.../Convolution/fq_weights_1`, a Multiply once the
    weights are compressed to INT8)."""
    xml = next(p for p in folder.iterdir() if p.suffix == ".xml").read_text()
    quantizers = re.findall(r'<layer id="\d+" name="([^"]+)" type="FakeQuantize"', xml)
    weights = re.findall(r'name="([^"]+/fq_weights_\d+)"', xml)
    return sum(bool(re.match(int8.FIRST_CONV_SCOPE, n)) for n in weights), len(quantizers)


def test_gate_reexports_with_the_first_conv_in_float_when_the_drop_is_too_large(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # the exports are written beside the model, here the current folder
    model = SDGAS("sdgasnet-n.yaml")
    args = {"format": "openvino", "data": "neu-det-demo.yaml", "imgsz": 64, "device": "cpu"}
    plain = Path(model.export(**args, quantize=8))  # no gate: ultralytics' export as it is
    first_plain, all_plain = quantized_ops(plain)
    assert first_plain == 1  # NNCF quantizes the first convolution when nothing keeps it in float

    from ultralytics.engine.exporter import Exporter

    calibrated_on, calibration_images = [], Exporter.get_int8_calibration_dataloader

    def record_split(exporter, *a, **k):
        calibrated_on.append(exporter.args.split)
        return calibration_images(exporter, *a, **k)

    monkeypatch.setattr(Exporter, "get_int8_calibration_dataloader", record_split)
    monkeypatch.setattr(int8, "MAX_DROP", -1e9)  # every export "drops too much": the fallback must run
    exported = Path(model.export(**args, int8=True))
    assert calibrated_on and set(calibrated_on) == {"train"}  # the gate measures on val, so never calibrates on it
    report = model.int8_report
    assert {"fp32_map50_95", "int8_map50_95", "int8_first_conv_float_map50_95"} <= set(report)
    first_kept, all_kept = quantized_ops(exported)
    if report["ignored_scope"]:  # the fallback was kept: the first conv in float, the rest INT8
        print(f"first convolution quantized {first_plain} -> {first_kept}, quantizers {all_plain} -> {all_kept}")
        assert first_kept == 0 and 0 < all_kept < all_plain
    else:  # the plain export was better and was written again
        assert (first_kept, all_kept) == (first_plain, all_plain)


def test_a_partial_calibration_set_is_warned_about():
    """ultralytics' fraction= keeps the first images in name order: NEU-DET's first fifth is two classes of six."""
    warning = int8.partial_calibration_warning({"fraction": 0.2, "split": "train"})
    assert "first 20%" in warning and "'train'" in warning
    assert int8.partial_calibration_warning({"fraction": 1.0}) is None
    assert int8.partial_calibration_warning({}) is None
