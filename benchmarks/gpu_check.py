"""GPU check of sdgas (issue 17): the training and deployment paths that only a CUDA machine exercises, in one run.

Run by benchmarks/gpu_check.sh (settings from its environment: DEVICE, IMGSZ, DATA, EPOCHS, BATCH, FRACTION, ROUNDS,
OUT). Each step records its result or its error, so one failure does not hide the others; the report (docs/gpu.md
by default) lists every step with its numbers and the commands to rerun it:

1. AMP training of sdgasnet.yaml (losses finite, mAP, peak GPU memory, median step time) and YOLOv8s the same way.
2. selfdistill=True: stage 1 and stage 2, short.
3. `sdgas val` with FP16 weights (half=True, ultralytics' quantize=16) against FP32, on the step-1 checkpoint.
4. ONNX export: FP16 (CUDA only) and dynamic-shape FP32, each checked against PyTorch with ONNX Runtime.
5. Inference FPS against YOLOv8s: `sdgas benchmark` at batch 1, fused models at batch 32.
6. ultralytics' DDP launcher and worker file at world size 1 (NCCL on CUDA, gloo on the CPU).

On a machine without a GPU, DEVICE=cpu IMGSZ=64 FRACTION=0.05 runs every step that does not need CUDA.
"""

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)
import numpy as np
import torch

from sdgas import SDGAS
from sdgas.models.detect import SDGASTrainer
from sdgas.models.detect.amp import offline_amp_check

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: os.environ.get(k, v) for k, v in {
    "DEVICE": "0", "IMGSZ": "640", "DATA": str(ROOT.parent / "shared" / "datasets" / "neu-det" / "data.yaml"),
    "EPOCHS": "3", "BATCH": "32", "FRACTION": "1.0", "ROUNDS": "50", "OUT": str(ROOT / "docs" / "gpu.md"),
    "RUNS": str(ROOT / "runs" / "gpu_check")}.items()}
DEVICE, IMGSZ, DATA = ENV["DEVICE"], int(ENV["IMGSZ"]), ENV["DATA"]
CUDA = DEVICE.lower() != "cpu"
TRAIN = dict(data=DATA, imgsz=IMGSZ, batch=int(ENV["BATCH"]), device=DEVICE, fraction=float(ENV["FRACTION"]),
             project=ENV["RUNS"], exist_ok=True, plots=False, seed=0, workers=8 if CUDA else 0, verbose=False)
DYNAMIC_SIZES = [(256, 256), (320, 416), (640, 640)]


class StepTimer:
    """Per-batch wall time of a training run (ultralytics callbacks, CUDA-synchronised); the first 5 are warm-up."""

    def __init__(self):
        self.times, self.start = [], None

    def sync(self):
        if CUDA:
            torch.cuda.synchronize()

    def begin(self, trainer):
        self.sync()
        self.start = time.perf_counter()

    def end(self, trainer):
        self.sync()
        self.times.append(time.perf_counter() - self.start)

    def attach(self, model):
        model.add_callback("on_train_batch_start", self.begin)
        model.add_callback("on_train_batch_end", self.end)

    @property
    def median_ms(self) -> float:
        steady = self.times[5:] or self.times
        return round(1000 * float(np.median(steady)), 1)


def reset_peak_memory():
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib():
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if CUDA else None


def results_rows(save_dir) -> list:
    with open(Path(save_dir) / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def losses_finite(rows) -> bool:
    return all(math.isfinite(v) for row in rows for k, v in row.items() if "loss" in k or k.startswith("train/"))


def train_and_time(model, name: str, epochs: int, **extra) -> dict:
    """Train with AMP (checked offline on the model itself), timing steps; the run's figures."""
    timer = StepTimer()
    timer.attach(model)
    reset_peak_memory()
    with offline_amp_check():  # for the stock YOLOv8s too: ultralytics' check_amp would try a download
        model.train(epochs=epochs, name=name, amp=True, **TRAIN, **extra)
    rows = results_rows(model.trainer.save_dir)
    return {"amp_enabled": bool(model.trainer.amp), "losses_finite": losses_finite(rows),
            "last_epoch_losses": {k: round(v, 4) for k, v in rows[-1].items() if k.startswith("train/")},
            "mAP50": round(rows[-1].get("metrics/mAP50(B)", float("nan")), 4),
            "mAP50-95": round(rows[-1].get("metrics/mAP50-95(B)", float("nan")), 4),
            "peak_memory_GiB": peak_memory_gib(), "median_step_ms": timer.median_ms, "steps": len(timer.times),
            "weights": str(model.trainer.best if model.trainer.best.exists() else model.trainer.last)}


def step_amp_training(report):
    from ultralytics import YOLO

    epochs = int(ENV["EPOCHS"])
    report["amp_train"] = train_and_time(SDGAS("sdgasnet.yaml"), "sdgasnet-amp", epochs)
    report["amp_train_yolov8s"] = train_and_time(YOLO("yolov8s.yaml"), "yolov8s-amp", 1)


def step_selfdistill(report):
    model = SDGAS("sdgasnet.yaml")
    model.train(selfdistill=True, epochs=2, name="selfdistill", amp=True, **TRAIN)
    stage2 = results_rows(Path(model.selfdistill_results["student"]["weights"]).parents[1])
    report["selfdistill"] = {stage: {"mAP50-95": round(r.get("metrics/mAP50-95(B)", float("nan")), 4),
                                     "weights": str(r["weights"])}
                             for stage, r in model.selfdistill_results.items()}
    report["selfdistill"]["stage2_losses_finite"] = losses_finite(stage2)
    report["selfdistill"]["stage2_kd_columns"] = sorted(k for k in stage2[-1] if k.startswith("train/kd"))


def step_val_half(report):
    weights = report["amp_train"]["weights"]
    common = dict(data=DATA, imgsz=IMGSZ, batch=TRAIN["batch"], device=DEVICE, plots=False, verbose=False,
                  project=ENV["RUNS"], exist_ok=True)
    fp32 = SDGAS(weights).val(name="val-fp32", **common)
    fp16 = SDGAS(weights).val(name="val-fp16", quantize=16, **common)  # `sdgas val half=True`
    report["val_half"] = {"mAP50-95 FP32": round(fp32.box.map, 4), "mAP50-95 FP16": round(fp16.box.map, 4),
                          "AP FP32": round(fp32.coco["AP"], 4), "AP FP16": round(fp16.coco["AP"], 4),
                          "FP16 weights used": CUDA}


def relative_difference(out, ref) -> float:
    """max |out - ref| / max |ref| over boxes and scores separately; the larger of the two."""
    return max(float(np.abs(out[:, p] - ref[:, p]).max() / np.abs(ref[:, p]).max())
               for p in (slice(0, 4), slice(4, None)))


def step_onnx(report):
    import onnxruntime as ort

    weights = report["amp_train"]["weights"]
    reference = SDGAS(weights).model.float().fuse(verbose=False).eval()
    result = {}
    dynamic = SDGAS(weights).export(format="onnx", dynamic=True, imgsz=max(IMGSZ, 64), device=DEVICE)
    session = ort.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])
    for h, w in DYNAMIC_SIZES:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = reference.cpu()(x)[0].numpy()
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        result[f"dynamic FP32 {h}x{w} rel. diff"] = float(f"{relative_difference(out, ref):.2e}")
    if CUDA:
        fp16 = SDGAS(weights).export(format="onnx", quantize=16, imgsz=IMGSZ, device=DEVICE)
        session = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
        x = torch.rand(1, 3, IMGSZ, IMGSZ)
        with torch.no_grad():
            ref = reference.cpu()(x)[0].numpy()
        out = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float16)})[0].astype(np.float32)
        result[f"FP16 {IMGSZ}x{IMGSZ} rel. diff"] = float(f"{relative_difference(out, ref):.2e}")
    else:
        result["FP16"] = "skipped: ultralytics exports FP16 ONNX only from a CUDA device"
    report["onnx"] = result


def step_benchmark(report):
    out = Path(ENV["RUNS"]) / "benchmark"
    cmd = [str(Path(sys.executable).parent / "sdgas"), "benchmark", f"device={DEVICE}", f"imgsz={IMGSZ}",
           "peers=yolov8s.yaml", f"rounds={ENV['ROUNDS']}", "warmup=5", f"out={out}"]
    if not CUDA:
        cmd.append("modes=torch")
    subprocess.run(cmd, check=True)
    data = json.loads(out.with_suffix(".json").read_text())
    rows = [{"model": r["model"], "mode": r["mode"], "inference_ms": r["inference"]["median"],
             "fps_inference": r.get("fps_inference"), "fps_total": r.get("fps_total")} for r in data["results"]]
    report["benchmark_batch1"] = {"command": " ".join(cmd[1:]), "results": rows, "ratios": data.get("ratios")}
    report["throughput_batch32"] = {name: batch_throughput(name) for name in ("sdgasnet.yaml", "yolov8s.yaml")}


def batch_throughput(name: str, batch: int = 32, iters: int = 20) -> dict:
    """Images per second of the fused model's forward at `batch` (FP16 on CUDA, FP32 on the CPU)."""
    from ultralytics.nn.tasks import DetectionModel

    build = SDGAS(name).model if name.startswith("sdgas") else DetectionModel(name, nc=6, verbose=False)
    device = torch.device(f"cuda:{DEVICE}" if CUDA and DEVICE.isdigit() else DEVICE if CUDA else "cpu")
    model = build.fuse(verbose=False).eval().to(device)
    dtype = torch.float16 if CUDA else torch.float32
    model = model.to(dtype)
    x = torch.rand(batch if CUDA else 2, 3, IMGSZ, IMGSZ, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        if CUDA:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        if CUDA:
            torch.cuda.synchronize()
    return {"batch": x.shape[0], "dtype": str(dtype), "images_per_s": round(x.shape[0] * iters /
                                                                            (time.perf_counter() - start), 1)}


class DDPCheckTrainer(SDGASTrainer):
    """ultralytics' DDP launcher and worker file at world size 1. ultralytics spawns workers only for several
    devices, so this trainer asks for it; the worker (a fresh process that rebuilds the trainer from the pickled
    state) joins a one-process group (NCCL on CUDA, gloo on the CPU) and trains. At WORLD_SIZE 1 ultralytics sets
    RANK = LOCAL_RANK = -1 in the worker, so its rank-specific branches run as in a single process."""

    # Names are imported inside the methods: run as a script, this class reaches the worker by value (cloudpickle),
    # and module-level names would carry the launcher's values with it.
    def __init__(self, *args, **kwargs):
        import os

        super().__init__(*args, **kwargs)
        self.world_size = 1  # ultralytics counts a CPU device as 0
        self.ddp = "LOCAL_RANK" not in os.environ  # torch.distributed.run sets it in the worker

    def _do_train(self):
        import os
        from pathlib import Path

        import torch
        import torch.distributed as dist

        if "LOCAL_RANK" in os.environ and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
            Path(self.args.save_dir, "ddp_backend.txt").write_text(f"{backend} world_size={dist.get_world_size()}")
        try:
            super()._do_train()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


def step_ddp(report):
    model = SDGAS("sdgasnet.yaml")
    model.train(DDPCheckTrainer, epochs=1, name="ddp", amp=True, kd_alpha_min=0.05, **TRAIN)
    save_dir, trainer = Path(model.trainer.save_dir), model.trainer
    report["ddp_world_size_1"] = {"backend": (save_dir / "ddp_backend.txt").read_text(),
                                  "weights": str(trainer.best if trainer.best.exists() else trainer.last),
                                  "mAP50-95": round(model.ckpt.get("train_metrics", {}).get("metrics/mAP50-95(B)",
                                                                                             float("nan")), 4)}


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": DEVICE,
           "settings": {k: ENV[k] for k in ("IMGSZ", "EPOCHS", "BATCH", "FRACTION", "ROUNDS", "DATA")}}
    if CUDA:
        env |= {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                "gpu_memory_GiB": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def write_markdown(report: dict, path: Path):
    lines = ["# GPU check (benchmarks/gpu_check.sh)", "",
             "Written by `bash benchmarks/gpu_check.sh`; every number below comes from that one run. "
             "Rerun it on a CUDA machine with NEU-DET at ../shared/datasets/neu-det.", "",
             "## Environment", "", "```json", json.dumps(report["environment"], indent=1), "```", ""]
    for step, result in report["steps"].items():
        lines += [f"## {step}", "", "```json", json.dumps(result, indent=1, default=str), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


STEPS = {"1. AMP training (sdgasnet.yaml vs YOLOv8s)": step_amp_training, "2. selfdistill=True": step_selfdistill,
         "3. val FP16 vs FP32": step_val_half, "4. ONNX export (FP16, dynamic)": step_onnx,
         "5. FPS vs YOLOv8s (batch 1, batch 32)": step_benchmark, "6. DDP worker path, world size 1": step_ddp}


def main():
    report = {"environment": environment(), "steps": {}}
    results = {}
    for title, step in STEPS.items():
        start = time.time()
        try:
            step(results)
            status = "ok"
        except Exception:  # noqa: BLE001 - a failed step is recorded and the next one still runs
            status = "FAILED\n" + traceback.format_exc(limit=6)
        keys = [k for k in results if k not in {k for s in report["steps"].values() for k in s.get("results", {})}]
        report["steps"][title] = {"status": status, "seconds": round(time.time() - start, 1),
                                  "results": {k: results[k] for k in keys}}
        print(f"{title}: {status.splitlines()[0]} ({report['steps'][title]['seconds']} s)", flush=True)
    write_markdown(report, Path(ENV["OUT"]))
    Path(ENV["OUT"]).with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {ENV['OUT']}")
    return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
