"""Time sdgas' safe checkpoint loading against ultralytics' own weights-only safe load, interleaved, and write JSON.

    python benchmarks/checkpoint_load.py [--weights a.pt b.pt] [--rounds 5] [--out docs/checkpoint_load]

Without --weights it saves an SD-GASNet and a YOLOv8s checkpoint the way ultralytics saves best.pt (FP16 weights,
no optimizer state) into a temporary folder. Per file and loader: median, min and max seconds over the rounds; the
ratio is sdgas / ultralytics in the same run. Both loaders run in this one process with a warm file cache.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import sdgas  # noqa: F401  (installs the safe loader; ultralytics' own stays reachable below)
from sdgas.utils import checkpoint
from ultralytics.utils.cpu import CPUInfo


def genuine_checkpoints(folder: Path) -> list:
    from ultralytics import YOLO

    from sdgas import SDGAS

    files = [folder / "sdgasnet.pt", folder / "yolov8s.pt"]
    SDGAS("sdgasnet.yaml").save(files[0])
    YOLO("yolov8s.yaml").save(files[1])
    return files


def loaders() -> dict:
    ultralytics_safe_load = checkpoint._ULTRALYTICS_TORCH_SAFE_LOAD  # registry already holds sdgas' classes
    return {"sdgas": checkpoint.load_checkpoint_dict,
            "ultralytics safe_only": lambda f: ultralytics_safe_load(f, safe_only=True)[0]}


def time_loads(files: list, rounds: int) -> dict:
    timings = {(str(f), name): [] for f in files for name in loaders()}
    for f in files:  # warm-up: file cache, allow-list build
        for load in loaders().values():
            load(f)
    for _ in range(rounds):
        for f in files:
            for name, load in loaders().items():
                start = time.perf_counter()
                load(f)
                timings[(str(f), name)].append(time.perf_counter() - start)
    return timings


def report(files, timings, rounds) -> dict:
    rows = []
    for f in files:
        med = {name: statistics.median(timings[(str(f), name)]) for name in loaders()}
        for name in loaders():
            t = timings[(str(f), name)]
            rows.append({"file": "/".join(Path(f).parts[-3:]), "MB": round(Path(f).stat().st_size / 1e6, 1),
                         "loader": name,
                         "median_s": round(med[name], 4), "min_s": round(min(t), 4), "max_s": round(max(t), 4),
                         "x_ultralytics": round(med[name] / med["ultralytics safe_only"], 3)})
    return {"cpu": CPUInfo.name(), "machine": platform.machine(), "rounds": rounds, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="docs/checkpoint_load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(w) for w in args.weights] if args.weights else genuine_checkpoints(Path(tmp))
        result = report(files, time_loads(files, args.rounds), args.rounds)
    print(f"{'file':<22}{'MB':>6}  {'loader':<24}{'median s':>9}{'min':>8}{'max':>8}{'x ultralytics':>15}")
    for r in result["rows"]:
        print(f"{r['file']:<22}{r['MB']:>6}  {r['loader']:<24}{r['median_s']:>9}{r['min_s']:>8}{r['max_s']:>8}"
              f"{r['x_ultralytics']:>15}")
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
