"""Checkpoint writes that survive being killed, and resuming from them.

Checkpoint writes are staged in a folder beside the weights, flushed to disk and renamed into place, so a kill or a
full disk during a save leaves the previous last.pt/best.pt intact; `truncate_results_csv` drops the rows of epochs a
resumed checkpoint never saved. A resumed run continues in the run folder its checkpoint sits in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ultralytics.utils import LOGGER

from sdgas.io.checkpoint import CheckpointError, checkpoint_model, load_checkpoint_dict

STAGING_DIR = ".saving"  # inside the weights folder: same filesystem, so the final rename is atomic


class AllEpochsSaved(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A resumed run's checkpoint already holds its final epoch: only the final evaluation is left to do."""


# ---------------------------------------------------------------------------------------------------------------------
# Resuming

def checkpoint_run_dir(file) -> Path:
    """The run folder a checkpoint belongs to (`<run>/weights/last.pt` -> `<run>`): where a resumed run writes."""
    folder = Path(file).resolve().parent
    return folder.parent if folder.name == "weights" else folder


def check_resumable(ckpt, file):
    """One line for a finished run (ultralytics strips the training state after the last epoch)."""
    if ckpt.get("epoch", -1) < 0 or not ckpt.get("optimizer"):
        raise CheckpointError(f"'{file}' is a finished training (its last epoch is done and its training state was "
                              f"stripped): there is nothing to resume; to train on from it, start a new training "
                              f"with model={file}")


# ---------------------------------------------------------------------------------------------------------------------
# Atomic writes


def fsync_path(path):
    """Flush a file's (or, on POSIX, a directory's) data to disk."""
    if Path(path).is_dir() and os.name == "nt":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(src, dst):
    """Flush `src`, rename it over `dst` (atomic on one filesystem) and flush the folder entry."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


def atomic_write_bytes(path, data: bytes):
    """Write `data` to a temporary file beside `path`, flush it and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_checkpoint_writes(trainer):
    """Point the trainer's last/best/weights paths into a staging folder, then commit what was written there.

    Files are renamed into the weights folder one by one with last.pt renamed last, so at any instant best.pt is at
    least as new as last.pt and both are complete files. On failure (e.g. a full disk) the staged files are removed,
    the previous checkpoints stay as they were, and the error is re-raised.
    """
    wdir, last, best = trainer.wdir, trainer.last, trainer.best
    staging = wdir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a save that was killed
    staging.mkdir(parents=True)
    trainer.wdir, trainer.last, trainer.best = staging, staging / last.name, staging / best.name
    try:
        yield staging
        trainer.wdir, trainer.last, trainer.best = wdir, last, best
        for f in sorted(staging.iterdir(), key=lambda p: p.name == last.name):
            commit_file(f, wdir / f.name)
    except BaseException as e:
        if isinstance(e, OSError):
            LOGGER.error(f"checkpoint save failed ({e}); the previous {last.name} and {best.name} are intact")
        raise
    finally:
        trainer.wdir, trainer.last, trainer.best = wdir, last, best
        shutil.rmtree(staging, ignore_errors=True)


def strip_optimizer_atomic(f, s="", updates=None):
    """ultralytics' strip_optimizer, loading `f` through the allow-list and renaming the result into place."""
    from ultralytics.utils.torch_utils import strip_optimizer

    load_checkpoint_dict(f)  # refuses anything the unrestricted load inside strip_optimizer must not see
    target = Path(s or f)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        ckpt = strip_optimizer(f, s=str(tmp), updates=updates)
        if ckpt and tmp.exists():
            commit_file(tmp, target)
        return ckpt
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_final_strip(trainer):
    """Inside ultralytics' final_eval: strip_optimizer loads through the allow-list and writes atomically, and last.pt
    is stripped only once the final evaluation is done, so a kill before that leaves it resumable."""
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import RANK

    last, stock_strip = Path(trainer.last), trainer_module.strip_optimizer

    def strip(f, s="", updates=None):
        if Path(f) == last and not s:
            return load_checkpoint_dict(f)  # final_eval only reads train_results from it
        return strip_optimizer_atomic(f, s, updates)

    trainer_module.strip_optimizer = strip
    try:
        yield
    finally:
        trainer_module.strip_optimizer = stock_strip
    if RANK in {-1, 0} and last.exists():
        strip_optimizer_atomic(last)


def check_class_count(ckpt, data: dict, file):
    """One-line error when resuming a checkpoint on a dataset with another number of classes."""
    model = checkpoint_model(ckpt)
    nc = getattr(model, "nc", None) or (getattr(model, "yaml", None) or {}).get("nc")
    if nc is not None and data.get("nc") is not None and int(nc) != int(data["nc"]):
        raise CheckpointError(f"'{file}' was trained for {nc} classes but the dataset "
                              f"'{data.get('yaml_file', '?')}' has {data['nc']}: resume with the dataset it was "
                              f"trained on, or start a new training from it (model={file} without resume)")


# ---------------------------------------------------------------------------------------------------------------------
# results.csv


def truncate_results_csv(csv, epochs_saved: int) -> int:
    """Keep results.csv's header and one complete row for each epoch 1..epochs_saved; return the rows kept.

    After a kill, results.csv may hold a row for an epoch whose checkpoint was never saved (rows are appended before
    the save), a half-written last line, or, after several resumes, repeated epochs. The file is rewritten atomically.
    """
    csv = Path(csv)
    if not csv.is_file():
        return 0
    text = csv.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the last element is "" after a final newline, or a partial row without one
    if not complete:
        csv.unlink()
        return 0
    header, rows = complete[0], {}
    width = header.count(",")
    for line in complete[1:]:
        epoch = _row_epoch(line)
        if epoch is not None and 1 <= epoch <= epochs_saved and line.count(",") == width:
            rows[epoch] = line  # a repeated epoch keeps its latest row
    kept = [rows[e] for e in sorted(rows)]
    new = "\n".join([header, *kept]) + "\n"
    if new != text:
        atomic_write_bytes(csv, new.encode("utf-8"))
    return len(kept)


def _row_epoch(line: str):
    with contextlib.suppress(ValueError):
        value = float(line.split(",", 1)[0])
        if value.is_integer():
            return int(value)
    return None
