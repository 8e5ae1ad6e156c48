"""Dynamic-shape export (issue 17): `sdgas export format=onnx dynamic=True` (and openvino) gives one model for every
stride-aligned input size, equal to PyTorch within 1e-4 relative at 256x256, 320x416 and 640x640.

SD-GASNet has random weights (tests/random_weights.py; a freshly built one ignores its input), saved as a
weights-only .safetensors file that the CLI exports at imgsz 640; the fused PyTorch model in eval is the reference.
"""

import copy

import numpy as np
import pytest
import torch

from random_weights import randomised
from sdgas import SDGAS
from sdgas.cli import main as sdgas_main
from sdgas.io.weights import export_safetensors

SIZES = [(256, 256), (320, 416), (640, 640)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """(random-weights model, its .safetensors file)."""
    torch.manual_seed(0)
    model = randomised(SDGAS("sdgasnet.yaml").model)
    path = tmp_path_factory.mktemp("dynamic") / "random.safetensors"
    export_safetensors(model, path)
    return model, path


@pytest.fixture(scope="module")
def reference(model_file):
    """PyTorch outputs of the fused model at every size, for one fixed input per size."""
    model = copy.deepcopy(model_file[0]).fuse(verbose=False).eval()
    torch.manual_seed(1)
    inputs = [torch.rand(1, 3, h, w) for h, w in SIZES]
    with torch.no_grad():
        return inputs, [model(x)[0].numpy() for x in inputs]


def relative_differences(out: np.ndarray, ref: np.ndarray) -> dict:
    """Boxes and scores: max |diff| / max |ref|, and elementwise where the reference is not ~0 (as test_export)."""
    rel = {}
    for name, part in ("boxes", slice(0, 4)), ("scores", slice(4, None)):
        r, d = ref[:, part], np.abs(out[:, part] - ref[:, part])
        scale = np.abs(r).max()
        big = np.abs(r) > 0.01 * scale
        rel[name] = max(float(d.max() / scale), float((d[big] / np.abs(r[big])).max()))
    return rel


def export(path, fmt: str):
    assert sdgas_main(["export", f"model={path}", f"format={fmt}", "dynamic=True", "imgsz=640"]) == 0


def test_dynamic_onnx_matches_pytorch_at_every_size(model_file, reference):
    import onnxruntime as ort

    export(model_file[1], "onnx")
    session = ort.InferenceSession(str(model_file[1].with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    height, width = session.get_inputs()[0].shape[2:]
    assert isinstance(height, str) and isinstance(width, str)  # symbolic: one graph for every size
    for x, ref in zip(*reference):
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert out.shape == ref.shape
        rel = relative_differences(out, ref)
        print(f"ONNX {tuple(x.shape[2:])}: {rel}")
        assert all(v < 1e-4 for v in rel.values()), (tuple(x.shape), rel)


def test_dynamic_openvino_matches_pytorch_at_every_size(model_file, reference):
    ov = pytest.importorskip("openvino")

    export(model_file[1], "openvino")
    xml = next(model_file[1].parent.glob("*_openvino_model/*.xml"))
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # no bf16 on this CPU
    for x, ref in zip(*reference):
        out = compiled(x.numpy())[0]
        assert out.shape == ref.shape
        rel = relative_differences(out, ref)
        print(f"OpenVINO {tuple(x.shape[2:])}: {rel}")
        assert all(v < 1e-4 for v in rel.values()), (tuple(x.shape), rel)


def test_dynamic_export_refused_where_unchecked(model_file):
    """A format whose dynamic export was never checked is refused with one line naming the supported ones."""
    with pytest.raises(ValueError, match="dynamic=True is supported for format=onnx, openvino, engine"):
        sdgas_main(["export", f"model={model_file[1]}", "format=torchscript", "dynamic=True"])
