"""`sdgas benchmark`, the paper-style latency benchmark.

`benchmark(...)` times batch-1 inference split as the paper reports it (preprocess, model inference, DFL decode,
NMS) for sdgas models and stock ultralytics peers built from their YAMLs (random weights; nothing is downloaded), in
PyTorch FP32 and BF16 (channels-last, as AutoBackend runs them; "torch-nchw" for contiguous FP32), ONNX Runtime
FP32 and OpenVINO (FP32, its default precision, NNCF INT8) on the CPU, or PyTorch FP32/FP16 on a GPU (reported as
FPS). Every model and mode is measured once per round, round by round, so drift and load from other processes hit
all of them alike; each round records the CPU time other processes used, and rounds above `max_other_load` are left
out when enough clean ones remain.

    sdgas benchmark                                           # SD-GASNet and the default peers, all modes, 640
    sdgas benchmark model=best.pt peers=yolov8s.yaml modes=torch,onnx rounds=30 threads=2 out=runs/speed
    python benchmarks/speed.py                                # the same, writing docs/speed.json and docs/speed.md
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")  # many models x modes overflow the default 1024

import contextlib
import copy
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sdgas.engine.model import SDGAS
from sdgas.nn.tasks import (SDGASDetectionModel, detect_head, load_model_yaml, model_gflops, optimize_for_cpu,
                            prepare_input)
from sdgas.utils import DEMO_DATA, bf16_supported, cpu_flags, cpu_inference_threads

PEERS = ("yolov8n.yaml", "yolov8s.yaml", "yolo11n.yaml", "yolo11s.yaml", "yolov10s.yaml", "yolo26s.yaml")
BASELINE = "yolov8s.yaml"  # ratios are quoted against this peer, measured in the same run
CPU_MODES = ("torch", "torch-bf16", "onnx")  # also: "torch-nchw", and OPENVINO_MODES where openvino is installed
OPENVINO_MODES = ("openvino", "openvino-default", "openvino-int8")  # FP32 hint; the CPU's default precision; NNCF INT8
GPU_MODES = ("torch", "torch-fp16")
MODE_TITLES = {"torch": "PyTorch FP32", "torch-nchw": "PyTorch FP32 NCHW", "torch-bf16": "PyTorch BF16",
               "onnx": "ONNX Runtime FP32", "torch-fp16": "PyTorch FP16 (GPU)", "openvino": "OpenVINO FP32",
               "openvino-default": "OpenVINO default precision", "openvino-int8": "OpenVINO INT8"}
PARTS = ("preprocess", "inference", "decode", "nms")


# ---------------------------------------------------------------------------------------------------------------------
# Split timing: preprocess, inference (raw head outputs), DFL decode, NMS


def return_raw_outputs(head: nn.Module):
    """Make a fused Detect head return its raw outputs ({"boxes", "scores", "feats"}), leaving the decode to
    `decode_outputs`, so inference and DFL decode are timed apart."""
    branch = head.one2one if head.end2end else head.one2many
    head.forward = lambda feats: head.forward_head(feats, **branch)


def decode_outputs(head: nn.Module, preds: dict) -> torch.Tensor:
    """ultralytics' inference decode of raw head outputs: DFL expectation, anchors, strides (+ top-k if end2end)."""
    y = head._inference(preds)
    return head.postprocess(y.permute(0, 2, 1)) if head.end2end else y


def run_nms(head: nn.Module, y: torch.Tensor, conf: float = 0.25, iou: float = 0.7, max_det: int = 300) -> list:
    """NMS as ultralytics' DetectionPredictor runs it (confidence filter only for end-to-end heads)."""
    from ultralytics.utils import nms

    return nms.non_max_suppression(y, conf, iou, max_det=max_det, nc=0, end2end=head.end2end)


def letterbox_image(image: np.ndarray, imgsz: int) -> np.ndarray:
    """ultralytics' predictor pre-transform: letterbox a BGR image to imgsz x imgsz (HWC uint8)."""
    from ultralytics.data.augment import LetterBox

    return LetterBox((imgsz, imgsz), auto=False)(image=image)


def preprocess_torch(image: np.ndarray, imgsz: int, precision: str, channels_last: bool, device) -> torch.Tensor:
    """The predictor's preprocess (letterbox, BGR->RGB, HWC->CHW, /255) plus the model's dtype/memory format."""
    im = torch.from_numpy(letterbox_image(image, imgsz)).unsqueeze(0).to(device)
    im = im.permute(0, 3, 1, 2).contiguous().flip(1)
    im = (im.half() if precision == "fp16" else im.float()).div_(255)
    return prepare_input(im, precision, channels_last)


def preprocess_numpy(image: np.ndarray, imgsz: int) -> np.ndarray:
    """Preprocess for ONNX Runtime: letterbox, BGR->RGB, HWC->CHW, float32 /255, as a (1, 3, H, W) array."""
    im = letterbox_image(image, imgsz)[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(im[None], dtype=np.float32) / 255.0


def _synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class TorchRunner:
    """One model in one PyTorch mode: `step(image)` runs it once and returns the four part latencies in ms."""

    def __init__(self, model: nn.Module, mode: str, imgsz: int, device="cpu"):
        self.mode, self.imgsz, self.device = mode, imgsz, device
        self.precision = {"torch-bf16": "bf16", "torch-fp16": "fp16"}.get(mode, "fp32")
        self.channels_last = torch.device(device).type == "cpu" and mode in ("torch", "torch-bf16")
        model = copy.deepcopy(model).to(device)
        if torch.device(device).type == "cpu":
            optimize_for_cpu(model, self.precision, self.channels_last)
        else:
            model.eval().fuse(verbose=False)
            if self.precision == "fp16":
                model.half()
        self.model, self.head = model, detect_head(model)
        return_raw_outputs(self.head)

    @torch.inference_mode()
    def step(self, image: np.ndarray) -> tuple:
        t = [time.perf_counter()]
        x = preprocess_torch(image, self.imgsz, self.precision, self.channels_last, self.device)
        _synchronize(self.device)
        t.append(time.perf_counter())
        preds = self.model(x)
        _synchronize(self.device)
        t.append(time.perf_counter())
        y = decode_outputs(self.head, preds)
        _synchronize(self.device)
        t.append(time.perf_counter())
        run_nms(self.head, y)
        _synchronize(self.device)
        t.append(time.perf_counter())
        return tuple((b - a) * 1e3 for a, b in zip(t, t[1:]))


class RawOutputs(nn.Module):
    """Export wrapper: image -> (box distributions, class logits) of a model whose head returns raw outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        preds = self.model(x)
        return preds["boxes"], preds["scores"]


def ort_session_options(threads: int):
    """ONNX Runtime CPU options of the benchmark: `threads` intra-op threads, all graph optimizations, and worker
    threads that spin between the graph's nodes (ORT's default, fast for graphs of many small nodes) but stop
    spinning when a run ends. Without the stop, the pool still spinning after `run` took the cores from the torch
    DFL decode that follows it: SD-GASNet's decode measured 6-45 ms instead of 3 ms on 2 cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def export_raw_onnx(model: nn.Module, imgsz: int, workdir: Path, name: str, batch: int = 1) -> tuple:
    """(ONNX file, fused head) of a model exported to raw head outputs (decode and NMS stay in torch)."""
    from ultralytics.utils.export.engine import torch2onnx

    model = copy.deepcopy(model).eval().fuse(verbose=False)
    head = detect_head(model)
    return_raw_outputs(head)
    file = workdir / f"{Path(name).stem}-{abs(hash(name)) % 10**8}-b{batch}.onnx"
    if not file.exists():
        with torch.no_grad():
            torch2onnx(RawOutputs(model), torch.zeros(batch, 3, imgsz, imgsz), file, opset=18,
                       output_names=["boxes", "scores"])
        try:
            import onnxslim

            with contextlib.redirect_stdout(io.StringIO()):  # onnxslim prints a summary table
                onnxslim.slim(str(file), str(file))
        except ImportError:
            pass
    return file, head


class EngineRunner:
    """One model exported to ONNX (raw head outputs) and run by an inference engine on the CPU; decode and NMS in
    torch. Subclasses set `self.infer(x) -> (boxes, scores)` arrays."""

    def __init__(self, model: nn.Module, imgsz: int, workdir: Path, name: str, batch: int = 1):
        self.imgsz = imgsz
        self.file, self.head = export_raw_onnx(model, imgsz, workdir, name, batch)
        self.feats = [torch.empty(1, 0, imgsz // int(s), imgsz // int(s)) for s in self.head.stride]  # anchor grids

    @torch.inference_mode()
    def step(self, image: np.ndarray) -> tuple:
        t = [time.perf_counter()]
        x = preprocess_numpy(image, self.imgsz)
        t.append(time.perf_counter())
        boxes, scores = self.infer(x)
        t.append(time.perf_counter())
        y = decode_outputs(self.head, {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                                       "feats": self.feats})
        t.append(time.perf_counter())
        run_nms(self.head, y)
        t.append(time.perf_counter())
        return tuple((b - a) * 1e3 for a, b in zip(t, t[1:]))


class OnnxRunner(EngineRunner):
    """ONNX Runtime FP32 with `ort_session_options`."""

    def __init__(self, model: nn.Module, imgsz: int, threads: int, workdir: Path, name: str):
        import onnxruntime as ort

        super().__init__(model, imgsz, workdir, name)
        session = ort.InferenceSession(str(self.file), ort_session_options(threads), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        self.infer = lambda x: session.run(None, {input_name: x})


def calibration_images(imgsz: int, limit: int = 64) -> list:
    """Preprocessed (1, 3, imgsz, imgsz) inputs for INT8 calibration: the built-in demo images (NEU-DET)."""
    import cv2

    files = sorted(DEMO_DATA.parent.rglob("*.jpg"))[:limit]
    return [preprocess_numpy(cv2.imread(str(f)), imgsz) for f in files]


class OpenVinoRunner(EngineRunner):
    """OpenVINO on the CPU: "openvino" with the f32 precision hint, "openvino-default" with OpenVINO's choice (BF16 on
    CPUs with AVX512-BF16 or AMX), "openvino-int8" after NNCF post-training quantization on the demo images."""

    def __init__(self, model: nn.Module, mode: str, imgsz: int, threads: int, workdir: Path, name: str,
                 batch: int = 1):
        import openvino as ov

        super().__init__(model, imgsz, workdir, name, batch)
        core = ov.Core()
        net = core.read_model(str(self.file))
        if mode == "openvino-int8":
            import nncf

            samples = [np.repeat(x, batch, 0) for x in calibration_images(imgsz)]
            net = nncf.quantize(net, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED,
                                subset_size=len(samples))
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY" if batch == 1 else "THROUGHPUT"}
        if mode == "openvino":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(net, "CPU", config)
        request = compiled.create_infer_request()
        self.infer = lambda x: tuple(request.infer([x]).values())[:2]


# ---------------------------------------------------------------------------------------------------------------------
# Models, load, statistics


def make_runner(model: nn.Module, name: str, mode: str, imgsz: int, threads: int, device: str, workdir: Path):
    """The runner that times `model` in `mode`."""
    if mode == "onnx":
        return OnnxRunner(model, imgsz, threads, workdir, name)
    if mode in OPENVINO_MODES:
        return OpenVinoRunner(model, mode, imgsz, threads, workdir, name)
    return TorchRunner(model, mode, imgsz, device)


def default_modes(is_gpu: bool) -> tuple:
    """Every mode this machine runs: BF16 only where the CPU has it natively, OpenVINO where it is installed."""
    if is_gpu:
        return GPU_MODES
    import importlib.util

    openvino = importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")
    return tuple(m for m in CPU_MODES if m != "torch-bf16" or bf16_supported()) + (OPENVINO_MODES if openvino else ())


def load_model(name: str, nc: int = 6) -> nn.Module:
    """A detection model by name: an sdgas YAML (packaged or path) or checkpoint, or a stock ultralytics YAML.

    Stock peers are built from their YAMLs with random weights (never downloaded); sdgas YAMLs are built with `nc`
    classes; checkpoints load through sdgas' safe loader.
    """

    if name.endswith(".pt"):
        return SDGAS(name).model.float()
    with contextlib.suppress(FileNotFoundError):  # an sdgas YAML (sdgasnet-n.yaml included), else a stock one
        return SDGASDetectionModel(load_model_yaml(name), nc=nc, verbose=False)
    from ultralytics import YOLO

    return YOLO(name).model  # a stock YAML: built, not downloaded


def model_complexity(model: nn.Module, imgsz: int) -> dict:
    """Parameters and GFLOPs at imgsz of the fused model, the form that is timed and that ultralytics' model summary
    and the paper report."""
    fused = copy.deepcopy(model).eval()
    fused.fuse(verbose=False)
    return {"params_M": round(sum(p.numel() for p in fused.parameters()) / 1e6, 3),
            "gflops": round(model_gflops(fused, imgsz), 2)}


class CpuLoad:
    """CPU time used by other processes between two `sample()` calls, as a fraction of all cores (Linux /proc)."""

    def __init__(self):
        self.last = self._read()

    @staticmethod
    def _read():
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / hz  # all but idle and iowait
        own = sum(os.times()[:2])
        return busy, own, time.perf_counter()

    def sample(self) -> float:
        """Others' CPU use since the last sample, as a fraction of all cores (nan where /proc is unavailable)."""
        now = self._read()
        if now is None or self.last is None:
            return float("nan")
        (b0, o0, t0), (b1, o1, t1), self.last = self.last, now, now
        return max(0.0, (b1 - b0) - (o1 - o0)) / max((t1 - t0) * (os.cpu_count() or 1), 1e-9)


def summarize(values: list) -> dict:
    """Median, quartiles and p10/p90 of a list of ms values."""
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [10, 25, 50, 75, 90])
    return {"median": round(float(q[2]), 2), "p25": round(float(q[1]), 2), "p75": round(float(q[3]), 2),
            "p10": round(float(q[0]), 2), "p90": round(float(q[4]), 2), "n": int(a.size)}


def environment(threads: int, device: str) -> dict:
    """What the figures depend on: CPU, its BF16 support, threads, library versions, load before the run."""
    import onnxruntime
    import ultralytics
    from ultralytics.utils.cpu import CPUInfo

    flags = cpu_flags()
    env = {"cpu": CPUInfo.name(), "cores": os.cpu_count(), "threads": threads, "device": device,
           "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile",
                                        "amx_int8"}),
           "bf16_native": bf16_supported(), "torch": torch.__version__, "torch_cpu_capability":
               torch.backends.cpu.get_cpu_capability(), "onnxruntime": onnxruntime.__version__,
           "ultralytics": ultralytics.__version__, "python": platform.python_version(),
           "loadavg_before": [round(v, 2) for v in os.getloadavg()]}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark


def benchmark(models=("sdgasnet.yaml",), peers=PEERS, modes=None, imgsz=640, rounds=50, warmup=10, threads=None,
              device="cpu", source=None, pause=0.05, max_other_load=0.15, nc=6, verbose=True) -> dict:
    """Time every (model, mode) pair once per round, interleaved, and summarize the per-part latencies.

    Args:
        models (sequence): sdgas YAMLs or checkpoints.
        peers (sequence): stock ultralytics YAMLs, built with random weights.
        modes (sequence): CPU: "torch" (FP32 channels-last), "torch-nchw", "torch-bf16", "onnx", "openvino"
            (FP32), "openvino-default", "openvino-int8" (NNCF on the demo images); GPU: "torch", "torch-fp16".
            Default: all the device supports (`default_modes`).
        imgsz (int): square input size.
        rounds (int): timed rounds; warmup (int): untimed rounds first.
        threads (int): torch and ONNX Runtime intra-op threads (default: `cpu_inference_threads()`, physical cores).
        device (str | int): ultralytics-style: "cpu", or a CUDA device (0, "cuda:0").
        source (str): image to preprocess (default: ultralytics' bundled bus.jpg).
        pause (float): seconds between runs, so one engine's idle threads do not slow the next.
        max_other_load (float): rounds in which other processes used more than this fraction of the CPU are
            discarded, provided at least a third of the rounds (and 5) remain.
        nc (int): classes of models built from sdgas YAMLs.

    Returns:
        (dict): {"env", "settings", "results": [per model and mode], "ratios": {mode: {model: x baseline}}}.
    """
    import cv2
    from ultralytics.utils import ASSETS
    from ultralytics.utils.torch_utils import select_device

    device = str(select_device("cpu" if device in (None, "") else device, verbose=False))  # refuses a missing GPU
    threads = int(threads or cpu_inference_threads())
    torch.set_num_threads(threads)
    is_gpu = torch.device(device).type == "cuda"
    modes = tuple(modes or default_modes(is_gpu))
    env = environment(threads, device)
    image = cv2.imread(str(source or ASSETS / "bus.jpg"))
    if image is None:
        raise FileNotFoundError(f"cannot read image '{source}'")

    built = {name: load_model(name, nc) for name in list(models) + list(peers)}
    complexity = {name: model_complexity(m, imgsz) for name, m in built.items()}

    runners = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, model in built.items():
            for mode in modes:
                runners[(name, mode)] = make_runner(model, name, mode, imgsz, threads, device, Path(workdir))
        samples = {key: [] for key in runners}
        load, other = CpuLoad(), []
        keys = list(runners)
        for r in range(warmup + rounds):
            load.sample()
            for i in range(len(keys)):
                key = keys[(i + r) % len(keys)]  # rotate the order so no pair always follows the same one
                parts = runners[key].step(image)
                if r >= warmup:
                    samples[key].append(parts)
                time.sleep(pause)
            if r >= warmup:
                other.append(load.sample())
            if verbose and (r + 1) % 10 == 0:
                print(f"round {r + 1}/{warmup + rounds}, others' CPU use {other[-1] if other else float('nan'):.2f}")
    clean = [i for i, o in enumerate(other) if not o > max_other_load]
    keep = clean if len(clean) >= max(5, rounds // 3) else list(range(rounds))
    env.update(loadavg_after=[round(v, 2) for v in os.getloadavg()],
               other_cpu_per_round=[round(o, 3) for o in other], rounds_kept=len(keep),
               rounds_clean=len(clean))

    results = []
    for (name, mode), rows in samples.items():
        rows = [rows[i] for i in keep]
        entry = {"model": name, "mode": mode, **complexity[name]}
        for j, part in enumerate(PARTS):
            entry[part] = summarize([row[j] for row in rows])
        entry["total"] = summarize([sum(row) for row in rows])
        if is_gpu:
            entry["fps_inference"] = round(1000 / entry["inference"]["median"], 1)
            entry["fps_total"] = round(1000 / entry["total"]["median"], 1)
        results.append(entry)
    settings = {"imgsz": imgsz, "batch": 1, "rounds": rounds, "warmup": warmup, "modes": list(modes),
                "pause_s": pause, "max_other_load": max_other_load, "source": str(source or "ultralytics bus.jpg"),
                "nms": "conf 0.25, iou 0.7, max_det 300 (predictor defaults)", "weights": "random (peers); "
                "sdgas YAMLs random with nc=%d" % nc}
    return {"env": env, "settings": settings, "results": results, "ratios": ratios(results)}


def ratios(results: list, baseline: str = BASELINE) -> dict:
    """Median total and inference latency of every model as a multiple of the baseline's, per mode."""
    out = {}
    for mode in {r["mode"] for r in results}:
        base = next((r for r in results if r["mode"] == mode and r["model"] == baseline), None)
        if base:
            out[mode] = {r["model"]: {"total": round(r["total"]["median"] / base["total"]["median"], 3),
                                      "inference": round(r["inference"]["median"] / base["inference"]["median"], 3)}
                         for r in results if r["mode"] == mode}
    return out


def markdown(report: dict) -> str:
    """The benchmark as Markdown: a latency table (median [p25-p75] ms, x baseline) and the per-part breakdown."""
    env, settings, results = report["env"], report["settings"], report["results"]
    modes = settings["modes"]
    names = list(dict.fromkeys(r["model"] for r in results))
    get = {(r["model"], r["mode"]): r for r in results}
    lines = [f"Batch 1, {settings['imgsz']}x{settings['imgsz']}, {env['cpu']} ({env['cores']} cores), "
             f"{env['threads']} threads, torch {env['torch']}, onnxruntime {env['onnxruntime']}, ultralytics "
             f"{env['ultralytics']}. {settings['rounds']} interleaved rounds after {settings['warmup']} warm-up, "
             f"{env['rounds_kept']} kept ({env['rounds_clean']} with other processes below "
             f"{settings['max_other_load']:.0%} CPU); load average before {env['loadavg_before']}, after "
             f"{env['loadavg_after']}. CPU flags: {', '.join(env['cpu_flags'])}.", "",
             "Total latency per image (preprocess + inference + DFL decode + NMS), median ms [p25-p75], and the median "
             f"as a multiple of {BASELINE.replace('.yaml', '')} in the same mode:", "",
             "| model | params M | GFLOPs | " + " | ".join(MODE_TITLES.get(m, m) for m in modes) + " |",
             "|---|---|---|" + "---|" * len(modes)]
    for name in names:
        first = get[(name, modes[0])]
        cells = []
        for mode in modes:
            r = get[(name, mode)]
            ratio = report["ratios"].get(mode, {}).get(name, {}).get("total")
            cells.append(f"{r['total']['median']:.1f} [{r['total']['p25']:.1f}-{r['total']['p75']:.1f}]"
                         + (f" ({ratio:.2f}x)" if ratio is not None else ""))
        lines.append(f"| {name.replace('.yaml', '')} | {first['params_M']:.2f} | {first['gflops']:.1f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Median ms per part (preprocess / inference / decode / NMS):", "",
              "| model | " + " | ".join(MODE_TITLES.get(m, m) for m in modes) + " |", "|---|" + "---|" * len(modes)]
    for name in names:
        cells = [" / ".join(f"{get[(name, mode)][p]['median']:.1f}" for p in PARTS) for mode in modes]
        lines.append(f"| {name.replace('.yaml', '')} | " + " | ".join(cells) + " |")
    if any("fps_inference" in r for r in results):
        lines += ["", "| model | mode | FPS (inference) | FPS (total) |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['mode']} | {r['fps_inference']} | {r['fps_total']} |" for r in results]
    lines += ["", METHOD]
    return "\n".join(lines) + "\n"


METHOD = """How it is measured (`sdgas.tools.benchmark`): every model is timed once per round in every mode, round \
by round, with a short pause between runs. Preprocess is ultralytics' predictor preprocess (letterbox, BGR->RGB, \
HWC->CHW, /255) plus the model's dtype and memory format; inference runs the model to its raw head outputs; decode is \
the head's DFL expectation, anchors and strides (plus the top-k of end-to-end heads); NMS is ultralytics' \
`non_max_suppression` at the predictor's defaults. PyTorch models are in their deploy form: `fuse()` (Conv+BN, \
RepVGG; for SD-GASNet also the unfold/fold-free CSA, the banded stage-0 blocks and the Linear layers as 1x1 \
convolutions), channels-last as ultralytics' AutoBackend runs them on x86 CPUs, and for BF16 `optimize_for_cpu(model, \
"bf16")` (BF16 weights and activations; SD-GASNet decodes boxes in float32). ONNX Runtime runs the same fused graph \
(raw outputs) with ORT_ENABLE_ALL and worker threads that spin between nodes but stop when a run ends \
(`ort_session_options`). OpenVINO compiles the same ONNX graph for latency with the same threads: FP32 with its \
f32 precision hint, "default" with its own choice (BF16 where the CPU has it), INT8 after NNCF post-training \
quantization (mixed preset) calibrated on the built-in NEU-DET demo images. glibc's malloc keeps its defaults, as in \
`sdgas predict`. Peers are stock ultralytics models built from their YAMLs with random weights; with random \
weights few boxes pass the confidence threshold, so NMS is cheap for every model."""


def write_report(report: dict, out) -> tuple:
    """Write `out`.json and `out`.md; returns their paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_file, md_file = out.with_suffix(".json"), out.with_suffix(".md")
    json_file.write_text(json.dumps(report, indent=1))
    md_file.write_text(f"# Inference latency\n\n{markdown(report)}")
    return json_file, md_file


def _as_list(value) -> list:
    if value is None or value is True:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if str(value).lower() in ("", "none", "false") else [v.strip() for v in str(value).split(",") if v.strip()]


def cli(overrides: dict) -> int:
    """`sdgas benchmark key=value ...`: model=, peers=, modes=, imgsz=, rounds=, warmup=, threads=, device=, source=,
    out= (writes out.json and out.md; default runs/benchmark/speed)."""
    convert = {"imgsz": int, "rounds": int, "warmup": int, "nc": int, "pause": float, "max_other_load": float,
               "threads": lambda v: int(v) if v else None, "source": lambda v: v,
               "device": lambda v: v,  # as given: benchmark() resolves it (ultralytics' select_device)
               "peers": _as_list, "modes": lambda v: _as_list(v) or None}
    known = {"model", "out", *convert}
    unknown = set(overrides) - known
    if unknown:
        raise SyntaxError(f"unknown benchmark argument(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    kwargs = {k: convert[k](v) for k, v in overrides.items() if k in convert}  # the rest keep benchmark()'s defaults
    report = benchmark(models=_as_list(overrides.get("model", "sdgasnet.yaml")), **kwargs)
    json_file, md_file = write_report(report, overrides.get("out", "runs/benchmark/speed"))
    print(markdown(report))
    print(f"wrote {json_file} and {md_file}")
    return 0
