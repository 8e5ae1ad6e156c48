"""Paper-style latency table: SD-GASNet against stock ultralytics peers, interleaved in one run (issue 5).

Per image at batch 1: preprocess, model inference, DFL decode and NMS, median and spread over interleaved rounds,
in PyTorch FP32 and BF16 (channels-last, as ultralytics runs PyTorch models on x86 CPUs) and ONNX Runtime FP32;
on a GPU, PyTorch FP32/FP16 with FPS. Writes docs/speed.json and docs/speed.md (sdgas.tools.benchmark; the
same as `sdgas benchmark out=docs/speed`).

    python benchmarks/speed.py                           # all peers and modes, 640, 50 rounds, all cores
    python benchmarks/speed.py --threads 2 --rounds 50 --wait-load 0.5 --out docs/speed
"""

import argparse
import os
import time
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)

from sdgas.tools.benchmark import PEERS, benchmark, markdown, write_report


def wait_for_quiet(max_load: float, timeout: float):
    """Wait (up to timeout seconds) until the 1-minute load average, per core, drops below max_load."""
    cores, start = os.cpu_count() or 1, time.time()
    while os.getloadavg()[0] / cores > max_load and time.time() - start < timeout:
        print(f"load average {os.getloadavg()[0]:.2f} on {cores} cores; waiting")
        time.sleep(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sdgasnet.yaml", help="comma-separated sdgas YAMLs or checkpoints")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated stock ultralytics YAMLs")
    parser.add_argument("--modes", default="", help="default: all the device supports")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--source", default=None, help="image to preprocess (default: ultralytics' bus.jpg)")
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--wait-load", type=float, default=None, help="first wait until load/core is below this")
    parser.add_argument("--wait-timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "speed")
    a = parser.parse_args()
    if a.wait_load is not None:
        wait_for_quiet(a.wait_load, a.wait_timeout)
    report = benchmark(models=a.model.split(","), peers=[p for p in a.peers.split(",") if p],
                       modes=[m for m in a.modes.split(",") if m] or None, imgsz=a.imgsz, rounds=a.rounds,
                       warmup=a.warmup, threads=a.threads, device=a.device, source=a.source,
                       max_other_load=a.max_other_load)
    json_file, md_file = write_report(report, a.out)
    print(markdown(report))
    print(f"wrote {json_file} and {md_file}")


if __name__ == "__main__":
    main()
