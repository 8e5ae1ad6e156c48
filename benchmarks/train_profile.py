"""Where a CPU training step's time goes: SD-GASNet vs YOLOv8s, forward + backward, per layer (issue 22).

Each configuration runs in its own process (glibc's malloc settings are process-wide and cannot be undone): a model
in training mode, batch 32 at imgsz 320 by default, one torch thread as ultralytics' CPU trainer sets it, random
input, loss = mean of squares of the raw outputs. Per configuration: user and system CPU seconds and minor page
faults per step (median over steps, after a warm-up step), and CPU ms of each top-level layer's forward + backward
(its input captured once, best of a few repeats). Configurations:

    sdgas-reference   SD-GASNet with its reference forms (unfold/fold CSA, F.linear) and glibc's default malloc
    sdgas-reference+keep   the same with `keep_freed_memory` (what `sdgas train` sets on the CPU)
    sdgas+keep        SD-GASNet as `sdgas train` runs it: CPU training forms and `keep_freed_memory`
    yolov8s           stock YOLOv8s, glibc's defaults (as `yolo train` runs it)
    yolov8s+keep      stock YOLOv8s with `keep_freed_memory`

    python benchmarks/train_profile.py                      # writes docs/train_profile.json and .md
    python benchmarks/train_profile.py --batch 16 --steps 2 --out runs/train_profile
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sdgas-reference": ("sdgas", False, False), "sdgas-reference+keep": ("sdgas", False, True),
           "sdgas+keep": ("sdgas", True, True), "yolov8s": ("yolov8s", False, False),
           "yolov8s+keep": ("yolov8s", False, True)}


def build(model: str):
    """A freshly built model for 6 classes in training mode."""
    if model == "sdgas":
        from sdgas.nn.tasks import SDGASDetectionModel

        return SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False).train()
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8s.yaml", nc=6, verbose=False).train()


def squares(out) -> "torch.Tensor":
    """Mean of squares over every tensor in a (nested) model output: a loss that reaches every prediction."""
    import torch

    if torch.is_tensor(out):
        return out.float().square().mean()
    values = out.values() if isinstance(out, dict) else out
    return sum(squares(v) for v in values if torch.is_tensor(v) or isinstance(v, (list, tuple, dict)))


def step_costs(model, x, steps: int) -> dict:
    """Median user s, sys s and minor faults per forward + backward step, after one warm-up step."""
    samples = []
    for i in range(steps + 1):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        squares(model(x)).backward()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if i:
            samples.append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
    return {k: round(median(s[j] for s in samples), 3 if j < 2 else 0)
            for j, k in enumerate(("user_s", "sys_s", "minor_faults"))}


def layer_inputs(model, x) -> list:
    """The input of every top-level layer, as ultralytics' forward routes it (no autograd)."""
    import torch

    outputs, inputs, y = [], [], x
    with torch.no_grad():
        for m in model.model:
            if m.f != -1:
                y = outputs[m.f] if isinstance(m.f, int) else [y if j == -1 else outputs[j] for j in m.f]
            inputs.append(y)
            y = m(y)
            outputs.append(y)
    return inputs


def layer_costs(model, x, repeats: int) -> list:
    """CPU ms of each top-level layer's forward + backward on its captured input (best of `repeats`)."""
    import torch

    def fresh(t):
        return [fresh(v) for v in t] if isinstance(t, list) else t.detach().clone().requires_grad_(True)

    rows = []
    for m, inp in zip(model.model, layer_inputs(model, x)):
        best = float("inf")
        for _ in range(repeats):
            t = fresh(inp)
            t0 = time.process_time()
            squares(m(t)).backward()
            best = min(best, time.process_time() - t0)
        rows.append({"layer": f"{m.i} {type(m).__name__}", "ms": round(best * 1e3, 1)})
    torch.set_grad_enabled(True)
    return rows


def child(config: str, a) -> dict:
    """Measure one configuration in this process."""
    model_name, training_forms, keep = CONFIGS[config]
    if keep:
        from sdgas.utils.malloc import keep_freed_memory

        keep_freed_memory()
    import torch

    torch.set_num_threads(a.threads)
    if not training_forms:
        import sdgas.nn.modules.backbone as backbone

        backbone.records_cpu_training = lambda module, x: False
    torch.manual_seed(0)
    model, x = build(model_name), torch.randn(a.batch, 3, a.imgsz, a.imgsz)
    return {"config": config, **step_costs(model, x, a.steps), "layers": layer_costs(model, x, a.repeats)}


def markdown(report: dict) -> str:
    a, env = report["args"], report["environment"]
    rows = report["results"]
    lines = ["# CPU training step profile: SD-GASNet vs YOLOv8s (issue 22)", "",
             f"Forward + backward of a freshly built model in training mode, batch {a['batch']}, imgsz {a['imgsz']}, "
             f"{a['threads']} torch thread(s), loss = mean of squares of the raw outputs; medians of {a['steps']} "
             f"steps after a warm-up. CPU: {env['cpu']}, torch {env['torch']}. Command: "
             f"`python benchmarks/train_profile.py --batch {a['batch']} --imgsz {a['imgsz']}`.", "",
             "| configuration | user s/step | sys s/step | minor faults/step | sum of layers ms |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['user_s']} | {r['sys_s']} | {r['minor_faults']:.0f} | "
                     f"{sum(x['ms'] for x in r['layers']):.0f} |")
    lines += ["", "Per layer, forward + backward, CPU ms (best of " + str(a["repeats"]) + "):", "",
              "| layer | " + " | ".join(r["config"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for i in range(max(len(r["layers"]) for r in rows)):
        cells = [f"{r['layers'][i]['layer']}: {r['layers'][i]['ms']}" if i < len(r["layers"]) else "" for r in rows]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "train_profile")
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a)))
        return
    import torch

    from ultralytics.utils.cpu import CPUInfo

    results = []
    for config in a.configs.split(","):
        cmd = [sys.executable, __file__, "--child", config, "--batch", str(a.batch), "--imgsz", str(a.imgsz),
               "--threads", str(a.threads), "--steps", str(a.steps), "--repeats", str(a.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print({k: v for k, v in results[-1].items() if k != "layers"}, flush=True)
    report = {"args": vars(a) | {"out": str(a.out)}, "results": results,
              "environment": {"cpu": CPUInfo.name(), "cores": os.cpu_count(), "torch": torch.__version__,
                              "loadavg_before": os.getloadavg()}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
