"""OpenVINO FP32 against INT8 (NNCF post-training quantization on dataset images), for SD-GASNet and YOLO peers
trained the same way: COCO AP of each exported model on the val split, and latency in the same run. Writes JSON.

    python benchmarks/openvino_int8.py --models a.pt b.pt --data neu-det.yaml [--val-imgsz 160]
        [--latency-imgsz 160 640] [--rounds 30] [--repeats 1 --repeat-gap 60] [--threads 2] [--out docs/openvino_int8]

Each model is exported with `sdgas export format=openvino` (FP32) and `quantize=8 data=... fraction=` (INT8, the
calibration images come from the train split), validated with `sdgas val` at --val-imgsz, and timed at each
--latency-imgsz: batch 1, the compiled OpenVINO model alone (no pre/post-processing), FP32 with the f32 precision
hint (OpenVINO's default is BF16 on CPUs with AVX512-BF16), INT8 with the default, rounds interleaved, median; run
back to back ("steady") and after an idle gap ("after_idle"), see `latencies`.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sdgas import SDGAS
from ultralytics.utils.cpu import CPUInfo


def export(weights: Path, folder: Path, imgsz: int, int8: bool, data: str, fraction: float) -> Path:
    """The exported OpenVINO model folder for a copy of `weights` in `folder`."""
    copy = folder / f"{weights.parent.parent.name}-{imgsz}{'-int8' if int8 else ''}.pt"
    shutil.copyfile(weights, copy)
    extra = {"quantize": 8, "data": data, "fraction": fraction} if int8 else {}
    return Path(SDGAS(copy).export(format="openvino", imgsz=imgsz, **extra))


def compiled(model_dir: Path, threads: int, precision: str):
    """The model compiled for the CPU; FP32 with OpenVINO's f32 hint (its default is BF16 on CPUs that have it)."""
    import openvino as ov

    core = ov.Core()
    xml = next(model_dir.glob("*.xml"))
    config = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": "f32"} if precision == "FP32" else {})}
    return core.compile_model(core.read_model(xml), "CPU", config)


IDLE_GAP_S = 0.05  # a camera triggering 20 times a second leaves the engine idle this long between images
BURST, SETTLE = 10, 3  # back-to-back runs per model and round; the first SETTLE refill caches and are not timed


def latencies(models: dict, imgsz: int, rounds: int, threads: int) -> dict:
    """{name: {"steady": median ms, "after_idle": median ms}} of one inference at batch 1.

    "steady": run back to back, as on a line that feeds the engine without pause (and as OpenVINO's benchmark_app
    measures). "after_idle": one run after an IDLE_GAP_S pause. Each round measures every model both ways in turn, so
    drift hits all alike. A single run right after another model's is neither: at 160 its caches hold the other
    model, which cost SD-GASNet INT8 a third of its speed-up (docs/int8.md)."""
    nets = {name: compiled(path, threads, name[1]) for name, path in models.items()}
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    times = {name: {"steady": [], "after_idle": []} for name in nets}

    def timed(net) -> float:
        start = time.perf_counter()
        net([x])  # what ultralytics' AutoBackend calls
        return (time.perf_counter() - start) * 1e3

    for _ in range(rounds):
        for name, net in nets.items():
            time.sleep(IDLE_GAP_S)
            times[name]["after_idle"].append(timed(net))
            times[name]["steady"] += [timed(net) for _ in range(BURST)][SETTLE:]
    return {name: {way: statistics.median(t) for way, t in ways.items()} for name, ways in times.items()}


def repeated_latencies(models: dict, imgsz: int, rounds: int, threads: int, repeats: int, gap_s: float) -> dict:
    """{name: {way: [median ms of each repeat]}}: `latencies` `repeats` times, `gap_s` apart. This host's speed
    drifts over minutes, INT8's most (docs/int8.md), so one repeat is one sample of it."""
    runs = []
    for i in range(repeats):
        time.sleep(gap_s if i else 0)
        runs.append(latencies(models, imgsz, rounds, threads))
    return {name: {way: [run[name][way] for run in runs] for way in runs[0][name]} for name in models}


def coco_ap(model_dir: Path, data: str, imgsz: int, folder: Path) -> dict:
    metrics = SDGAS(str(model_dir)).val(data=data, imgsz=imgsz, batch=1, rect=False, plots=False,
                                        project=str(folder), name="val", exist_ok=True, verbose=False)
    return {k: round(100 * v, 2) for k, v in metrics.coco.items()} | {"mAP50-95": round(100 * metrics.box.map, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--val-imgsz", type=int, default=160)
    parser.add_argument("--latency-imgsz", type=int, nargs="+", default=[160, 640])
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="share of the train split used for calibration: its first images in name order")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1, help="latency measurements, --repeat-gap seconds apart")
    parser.add_argument("--repeat-gap", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/openvino_int8")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for imgsz in sorted(set(args.latency_imgsz) | {args.val_imgsz}):
            exported = {(Path(w).parent.parent.name, p): export(Path(w), folder, imgsz, p == "INT8", args.data,
                                                                 args.fraction)
                        for w in args.models for p in ("FP32", "INT8")}
            ms = repeated_latencies(exported, imgsz, args.rounds, args.threads, args.repeats,
                                    args.repeat_gap) if imgsz in args.latency_imgsz else {}
            for (model, precision), path in exported.items():
                row = {"model": model, "precision": precision, "imgsz": imgsz}
                for way, runs in ms.get((model, precision), {}).items():
                    row[f"ms_{way}"] = round(statistics.median(runs), 2)
                    row[f"ms_{way}_runs"] = [round(v, 2) for v in runs]
                if imgsz == args.val_imgsz:
                    row.update(coco_ap(path, args.data, imgsz, folder))
                rows.append(row)
    for r in rows:
        fp32 = next(x for x in rows if x["model"] == r["model"] and x["imgsz"] == r["imgsz"] and
                    x["precision"] == "FP32")
        for way in ("steady", "after_idle"):
            if f"ms_{way}" in r:  # per repeat: FP32 and INT8 of one repeat ran interleaved
                ratios = [a / b for a, b in zip(fp32[f"ms_{way}_runs"], r[f"ms_{way}_runs"])]
                r[f"speedup_{way}"] = round(statistics.median(ratios), 2)
                r[f"speedup_{way}_runs"] = [round(v, 2) for v in ratios]
    result = {"cpu": CPUInfo.name(), "threads": args.threads, "rounds": args.rounds, "burst": BURST, "settle": SETTLE,
              "idle_gap_s": IDLE_GAP_S, "repeats": args.repeats, "repeat_gap_s": args.repeat_gap, "data": args.data,
              "calibration_fraction": args.fraction, "rows": rows}
    print(f"{'model':<14}{'prec':>6}{'imgsz':>7}{'ms steady':>11}{'x FP32':>8}{'ms idle':>9}{'x FP32':>8}"
          f"{'AP':>7}{'AP50':>7}{'mAP50-95':>10}")
    for r in rows:
        print(f"{r['model']:<14}{r['precision']:>6}{r['imgsz']:>7}{r.get('ms_steady', ''):>11}"
              f"{r.get('speedup_steady', ''):>8}{r.get('ms_after_idle', ''):>9}{r.get('speedup_after_idle', ''):>8}"
              f"{r.get('AP', ''):>7}{r.get('AP50', ''):>7}{r.get('mAP50-95', ''):>10}")
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
