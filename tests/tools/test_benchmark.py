"""`sdgas benchmark`'s OpenVINO modes: the compiled graph computes what the PyTorch model computes (FP32), INT8 runs,
and a report times an sdgas scale beside a stock peer. No wall-clock assertions."""

import copy

import numpy as np
import pytest
import torch

from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.tools.benchmark import OPENVINO_MODES, OpenVinoRunner, RawOutputs, benchmark, detect_head, return_raw_outputs

from random_weights import randomised

pytest.importorskip("openvino")
pytest.importorskip("nncf")
IMGSZ = 64


@pytest.fixture(scope="module")
def small_model():
    return randomised(SDGASDetectionModel("sdgasnet-n.yaml", nc=6, verbose=False))


def torch_raw_outputs(model, x: np.ndarray) -> tuple:
    fused = copy.deepcopy(model).eval().fuse(verbose=False)
    return_raw_outputs(detect_head(fused))
    with torch.no_grad():
        return tuple(t.numpy() for t in RawOutputs(fused)(torch.from_numpy(x)))


def test_openvino_fp32_computes_the_pytorch_outputs(small_model, tmp_path):
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    expected = torch_raw_outputs(small_model, x)
    got = OpenVinoRunner(small_model, "openvino", IMGSZ, 1, tmp_path, "sdgasnet-n.yaml").infer(x)
    for e, g in zip(expected, got):
        assert g.shape == e.shape and e.std() > 0.01  # outputs vary, so the comparison means something
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3)


def test_openvino_int8_quantizes_and_stays_near_fp32(small_model, tmp_path):
    x = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    boxes, scores = torch_raw_outputs(small_model, x)
    runner = OpenVinoRunner(small_model, "openvino-int8", IMGSZ, 1, tmp_path, "sdgasnet-n.yaml")
    q_boxes, q_scores = runner.infer(x)
    assert q_boxes.shape == boxes.shape and np.isfinite(q_boxes).all() and np.isfinite(q_scores).all()
    assert np.corrcoef(q_scores.ravel(), scores.ravel())[0, 1] > 0.9  # quantized, not a different function


def test_benchmark_report_with_openvino_modes():
    """An sdgas scale beside a stock peer; INT8 is left to the test above (NNCF calibration is the slow part)."""
    modes = tuple(m for m in OPENVINO_MODES if m != "openvino-int8")
    report = benchmark(models=("sdgasnet-n.yaml",), peers=("yolo11n.yaml",), modes=modes, imgsz=IMGSZ,
                       rounds=1, warmup=0, threads=1, pause=0, verbose=False)
    pairs = {(r["model"], r["mode"]) for r in report["results"]}
    assert pairs == {(m, mode) for m in ("sdgasnet-n.yaml", "yolo11n.yaml") for mode in modes}
    assert all(r["total"]["median"] > 0 for r in report["results"])
    assert report["ratios"] == {}  # no yolov8s in this run, so no ratios to its latency
