"""The paper's figures, regenerated with sdgas into docs/figures/.

    python benchmarks/figures.py pdct                                   # PDCT frequency filters (paper §3.1)
    python benchmarks/figures.py curves RUN_DIR [RUN_DIR ...]           # training curves from results.csv
    python benchmarks/figures.py examples MODEL.pt DATA.yaml            # one detection example per class (Figure 8)
    python benchmarks/figures.py heatmaps IMAGE AES.pt FPN.pt PAFPN.pt  # neck Grad-CAM per model (Figure 9)
"""

import argparse
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)
import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sdgas.nn.modules.neck import PDCTFilter, pdct_frequencies  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def pdct(out: Path, size: int = 40, grid: int = 10, components: int = 8):
    """The fixed DCT-II basis of every PDCT frequency at a size x size feature map (40 = stride 16 at 640)."""
    low, high = pdct_frequencies(components, grid)
    freqs = low + high
    pdct_filter = PDCTFilter(len(freqs), freqs, grid)
    basis = pdct_filter.build_basis(size, size).numpy()
    fig, axes = plt.subplots(2, len(freqs) // 2, figsize=(2.2 * len(freqs) // 2, 4.6))
    for ax, f, b, (u, v) in zip(axes.flat, freqs, basis, pdct_filter.scaled_frequencies(size, size)):
        ax.imshow(b, cmap="RdBu", vmin=-abs(basis).max(), vmax=abs(basis).max())
        ax.set_title(f"grid {f} -> ({u},{v})", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"PDCT filters on a {size}x{size} map (top: low frequencies to Lf, bottom: high to Hf)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def curves(out: Path, runs: list):
    """Losses and mAP per epoch for each run directory (ultralytics results.csv)."""
    import csv

    keys = ["train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for run in runs:
        rows = list(csv.DictReader(open(Path(run) / "results.csv")))
        epochs = [float(r["epoch"]) for r in rows]
        for ax, key in zip(axes, keys):
            if key in rows[0]:  # metrics are 0 in epochs that were not validated (val=False): leave them out
                points = [(e, float(r[key])) for e, r in zip(epochs, rows) if key.startswith("train") or float(r[key])]
                ax.plot(*zip(*points), marker="o" if len(points) < 3 else None, label=Path(run).name)
                ax.set_title(key, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def examples(out: Path, model_path: str, data: str, imgsz: int = 640, conf: float = 0.25):
    """One validation image per class with its predictions drawn (paper Figure 8)."""
    from ultralytics.data.utils import check_det_dataset

    from sdgas import SDGAS

    info = check_det_dataset(data)
    images = sorted(Path(info["val"]).glob("*.jpg"))
    chosen = [next((p for p in images if p.stem.rsplit("_", 1)[0] == name), None) for name in info["names"].values()]
    chosen = [p for p in chosen if p is not None] or images[: len(info["names"])]
    results = SDGAS(model_path).predict([str(p) for p in chosen], imgsz=imgsz, conf=conf, verbose=False)
    fig, axes = plt.subplots(1, len(results), figsize=(2.6 * len(results), 2.9))
    for ax, r, path in zip(np.atleast_1d(axes), results, chosen):
        ax.imshow(r.plot()[..., ::-1])
        ax.set_title(path.stem, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def heatmaps(out: Path, image: str, models: list, imgsz: int = 640):
    """Neck Grad-CAM (P3, P4, P5) of each model on one image, one row per model (paper Figure 9)."""
    from sdgas import SDGAS
    from sdgas.tools.heatmap import load_image, neck_gradcam, overlay

    boxed, tensor = load_image(image, imgsz)
    fig, axes = plt.subplots(len(models), 3, figsize=(7.5, 2.6 * len(models)), squeeze=False)
    for row, model_path in zip(axes, models):
        for ax, level, cam in zip(row, ("P3", "P4", "P5"), neck_gradcam(SDGAS(model_path).model.float(), tensor)):
            ax.imshow(cv2.cvtColor(overlay(boxed, cam), cv2.COLOR_BGR2RGB))
            ax.set_title(f"{Path(model_path).parent.parent.name} {level}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="figure", required=True)
    sub.add_parser("pdct")
    sub.add_parser("curves").add_argument("runs", nargs="+")
    ex = sub.add_parser("examples")
    ex.add_argument("model")
    ex.add_argument("data")
    ex.add_argument("--imgsz", type=int, default=640)
    hm = sub.add_parser("heatmaps")
    hm.add_argument("image")
    hm.add_argument("models", nargs="+")
    hm.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()
    FIGURES.mkdir(parents=True, exist_ok=True)
    out = FIGURES / f"{args.figure}.png"
    if args.figure == "pdct":
        pdct(out)
    elif args.figure == "curves":
        curves(out, args.runs)
    elif args.figure == "examples":
        examples(out, args.model, args.data, args.imgsz)
    else:
        heatmaps(out, args.image, args.models, args.imgsz)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
