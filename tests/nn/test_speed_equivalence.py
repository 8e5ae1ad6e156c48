"""Every CPU speed optimization gives the outputs of the unoptimized model (issue 5). No wall-clock assertions.

The unoptimized reference is the model as built: training-form layers (unfused Conv+BN, three-branch RepVGG blocks,
the CSA's unfold/fold), NCHW, float32. Outputs compared are the decoded boxes and class scores, (B, 4 + nc, A), of
a random-weight model whose head prediction convs, BN statistics and BottleRep scales are randomised (SDHead
zero-initializes the prediction convs, which would make every output equal).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from sdgas.nn.modules import CSA, SDHead
from sdgas.nn.modules.backbone import overlap_add, pointwise_linear, window_taps
from sdgas.nn.tasks import SDGASDetectionModel, model_gflops, optimize_for_cpu, prepare_input
from sdgas.tools.benchmark import RawOutputs, decode_outputs, detect_head, return_raw_outputs
from sdgas.utils import bf16_supported

from random_weights import randomised

ODD_AND_EVEN = [(1, 1), (2, 3), (5, 6), (7, 7), (32, 31), (33, 47)]


def max_relative_difference(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / (|ref| + 1e-6), elementwise, as tests/nn/test_build.py measures fusion."""
    return ((out.float() - ref).abs() / (ref.abs() + 1e-6)).max().item()


@pytest.fixture(scope="module")
def sdgasnet():
    return randomised(SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False))


@pytest.mark.parametrize("h, w", ODD_AND_EVEN)
def test_window_taps_equal_unfold(h, w):
    """The nine strided slices hold exactly the values F.unfold(3, padding=1, stride=2) gathers."""
    x = torch.randn(2, 5, h, w)
    oh, ow = (h + 1) // 2, (w + 1) // 2
    taps = window_taps(x.permute(0, 2, 3, 1), oh, ow)  # (9, B, oh, ow, C)
    unfolded = F.unfold(x, 3, padding=1, stride=2).view(2, 5, 9, oh, ow)
    assert torch.equal(taps.permute(1, 4, 0, 2, 3), unfolded)


@pytest.mark.parametrize("h, w", ODD_AND_EVEN)
def test_overlap_add_equals_fold(h, w):
    """Parity-stacked overlap-add equals F.fold(3, padding=1, stride=2), odd sizes included."""
    oh, ow = (h + 1) // 2, (w + 1) // 2
    taps = torch.randn(9, 2, oh, ow, 5, dtype=torch.float64)
    folded = F.fold(taps.permute(1, 4, 0, 2, 3).reshape(2, 45, oh * ow), (h, w), 3, padding=1, stride=2)
    assert torch.allclose(overlap_add(taps, (h, w)).permute(0, 3, 1, 2), folded, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rows", [slice(None), slice(3, 17)])  # a whole map and a band of rows (a strided view)
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_linear_equals_linear_with_gradients(rows, bias):
    """The 1x1-convolution form of a Linear over NHWC channels gives F.linear's values and gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 20, 24, 64, dtype=torch.float64)[:, rows].requires_grad_()
    weight = torch.randn(96, 64, dtype=torch.float64, requires_grad=True)
    b = torch.randn(96, dtype=torch.float64, requires_grad=True) if bias else None
    out, ref = pointwise_linear(x, weight, b), F.linear(x, weight, b)
    assert out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), [x, weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, weight])
    assert all(torch.allclose(g, r, rtol=1e-10, atol=1e-10) for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("b, h, w", [(2, 40, 40), *((1, h, w) for h, w in ODD_AND_EVEN)])
def test_csa_taps_form_equals_unfold_fold_form(b, h, w):
    torch.manual_seed(0)
    csa = CSA(64, 2).eval()
    torch.nn.init.uniform_(csa.attn.bias, -1, 1)
    x = torch.randn(b, h, w, 64)
    with torch.no_grad():
        ref, out = csa(x), csa.forward_taps(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_csa_taps_form_gradients_match():
    """The taps form is differentiable and gives the unfold/fold form's gradients."""
    torch.manual_seed(0)
    csa, x = CSA(64, 2), torch.randn(1, 9, 12, 64)
    grads = []
    for forward in (csa.forward, csa.forward_taps):
        csa.zero_grad()
        (forward(x) * torch.linspace(-1, 1, 64)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in csa.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("band_tokens", [1, 60, 6400])
@pytest.mark.parametrize("b, h, w", [(2, 24, 20), (1, 33, 17), (1, 7, 9)])
def test_lvt_block_banded_form_equals_whole_map_form(monkeypatch, band_tokens, b, h, w):
    """Stage-0 blocks computed over bands of rows (2 rows, a few, the default) give the whole-map result, with the
    CSA in its reference (unfold/fold) form and in its taps form, odd heights included."""
    import sdgas.nn.modules.backbone as backbone

    monkeypatch.setattr(backbone, "BAND_TOKENS", band_tokens)
    torch.manual_seed(0)
    block = backbone.LVTBlock(64, CSA(64, 2), backbone.MLP(64, 4)).eval()
    torch.nn.init.uniform_(block.attn.attn.bias, -1, 1)
    x = torch.randn(b, h, w, 64)
    with torch.no_grad():
        ref = block(x)
        block.fused = True  # bands only, the CSA still in its reference form
        banded_reference_csa = block(x)
        block.fuse()
        banded_taps_csa = block(x)
    assert block.fused and block.attn.fused and block.mlp.fused
    assert torch.allclose(banded_reference_csa, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(banded_taps_csa, ref, rtol=1e-5, atol=1e-5)


def test_fuse_keeps_state_dict_keys_of_sdgas_layers():
    """The sdgas inference forms switch forwards only: no parameter or buffer is added, removed or renamed, so a
    checkpoint's state_dict loads before and after (ultralytics' Conv+BN folding aside)."""
    from sdgas.nn.modules import LVTStage

    stage = LVTStage(3, 64, 1, "csa", 4, 1, "stem")
    keys = {k: v.shape for k, v in stage.state_dict().items()}
    for m in stage.modules():
        if hasattr(m, "fuse") and not isinstance(m, torch.nn.Sequential):
            m.fuse()
    assert {k: v.shape for k, v in stage.state_dict().items()} == keys
    assert stage.blocks[0].fused and stage.blocks[0].attn.fused


def test_model_gflops_counts_a_fused_model_like_ultralytics_fusion_alone(sdgasnet):
    """sdgas' inference forms run the Linear layers and the CSA's value maps functionally (invisible to module hooks);
    model_gflops (sdgas val's Params/GFLOPs line) counts a fused model as ultralytics' fusion alone."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import get_flops

    ultralytics_fused = DetectionModel.fuse(copy.deepcopy(sdgasnet), verbose=False)
    sdgas_fused = copy.deepcopy(sdgasnet).fuse(verbose=False)
    assert model_gflops(sdgas_fused, 640) == pytest.approx(get_flops(ultralytics_fused, 640), rel=1e-9)
    assert model_gflops(sdgas_fused, 640) > get_flops(sdgas_fused, 640)  # hooks alone miss the functional forms
    assert all(m.fused for m in sdgas_fused.modules() if isinstance(m, CSA))  # model_gflops works on a copy


@pytest.mark.parametrize("shape", [(1, 3, 640, 640), (2, 3, 256, 320), (1, 3, 224, 224)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_optimized_fp32_model_equals_unoptimized(sdgasnet, shape, channels_last):
    """optimize_for_cpu (fuse + taps CSA [+ channels-last]) vs the model as built: max relative difference < 1e-4."""
    x = torch.rand(shape)
    with torch.no_grad():
        reference = sdgasnet(x)[0]
        model = optimize_for_cpu(copy.deepcopy(sdgasnet), "fp32", channels_last)
        out = model(prepare_input(x, "fp32", channels_last))[0]
    assert any(m.fused for m in model.modules() if isinstance(m, CSA))
    assert reference.std() > 0.1  # outputs vary, so the comparison means something
    assert max_relative_difference(out, reference) < 1e-4


def test_split_timing_path_equals_model_output(sdgasnet):
    """The benchmark's raw-outputs + separate decode path reproduces the model's own decoded output."""
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        reference = sdgasnet(x)[0]
        model = optimize_for_cpu(copy.deepcopy(sdgasnet))
        head = detect_head(model)
        return_raw_outputs(head)
        out = decode_outputs(head, model(prepare_input(x)))
    assert max_relative_difference(out, reference) < 1e-4


def test_onnx_export_of_optimized_model_equals_unoptimized(sdgasnet, tmp_path):
    """The fused model (taps CSA, no Col2Im) exported to ONNX and run by ONNX Runtime matches the model as built."""
    ort = pytest.importorskip("onnxruntime")
    from ultralytics.utils.export.engine import torch2onnx

    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        reference = sdgasnet(x)[0]
        model = copy.deepcopy(sdgasnet).eval().fuse(verbose=False)
        head = detect_head(model)
        return_raw_outputs(head)
        torch2onnx(RawOutputs(model), x, tmp_path / "m.onnx", opset=17, output_names=["boxes", "scores"])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    feats = [torch.empty(1, 0, 256 // int(s), 256 // int(s)) for s in head.stride]
    out = decode_outputs(head, {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores), "feats": feats})
    assert max_relative_difference(out, reference) < 1e-4


class DecodedOutput(torch.nn.Module):
    """The decoded (B, 4 + nc, A) output alone: the tracer cannot return the raw outputs' dict."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def test_traced_export_keeps_token_linears_as_linear(sdgasnet):
    """A traced export (ONNX, and the TorchScript trace ultralytics' OpenVINO export converts) records every Linear as
    a linear, not as the 1x1 convolution eager CPU inference uses, which OpenVINO ran between two transposes. The
    trace still computes the model's outputs."""
    x = torch.rand(1, 3, 128, 128)
    model = copy.deepcopy(sdgasnet).eval().fuse(verbose=False)
    with torch.no_grad():
        reference = sdgasnet(x)[0]
        traced = torch.jit.trace(DecodedOutput(model), x, check_trace=False)
        out = traced(x)
    kinds = [node.kind() for node in traced.inlined_graph.nodes()]
    assert kinds.count("aten::linear") == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert max_relative_difference(out, reference) < 1e-4


def bf16_reference_and_output(model, x, mode):
    """Decoded outputs of the float32 model and of its BF16 form ("weights": BF16 weights + channels-last input,
    "autocast": float32 channels-last weights under CPU autocast)."""
    with torch.no_grad():
        reference = model(x)[0]
        if mode == "weights":
            fast = optimize_for_cpu(copy.deepcopy(model), "bf16")
            out = fast(prepare_input(x, "bf16"))[0]
        else:
            fast = optimize_for_cpu(copy.deepcopy(model), "fp32")
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fast(prepare_input(x, "fp32"))[0]
    return reference, out


@pytest.mark.parametrize("mode", ["weights", "autocast"])
def test_bf16_path_decodes_in_float32_close_to_fp32(sdgasnet, mode):
    """BF16 forms decode boxes in float32 (SDHead); boxes within 2 px and scores within 0.03 of the float32 model on
    random weights (the NEU-DET mAP comparison on a trained model is benchmarks/bf16_map.py)."""
    x = torch.rand(1, 3, 256, 256)
    reference, out = bf16_reference_and_output(sdgasnet, x, mode)
    assert out.dtype == torch.float32
    assert (out[:, :4] - reference[:, :4]).abs().max() < 2.0
    assert (out[:, 4:] - reference[:, 4:]).abs().max() < 0.03


def test_sdhead_decode_in_float32_equals_float32_decode():
    """SDHead's float32 decode of BF16 raw outputs equals decoding the same values given as float32."""
    head = SDHead(nc=3, reg_max=17, ch=(16, 32)).eval()
    head.stride = torch.tensor([8.0, 16.0])
    feats = [torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    preds = {"boxes": torch.randn(1, 68, 80).bfloat16(), "scores": torch.randn(1, 3, 80).bfloat16(), "feats": feats}
    out = head._inference(preds)
    ref = head._inference({**preds, "boxes": preds["boxes"].float(), "scores": preds["scores"].float()})
    assert out.dtype == torch.float32 and torch.equal(out, ref)


def test_bf16_support_reported_from_cpu_flags(monkeypatch):
    """bf16_supported() is True exactly on CPUs with AVX512-BF16 or AMX (where oneDNN is built in); the benchmark
    only offers BF16 where it is."""
    import sdgas.utils

    for flags, expected in (({"avx512_bf16", "avx2"}, True), ({"amx_bf16"}, True), ({"avx2", "avx512f"}, False)):
        monkeypatch.setattr(sdgas.utils, "cpu_flags", lambda flags=flags: flags)
        assert bf16_supported() is (expected and torch.backends.mkldnn.is_available())


def test_benchmark_report_structure(tmp_path):
    """`benchmark` runs every (model, mode) pair and reports the four parts, spread, ratios, load and the fused
    fused model's complexity (smoke test at 64x64, one round; timings are not checked)."""
    from sdgas.tools.benchmark import PARTS, benchmark, write_report

    report = benchmark(models=("sdgasnet.yaml",), peers=("yolov8s.yaml",), modes=("torch", "onnx"), imgsz=64,
                       rounds=1, warmup=0, threads=1, pause=0, verbose=False)
    names = {"sdgasnet.yaml", "yolov8s.yaml"}
    assert {(r["model"], r["mode"]) for r in report["results"]} == {(n, m) for n in names for m in ("torch", "onnx")}
    for r in report["results"]:
        assert all(r[p]["median"] >= 0 and r[p]["p25"] <= r[p]["p75"] for p in (*PARTS, "total"))
    assert report["ratios"]["torch"]["yolov8s.yaml"]["total"] == 1.0
    sdgasnet = next(r for r in report["results"] if r["model"] == "sdgasnet.yaml")
    fused = SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False).fuse(verbose=False)  # the form that is timed
    assert sdgasnet["params_M"] == round(sum(p.numel() for p in fused.parameters()) / 1e6, 3)
    assert sdgasnet["gflops"] == round(model_gflops(fused, 64), 2) > 0
    assert report["env"]["threads"] == 1 and "loadavg_before" in report["env"]
    json_file, md_file = write_report(report, tmp_path / "speed")
    assert "yolov8s" in md_file.read_text() and json_file.is_file()


def test_benchmark_refuses_a_missing_gpu_before_building_anything():
    """`device=0` means CUDA GPU 0, as in ultralytics (whose select_device resolves it); on a machine without one it
    is an error naming the device, never a silent CPU run."""
    from sdgas.tools.benchmark import benchmark

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(ValueError, match="device=0"):
        benchmark(models=("sdgasnet.yaml",), peers=(), imgsz=64, rounds=1, warmup=0, device=0, verbose=False)


def test_ort_workers_stop_spinning_when_a_run_ends():
    """The benchmark's ONNX Runtime pool must not keep spinning after `run`: it took the cores from the torch DFL
    decode timed right after it (SD-GASNet's decode read 6-45 ms instead of 3 ms on 2 cores)."""
    from sdgas.tools.benchmark import ort_session_options

    options = ort_session_options(2)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
