"""A briefly trained SD-GASNet for the metric and export tests, trained once per pytest session.

Trained on the 24 training images of a real NEU-DET subset and validated on those same images: a model trained for
a minute scores ~0 AP on held-out images, which would make metric comparisons vacuous. 10 epochs with one optimizer
step per batch of 4 (nbs=4) and no augmentation give AP ~0.02, AP50 ~0.04 and class scores well off the prior.
"""

from pathlib import Path

TRAIN = dict(imgsz=128, epochs=10, batch=4, nbs=4, optimizer="AdamW", lr0=0.002, warmup_epochs=0, mosaic=0.0,
             close_mosaic=0, scale=0.0, translate=0.0, fliplr=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, val=False,
             plots=False, device="cpu", workers=0, seed=0, deterministic=True, verbose=False)


def tiny_sdgas(neu_subset: Path, tmp_path_factory) -> tuple:
    """(best.pt, data.yaml validating on the training images, runs folder); reused within one pytest session."""
    from sdgas import SDGAS

    runs = tmp_path_factory.getbasetemp() / "tiny-sdgas"
    data, best = runs / "train-as-val.yaml", runs / "train" / "weights" / "best.pt"
    if not best.is_file():
        runs.mkdir(parents=True, exist_ok=True)
        data.write_text(neu_subset.read_text().replace("val: images/val", "val: images/train"))
        SDGAS("sdgasnet.yaml").train(data=str(data), project=str(runs), name="train", exist_ok=True, **TRAIN)
    return best, data, runs


def val_images(data: Path) -> list:
    """The image files a dataset YAML validates on."""
    from ultralytics.utils import YAML

    d = YAML.load(data)
    return sorted((Path(d["path"]) / d["val"]).glob("*.jpg"))
