"""Convert Pascal VOC XML and COCO JSON detection sets to the YOLO layout ultralytics trains on.

    sdgas convert format=voc source=ANNOTATIONS images=IMAGES out=DATASET val=0.2 seed=0
    sdgas convert format=coco source=instances.json images=IMAGES out=DATASET val=100 stratify=name
    sdgas convert format=voc source=... images=... out=... split=SPLITS classes="a,b,c" copy=True

Keys: format (voc | coco), source (VOC: folder of *.xml, searched recursively; COCO: the JSON file), images (folder,
searched recursively, matched by file stem), out (new dataset folder), val (fraction 0-1 or a number of images;
default 0.2), seed (default 0), stratify (label: an image's most frequent class, default | name: its file name without
digit-only parts, e.g. crazing_12 -> crazing), split (folder holding train.txt/val.txt[/test.txt] of stems: use that
split instead), classes (names in id order, comma-separated; default: the data's names, sorted), copy (copy images
instead of symlinking them, default False), exist_ok (replace the images/labels/splits of an existing out).

Output: out/images/{train,val}/ (links or copies), out/labels/{train,val}/*.txt (`class cx cy w h`, normalised, 6
decimals, boxes clipped to the real image size), out/splits/{train,val}.txt (stems), out/data.yaml, and
out/conversion.json listing every skipped file and dropped box with its reason.

Examples:
    >>> from sdgas.data.convert import convert_voc
    >>> report = convert_voc("NEU-DET/ANNOTATIONS", "NEU-DET/IMAGES", "datasets/neu-det", val=0.2, stratify="name")
    >>> print(report.summary())
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ultralytics.data.utils import IMG_FORMATS

from sdgas.data.dataset import diagnose_image

SPLITS = ("train", "val", "test")
BACKGROUND = "(no boxes)"  # stratum of images without boxes
CLI_KEYS = {"format", "source", "images", "out", "val", "seed", "stratify", "split", "classes", "copy", "exist_ok"}


@dataclass
class Sample:
    """One annotated image: its file, its stem (output name), its real size and its boxes in pixels (name, x1y1x2y2)."""

    stem: str
    image: Path
    size: tuple = (0, 0)  # (width, height) of the real image
    boxes: list = field(default_factory=list)


@dataclass
class ConversionReport:
    """What a conversion produced and every file or box it left out, with the reason."""

    out: Path
    names: list = field(default_factory=list)
    images: Counter = field(default_factory=Counter)  # split -> images written
    boxes: Counter = field(default_factory=Counter)  # split -> boxes written
    skipped: list = field(default_factory=list)  # (file, reason): files not converted
    dropped: list = field(default_factory=list)  # (file, reason): boxes left out of a converted file
    notes: list = field(default_factory=list)  # (file, note): converted, but worth knowing
    clipped: int = 0  # boxes clipped to the image

    def skip(self, file, reason: str):
        """Record a file that was not converted."""
        self.skipped.append((str(file), reason))

    def summary(self) -> str:
        """A readable multi-line summary: counts per split, then every skipped file and dropped box with its reason."""
        splits = ", ".join(f"{s} {self.images[s]} images / {self.boxes[s]} boxes" for s in SPLITS if self.images[s])
        lines = [f"sdgas convert: {sum(self.images.values())} images converted to {self.out} ({splits or 'none'}); "
                 f"{len(self.names)} classes: {', '.join(self.names)}",
                 f"  {len(self.skipped)} files skipped, {len(self.dropped)} boxes dropped, {self.clipped} boxes "
                 f"clipped to the image, {len(self.notes)} notes"]
        for title, items in (("skipped", self.skipped), ("dropped box", self.dropped), ("note", self.notes)):
            counts = Counter(reason.split(":")[0] for _, reason in items)
            for reason, n in counts.most_common():
                files = [Path(f).name for f, r in items if r.split(":")[0] == reason]
                shown = ", ".join(files[:5]) + (f", ... ({n - 5} more)" if n > 5 else "")
                lines.append(f"  {title}: {reason} x{n}: {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form, written to out/conversion.json."""
        return {"names": self.names, "images": dict(self.images), "boxes": dict(self.boxes), "clipped": self.clipped,
                "skipped": [list(x) for x in self.skipped], "dropped": [list(x) for x in self.dropped],
                "notes": [list(x) for x in self.notes]}


def index_images(images: str | Path) -> dict:
    """Every image file under `images` (recursively), by stem: {stem: [paths]}."""
    index = defaultdict(list)
    for path in sorted(Path(images).rglob("*")):
        if path.suffix[1:].lower() in IMG_FORMATS and path.is_file():
            index[path.stem].append(path)
    return index


def find_image(index: dict, stem: str, report: ConversionReport, annotation) -> Path | None:
    """The one image with this stem, or None with the reason recorded."""
    found = index.get(stem, [])
    if len(found) == 1:
        return found[0]
    report.skip(annotation, f"no image: no file named {stem}.<image ext> under the images folder" if not found else
                f"ambiguous image: {len(found)} files named {stem}.* ({', '.join(str(p) for p in found[:3])})")
    return None


def read_voc(xml_file: Path) -> tuple[str | None, list]:
    """(filename, [(name, x1, y1, x2, y2), ...]) of a Pascal VOC XML file; raises ValueError naming a bad object."""
    root = ET.parse(xml_file).getroot()
    boxes = []
    for number, obj in enumerate(root.iter("object"), 1):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if not name or not name.strip() or box is None:
            raise ValueError(f"object {number} has no <name> or no <bndbox>")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ValueError(f"object {number} ({name.strip()}) has a missing or non-numeric bndbox coordinate")
        boxes.append((name.strip(), *coords))
    return root.findtext("filename"), boxes


def load_voc(source: str | Path, images: str | Path, report: ConversionReport) -> list:
    """Samples from every *.xml under `source`, images matched by stem, else by <filename>, under `images`.

    Stem matches are made first, so an XML whose <filename> names an image that has its own XML never takes it.
    """
    index, parsed = index_images(images), []
    for xml_file in sorted(Path(source).rglob("*.xml")):
        try:
            parsed.append((xml_file, *read_voc(xml_file)))
        except (ET.ParseError, ValueError) as e:
            report.skip(xml_file, f"malformed VOC XML: {e}")
    claimed = {}  # image -> the XML file annotating it
    by_stem = [x for x in parsed if x[0].stem in index]
    by_filename = [x for x in parsed if x[0].stem not in index]
    for xml_file, filename, boxes in by_stem + by_filename:
        stem = xml_file.stem if xml_file.stem in index or not filename else Path(filename).stem
        image = find_image(index, stem, report, xml_file)
        if image is None:
            continue
        if image in claimed:
            report.skip(xml_file, f"image already annotated: its <filename> {filename} is annotated by "
                                  f"{claimed[image].name}")
            continue
        claimed[image] = xml_file
    boxes_of = {xml_file: boxes for xml_file, _, boxes in parsed}
    samples = [Sample(image.stem, image, boxes=boxes_of[xml_file]) for image, xml_file in claimed.items()]
    for paths in index.values():
        for path in paths:
            if path not in claimed:
                report.skip(path, "no annotation: no valid VOC XML file for this image")
    return samples


def load_coco(source: str | Path, images: str | Path, report: ConversionReport) -> list:
    """Samples from a COCO detection JSON; images found as images/file_name, else by stem under `images`."""
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    categories = {c["id"]: str(c["name"]).strip() for c in data.get("categories", [])}
    by_image = defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[ann.get("image_id")].append(ann)
    index, samples = index_images(images), []
    known_ids = {im.get("id") for im in data.get("images", [])}
    for image_id in sorted(set(by_image) - known_ids, key=str):
        report.skip(f"{source}#image_id={image_id}", f"annotation for a missing image: image_id {image_id} is not "
                                                     f"in 'images' ({len(by_image[image_id])} annotations)")
    for entry in data.get("images", []):
        name = str(entry.get("file_name", ""))
        direct = Path(images) / name
        image = direct if name and direct.is_file() else find_image(index, Path(name).stem, report, name or entry)
        if image is None:
            continue
        boxes = []
        for ann in by_image.get(entry.get("id"), []):
            box = coco_box(ann, categories)
            if isinstance(box, str):
                report.dropped.append((str(image), box))
            else:
                boxes.append(box)
        samples.append(Sample(image.stem, image, boxes=boxes))
    return samples


def coco_box(ann: dict, categories: dict) -> tuple | str:
    """(name, x1, y1, x2, y2) of a COCO annotation, or the reason it is left out."""
    if ann.get("iscrowd"):
        return f"crowd annotation: id {ann.get('id')} has iscrowd=1 (a region of many objects, not one box)"
    if ann.get("category_id") not in categories:
        return f"unknown category: category_id {ann.get('category_id')} is not in 'categories'"
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        return f"malformed bbox: annotation id {ann.get('id')} has bbox {ann.get('bbox')!r}"
    return categories[ann["category_id"]], x, y, x + w, y + h


def measure_images(samples: list, report: ConversionReport) -> list:
    """Keep the samples whose image is usable, setting each one's real (width, height)."""
    kept = []
    for sample in samples:
        diagnosis = diagnose_image(sample.image)
        if diagnosis.fatal:
            report.skip(sample.image, f"unusable image: {diagnosis.fatal}")
            continue
        sample.size = diagnosis.size
        kept.append(sample)
    return kept


def drop_duplicate_stems(samples: list, report: ConversionReport) -> list:
    """Leave out every sample whose stem (its output name) is shared with another one."""
    counts = Counter(s.stem for s in samples)
    for sample in samples:
        if counts[sample.stem] > 1:
            report.skip(sample.image, f"duplicate name: {counts[sample.stem]} images are named {sample.stem}.*")
    return [s for s in samples if counts[s.stem] == 1]


def class_names(samples: list, classes) -> list:
    """The class names in id order: `classes` when given (list or comma-separated string), else the data's, sorted."""
    if classes is None or classes == "":
        return sorted({box[0] for s in samples for box in s.boxes})
    if isinstance(classes, str):
        classes = classes.strip("[]").split(",")
    names = [str(c).strip().strip("'\"") for c in classes]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"classes={classes!r} must be distinct non-empty names")
    return names


def yolo_lines(sample: Sample, ids: dict, report: ConversionReport) -> list:
    """`class cx cy w h` lines of a sample: boxes clipped to the image, degenerate or unknown-class boxes dropped."""
    width, height = sample.size
    lines = []
    for name, x1, y1, x2, y2 in sample.boxes:
        if name not in ids:
            report.dropped.append((str(sample.image), f"class not in classes=: '{name}'"))
            continue
        cx1, cy1 = min(max(x1, 0), width), min(max(y1, 0), height)
        cx2, cy2 = min(max(x2, 0), width), min(max(y2, 0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            report.dropped.append((str(sample.image), f"degenerate box: ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has no area "
                                                      f"inside the {width}x{height} image"))
            continue
        report.clipped += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
        lines.append(f"{ids[name]} {(cx1 + cx2) / 2 / width:.6f} {(cy1 + cy2) / 2 / height:.6f} "
                     f"{(cx2 - cx1) / width:.6f} {(cy2 - cy1) / height:.6f}")
    return lines


def stratum_by_label(sample: Sample, ids: dict) -> str:
    """An image's most frequent class (ties: the lower id); BACKGROUND for an image without boxes."""
    counts = Counter(box[0] for box in sample.boxes if box[0] in ids)
    if not counts:
        return BACKGROUND
    return min(counts, key=lambda name: (-counts[name], ids[name]))


def stratum_by_name(sample: Sample, ids: dict) -> str:
    """The file name without its digit-only parts: crazing_12 -> crazing, 01_missing_hole_01 -> missing_hole."""
    parts = [p for p in sample.stem.split("_") if not p.isdigit()]
    return "_".join(parts) or BACKGROUND


def content_groups(samples: list) -> list:
    """Samples grouped by identical file content (md5), so byte-identical images never straddle train and val."""
    groups = defaultdict(list)
    for sample in samples:
        groups[hashlib.md5(sample.image.read_bytes()).hexdigest()].append(sample)
    return [sorted(g, key=lambda s: s.stem) for g in groups.values()]


def quotas(sizes: dict, total: int) -> dict:
    """Split `total` over strata in proportion to their sizes (largest remainder; ties by stratum name)."""
    n = sum(sizes.values())
    exact = {k: total * v / n for k, v in sizes.items()} if n else {}
    result = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - result[k]), k))[: total - sum(result.values())]:
        result[k] += 1
    return result


def val_count(val, n: int) -> int:
    """Number of validation images: `val` itself when an integer >= 1, else the fraction `val` of n, rounded."""
    if isinstance(val, int) and not isinstance(val, bool) and 1 <= val <= n:
        return val
    if isinstance(val, (int, float)) and not isinstance(val, bool) and 0 <= val < 1:
        return round(n * val)
    raise ValueError(f"val={val!r} must be a fraction in [0, 1) or a number of images from 1 to {n}")


def stratified_split(samples: list, val, seed: int, stratum) -> dict:
    """{stem: split}: per stratum a seeded shuffle of content groups, the first ones filling the stratum's val quota.

    Strata are visited in sorted order with one `random.Random(seed)`; groups are ordered by their first stem before
    shuffling, so the split depends only on the data, `val` and `seed`.
    """
    n_val = val_count(val, len(samples))
    strata = defaultdict(list)
    for group in sorted(content_groups(samples), key=lambda g: g[0].stem):
        strata[stratum(group[0])].append(group)
    quota = quotas({k: sum(len(g) for g in v) for k, v in strata.items()}, n_val)
    rng, assignment = random.Random(seed), {}
    for key in sorted(strata):
        groups, taken = strata[key], 0
        rng.shuffle(groups)
        for group in groups:
            split = "val" if taken + len(group) <= quota[key] else "train"
            taken += len(group) if split == "val" else 0
            assignment.update({s.stem: split for s in group})
    return assignment


def read_split_lists(folder: str | Path) -> dict:
    """{stem: split} from folder/train.txt, val.txt and (optional) test.txt, one stem or file name per line."""
    folder, assignment = Path(folder), {}
    for split in SPLITS:
        file = folder / f"{split}.txt"
        if file.is_file():
            for line in file.read_text(encoding="utf-8-sig").split():
                assignment[Path(line).stem] = split
    if not assignment:
        raise FileNotFoundError(f"split={folder}: no train.txt/val.txt found there")
    return assignment


def prepare_out(out: Path, exist_ok: bool):
    """Create `out`; an existing images/labels/splits tree there is replaced only with exist_ok=True."""
    existing = [out / d for d in ("images", "labels", "splits") if (out / d).exists()]
    if existing and not exist_ok:
        raise FileExistsError(f"out={out} already holds {', '.join(d.name for d in existing)}/; choose a new out= "
                              f"or pass exist_ok=True to replace them")
    for d in existing:
        shutil.rmtree(d)
    out.mkdir(parents=True, exist_ok=True)


def place_image(src: Path, dst: Path, copy: bool):
    """Symlink (absolute) or copy an image into the dataset."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def write_dataset(samples: list, names: list, assignment: dict, out: Path, copy: bool, report: ConversionReport):
    """Write images, labels, split lists, data.yaml and conversion.json."""
    ids = {name: i for i, name in enumerate(names)}
    members = defaultdict(list)
    for sample in samples:
        split = assignment.get(sample.stem)
        if split is None:
            report.skip(sample.image, "not in the split lists: its stem is in none of train.txt/val.txt/test.txt")
            continue
        lines = yolo_lines(sample, ids, report)
        place_image(sample.image, out / "images" / split / sample.image.name, copy)
        label = out / "labels" / split / f"{sample.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in lines))
        members[split].append(sample.stem)
        report.images[split] += 1
        report.boxes[split] += len(lines)
    converted = {s.stem for s in samples}
    for stem in sorted(set(assignment) - converted):
        report.notes.append((stem, f"listed in the split lists but not converted: {stem}"))
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for split, stems in members.items():
        (out / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in sorted(stems)))
    write_data_yaml(out, names, [s for s in SPLITS if members[s]])
    (out / "conversion.json").write_text(json.dumps(report.to_dict(), indent=1))


def write_data_yaml(out: Path, names: list, splits: list):
    """data.yaml without a `path:` key, so the set can be moved: ultralytics resolves paths next to the file."""
    lines = ["# Written by `sdgas convert`; paths resolve relative to this file (no `path:` key).",
             *(f"{s}: images/{s}" for s in splits), f"nc: {len(names)}", "names:",
             *(f"  {i}: {json.dumps(n)}" for i, n in enumerate(names))]
    (out / "data.yaml").write_text("\n".join(lines) + "\n")


def require_paths(**paths):
    """Raise FileNotFoundError naming the first key whose path does not exist."""
    for key, path in paths.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{key}={path} does not exist")


def convert(samples: list, out, val=0.2, seed: int = 0, split=None, classes=None, copy: bool = False,
            stratify: str = "label", exist_ok: bool = False, report: ConversionReport | None = None):
    """Measure, split and write loaded samples (the shared back half of `convert_voc` and `convert_coco`)."""
    out = Path(out)
    report = report or ConversionReport(out)
    samples = drop_duplicate_stems(measure_images(samples, report), report)
    report.names = class_names(samples, classes)
    ids = {name: i for i, name in enumerate(report.names)}
    if split:
        assignment = read_split_lists(split)
    else:
        if stratify not in ("label", "name"):
            raise ValueError(f"stratify={stratify!r} must be 'label' or 'name'")
        key = stratum_by_name if stratify == "name" else stratum_by_label
        assignment = stratified_split(samples, val, seed, lambda s: key(s, ids))
    prepare_out(out, exist_ok)
    write_dataset(samples, report.names, assignment, out, copy, report)
    return report


def convert_voc(source, images, out, **kwargs) -> ConversionReport:
    """Convert Pascal VOC XML files (under `source`) and their images (under `images`) to a YOLO dataset at `out`.

    Args:
        source (str | Path): Folder searched recursively for *.xml.
        images (str | Path): Folder searched recursively for images, matched to XML files by stem.
        out (str | Path): Dataset folder to write.
        **kwargs: `convert` options: val, seed, split, classes, copy, stratify, exist_ok.

    Returns:
        (ConversionReport): Counts, class names, and every skipped file / dropped box with its reason.
    """
    require_paths(source=source, images=images)
    report = ConversionReport(Path(out))
    return convert(load_voc(source, images, report), out, report=report, **kwargs)


def convert_coco(source, images, out, **kwargs) -> ConversionReport:
    """Convert a COCO detection JSON (`source`) and its images (under `images`) to a YOLO dataset at `out`.

    Args are those of `convert_voc`, with `source` the JSON file. Crowd annotations are left out (reported).
    """
    require_paths(source=source, images=images)
    report = ConversionReport(Path(out))
    return convert(load_coco(source, images, report), out, report=report, **kwargs)


def cli(overrides: dict) -> int:
    """`sdgas convert key=value ...`: print the summary; exit code 0 when at least one image was converted."""
    unknown = set(overrides) - CLI_KEYS
    missing = [k for k in ("format", "source", "images", "out") if not overrides.get(k)]
    if unknown or missing:
        raise SyntaxError(f"sdgas convert: {'unknown keys ' + ', '.join(sorted(unknown)) if unknown else ''}"
                          f"{'; ' if unknown and missing else ''}{'missing ' + ', '.join(missing) if missing else ''}"
                          f" (keys: {', '.join(sorted(CLI_KEYS))}; see `python -m sdgas.data.convert`)")
    options = {k: v for k, v in overrides.items() if k not in ("format", "source", "images", "out")}
    converter = {"voc": convert_voc, "coco": convert_coco}.get(str(overrides["format"]).lower())
    if converter is None:
        raise ValueError(f"format={overrides['format']!r}: use format=voc or format=coco")
    report = converter(overrides["source"], overrides["images"], overrides["out"], **options)
    print(report.summary())
    return 0 if sum(report.images.values()) else 1


if __name__ == "__main__":
    print(__doc__)
