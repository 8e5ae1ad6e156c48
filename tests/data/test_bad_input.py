"""Bad input never crashes or silently corrupts a run: each bad file is named with its real problem and counted.

A dataset of real NEU-DET images plus every kind of bad image and label is trained for one epoch, validated and
predicted on; the good (and convertible) images must all be used and every bad file named with the right reason.
"""

import logging
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import make_subset
from sdgas.data.dataset import diagnose_image, diagnose_label

# image files that cannot be used: name -> (writer(path, good_jpeg), reason kind)
BAD_IMAGES = {
    "zero_byte.jpg": (lambda p, src: p.write_bytes(b""), "empty file"),
    "text_renamed.jpg": (lambda p, src: p.write_text("name,score\nsample,3\n"), "not an image"),
    "truncated.jpg": (lambda p, src: p.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), "truncated image"),
    "huge.png": (lambda p, src: write_huge_png(p), "huge image"),
}
# images ultralytics loads after a conversion, which must be named and used
CONVERTED_IMAGES = {
    "gray16.png": (lambda p, src: cv2.imwrite(str(p), gray(src).astype(np.uint16) * 257), "16-bit image"),
    "grayscale.png": (lambda p, src: Image.fromarray(gray(src)).save(p), "grayscale image"),
    "rgba.png": (lambda p, src: Image.open(src).convert("RGBA").save(p), "alpha channel"),
}
# label files that make their (good) image unusable: stem -> (label text, reason kind)
BAD_LABELS = {
    "label_nan": ("0 nan 0.5 0.2 0.2\n", "NaN label value"),
    "label_negative": ("1 -0.4 0.5 0.2 0.2\n", "negative coordinate"),
    "label_out_of_range": ("2 0.5 1.7 0.2 0.2\n", "coordinate out of range"),
    "label_class_id": ("9 0.5 0.5 0.2 0.2\n", "class id out of range"),
    "label_fields": ("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2\n", "wrong number of fields"),
}


def gray(src: Path) -> np.ndarray:
    """The image as an 8-bit single-channel array."""
    return np.array(Image.open(src).convert("L"))


def write_huge_png(path: Path, width: int = 10000, height: int = 9000):
    """A valid 1-bit PNG of width x height pixels (90 Mpx, above PIL's 89.5 Mpx limit) written in ~100 kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def add_bad_files(root: Path, split: str, images: dict, labels: dict) -> Path:
    """Add bad/converted images (with a valid label) and good images with bad labels to a split; return a source."""
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    source = sorted(image_dir.glob("*.jpg"))[0]
    valid_label = (label_dir / f"{source.stem}.txt").read_text()
    for name, (write, _) in images.items():
        write(image_dir / name, source)
        (label_dir / f"{Path(name).stem}.txt").write_text(valid_label)
    for stem, (text, _) in labels.items():
        shutil.copyfile(source, image_dir / f"{stem}.jpg")
        (label_dir / f"{stem}.txt").write_text(text)
    return source


@pytest.fixture
def ultralytics_log():
    """Every message ultralytics' logger emits during the test, as a list of strings."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def named_with(log: list, file: str, action: str, kind: str) -> bool:
    """True when a logged line names `file` and says it was skipped/converted for `kind`."""
    return any(f"{file}: sdgas {action} ({kind})" in line for msg in log for line in msg.splitlines())


@pytest.mark.parametrize("name", [*BAD_IMAGES, *CONVERTED_IMAGES])
def test_diagnose_image_names_the_real_problem(tmp_path, neu_det, name):
    """Each bad or convertible image gets the right reason (not e.g. ultralytics' "No module named 'pi_heif'")."""
    write, kind = {**BAD_IMAGES, **CONVERTED_IMAGES}[name]
    path = tmp_path / name
    write(path, neu_det / "images" / "train" / "crazing_1.jpg")
    diagnosis = diagnose_image(path)
    if name in BAD_IMAGES:
        assert diagnosis.fatal is not None and diagnosis.fatal.kind == kind, diagnosis
    else:
        assert diagnosis.fatal is None and kind in [n.kind for n in diagnosis.notes], diagnosis


def test_diagnose_edge_cases(tmp_path, neu_det):
    """16-bit images without 8-bit content, tiny images, and good real images / labels."""
    dark = tmp_path / "dark16.png"
    cv2.imwrite(str(dark), gray(neu_det / "images" / "train" / "crazing_1.jpg").astype(np.uint16))  # values < 256
    assert diagnose_image(dark).fatal.kind == "16-bit image without 8-bit content"
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 40)).save(tiny)
    assert diagnose_image(tiny).fatal.kind == "image too small"
    good = diagnose_image(neu_det / "images" / "train" / "crazing_1.jpg")
    assert good.fatal is None and good.notes == [] and good.size == (200, 200)
    assert diagnose_label(neu_det / "labels" / "train" / "crazing_120.txt", 6) is None  # repeated box is fine
    for stem, (text, kind) in BAD_LABELS.items():
        (tmp_path / f"{stem}.txt").write_text(text)
        assert diagnose_label(tmp_path / f"{stem}.txt", 6).kind == kind


@pytest.mark.slow  # trains a model
def test_train_val_predict_survive_bad_input(tmp_path, ultralytics_log):
    """One epoch of training, validation and prediction on a set mixing good and bad files of every kind."""
    from sdgas import SDGAS

    data = make_subset(tmp_path / "data", {"train": 1, "val": 1})
    good_train = {p.name for p in (tmp_path / "data" / "images" / "train").glob("*.jpg")}
    good_val = {p.name for p in (tmp_path / "data" / "images" / "val").glob("*.jpg")}
    add_bad_files(tmp_path / "data", "train", {**BAD_IMAGES, **CONVERTED_IMAGES}, BAD_LABELS)
    add_bad_files(tmp_path / "data", "val", {"zero_byte.jpg": BAD_IMAGES["zero_byte.jpg"]},
                  {"label_nan": BAD_LABELS["label_nan"]})

    model = SDGAS("sdgasnet.yaml")
    model.train(data=str(data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False, amp=False,
                project=str(tmp_path / "runs"), name="train", exist_ok=True)

    train_set, val_set = model.trainer.train_loader.dataset, model.trainer.test_loader.dataset
    assert {Path(f).name for f in train_set.im_files} == good_train | set(CONVERTED_IMAGES)
    assert {Path(f).name for f in val_set.im_files} == good_val
    report = train_set.input_report
    assert report.used == len(good_train) + len(CONVERTED_IMAGES)
    assert sum(report.skipped.values()) == len(BAD_IMAGES) + len(BAD_LABELS)
    assert f"{len(BAD_IMAGES) + len(BAD_LABELS)} skipped" in report.summary()
    for name, (_, kind) in BAD_IMAGES.items():
        assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "train" / name), "skipped", kind)
    for stem, (_, kind) in BAD_LABELS.items():
        assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "train" / f"{stem}.jpg"), "skipped", kind)
    for name, (_, kind) in CONVERTED_IMAGES.items():
        assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "train" / name), "converted", kind)
    assert not any("pi_heif" in m or "out of bounds coordinates" in m for m in ultralytics_log)

    ultralytics_log.clear()
    metrics = model.val(data=str(data), imgsz=64, batch=8, workers=0, device="cpu", plots=False)
    assert metrics.box.map50 >= 0
    assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "val" / "zero_byte.jpg"), "skipped",
                      "empty file")
    assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "val" / "label_nan.jpg"), "skipped",
                      "NaN label value")
    assert any(f"{len(good_val)}/{len(good_val) + 2} images used; 2 skipped" in m for m in ultralytics_log)

    ultralytics_log.clear()
    results = model.predict(str(tmp_path / "data" / "images" / "train"), imgsz=64, device="cpu", save=False)
    usable = good_train | set(CONVERTED_IMAGES) | {f"{stem}.jpg" for stem in BAD_LABELS}  # labels don't matter here
    assert sorted(Path(r.path).name for r in results) == sorted(usable)
    for name, (_, kind) in BAD_IMAGES.items():
        assert named_with(ultralytics_log, str(tmp_path / "data" / "images" / "train" / name), "skipped", kind)


def test_no_usable_image_is_a_clear_error(tmp_path, neu_det):
    """A split whose every image is bad stops validation and prediction with a message counting the reasons."""
    from sdgas import SDGAS

    data = make_subset(tmp_path / "data", {"train": 1, "val": 1})
    for split in ("train", "val"):
        for image in (tmp_path / "data" / "images" / split).glob("*.jpg"):
            image.write_bytes(b"")
    model = SDGAS("sdgasnet.yaml")
    with pytest.raises(RuntimeError, match=r"no usable images in .*all 6 images were skipped \(6 empty file\)"):
        model.val(data=str(data), imgsz=64, batch=4, workers=0, device="cpu", plots=False)
    with pytest.raises(FileNotFoundError, match=r"no usable images in the source.*6 empty file"):
        model.predict(str(tmp_path / "data" / "images" / "val"), imgsz=64, device="cpu")
