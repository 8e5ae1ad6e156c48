"""Training that survives SIGKILL (issue 8): kill a short real run at several points, resume it each time.

One 4-epoch run on a small real NEU-DET subset is killed in the middle of an epoch, during validation, half-way
through writing a checkpoint, and during the final evaluation; after every kill best.pt and last.pt must load and
last.pt must hold the last completed epoch, and the final `sdgas train resume` must finish with every epoch in
results.csv exactly once, as an uninterrupted 4-epoch run would.

This file is also the child process: `python tests/io/test_resume.py '<json spec>'` trains or resumes and kills itself
with SIGKILL at the point the spec names.
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EPOCHS = 4


def child(spec: dict):
    """Train (or resume) and SIGKILL this process at `spec['kill']`: mid-epoch, validation, save or final-eval."""
    import pathlib

    from sdgas import SDGAS

    state = {"epoch": -1, "batches": 0, "final_saved": False}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_start(trainer):
        state["epoch"], state["batches"] = trainer.epoch, 0

    def on_train_batch_end(trainer):
        state["batches"] += 1
        if spec["kill"] == "mid-epoch" and trainer.epoch == spec["epoch"] and state["batches"] == 2:
            die()

    def on_val_batch_start(validator):
        if spec["kill"] == "validation" and state["epoch"] == spec["epoch"] and not state["final_saved"]:
            die()
        if spec["kill"] == "final-eval" and state["final_saved"]:
            die()

    def on_model_save(trainer):
        state["final_saved"] = trainer.epoch + 1 >= trainer.epochs

    write_bytes = pathlib.Path.write_bytes

    def write_half_then_die(path, data):
        """ultralytics writes checkpoints with Path.write_bytes: write half of last.pt's bytes, then die."""
        if spec["kill"] == "save" and path.name == "last.pt" and state["epoch"] == spec["epoch"]:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            die()
        return write_bytes(path, data)

    pathlib.Path.write_bytes = write_half_then_die
    model = SDGAS(spec["resume"]) if spec.get("resume") else SDGAS("sdgasnet.yaml")
    for callback in (on_train_epoch_start, on_train_batch_end, on_val_batch_start, on_model_save):
        model.add_callback(callback.__name__, callback)
    if spec.get("resume"):
        model.train(resume=True)
    else:
        model.train(data=spec["data"], project=spec["project"], name="run", epochs=EPOCHS, imgsz=64, batch=8,
                    workers=0, device="cpu", plots=False, seed=0, amp=False, exist_ok=True)


def run_child(spec: dict):
    return subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True, timeout=300)


def results_epochs(run: Path) -> list:
    with open(run / "results.csv", encoding="utf-8") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def assert_checkpoints_load(weights: Path, epochs_saved: int):
    """best.pt and last.pt load through SDGAS (the safe path); last.pt holds the last completed epoch."""
    from sdgas import SDGAS
    from sdgas.io.checkpoint import load_checkpoint_dict

    for name in ("best.pt", "last.pt"):
        assert SDGAS(weights / name).task == "detect"
    assert load_checkpoint_dict(weights / "last.pt")["epoch"] == epochs_saved - 1


@pytest.mark.slow  # trains a model
def test_resume_after_sigkill_at_every_stage(neu_subset, tmp_path):
    """Killed mid-epoch, in validation, mid-save and in the final evaluation; resumed each time; ends complete."""
    from sdgas.io.checkpoint import load_checkpoint_dict
    from sdgas.io.saving import STAGING_DIR

    run = tmp_path / "runs" / "run"
    weights, last = run / "weights", str(run / "weights" / "last.pt")
    kills = [  # (spec, epochs saved after the kill)
        ({"kill": "mid-epoch", "epoch": 1, "data": str(neu_subset), "project": str(tmp_path / "runs")}, 1),
        ({"kill": "validation", "epoch": 2, "resume": last}, 2),
        ({"kill": "save", "epoch": 2, "resume": last}, 2),  # epoch 3's save dies half-way through last.pt
        ({"kill": "final-eval", "resume": last}, EPOCHS),
    ]
    for spec, epochs_saved in kills:
        result = run_child(spec)
        assert result.returncode == -signal.SIGKILL, f"{spec['kill']}: {result.stderr[-3000:]}"
        assert_checkpoints_load(weights, epochs_saved)
        if spec["kill"] == "save":
            staged = weights / STAGING_DIR / "last.pt"
            assert 0 < staged.stat().st_size < (weights / "last.pt").stat().st_size  # the kill hit a partial write
            assert results_epochs(run) == [1, 2, 3]  # epoch 3's row was written, its checkpoint never was

    result = subprocess.run([sys.executable, "-m", "sdgas.cli", "train", "resume", f"model={last}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert results_epochs(run) == list(range(1, EPOCHS + 1))  # every epoch exactly once, as an uninterrupted run
    final = load_checkpoint_dict(last)
    assert final["epoch"] == -1 and final["optimizer"] is None  # stripped: the run is complete
    assert [int(e) for e in final["train_results"]["epoch"]] == list(range(1, EPOCHS + 1))
    assert final["train_args"]["epochs"] == EPOCHS
    assert load_checkpoint_dict(weights / "best.pt")["epoch"] == -1
    assert not (weights / STAGING_DIR).exists()
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]

    from sdgas import SDGAS
    from sdgas.io.checkpoint import CheckpointError

    for resume in (lambda: SDGAS("sdgasnet.yaml").train(resume=last), lambda: SDGAS(last).train(resume=True)):
        with pytest.raises(CheckpointError, match="nothing to resume"):  # a finished run: one line, results.csv kept
            resume()
    assert results_epochs(run) == list(range(1, EPOCHS + 1))


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
