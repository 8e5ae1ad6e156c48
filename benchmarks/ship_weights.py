"""Package a trained SD-GASNet as the shipped `sdgasnet-neu` weights and record how it was made and what it scores.

    python benchmarks/ship_weights.py --run docs/results/long/sdgasnet.json

Reads the harness JSON of a finished run (its weights, train command, seed and budget), writes the weights-only
FP16 file `cfg/weights/sdgasnet-neu.safetensors` (its model YAML inside, the dataset recorded by its packaged bare name,
never a local path), validates the written file with `sdgas val` on NEU-DET val as a user would, and writes
docs/results/sdgasnet-neu.json: the source run, its commands, the COCO metrics, the file's size and SHA-256.
"""

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "cfg" / "weights" / "sdgasnet-neu.safetensors"
RECORD = ROOT / "docs" / "results" / "sdgasnet-neu.json"
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def write_weights(weights: Path) -> None:
    from sdgas import SDGAS
    from sdgas.io.weights import export_safetensors

    model = SDGAS(str(weights)).model
    model.args = {**model.args, "data": "neu-det.yaml"}  # the packaged dataset YAML, not the trainer's local path
    export_safetensors(model, SHIPPED, half=True)
    SHIPPED.chmod(0o644)


def validate(data: str) -> dict:
    """`sdgas val model=sdgasnet-neu.pt` (the bare name) from an empty directory; the COCO metrics of its results.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).with_name("sdgas")), "val", "model=sdgasnet-neu.pt", f"data={data}",
                   f"project={tmp}", "name=val", "plots=False"]
        subprocess.run(command, cwd=tmp, check=True)
        with open(Path(tmp) / "val" / "results.csv") as f:
            row = next(csv.DictReader(f))
    return {"command": " ".join(command[1:]), **{k: round(float(row[f"metrics/{k}(B)"]), 4) for k in COCO_KEYS}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="harness JSON of the run to ship")
    parser.add_argument("--data", default="neu-det.yaml", help="dataset to validate the shipped file on")
    opt = parser.parse_args()
    run = json.loads(opt.run.read_text())
    write_weights(Path(run["weights"]))
    record = {
        "file": str(SHIPPED.relative_to(ROOT)),
        "bytes": SHIPPED.stat().st_size,
        "sha256": hashlib.sha256(SHIPPED.read_bytes()).hexdigest(),
        "source_run": {k: run.get(k) for k in ("run_id", "budget", "budget_args", "seed", "teacher", "commands",
                                                "train_time_s", "code", "machine")},
        "source_run_json": str(opt.run),
        "sdgas_val": validate(opt.data),
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("file", "bytes", "sdgas_val")}, indent=2))


if __name__ == "__main__":
    main()
