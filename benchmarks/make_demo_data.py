"""Rebuild the built-in demo set cfg/datasets/neu-det-demo/ from a NEU-DET copy in the YOLO layout.

Takes the first N train and M val images of every class (sorted stems of ../shared/datasets/neu-det/splits)
so the sample is deterministic and stratified. Usage: python benchmarks/make_demo_data.py [NEU_DET_DIR]
"""

import shutil
import sys
from pathlib import Path

PER_CLASS = {"train": 6, "val": 2}
CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def main(src: Path, dst: Path):
    for split, n in PER_CLASS.items():
        stems = (src / "splits" / f"{split}.txt").read_text().split()
        for cls in CLASSES:
            chosen = sorted(s for s in stems if s.rsplit("_", 1)[0] == cls)[:n]
            for stem in chosen:
                for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
                    out = dst / sub / split / f"{stem}{ext}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / sub / split / f"{stem}{ext}", out)
    print(f"wrote {sum(1 for _ in (dst / 'images').rglob('*.jpg'))} images to {dst}")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "datasets" / "neu-det",
         root / "cfg" / "datasets" / "neu-det-demo")
