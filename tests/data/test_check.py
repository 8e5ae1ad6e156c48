"""`sdgas check`: the dataset health report on real NEU-DET, on leaking and broken copies, and the packaged configs."""

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CLASSES, make_subset
from sdgas.cli import main
from sdgas.data.check import check_dataset, check_dataset_present
from sdgas.utils import DATASETS_DIR


def test_neu_det_reports_known_quirks_and_passes(neu_det, capsys):
    """The README's quirks (identical pair in val, repeated boxes) are reported as warnings; exit code 0."""
    assert main(["check", f"data={neu_det}"]) == 0
    out = capsys.readouterr().out
    assert "[val] duplicate images within split: 1" in out
    assert "val/patches_101.jpg = val/patches_105.jpg" in out
    for stem, line, first in (("crazing_120", 4, 3), ("inclusion_62", 7, 5), ("patches_198", 3, 2)):
        assert f"{stem}.jpg: line {line} repeats line {first}" in out
    assert "Errors: none" in out and "Result: OK (exit 0)" in out
    assert "train       1440      1440      0           0         0    3305" in out
    assert "val          360       360      0           0         0     884" in out
    counts = {"crazing": ("556", "133"), "inclusion": ("781", "230"), "patches": ("688", "193"),
              "pitted_surface": ("339", "93"), "rolled-in_scale": ("501", "127"), "scratches": ("440", "108")}
    for name, (train, val) in counts.items():  # boxes per class and split, as in the README
        row = next(line for line in out.splitlines() if line.startswith(f"{name} "))
        assert row.split()[1].endswith(f"/{train}") and row.split()[2].endswith(f"/{val}")
    assert "1 distinct, most common 200x200 (1440); modes RGB 1440" in out


def test_val_images_copied_into_train_is_leakage(tmp_path, capsys):
    """Val images duplicated into train (renamed) make the check fail, naming every leaked pair."""
    data = make_subset(tmp_path, {"train": 2, "val": 1})
    leaked = sorted((tmp_path / "images" / "val").glob("*.jpg"))[:3]
    for image in leaked:
        shutil.copyfile(image, tmp_path / "images" / "train" / f"copy_of_{image.name}")
        shutil.copyfile(tmp_path / "labels" / "val" / f"{image.stem}.txt",
                        tmp_path / "labels" / "train" / f"copy_of_{image.stem}.txt")
    assert main(["check", f"data={data}"]) == 1
    out = capsys.readouterr().out
    assert "[train/val] duplicate images across splits: 3" in out
    for image in leaked:
        assert f"train/copy_of_{image.name} = val/{image.name}" in out
    assert "Result: 1 error kinds" in out


def test_broken_labels_and_images_are_reported(tmp_path):
    """Each label/image problem is found with its file; class ids out of range make the set fail."""
    make_subset(tmp_path, {"train": 2, "val": 1})
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    stems = sorted(p.stem for p in images.glob("*.jpg"))
    (labels / f"{stems[0]}.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # class id out of range
    (labels / f"{stems[1]}.txt").write_text("0 0.95 0.5 0.3 0.2\n0 0.5 0.5 0.0001 0.2\n")  # outside, sub-pixel
    (labels / f"{stems[2]}.txt").write_text("0 nan 0.5 0.2 0.2\n")
    (labels / f"{stems[3]}.txt").write_text("")  # empty: background
    (labels / f"{stems[4]}.txt").unlink()  # unlabelled
    (labels / "renamed_away.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # label without image
    (images / f"{stems[5]}.jpg").write_bytes((images / f"{stems[5]}.jpg").read_bytes()[:3000])
    report = check_dataset(tmp_path / "data.yaml")
    found = {(f.kind, f.split): f.items for f in report.findings}
    assert found[("class id out of range", "train")] == [f"{stems[0]}.jpg: line 1: class 7 but the dataset has 6 "
                                                         f"classes (0-5)"]
    assert found[("box outside the image", "train")] == [f"{stems[1]}.jpg: line 1: x 160.0 to 220.0, y 80.0 to "
                                                         f"120.0 in a 200x200 image"]
    assert found[("sub-pixel box", "train")][0].startswith(f"{stems[1]}.jpg: line 2: 0.02x40.00 pixels")
    assert found[("NaN label value", "train")] == [f"{stems[2]}.jpg: line 1: x_center is nan"]
    assert found[("empty label file (background image)", "train")] == [f"{stems[3]}.jpg"]
    assert found[("unlabelled image (no label file: trained as background)", "train")] == [f"{stems[4]}.jpg"]
    assert found[("label file without image", "train")] == [str(labels / "renamed_away.txt")]
    assert found[("unusable image", "train")][0].startswith(f"{stems[5]}.jpg: truncated image")
    assert {f.kind for f in report.errors} == {"class id out of range", "NaN label value"} and not report.ok


def test_packaged_dataset_configs():
    """neu-det/pcb/tilda YAMLs: class order, paper split sizes, no `download:` key, no machine-specific path."""
    expected = {"neu-det": (CLASSES, "1440", "360"),
                "pcb": (["missing_hole", "mouse_bite", "open_circuit", "short", "spur", "spurious_copper"], "593",
                        "100"),
                "tilda": (["textile-defects", "hole", "objects", "oil spot", "thread error"], "320", "80")}
    for name, (names, n_train, n_val) in expected.items():
        text = (DATASETS_DIR / f"{name}.yaml").read_text()
        data = yaml.safe_load(text)
        assert list(data["names"].values()) == names
        assert "download" not in data and not Path(data["path"]).is_absolute()
        assert f"{n_train} images (paper)" in text and f"{n_val} images (paper)" in text
        assert "sdgas convert format=voc" in data["how_to_get"] and "http" in data["how_to_get"]


def test_missing_packaged_dataset_says_what_to_download(tmp_path, monkeypatch):
    """With the set absent from datasets_dir, train/val/check stop with download + convert instructions, offline."""
    import ultralytics.data.utils

    from sdgas import SDGAS

    monkeypatch.setattr(ultralytics.data.utils, "DATASETS_DIR", tmp_path)
    message = r"dataset 'pcb.yaml' not present: .*pcb/images/train does not exist\. To get it: download PCB_DATASET"
    with pytest.raises(FileNotFoundError, match=message):
        check_dataset_present(DATASETS_DIR / "pcb.yaml")
    with pytest.raises(FileNotFoundError, match=rf"sdgas convert format=voc .* out={tmp_path / 'neu-det'} val=0.2"):
        SDGAS("sdgasnet.yaml").train(data="neu-det.yaml", epochs=1, imgsz=64, device="cpu")
    with pytest.raises(FileNotFoundError, match="TILDA .* ships no boxes"):
        SDGAS("sdgasnet.yaml").val(data="tilda.yaml", imgsz=64, device="cpu")
    with pytest.raises(FileNotFoundError, match="not present"):
        check_dataset("neu-det.yaml")
