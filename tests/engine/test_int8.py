"""The INT8 accuracy gate (sdgas/engine/int8.py): an INT8 OpenVINO export with data= is validated against its FP32
model, and a drop beyond the gate re-exports with the attention layers kept in floating point."""

import re

import pytest

from sdgas import SDGAS
from sdgas.engine import int8

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def quantized_ops(folder) -> tuple:
    """(FakeQuantize nodes in the attention modules, all FakeQuantize nodes) of an exported OpenVINO model."""
    xml = next(p for p in folder.iterdir() if p.suffix == ".xml").read_text()
    names = re.findall(r'<layer id="\d+" name="([^"]+)" type="FakeQuantize"', xml)
    return sum(bool(re.match(int8.ATTENTION_SCOPE, n)) for n in names), len(names)


def test_gate_reexports_with_attention_in_float_when_the_drop_is_too_large(tmp_path, monkeypatch):
    from pathlib import Path

    from sdgas.nn.modules import LVTBlock

    monkeypatch.chdir(tmp_path)  # the exports are written beside the model, here the current folder
    model = SDGAS("sdgasnet-n.yaml")
    blocks = sum(isinstance(m, LVTBlock) for m in model.model.modules())
    args = {"format": "openvino", "data": "neu-det-demo.yaml", "imgsz": 64, "device": "cpu"}
    plain = Path(model.export(**args, quantize=8))  # no gate: ultralytics' export as it is
    attn_plain, all_plain = quantized_ops(plain)
    assert attn_plain > 0  # NNCF quantizes the attention when nothing keeps it in float

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
    assert {"fp32_map50_95", "int8_map50_95", "int8_attention_float_map50_95"} <= set(report)
    attn_kept, all_kept = quantized_ops(exported)
    if report["ignored_scope"]:  # the fallback was kept: the attention in float, the rest still INT8
        print(f"attention quantizers {attn_plain} -> {attn_kept}, all {all_plain} -> {all_kept}")
        assert attn_kept <= blocks < attn_plain  # at most the quantizer on each attention's output (the next
        assert 0 < all_kept < all_plain  # layer's input, outside the scope) stays
    else:  # the plain export was better and was written again
        assert (attn_kept, all_kept) == (attn_plain, all_plain)
