"""The speed-accuracy front on the CPU: NEU-DET COCO AP (harness runs, one training budget for all) against OpenVINO
FP32 and INT8 latency at the deployment image size, for SD-GASNet's scales and the stock YOLOs. Writes docs/deploy.json,
docs/deploy.md and docs/figures/front.png.

    python benchmarks/front.py                       # imgsz 160 (the size the runs trained at), 30 rounds, 2 threads
    python benchmarks/front.py --imgsz 640 --rounds 20 --out runs/front-640

Latency: `sdgas benchmark` modes openvino (FP32) and openvino-int8 (NNCF on the demo images), batch 1, interleaved
rounds, random weights (latency does not depend on them). Throughput: images per second of the same engines at batch 8
(OpenVINO's throughput hint), median of `rounds` runs. AP: mean and sample standard deviation over the seeds of each
run in docs/results/<budget>/ (benchmarks/reproduce.py); INT8 accuracy is in docs/openvino_int8.json.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import sdgas  # noqa: F401  (offline defaults before ultralytics)
from sdgas.tools.benchmark import OpenVinoRunner, benchmark, load_model
from ultralytics.utils.cpu import CPUInfo

ROOT = Path(__file__).resolve().parents[1]
# name: (model YAML, harness run whose AP is reported)
MODELS = {"sdgasnet-n": ("sdgasnet-n.yaml", "sdgasnet-n"), "sdgasnet": ("sdgasnet.yaml", "sdgasnet"),
          "yolo11n": ("yolo11n.yaml", "yolo11n"), "yolo11s": ("yolo11s.yaml", "yolo11s"),
          "yolov8n": ("yolov8n.yaml", "yolov8n"), "yolov8s": ("yolov8s.yaml", "yolov8s")}
MODES = ("openvino", "openvino-int8")


def seed_ap(budget: str, run: str) -> dict:
    """Mean, sample standard deviation and count of a run's COCO AP (%) over its seeds."""
    files = sorted((ROOT / "docs" / "results" / budget).glob(f"{run}.json")) + sorted(
        (ROOT / "docs" / "results" / budget).glob(f"{run}-s[0-9]*.json"))
    aps = [100 * json.loads(f.read_text())["coco"]["AP"] for f in files]
    return {"AP_mean": round(statistics.mean(aps), 2) if aps else None,
            "AP_sd": round(statistics.stdev(aps), 2) if len(aps) > 1 else None, "seeds": len(aps),
            "json": [str(f.relative_to(ROOT)) for f in files]}


def throughput(yaml: str, mode: str, imgsz: int, threads: int, rounds: int, workdir: Path, batch: int = 8) -> float:
    """Images per second of the engine at `batch`, median over `rounds` runs after one warm-up."""
    runner = OpenVinoRunner(load_model(yaml), mode, imgsz, threads, workdir, f"{yaml}-{mode}", batch)
    x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)
    runner.infer(x)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def plot(rows: list, file: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    for mode, marker in zip(MODES, ("o", "s")):
        pts = [r for r in rows if r["mode"] == mode and r["AP_mean"] is not None]
        ax.scatter([r["ms"] for r in pts], [r["AP_mean"] for r in pts], marker=marker, label=f"OpenVINO {mode[9:].upper() or 'FP32'}")
        for r in pts:
            ax.annotate(r["model"], (r["ms"], r["AP_mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency per image, ms (batch 1, median)")
    ax.set_ylabel("NEU-DET COCO AP, % (seed mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file)


def goal_lines(rows: list) -> list:
    """The goal of issue 19 checked: at each YOLO11 scale's OpenVINO INT8 latency, the most accurate sdgas model that
    is as fast (any OpenVINO mode), or how far the fastest one is."""
    lines = []
    ours = [r for r in rows if r["model"].startswith("sdgasnet") and r["AP_mean"] is not None]
    for peer in ("yolo11n", "yolo11s"):
        ref = next(r for r in rows if r["model"] == peer and r["mode"] == "openvino-int8")
        fast = [r for r in ours if r["ms"] <= ref["ms"]]
        if fast:
            best = max(fast, key=lambda r: r["AP_mean"])
            verdict = "higher AP (goal met)" if best["AP_mean"] > ref["AP_mean"] else "lower AP (goal not met)"
            lines.append(f"- At {peer}'s INT8 latency ({ref['ms']:.2f} ms, AP {ref['AP_mean']:.1f}): {best['model']} "
                         f"({best['mode']}) {best['ms']:.2f} ms, AP {best['AP_mean']:.1f}: {verdict}.")
        else:
            near = min(ours, key=lambda r: r["ms"])
            lines.append(f"- At {peer}'s INT8 latency ({ref['ms']:.2f} ms, AP {ref['AP_mean']:.1f}): no sdgas model is as "
                         f"fast; the fastest, {near['model']} ({near['mode']}), takes {near['ms'] / ref['ms']:.2f}x as "
                         f"long at AP {near['AP_mean']:.1f}.")
    return lines


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"Machine: {report['cpu']}, {s['threads']} threads; imgsz {s['imgsz']}; {s['rounds']} interleaved rounds; "
             f"AP from the `{s['budget']}` training budget of docs/results.md (from scratch, same budget for every model).",
             "", f"| model | params M | GFLOPs@{s['imgsz']} | AP % (seeds) | OpenVINO FP32 ms | OpenVINO INT8 ms | FP32 img/s @8 | "
             "INT8 img/s @8 |", "|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        r = {row["mode"]: row for row in report["rows"] if row["model"] == name}
        fp, q = r["openvino"], r["openvino-int8"]
        ap = "n/a" if fp["AP_mean"] is None else f"{fp['AP_mean']:.1f}" + (
            f" ± {fp['AP_sd']:.1f}" if fp["AP_sd"] is not None else "") + f" ({fp['seeds']})"
        lines.append(f"| {name} | {fp['params_M']:.2f} | {fp['gflops']:.1f} | {ap} | {fp['ms']:.2f} | {q['ms']:.2f} | "
                     f"{fp['img_per_s_b8']:.0f} | {q['img_per_s_b8']:.0f} |")
    pause = f"{s['pause_s'] * 1000:.0f} ms pause"
    lines += ["", "Latency is the total per image (preprocess, inference, decode, NMS), median, each run after a "
              f"{pause} (a triggered camera; back to back, INT8 gains more: docs/int8.md); the JSON also holds "
              "inference alone.", "", *goal_lines(report["rows"])]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "docs" / "deploy"))
    parser.add_argument("--table-only", action="store_true", help="rewrite out.md and the plot from out.json")
    a = parser.parse_args()
    out = Path(a.out)
    if a.table_only:
        result = json.loads(out.with_suffix(".json").read_text())
        write(result, out)
        return
    sdgas_yamls = [y for y, _ in MODELS.values() if y.startswith("sdgasnet")]
    peers = [y for y, _ in MODELS.values() if not y.startswith("sdgasnet")]
    report = benchmark(models=sdgas_yamls, peers=peers, modes=MODES, imgsz=a.imgsz, rounds=a.rounds, warmup=3,
                       threads=a.threads, verbose=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (yaml, run) in MODELS.items():
            for mode in MODES:
                r = next(x for x in report["results"] if x["model"] == yaml and x["mode"] == mode)
                rows.append({"model": name, "mode": mode, "params_M": r["params_M"], "gflops": r["gflops"],
                             "ms": r["total"]["median"], "ms_inference": r["inference"]["median"],
                             "img_per_s_b8": round(throughput(yaml, mode, a.imgsz, a.threads, a.rounds, Path(tmp)), 1),
                             **seed_ap(a.budget, run)})
    result = {"cpu": CPUInfo.name(), "settings": {**report["settings"], "threads": a.threads, "budget": a.budget},
              "env": report["env"], "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    write(result, out)


def write(result: dict, out: Path):
    """out.md and the front plot from a result."""
    table = markdown(result)
    out.with_suffix(".md").write_text(f"# The speed-accuracy front (OpenVINO on the CPU)\n\n{table}")
    figures = ROOT / "docs" / "figures" if out.parent == ROOT / "docs" else out.parent
    plot(result["rows"], figures / "front.png")
    print(table)


if __name__ == "__main__":
    main()
