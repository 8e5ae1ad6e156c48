"""Rerun the paper's NEU-DET experiments with sdgas and write docs/results.md plus one JSON per run.

    python benchmarks/reproduce.py --budget cpu  [--runs gasnet sdgasnet yolov8s ...] [--seeds 0 1 2] [--data DATA.yaml]
    python benchmarks/reproduce.py --budget cpu --seeds 0 1 2 --runs gasnet,sdgasnet,yolov8s yolo11s  # see --runs
    python benchmarks/reproduce.py --budget long --seeds 0 --runs gasnet,sdgasnet,yolov8s-60ep,yolo11s-60ep
    python benchmarks/reproduce.py --budget paper --device 0        # the paper protocol, for a GPU
    python benchmarks/reproduce.py --table-only                      # rebuild docs/results.md from the JSONs

Every run trains from scratch (no COCO or ImageNet weights can be had here) through the `sdgas` CLI (stock YOLO
peers through ultralytics' `yolo` CLI) in its own process, so the exact command is recorded beside its numbers.
Finished runs (their JSON exists) are skipped; an interrupted run resumes from its last.pt. Per run the JSON holds
the COCO AP/AP50/AP75/APs/APm/APl of best.pt on the val split, params, GFLOPs@640, CPU latency at batch 1,
training time, the commands, the machine and the seed. A run's identity is its name and seed: seed 0 writes
`<run>.json`/`.log` and trains in `runs/reproduce/<budget>/<run>`, seed k > 0 uses `<run>-s<k>` for all three, and a
distilled run of seed k learns from its teacher run of the same seed.
"""

import argparse
import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread for the in-process evaluation and latency, as
# ultralytics gives each CPU training on a 2-core machine (cpu_count - 1); set before sdgas/torch are imported
import sdgas  # noqa: E402, F401  (offline defaults in os.environ, inherited by the `sdgas`/`yolo` subprocesses)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "neu-det" / "data.yaml"

BUDGETS = {
    # fits a 2-core CPU session (~11 min per run and core): all 1440 train images at 160 (NEU-DET images are 200x200),
    # 6 epochs per stage; nbs=16 makes every batch an optimizer step (ultralytics' nbs=64 would leave 135 steps),
    # a 1-epoch warm-up (ultralytics keeps at least 100 iterations) and validation of the last epoch only
    "cpu": {"imgsz": 160, "epochs": 6, "batch": 16, "nbs": 16, "workers": 0, "device": "cpu", "warmup_epochs": 1,
            "close_mosaic": 1, "val": False},
    # paper §4.1: 640, batch 32, AdamW lr 2e-3, wd 0.05, 30-epoch warm-up, cosine to 1%, 180 epochs, EMA
    "paper": {"imgsz": 640, "epochs": 180, "batch": 32, "workers": 8, "optimizer": "AdamW", "lr0": 0.002,
              "weight_decay": 0.05, "warmup_epochs": 30, "cos_lr": True, "lrf": 0.01, "close_mosaic": 5, "nbs": 32},
}
# issue 18: the cpu budget with 30 epochs per stage (5x), so the comparison measures more than how fast a model starts;
# everything else as cpu, including val=False: best.pt is the last epoch's weights, not chosen on the val split the
# table reports (per-epoch validation would also add about a minute per epoch)
BUDGETS["long"] = {**BUDGETS["cpu"], "epochs": 30}

# name: (tool, model, extra train args, teacher run, paper table)
RUNS = {
    "yolov8n": ("yolo", "yolov8n.yaml", {}, None, "Table 10 peer"),
    "yolov8s": ("yolo", "yolov8s.yaml", {}, None, "Table 10 peer"),
    "yolo11s": ("yolo", "yolo11s.yaml", {}, None, "peer (issue 18)"),
    # issue 18: the stock YOLOs for as many epochs as both SD-GASNet stages together (cpu 6 + 6, long 30 + 30)
    "yolov8s-12ep": ("yolo", "yolov8s.yaml", {"epochs": 12}, None, "peer, equal total epochs (issue 18)"),
    "yolo11s-12ep": ("yolo", "yolo11s.yaml", {"epochs": 12}, None, "peer, equal total epochs (issue 18)"),
    "yolov8s-60ep": ("yolo", "yolov8s.yaml", {"epochs": 60}, None, "peer, equal total epochs (issue 18)"),
    "yolo11s-60ep": ("yolo", "yolo11s.yaml", {"epochs": 60}, None, "peer, equal total epochs (issue 18)"),
    "yolo11n": ("yolo", "yolo11n.yaml", {}, None, "peer (issue 19)"),
    "gasnet": ("sdgas", "sdgasnet.yaml", {}, None, "Table 9 baseline (teacher, stage 1)"),
    "sdgasnet": ("sdgas", "sdgasnet.yaml", {}, "gasnet", "Tables 1, 8, 9: SD-GASNet (enhanced KL, neck + head)"),
    # issue 19: the n scale from scratch, and distilled from the full distilled SD-GASNet of the same seed
    "gasnet-n": ("sdgas", "sdgasnet-n.yaml", {}, None, "scale n from scratch (issue 19)"),
    "sdgasnet-n": ("sdgas", "sdgasnet-n.yaml", {}, "sdgasnet", "scale n distilled from sdgasnet (issue 19)"),
    "baseline": ("sdgas", "sdgasnet-baseline.yaml", {}, None, "Table 4 baseline"),
    "cs-only": ("sdgas", "sdgasnet-cs.yaml", {}, None, "Table 4 CS only"),
    "figa-only": ("sdgas", "sdgasnet-figa.yaml", {}, None, "Table 4 FIGA only"),
    "fpn": ("sdgas", "sdgasnet-fpn.yaml", {}, None, "Table 7 FPN neck"),
    "pafpn": ("sdgas", "sdgasnet-pafpn.yaml", {}, None, "Table 7 PAFPN neck"),
    "kd-kl": ("sdgas", "sdgasnet.yaml", {"kd_loss": "kl"}, "gasnet", "Table 8 KL"),
    "kd-ce": ("sdgas", "sdgasnet.yaml", {"kd_loss": "ce"}, "gasnet", "Table 8 CE"),
    "kd-mse": ("sdgas", "sdgasnet.yaml", {"kd_loss": "mse"}, "gasnet", "Table 8 MSE"),
    "kd-head": ("sdgas", "sdgasnet.yaml", {"kd_scope": "head"}, "gasnet", "Table 9 head KD"),
    # investigation (issue 7): does the learning rate explain SD-GASNet trailing YOLOv8s at the CPU budget? Both at
    # the paper's AdamW lr 2e-3 (ultralytics' optimizer=auto picks AdamW lr 1e-3 for runs this short)
    "gasnet-lr2e-3": ("sdgas", "sdgasnet.yaml", {"optimizer": "AdamW", "lr0": 0.002}, None, "investigation: lr"),
    "yolov8s-lr2e-3": ("yolo", "yolov8s.yaml", {"optimizer": "AdamW", "lr0": 0.002}, None, "investigation: lr"),
    # ... and does keeping half the distillation weight to the end (alpha floor 0.5 instead of 0.01) lift the student?
    "sdgasnet-alpha0.5": ("sdgas", "sdgasnet.yaml", {"kd_alpha_min": 0.5}, "gasnet", "investigation: alpha floor"),
    # issue 18: the small-object gap follows the official loss recipe, not the architecture (YOLOv8s trained with it
    # lost APs to SD-GASNet's level). Varifocal weights a positive by its IoU target, small boxes' are low: BCE instead
    "gasnet-bce": ("sdgas", "sdgasnet.yaml", {"cls_loss": "bce"}, None, "investigation: BCE classification loss"),
    # ... and the class-score distillation: KD_cls is an unnormalised sum over all anchors that outweighs varifocal's
    # gradient about 9x, 5x more on small boxes than large ones (docs/small_objects.md): a fifth of its weight
    "sdgasnet-kdcls0.4": ("sdgas", "sdgasnet.yaml", {"kd_cls": 0.4}, "gasnet", "investigation: KD_cls weight / 5"),
}
COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def command(tool: str, args: dict) -> list:
    exe = Path(sys.executable).with_name(tool)
    return [str(exe), "train", *(f"{k}={v}" for k, v in args.items())]


def run_id(name: str, seed: int) -> str:
    """A run's file and folder name: the run name for seed 0 (the names of the first, single-seed results), else
    `<run>-s<seed>`."""
    return name if seed == 0 else f"{name}-s{seed}"


def train_args(name: str, seed: int, budget: str, data: str, project: Path, results: dict) -> dict:
    tool, model, extra, teacher, _ = RUNS[name]
    args = {"model": model, "data": data, **BUDGETS[budget], "seed": seed, "deterministic": True,
            "project": str(project), "name": run_id(name, seed), "exist_ok": True, "plots": True, **extra}
    if teacher:
        args["distill_model"] = results[run_id(teacher, seed)]["weights"]
    return args


def training_finished(last: Path) -> bool:
    """ultralytics marks a finished training's last.pt with epoch -1 (strip_optimizer); resuming it is an error, so
    a run interrupted after training (during its evaluation) goes straight to the evaluation."""
    import torch

    return last.exists() and torch.load(last, map_location="cpu", weights_only=False).get("epoch") == -1


def run_training(args: dict, tool: str, log: Path):
    """Train (or resume an interrupted run) in a subprocess, its command and output appended to the log."""
    last = Path(args["project"]) / args["name"] / "weights" / "last.pt"
    if training_finished(last):
        return
    cmd = command(tool, {"model": str(last), "resume": True}) if last.exists() else command(tool, args)
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"run '{args['name']}' failed with exit code {code}; see {log}")


def compact_log(log: Path):
    """Keep only the last update of each progress bar (ultralytics writes every update as a line starting with
    ESC[K when its output is not a terminal, or after a carriage return when it is)."""
    if not log.is_file():
        return
    lines = [line.rsplit("\r", 1)[-1] for line in log.read_text(errors="replace").split("\n")]
    bar = "\x1b[K"
    kept = [line.removeprefix(bar) for line, nxt in zip(lines, lines[1:] + [""])
            if not (line.startswith(bar) and nxt.startswith(bar))]
    log.write_text("\n".join(kept))


def training_time(run_dir: Path) -> float:
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    if not rows or "time" not in rows[-1]:
        return float("nan")
    times = [float(r["time"]) for r in rows]
    # a resumed run restarts ultralytics' clock: add the time each interrupted stretch had reached
    return times[-1] + sum(a for a, b in zip(times, times[1:]) if b < a)


def evaluate(weights: Path, data: str, imgsz: int) -> dict:
    """COCO metrics of a checkpoint (paper evaluation settings), params, GFLOPs@640 and CPU latency at batch 1."""
    import statistics

    import numpy as np
    from ultralytics.utils.torch_utils import get_flops

    from sdgas import SDGAS

    model = SDGAS(weights)
    metrics = model.val(data=data, imgsz=imgsz, batch=16, conf=0.03, iou=0.65, max_det=300, save_json=True,
                        plots=False, device="cpu", workers=2, project=str(weights.parent.parent), name="eval",
                        exist_ok=True)
    stats = metrics.results_dict
    coco = {k: stats.get(f"metrics/{k}(B)", float("nan")) for k in COCO_KEYS}
    image = np.random.default_rng(0).integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8)
    for _ in range(3):
        model.predict(image, imgsz=imgsz, verbose=False, device="cpu")
    times = []
    for _ in range(20):
        r = model.predict(image, imgsz=imgsz, verbose=False, device="cpu")[0]
        times.append(sum(r.speed.values()))
    return {"coco": coco, "mAP50-95_ultralytics": stats.get("metrics/mAP50-95(B)"),
            "params_M": sum(p.numel() for p in model.model.parameters()) / 1e6,
            "gflops_640": get_flops(model.model, 640), "cpu_latency_ms_median": statistics.median(times),
            "latency_imgsz": imgsz}


def machine() -> dict:
    import torch

    from ultralytics.utils.cpu import CPUInfo

    return {"cpu": CPUInfo.name(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(), "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "load_average": os.getloadavg()}


def code_version() -> dict:
    """The commit the run started from and the package files that differed from it (others edit the tree too)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    return {"commit": git("rev-parse", "HEAD").strip(),
            "uncommitted": git("status", "--porcelain", "--", "sdgas", "cfg").splitlines()}


def schedule(groups: list, seeds: list) -> list:
    """(run, seed) pairs in training order: group after group; within a group seed after seed, its runs in the order
    given. `--runs gasnet,sdgasnet,yolov8s yolo11s` trains gasnet, sdgasnet, yolov8s of the first seed, then those of
    the next seed, ..., then yolo11s for every seed."""
    return [(name, seed) for group in groups for seed in seeds for name in group]


def logged_commands(log: Path) -> list:
    """Every training command a run's log records (the first start, then any resumptions)."""
    return [line[2:] for line in log.read_text(errors="replace").splitlines() if line.startswith("$ ")]


def train_and_evaluate(name: str, seed: int, budget: str, data: str, out: Path, project: Path, results: dict) -> dict:
    """Train one (run, seed) (or finish it) and return its JSON record."""
    tool, model, extra, teacher, table = RUNS[name]
    rid, start, code = run_id(name, seed), time.time(), code_version()
    args = train_args(name, seed, budget, data, project, results)
    run_training(args, tool, out / f"{rid}.log")
    compact_log(out / f"{rid}.log")
    run_dir, imgsz = project / rid, BUDGETS[budget]["imgsz"]
    best = run_dir / "weights" / "best.pt"
    return {"run": name, "run_id": rid, "paper_table": table, "budget": budget, "budget_args": BUDGETS[budget],
            "model": model, "extra_args": extra, "teacher": teacher and run_id(teacher, seed), "seed": seed,
            "data": data, "train_command": shlex.join(command(tool, args)),
            "commands": logged_commands(out / f"{rid}.log"), "wall_s_this_invocation": time.time() - start,
            "train_time_s": training_time(run_dir), "weights": str(best), "pretrained": False, "machine": machine(),
            "code": code, "eval_command": eval_command(best, data, imgsz), **evaluate(best, data, imgsz)}


def reproduce(budget: str, pairs: list, data: str, out: Path, project: Path):
    """Train and evaluate every (run, seed) not done yet; a failed run is reported at the end, not fatal to the rest."""
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, seed in pairs:
        rid, teacher = run_id(name, seed), RUNS[name][3]
        # read before every run: another harness process may have finished runs (a teacher) in the meantime
        results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
        if rid in results:
            print(f"{rid}: done ({out / rid}.json), skipped", flush=True)
            continue
        if teacher and run_id(teacher, seed) not in results:
            failed.append(f"{rid}: needs its teacher '{run_id(teacher, seed)}' first; list it earlier in --runs")
            print(failed[-1], flush=True)
            continue
        print(f"{rid}: training ({time.strftime('%H:%M:%S')})", flush=True)
        try:
            record = train_and_evaluate(name, seed, budget, data, out, project, results)
        except RuntimeError as error:
            failed.append(str(error))
            print(error, flush=True)
            continue
        (out / f"{rid}.json").write_text(json.dumps(record, indent=2))
        print(f"{rid}: AP {record['coco']['AP']:.4f} ({time.strftime('%H:%M:%S')})", flush=True)
        write_table(out)
    write_table(out)
    if failed:
        raise SystemExit("failed runs:\n" + "\n".join(failed))


def eval_command(weights, data: str, imgsz: int) -> str:
    """The CLI equivalent of `evaluate`'s validation (the harness calls the same API in-process)."""
    return (f"sdgas val model={weights} data={data} imgsz={imgsz} batch=16 conf=0.03 iou=0.65 max_det=300 "
            f"device=cpu")


def comparison(records: dict, a: str, b: str) -> str:
    """One acceptance line: run a's COCO AP against run b's, both from their JSONs."""
    if a not in records or b not in records:
        return f"- {a} vs {b}: not run yet"
    ap_a, ap_b = 100 * records[a]["coco"]["AP"], 100 * records[b]["coco"]["AP"]
    verdict = "holds" if ap_a >= ap_b else "does NOT hold"
    return f"- {a} AP {ap_a:.1f} >= {b} AP {ap_b:.1f}: {verdict} ({ap_a - ap_b:+.1f} points)"


INVESTIGATED = {"gasnet-lr2e-3": ("gasnet", "AdamW lr0 2e-3 (the paper's) instead of optimizer=auto's AdamW 1e-3"),
                "yolov8s-lr2e-3": ("yolov8s", "AdamW lr0 2e-3 (the paper's) instead of optimizer=auto's AdamW 1e-3"),
                "sdgasnet-alpha0.5": ("sdgasnet", "distillation weight floor kd_alpha_min 0.5 instead of 0.01")}


def investigation(records: dict) -> list:
    """Why SD-GASNet trails YOLOv8s: each investigation run against the run it varies, from their JSONs."""
    lines = []
    for new, (base, change) in INVESTIGATED.items():
        if new in records and base in records:
            ap_new, ap_base = 100 * records[new]["coco"]["AP"], 100 * records[base]["coco"]["AP"]
            lines.append(f"- {base}, {change}: AP {ap_base:.1f} -> {ap_new:.1f} ({ap_new - ap_base:+.1f} points)")
    return ["Investigation (one change against the run it varies):", "", *lines, ""] if lines else []


PEERS = ("yolov8s", "yolo11s")


def load_records(budget_dir: Path) -> dict:
    """Every run JSON of a budget by file stem (run id), in RUNS order, then by seed."""
    found = {p.stem: json.loads(p.read_text()) for p in budget_dir.glob("*.json")}
    order = {name: i for i, name in enumerate(RUNS)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[1]["run"], len(order)), item[1]["run"],
                                                        item[1].get("seed", 0))))


def by_run(records: dict) -> dict:
    """Run name -> its records (one per seed), in the order of `records`."""
    groups = {}
    for record in records.values():
        groups.setdefault(record["run"], []).append(record)
    return groups


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (n - 1); the deviation is None for one value."""
    import statistics

    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def coco_values(group: list, key: str) -> list:
    return [100 * r["coco"][key] for r in group if r["coco"][key] >= 0]


def mean_std_cell(values: list) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def run_epochs(record: dict) -> int:
    return {**record["budget_args"], **record["extra_args"]}["epochs"]


def epochs_cell(record: dict, records: dict) -> str:
    """A run's epochs, a distilled run's as teacher + student ("6+6")."""
    if not record["teacher"]:
        return str(run_epochs(record))
    teacher = records.get(record["teacher"])
    return f"{run_epochs(teacher) if teacher else run_epochs(record)}+{run_epochs(record)}"


def json_link(record: dict) -> str:
    stem = record.get("run_id", record["run"])
    return f"[{record.get('seed', 0)}](results/{record['budget']}/{stem}.json)"


def seed_table(records: dict) -> list:
    """Per run: mean ± sample std over its seeds of every AP column, each seed linked to its JSON."""
    lines = ["| run | paper table | epochs | n | " + " | ".join(COCO_KEYS) + " | seeds (JSON) |", "|" + "---|" * 11]
    for name, group in by_run(records).items():
        cells = " | ".join(mean_std_cell(coco_values(group, k)) for k in COCO_KEYS)
        lines.append(f"| {name} | {group[0]['paper_table']} | {epochs_cell(group[0], records)} | {len(group)} | "
                     f"{cells} | {' '.join(json_link(r) for r in group)} |")
    return lines


def peer_run(peer: str, epochs: int, budget_epochs: int) -> str:
    """The name of a stock YOLO run trained for `epochs` (RUNS names the runs beyond the budget's epochs -<N>ep)."""
    return peer if epochs == budget_epochs else f"{peer}-{epochs}ep"


def verdict(groups: dict, a: str, b: str, label: str) -> str:
    """Run a against run b on COCO AP over their seeds: ahead, behind or within the seed spread (rule in the text)."""
    if a not in groups or b not in groups:
        return f"- {a} vs {b} ({label}): not run yet"
    ap_a, ap_b = coco_values(groups[a], "AP"), coco_values(groups[b], "AP")
    (mean_a, std_a), (mean_b, std_b) = mean_std(ap_a), mean_std(ap_b)
    if std_a is None or std_b is None:
        return (f"- {a} vs {b} ({label}): n<2: no verdict yet (AP {mean_a:.1f}, n={len(ap_a)} vs {mean_b:.1f}, "
                f"n={len(ap_b)})")
    from scipy.stats import ttest_ind

    diff, spread, p = mean_a - mean_b, max(std_a, std_b), ttest_ind(ap_a, ap_b, equal_var=False).pvalue
    word = "ahead" if diff > spread else "behind" if diff < -spread else "within the seed spread"
    aps = " vs ".join(mean_std_cell(coco_values(groups[run], "APs")) for run in (a, b))
    return (f"- {a} vs {b} ({label}): **{word}**: AP {mean_a:.1f} ± {std_a:.1f} (n={len(ap_a)}) vs {mean_b:.1f} ± "
            f"{std_b:.1f} (n={len(ap_b)}), difference {diff:+.1f} against a spread of {spread:.1f}; Welch's t-test "
            f"p = {'n/a (no variance)' if math.isnan(p) else f'{p:.2f}'}; APs {aps}")


def verdicts(records: dict) -> list:
    """SD-GASNet (sdgasnet) against each stock YOLO at equal epochs and at equal total epochs (both stages)."""
    groups, epochs = by_run(records), next(iter(records.values()))["budget_args"]["epochs"]
    lines = []
    for peer in PEERS:
        lines.append(verdict(groups, "sdgasnet", peer_run(peer, epochs, epochs), f"equal epochs, {epochs} vs {epochs}"))
        lines.append(verdict(groups, "sdgasnet", peer_run(peer, 2 * epochs, epochs),
                             f"equal total epochs, {epochs}+{epochs} vs {2 * epochs}"))
    return ["Verdicts (issue 18, computed from the JSONs): SD-GASNet is **ahead** of (**behind**) a stock YOLO when "
            "its mean COCO AP over the seeds exceeds (falls short of) the YOLO's by more than the larger of the two "
            "sample standard deviations, and **within the seed spread** otherwise. This is a plain descriptive rule, "
            "not a significance test; Welch's t-test p-value is given beside it (at n = 3 per side a difference "
            "reaches p < 0.05 only beyond about 2.3 standard deviations). With fewer than two seeds on either side: "
            "no verdict.", "", *lines, ""]


def environments(records: dict) -> str:
    """Which runs trained under which CPU and torch version, where the budget's runs differ in them."""
    runs = {}
    for stem, r in records.items():
        runs.setdefault(f"{r['machine'].get('cpu') or r['machine']['processor']}, torch {r['machine']['torch']}",
                        []).append(stem)
    if len(runs) < 2:
        return ""
    return "The runs differ in machine or torch version (each JSON records its own): " + "; ".join(
        f"{env}: {', '.join(stems)}" for env, stems in runs.items()) + "."


def write_table(out: Path):
    """docs/results.md from every run JSON of every budget under docs/results/ (rows in RUNS order, then seed)."""
    lines = ["# NEU-DET results reproduced with sdgas", "",
             "Produced by `python benchmarks/reproduce.py`; each row traces to `docs/results/<budget>/<run>.json` "
             "(seed 0) or `<run>-s<seed>.json` (metrics, exact train and evaluation commands, machine, seed) and the "
             "`.log` beside it (the training output). "
             "**Every run trains from scratch**: the paper starts from COCO-pretrained weights (and ImageNet backbone "
             "weights), which cannot be obtained here, so these numbers are not comparable like for like with the "
             "paper's. AP columns are COCO metrics (%, faster-coco-eval) of best.pt on the 360-image val split at the "
             "paper's evaluation settings (conf 0.03, NMS IoU 0.65, max 300 detections).", ""]
    for budget_dir in sorted(p for p in out.parent.iterdir() if p.is_dir()):
        records = load_records(budget_dir)
        if not records:
            continue
        first = next(iter(records.values()))
        b, m = first["budget_args"], first["machine"]
        seeds = sorted({r.get("seed", 0) for r in records.values()})
        lines += [f"## Budget `{budget_dir.name}`", "",
                  f"Train arguments for every run: `{' '.join(f'{k}={v}' for k, v in b.items())}` (a run named "
                  f"`-<N>ep` trains N epochs instead), seeds {', '.join(map(str, seeds))} (n per run below), "
                  f"deterministic, on {Path(first['data']).parent.name} ({first['data']}). Distilled runs train the "
                  "student from the same initialization with the best.pt of the teacher run of the same seed. "
                  "Machine (first row): "
                  f"{m.get('cpu', m['processor'])}, {m['cpu_count']} cores, {m.get('torch_threads', '?')} "
                  f"torch thread(s) per run, torch {m['torch']}. {environments(records)}", "",
                  "Mean ± sample standard deviation (n - 1) over the seeds of each run (one value where n = 1):", "",
                  *seed_table(records), "", *verdicts(records),
                  "Every run and seed:", "",
                  "| run | seed | paper table | " + " | ".join(COCO_KEYS) + " | params M | GFLOPs@640 | CPU ms/img* | "
                  "train time |", "|" + "---|" * 13]
        for stem, r in records.items():
            ap = " | ".join(f"{100 * r['coco'][k]:.1f}" if r["coco"][k] >= 0 else "-" for k in COCO_KEYS)
            lines.append(f"| {stem} | {r.get('seed', 0)} | {r['paper_table']} | {ap} | {r['params_M']:.2f} | "
                         f"{r['gflops_640']:.1f} | {r['cpu_latency_ms_median']:.0f} | "
                         f"{r['train_time_s'] / 60:.0f} min |")
        lines += ["", f"\\* `SDGAS(best.pt).predict` at imgsz {first['latency_imgsz']}, one thread, median of 20, "
                  "measured while another training shared the machine: a rough guide only; docs/speed.md has the "
                  "controlled, interleaved latency comparison. Train time is wall-clock (results.csv) with two "
                  "trainings sharing the 2 cores, including minutes in which they were paused (SIGSTOP) while latency "
                  "benchmarks ran.", "", "Acceptance checks, seed 0 (computed from the JSONs):", "",
                  comparison(records, "sdgasnet", "gasnet"), comparison(records, "sdgasnet", "yolov8s"), "",
                  *investigation(records),
                  "Commands:", ""]
        for stem, r in records.items():
            train = r.get("train_command") or r["commands"][-1]
            lines.append(f"- {stem}: `{train}`; evaluation: "
                         f"`{r.get('eval_command') or eval_command(r['weights'], r['data'], r['latency_imgsz'])}`")
        lines.append("")
    (out.parent.parent / "results.md").write_text("\n".join(lines) + "\n")


def run_group(text: str) -> list:
    """`--runs` item: a run name, or run names joined by commas that train seed by seed together (see `schedule`)."""
    names = text.split(",")
    unknown = [name for name in names if name not in RUNS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=BUDGETS, default="cpu")
    parser.add_argument("--runs", nargs="+", type=run_group, default=[[name] for name in RUNS],
                        help="runs in training order; runs joined by commas (gasnet,sdgasnet,yolov8s) train seed by "
                             "seed together, a run alone trains all its seeds before the next item")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results",
                        help="JSONs and logs go to OUT/<budget>/, the table to OUT/../results.md")
    parser.add_argument("--device", default=None, help="override the budget's device, e.g. 0 for a GPU")
    parser.add_argument("--epochs", type=int, default=None, help="override the budget's epochs (smoke tests)")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    out = args.out / args.budget
    for key in ("device", "epochs"):
        if getattr(args, key) is not None:
            BUDGETS[args.budget][key] = getattr(args, key)
    if args.table_only:
        for record in out.glob("*.json"):
            compact_log(record.with_suffix(".log"))
        write_table(out)
        return
    reproduce(args.budget, schedule(args.runs, args.seeds), args.data, out, args.project / args.budget)


if __name__ == "__main__":
    main()
