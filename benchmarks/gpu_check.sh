#!/usr/bin/env bash
# GPU check of sdgas (issue 17): AMP training vs YOLOv8s, selfdistill, FP16 validation, FP16 and dynamic ONNX export,
# FPS at batch 1 and 32 vs YOLOv8s, and ultralytics' DDP worker path at world size 1 (NCCL); writes docs/gpu.md.
# Needs a CUDA GPU and NEU-DET at ../shared/datasets/neu-det; about 10 minutes on one data-centre GPU.
#
#   bash benchmarks/gpu_check.sh                                   # GPU 0, imgsz 640, 3 epochs, docs/gpu.md
#   DEVICE=cpu IMGSZ=64 FRACTION=0.05 ROUNDS=5 OUT=/tmp/gpu_cpu.md bash benchmarks/gpu_check.sh   # CPU dry run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if [ "${DEVICE:-0}" != "cpu" ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch: run with DEVICE=cpu for a CPU dry run')"
fi
if [ "${DEVICE:-0}" = "cpu" ]; then export BATCH=${BATCH:-8}; fi
exec "$PYTHON" benchmarks/gpu_check.py
