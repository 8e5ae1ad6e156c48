"""Shared fixtures: the real NEU-DET set from ../shared and small real subsets of it."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEU_DET = ROOT.parent / "shared" / "datasets" / "neu-det"
CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def require_neu_det() -> Path:
    """NEU-DET from ../shared; skipped with a reason where absent, a failure under CI=true."""
    if not (NEU_DET / "data.yaml").is_file():
        reason = f"NEU-DET not found at {NEU_DET} (place the shared datasets beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return NEU_DET


def make_subset(dst: Path, per_class: dict) -> Path:
    """Copy the first n train/val images (sorted stems) of every NEU-DET class into a YOLO dataset at dst."""
    src = require_neu_det()
    for split, n in per_class.items():
        stems = (src / "splits" / f"{split}.txt").read_text().split()
        for cls in CLASSES:
            for stem in sorted(s for s in stems if s.rsplit("_", 1)[0] == cls)[:n]:
                for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
                    out = dst / sub / split / f"{stem}{ext}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / sub / split / f"{stem}{ext}", out)
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    (dst / "data.yaml").write_text(f"path: {dst}\ntrain: images/train\nval: images/val\nnc: 6\nnames:\n{names}\n")
    return dst / "data.yaml"


@pytest.fixture(scope="session")
def neu_det() -> Path:
    return require_neu_det()


@pytest.fixture(scope="session")
def neu_subset(tmp_path_factory) -> Path:
    """data.yaml of a small real NEU-DET subset: 4 train + 2 val images per class (24 + 12)."""
    return make_subset(tmp_path_factory.mktemp("neu-subset"), {"train": 4, "val": 2})
