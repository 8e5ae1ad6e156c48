"""VOC XML / COCO JSON -> YOLO conversion, checked against the real NEU-DET labels byte for byte."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import CLASSES
from sdgas.cli import main
from sdgas.data.convert import (ConversionReport, convert_coco, convert_voc, load_voc, quotas, stratified_split,
                                 stratum_by_name)

STEMS = ["crazing_120", "inclusion_62", "patches_101", "patches_105", "scratches_228", "rolled-in_scale_3",
         "pitted_surface_155", "crazing_1"]  # repeated boxes, a duplicate pair, mixed classes, ordinary files


def split_of(neu_det: Path, stem: str) -> str:
    """The split of a NEU-DET stem in the shipped lists."""
    return "val" if stem in (neu_det / "splits" / "val.txt").read_text().split() else "train"


def copy_voc_subset(neu_det: Path, dst: Path, stems: list) -> tuple:
    """Copy the XML files and images of `stems` into dst/xml and dst/img/<class>/ (nested, as NEU-DET ships)."""
    for stem in stems:
        (dst / "xml").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(neu_det / "voc-annotations" / f"{stem}.xml", dst / "xml" / f"{stem}.xml")
        image = dst / "img" / stem.rsplit("_", 1)[0] / f"{stem}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(neu_det / "images" / split_of(neu_det, stem) / f"{stem}.jpg", image)
    return dst / "xml", dst / "img"


def test_voc_reproduces_neu_det_labels_exactly(neu_det, tmp_path):
    """All 1800 original VOC files + images + the shipped split lists give labels/ byte for byte, and the lists."""
    report = convert_voc(neu_det / "voc-annotations", neu_det / "images", tmp_path / "neu", split=neu_det / "splits")
    assert report.names == CLASSES
    assert (report.images["train"], report.images["val"]) == (1440, 360)
    assert (report.boxes["train"], report.boxes["val"]) == (3305, 884)
    assert report.skipped == [] and report.dropped == [] and report.clipped == 0
    for split in ("train", "val"):
        expected = sorted((neu_det / "labels" / split).iterdir())
        produced = sorted((tmp_path / "neu" / "labels" / split).iterdir())
        assert [p.name for p in produced] == [p.name for p in expected]
        mismatched = [p.name for p, q in zip(produced, expected) if p.read_bytes() != q.read_bytes()]
        assert mismatched == []
        assert (tmp_path / "neu" / "splits" / f"{split}.txt").read_bytes() == (neu_det / "splits" / f"{split}.txt"
                                                                               ).read_bytes()
        image = tmp_path / "neu" / "images" / split / f"{expected[0].stem}.jpg"
        assert image.is_symlink() and image.read_bytes() == (neu_det / "images" / split / image.name).read_bytes()
    data = yaml.safe_load((tmp_path / "neu" / "data.yaml").read_text())
    assert "path" not in data and data["names"] == dict(enumerate(CLASSES)) and data["val"] == "images/val"


def test_seeded_stratified_split_reproduces_neu_det_split(neu_det, tmp_path):
    """val=0.2 seed=0 stratify=name gives the shipped 1440/360 split (duplicate pair kept together); seed 1 differs."""
    report = convert_voc(neu_det / "voc-annotations", neu_det / "images", tmp_path / "s0", val=0.2, seed=0,
                         stratify="name")
    for split in ("train", "val"):
        assert (tmp_path / "s0" / "splits" / f"{split}.txt").read_text() == (neu_det / "splits" / f"{split}.txt"
                                                                             ).read_text()
    assert report.images["val"] == 360
    val = set((tmp_path / "s0" / "splits" / "val.txt").read_text().split())
    assert {"patches_101", "patches_105"} <= val

    samples = load_voc(neu_det / "voc-annotations", neu_det / "images", ConversionReport(tmp_path))
    split1 = stratified_split(samples, 0.2, 1, lambda s: stratum_by_name(s, {}))
    val1 = [stem for stem, split in split1.items() if split == "val"]
    assert set(val1) != val and len(val1) == 360
    assert all(sum(s.rsplit("_", 1)[0] == c for s in val1) == 60 for c in CLASSES)  # stratified: 60 per class
    assert len({"patches_101", "patches_105"} & set(val1)) in (0, 2)  # the identical pair is never split


def test_cli_voc_reports_every_skipped_file_and_dropped_box(neu_det, tmp_path, capsys):
    """`sdgas convert` on a messy VOC set: every problem is listed with its reason; good data is converted."""
    xml_dir, img_dir = copy_voc_subset(neu_det, tmp_path / "src", STEMS)
    (xml_dir / "no_image_99.xml").write_text((xml_dir / "crazing_1.xml").read_text().replace("crazing_1.jpg",
                                                                                              "no_image_99.jpg"))
    (xml_dir / "copy_1.xml").write_text((xml_dir / "crazing_1.xml").read_text())  # names crazing_1.jpg as well
    shutil.copyfile(img_dir / "crazing" / "crazing_1.jpg", img_dir / "crazing" / "unannotated_1.jpg")
    (xml_dir / "broken_1.xml").write_text("<annotation><object><name>crazing</name>")  # malformed XML
    shutil.copyfile(img_dir / "crazing" / "crazing_1.jpg", img_dir / "crazing" / "broken_1.jpg")
    tree = ET.parse(xml_dir / "inclusion_62.xml")  # push a box past the border, make one degenerate
    boxes = tree.getroot().findall("object/bndbox")
    boxes[0].find("xmax").text, boxes[1].find("xmin").text = "250", boxes[1].find("xmax").text
    tree.write(xml_dir / "inclusion_62.xml")
    classes = "crazing,inclusion,patches,pitted_surface,rolled-in_scale"  # no 'scratches': its boxes are dropped

    code = main(["convert", "format=voc", f"source={xml_dir}", f"images={img_dir}", f"out={tmp_path / 'out'}",
                 "val=2", "seed=3", f"classes={classes}", "copy=True"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped: no image x1: no_image_99.xml" in out
    assert "skipped: no annotation x2: broken_1.jpg, unannotated_1.jpg" in out
    assert "skipped: malformed VOC XML x1: broken_1.xml" in out
    assert "skipped: image already annotated x1: copy_1.xml" in out
    assert "dropped box: degenerate box x1: inclusion_62.jpg" in out
    assert "dropped box: class not in classes= x" in out and "scratches_228.jpg" in out
    assert "1 boxes clipped to the image" in out
    log = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert log["images"] == {"train": 6, "val": 2} and log["clipped"] == 1
    labels = {p.stem: p.read_text() for p in (tmp_path / "out" / "labels").rglob("*.txt")}
    assert set(labels) == set(STEMS)
    assert labels["inclusion_62"].splitlines()[0].split()[3] == f"{(200 - 39) / 200:.6f}"  # 39..250 -> 39..200
    assert all(not line.startswith("5 ") for text in labels.values() for line in text.splitlines())
    images = list((tmp_path / "out" / "images").rglob("*.jpg"))
    assert len(images) == 8 and not any(p.is_symlink() for p in images)
    assert yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"][4] == "rolled-in_scale"

    with pytest.raises(FileExistsError, match="exist_ok=True"):
        convert_voc(xml_dir, img_dir, tmp_path / "out")


def coco_from_voc(neu_det: Path, stems: list) -> dict:
    """A COCO detection dict built from NEU-DET XML files (categories deliberately out of alphabetical order)."""
    categories = [{"id": 10 + i, "name": n} for i, n in enumerate(reversed(CLASSES))]
    ids = {c["name"]: c["id"] for c in categories}
    coco = {"images": [], "annotations": [], "categories": categories}
    for image_id, stem in enumerate(stems, 1):
        root = ET.parse(neu_det / "voc-annotations" / f"{stem}.xml").getroot()
        coco["images"].append({"id": image_id, "file_name": f"{split_of(neu_det, stem)}/{stem}.jpg",
                               "width": 200, "height": 200})
        for obj in root.iter("object"):
            x1, y1, x2, y2 = (float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax"))
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                                        "category_id": ids[obj.find("name").text], "bbox": [x1, y1, x2 - x1, y2 - y1]})
    coco["annotations"].append({"id": 900, "image_id": 1, "iscrowd": 1, "category_id": 10, "bbox": [0, 0, 50, 50]})
    coco["annotations"].append({"id": 901, "image_id": 77, "iscrowd": 0, "category_id": 10, "bbox": [0, 0, 5, 5]})
    return coco


def test_coco_json_matches_neu_det_labels(neu_det, tmp_path):
    """COCO JSON of real NEU-DET boxes converts to the same label files; crowd and orphan annotations reported."""
    (tmp_path / "instances.json").write_text(json.dumps(coco_from_voc(neu_det, STEMS)))
    (tmp_path / "splits").mkdir()
    for split in ("train", "val"):
        (tmp_path / "splits" / f"{split}.txt").write_text("\n".join(s for s in STEMS if split_of(neu_det, s) == split))
    report = convert_coco(tmp_path / "instances.json", neu_det / "images", tmp_path / "out", split=tmp_path / "splits")
    assert report.names == CLASSES  # sorted, whatever the category ids
    for stem in STEMS:
        split = split_of(neu_det, stem)
        assert (tmp_path / "out" / "labels" / split / f"{stem}.txt").read_bytes() == (
            neu_det / "labels" / split / f"{stem}.txt").read_bytes()
    assert [r.split(":")[0] for _, r in report.dropped] == ["crowd annotation"]
    assert [r.split(":")[0] for _, r in report.skipped] == ["annotation for a missing image"]


def test_val_count_is_apportioned_exactly():
    """val=N images is spread over strata by largest remainder and always sums to N."""
    assert quotas({"a": 116, "b": 115, "c": 115, "d": 116, "e": 116, "f": 115}, 100) == {
        "a": 17, "b": 17, "c": 16, "d": 17, "e": 17, "f": 16}  # 16 each, 4 left: largest remainders, ties by name
    assert sum(quotas({"x": 3, "y": 1, "z": 1}, 2).values()) == 2
