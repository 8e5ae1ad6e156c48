"""CPU training speed: one epoch of SD-GASNet against stock YOLOv8s, the same command shape, interleaved (issue 22).

Each run is a separate process, `sdgas train model=sdgasnet.yaml ...` or `yolo train model=yolov8s.yaml ...` with
identical arguments (by default one epoch on half of NEU-DET train at imgsz 320, batch 32, workers 2, `val=False`;
ultralytics still validates after the last epoch and validates best.pt in its final evaluation, so an "epoch" here
is what a user waits for). The models alternate run by run (A B A B ...), so drift and other load hit both alike.
Per run: wall time, and the child's user and system (kernel) CPU time and minor page faults from `os.wait4`, plus the
CPU time other processes used meanwhile. Prints a table of medians and the SD-GASNet / YOLOv8s ratios, and writes
docs/train_speed.json and docs/train_speed.md.

    python benchmarks/train_speed.py                                     # the issue's table, 2 runs per model
    python benchmarks/train_speed.py --fraction 0.1 --rounds 1 --out runs/train_speed_small
    python benchmarks/train_speed.py --pause-pidfile /tmp/sdgas-harness.pid   # stop that process group while timing
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "neu-det" / "data.yaml"
MODELS = {"SD-GASNet": ("sdgas", "sdgasnet.yaml"), "YOLOv8s": ("yolo", "yolov8s.yaml")}
BASELINE = "YOLOv8s"


def busy_cpu_seconds() -> float:
    """CPU seconds all processes spent busy since boot (/proc/stat, all but idle and iowait)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@contextmanager
def paused_process_group(pidfile):
    """SIGSTOP the process group of the pid in `pidfile` (if it runs) for the duration, and always SIGCONT it."""
    pgid = None
    if pidfile and Path(pidfile).exists():
        try:
            pgid = os.getpgid(int(Path(pidfile).read_text().strip()))
            os.killpg(pgid, signal.SIGSTOP)
        except (ValueError, ProcessLookupError, PermissionError):
            pgid = None
    try:
        yield pgid
    finally:
        if pgid is not None:
            with suppress(ProcessLookupError):  # the group may have ended meanwhile
                os.killpg(pgid, signal.SIGCONT)


def train_command(model: str, args, name: str) -> list:
    """The CLI command line of one run: `<sdgas|yolo> train model=<yaml> ...`, identical arguments for every model."""
    cli, yaml = MODELS[model]
    exe = Path(sys.executable).with_name(cli)
    return [str(exe), "train", f"model={yaml}", f"data={args.data}", f"fraction={args.fraction}",
            f"imgsz={args.imgsz}", f"epochs={args.epochs}", f"batch={args.batch}", f"workers={args.workers}",
            "val=False", "plots=False", "seed=0", f"project={args.project}", f"name={name}", "exist_ok=True"]


def timed_run(cmd: list, log: Path) -> dict:
    """Run `cmd` to completion; wall, user, sys seconds and minor faults of the child (os.wait4), others' CPU."""
    busy0, t0 = busy_cpu_seconds(), time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, ru = os.wait4(proc.pid, 0)
    wall, busy = time.perf_counter() - t0, busy_cpu_seconds() - busy0
    cpu = ru.ru_utime + ru.ru_stime
    text = log.read_text(errors="replace")
    hours = re.findall(r"epochs? completed in ([\d.]+) hours", text)
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 1), "user_s": round(ru.ru_utime, 1),
            "sys_s": round(ru.ru_stime, 1), "sys_share": round(ru.ru_stime / max(cpu, 1e-9), 3),
            "minor_faults": ru.ru_minflt, "max_rss_mb": round(ru.ru_maxrss / 1024),
            "others_cpu_s": round(busy - cpu, 1),
            "train_loop_s": round(float(hours[-1]) * 3600, 1) if hours else None, "log": str(log)}


def model_gflops(model: str) -> float:
    """GFLOPs at 640 of the freshly built model, as ultralytics' model.info() counts them."""
    from ultralytics.utils.torch_utils import get_flops

    if model == "SD-GASNet":
        from sdgas.nn.tasks import SDGASDetectionModel

        m = SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False)
    else:
        from ultralytics.nn.tasks import DetectionModel

        m = DetectionModel(MODELS[model][1], nc=6, verbose=False)
    return round(get_flops(m, 640), 1)


def summarize(runs: list) -> dict:
    """Medians per model over its successful runs, and each model's ratios to the baseline."""
    rows = {}
    for model in MODELS:
        ok = [r for r in runs if r["model"] == model and r["rc"] == 0]
        if ok:
            rows[model] = {k: round(median(r[k] for r in ok), 3 if k == "sys_share" else 1)
                           for k in ("wall_s", "user_s", "sys_s", "sys_share", "others_cpu_s")}
            loops = [r["train_loop_s"] for r in ok if r["train_loop_s"] is not None]
            rows[model]["train_loop_s"] = round(median(loops), 1) if loops else None
            rows[model]["n"] = len(ok)
    base = rows.get(BASELINE)
    for row in rows.values():
        if base:
            row["wall_x_baseline"] = round(row["wall_s"] / base["wall_s"], 2)
            row["cpu_x_baseline"] = round((row["user_s"] + row["sys_s"]) / (base["user_s"] + base["sys_s"]), 2)
    return rows


def markdown(report: dict) -> str:
    """The table of medians as Markdown, with the command and the machine."""
    a, env = report["args"], report["environment"]
    lines = ["# CPU training speed: one epoch, SD-GASNet vs YOLOv8s (issue 22)", "",
             f"`<sdgas|yolo> train model=<yaml> data=neu-det fraction={a['fraction']} imgsz={a['imgsz']} "
             f"epochs={a['epochs']} batch={a['batch']} workers={a['workers']} val=False plots=False seed=0`, "
             f"runs interleaved, {a['rounds']} per model, medians. CPU: {env['cpu']} ({env['cores']} cores), "
             f"torch {env['torch']}, ultralytics {env['ultralytics']}. Wall time includes ultralytics' validation "
             f"after the last epoch and its final validation of best.pt.", "",
             "| model | GFLOPs@640 | wall s | user s | sys s | sys share | others' CPU s | wall x YOLOv8s | "
             "epoch loop s |", "|---|---|---|---|---|---|---|---|---|"]
    for model, r in report["summary"].items():
        lines.append(f"| {model} | {report['gflops'][model]} | {r['wall_s']} | {r['user_s']} | {r['sys_s']} | "
                     f"{r['sys_share']:.0%} | {r['others_cpu_s']} | {r.get('wall_x_baseline', '')} | "
                     f"{r.get('train_loop_s')} |")
    return "\n".join(lines) + ("\n\n'others' CPU s': CPU time other processes used during the run (all cores). "
                               "'epoch loop s': ultralytics' 'epochs completed in' time (training and the validation "
                               "after the last epoch, 3.6 s resolution); wall minus it is the final validation of "
                               "best.pt, checkpoint stripping and start-up.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs per model")
    parser.add_argument("--project", default=str(ROOT / "runs" / "train_speed"))
    parser.add_argument("--pause-pidfile", default=None, help="pause this pid's process group while timing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "train_speed")
    a = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a paused process group is resumed on termination
    Path(a.project).mkdir(parents=True, exist_ok=True)
    import torch
    import ultralytics
    from ultralytics.utils.cpu import CPUInfo

    report = {"args": vars(a) | {"out": str(a.out)},
              "environment": {"cpu": CPUInfo.name(), "cores": os.cpu_count(), "torch": torch.__version__,
                              "ultralytics": ultralytics.__version__, "loadavg_before": os.getloadavg()},
              "gflops": {m: model_gflops(m) for m in MODELS}, "runs": []}
    for i in range(a.rounds):
        for model in MODELS:
            name = f"{MODELS[model][0]}-{i}"
            with paused_process_group(a.pause_pidfile) as paused:
                run = timed_run(train_command(model, a, name), Path(a.project) / f"{name}.log")
            report["runs"].append({"model": model, "round": i, "paused_pgid": paused, **run})
            print(json.dumps(report["runs"][-1]), flush=True)
    report["summary"] = summarize(report["runs"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
