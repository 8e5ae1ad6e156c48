"""Dataset health report: `sdgas check data=DATA.yaml|DATASET_DIR` (Python: `check_dataset(data)`).

Reports, per split: images and boxes per class, empty and unlabelled images, duplicate images by content (within a
split and across splits), boxes outside the image or degenerate, repeated identical boxes, class ids out of range,
malformed label lines, unreadable or truncated images (the same diagnosis sdgas applies when loading), label files
without an image, and image size statistics. It only reads: the dataset is never modified and no cache is written.

Exit code 1 when training on the set would be wrong: an image shared by train and val (leakage), class ids that are
out of range / negative / not integers, malformed label lines, or a split without images. Everything else is a warning.

Examples:
    >>> from sdgas.data.check import check_dataset
    >>> report = check_dataset("neu-det.yaml")
    >>> print(report.to_text()); report.ok
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

from ultralytics.data.utils import IMG_FORMATS, check_det_dataset, img2label_paths
from ultralytics.utils import YAML

from sdgas.data.dataset import check_label_rows, diagnose_image, parse_label_lines
from sdgas.utils import DATASETS_DIR, resolve_cfg_file

SPLITS = ("train", "val", "test")
ERROR_KINDS = {  # problems that make training wrong, not merely lossy
    "duplicate images across splits", "class id out of range", "negative class id", "non-integer class id",
    "wrong number of fields", "non-numeric label value", "NaN label value", "infinite label value",
    "mixed box and polygon rows", "unreadable label file", "split without images",
}
REPEATED_BOXES = "repeated identical boxes (ultralytics keeps one)"
MAX_LISTED = 20  # files named per finding in the text report


@dataclass
class Finding:
    """One kind of problem in one split (or across splits): the files concerned, with a detail each."""

    kind: str
    split: str
    items: list = field(default_factory=list)  # "file: detail" strings

    @property
    def severity(self) -> str:
        return "error" if self.kind in ERROR_KINDS else "warning"


@dataclass
class ImageRecord:
    """What `inspect_image` learns about one image and its label file."""

    file: str
    split: str
    digest: str = ""
    size: tuple | None = None
    mode: str | None = None
    fatal: str | None = None  # why the image cannot be used
    label: str = "missing"  # missing | empty | labelled
    classes: list = field(default_factory=list)  # class id of every box row
    problems: list = field(default_factory=list)  # (kind, detail) of the label file


@dataclass
class DatasetReport:
    """The health report of a dataset: per-split records, findings, and the class names."""

    data: str
    names: dict
    records: dict = field(default_factory=dict)  # split -> [ImageRecord]
    findings: list = field(default_factory=list)

    @property
    def errors(self) -> list:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing makes training wrong (warnings allowed)."""
        return not self.errors

    def add(self, kind: str, split: str, item: str):
        """Record one problem, grouped with others of its kind and split."""
        finding = next((f for f in self.findings if f.kind == kind and f.split == split), None)
        if finding is None:
            finding = Finding(kind, split)
            self.findings.append(finding)
        finding.items.append(item)

    def to_text(self) -> str:
        """The printable report: overview, classes, image sizes, warnings, errors, verdict."""
        lines = [f"sdgas check: {self.data} ({len(self.names)} classes)", *self.overview_lines(), "",
                 *self.class_lines(), "", *self.size_lines()]
        for title, findings in (("Warnings", self.warnings), ("Errors", self.errors)):
            lines += ["", f"{title} ({len(findings)}):" if findings else f"{title}: none"]
            for f in findings:
                lines.append(f"  [{f.split}] {f.kind}: {len(f.items)}")
                lines += [f"      {item}" for item in f.items[:MAX_LISTED]]
                if len(f.items) > MAX_LISTED:
                    lines.append(f"      ... and {len(f.items) - MAX_LISTED} more")
        lines += ["", "Result: OK (exit 0)" if self.ok else
                  f"Result: {len(self.errors)} error kinds: training on this set would be wrong (exit 1)"]
        return "\n".join(lines)

    def overview_lines(self) -> list:
        """Per split: images, labelled, empty, unlabelled, unusable, boxes."""
        head = f"{'split':<8}{'images':>8}{'labelled':>10}{'empty':>7}{'unlabelled':>12}{'unusable':>10}{'boxes':>8}"
        rows = [head]
        for split, recs in self.records.items():
            count = Counter(r.label for r in recs)
            rows.append(f"{split:<8}{len(recs):>8}{count['labelled']:>10}{count['empty']:>7}{count['missing']:>12}"
                        f"{sum(r.fatal is not None for r in recs):>10}{sum(len(r.classes) for r in recs):>8}")
        return rows

    def class_lines(self) -> list:
        """Per class and split: images containing the class / boxes of the class."""
        splits = list(self.records)
        width = max([len(str(n)) for n in self.names.values()] + [5]) + 2
        rows = [f"{'class':<{width}}" + "".join(f"{s + ' img/box':>18}" for s in splits)]
        per = {s: (Counter(c for r in self.records[s] for c in set(r.classes)),
                   Counter(c for r in self.records[s] for c in r.classes)) for s in splits}
        for i, name in self.names.items():
            rows.append(f"{name:<{width}}" + "".join(f"{f'{per[s][0][i]}/{per[s][1][i]}':>18}" for s in splits))
        return rows

    def size_lines(self) -> list:
        """Image size statistics per split: range and median of width/height, most common sizes, colour modes."""
        rows = ["image sizes (width x height):"]
        for split, recs in self.records.items():
            sizes = [r.size for r in recs if r.size]
            if not sizes:
                rows.append(f"  {split}: no readable image")
                continue
            widths, heights = [s[0] for s in sizes], [s[1] for s in sizes]
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in Counter(sizes).most_common(3))
            modes = ", ".join(f"{m} {n}" for m, n in Counter(r.mode for r in recs if r.mode).most_common())
            rows.append(f"  {split}: width {min(widths)}-{max(widths)} (median {statistics.median(widths):g}), "
                        f"height {min(heights)}-{max(heights)} (median {statistics.median(heights):g}); "
                        f"{len(set(sizes))} distinct, most common {common}; modes {modes}")
        return rows


def resolve_dataset_yaml(data) -> Path:
    """A data YAML from a path, a packaged name (neu-det.yaml) or a dataset folder holding data.yaml / one *.yaml."""
    path = Path(str(data)).expanduser()
    if path.is_dir():
        candidates = [path / "data.yaml"] if (path / "data.yaml").is_file() else sorted(path.glob("*.y*ml"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"data={data}: expected one data.yaml in the folder, found {len(candidates)}")
        return candidates[0]
    return resolve_cfg_file(data, DATASETS_DIR, "dataset YAML")


def dataset_root(data: dict, yaml_file: Path) -> Path:
    """The root a data YAML's paths resolve against, as ultralytics' check_det_dataset computes it (no download)."""
    from ultralytics.data.utils import DATASETS_DIR

    root = Path(data.get("path") or yaml_file.parent)
    if not root.exists() and not root.is_absolute():
        root = DATASETS_DIR / root
    return root.resolve()


def check_dataset_present(yaml_file) -> None:
    """Raise a FileNotFoundError saying what to download and how to convert it when a data YAML with `how_to_get`
    (sdgas' packaged sets) points at images that are not there. Never touches the network."""
    yaml_file = Path(yaml_file)
    data = YAML.load(yaml_file)
    if not data.get("how_to_get"):
        return
    root = dataset_root(data, yaml_file)
    splits = [data[k] for k in ("train", "val") if isinstance(data.get(k), str)]
    missing = [root / split for split in splits if not (root / split).exists()]
    if missing:
        how = " ".join(str(data["how_to_get"]).split()).replace("{root}", str(root))
        raise FileNotFoundError(f"dataset '{yaml_file.name}' not present: {missing[0]} does not exist. To get it: "
                                f"{how}. sdgas never downloads datasets.")


def list_images(source) -> list:
    """Image files of a split entry: a folder (recursive), a *.txt list (`./` lines relative to it), or a list."""
    files = []
    for item in source if isinstance(source, list) else [source]:
        path = Path(item)
        if path.is_dir():
            files += [str(p) for p in path.rglob("*.*")]
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8-sig").split():
                files.append(str(path.parent / line[2:]) if line.startswith("./") else line)
    return sorted(f for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS)


def inspect_image(args: tuple) -> ImageRecord:
    """Hash and diagnose one image, and parse and check its label file."""
    file, label_file, split, nc, channels = args
    record = ImageRecord(file, split)
    try:
        record.digest = hashlib.md5(Path(file).read_bytes()).hexdigest()
    except OSError:
        pass
    diagnosis = diagnose_image(file, channels)
    record.size, record.mode = diagnosis.size, diagnosis.mode
    record.fatal = str(diagnosis.fatal) if diagnosis.fatal else None
    if not Path(label_file).is_file():
        return record
    rows, problems = parse_label_lines(label_file)
    problems += check_label_rows(rows, nc)
    record.label = "labelled" if rows or problems else "empty"
    record.classes = [int(v[0]) for _, v in rows if v[0] == int(v[0])]
    record.problems = [(p.kind, p.detail) for p in problems] + box_geometry_problems(rows, record.size)
    return record


def box_geometry_problems(rows: list, size: tuple | None) -> list:
    """(kind, detail) for box rows that reach outside the image, are below one pixel, or repeat an earlier row."""
    problems, seen = [], {}
    width, height = size or (0, 0)
    for number, values in rows:
        key = tuple(values)
        if key in seen:
            problems.append((REPEATED_BOXES, f"line {number} repeats line {seen[key]}"))
        seen.setdefault(key, number)
        if len(values) != 5 or not width:
            continue
        _, cx, cy, w, h = values
        x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        if x1 < -0.5 / width or y1 < -0.5 / height or x2 > 1 + 0.5 / width or y2 > 1 + 0.5 / height:
            problems.append(("box outside the image", f"line {number}: x {x1 * width:.1f} to {x2 * width:.1f}, y "
                             f"{y1 * height:.1f} to {y2 * height:.1f} in a {width}x{height} image"))
        if 0 < w * width < 1 or 0 < h * height < 1:
            problems.append(("sub-pixel box", f"line {number}: {w * width:.2f}x{h * height:.2f} pixels"))
    return problems


def find_duplicates(report: DatasetReport):
    """Record byte-identical images within each split (warning) and across splits (error: leakage)."""
    groups = defaultdict(list)
    for recs in report.records.values():
        for r in recs:
            if r.digest:
                groups[r.digest].append(r)
    for digest, recs in groups.items():
        if len(recs) < 2:
            continue
        splits = sorted({r.split for r in recs}, key=SPLITS.index)
        names = " = ".join(f"{r.split}/{Path(r.file).name}" for r in recs)
        if len(splits) > 1:
            report.add("duplicate images across splits", "/".join(splits), f"{names} (md5 {digest[:12]})")
        else:
            report.add("duplicate images within split", splits[0], f"{names} (md5 {digest[:12]})")


def find_orphan_labels(report: DatasetReport):
    """Record label files that no image of the split uses (a renamed or deleted image)."""
    for split, recs in report.records.items():
        used = set(img2label_paths([r.file for r in recs]))
        for folder in {str(Path(p).parent) for p in used}:
            for label in sorted(Path(folder).glob("*.txt")):
                if str(label) not in used:
                    report.add("label file without image", split, str(label))


def record_findings(report: DatasetReport):
    """Turn the per-image records into findings."""
    for split, recs in report.records.items():
        if not recs:
            report.add("split without images", split, "no image files found")
        for r in recs:
            name = f"{Path(r.file).name}"
            if r.fatal:
                report.add("unusable image", split, f"{name}: {r.fatal}")
            if r.label == "missing":
                report.add("unlabelled image (no label file: trained as background)", split, name)
            elif r.label == "empty":
                report.add("empty label file (background image)", split, name)
            for kind, detail in r.problems:
                report.add(kind, split, f"{name}: {detail}")
        for i, name in report.names.items():
            if recs and not any(i in r.classes for r in recs):
                report.add("class without boxes", split, f"{i}: {name}")
    find_duplicates(report)
    find_orphan_labels(report)


def check_dataset(data, workers: int = 4) -> DatasetReport:
    """Build the health report of a dataset given as a data YAML (path or packaged name) or a dataset folder."""
    yaml_file = resolve_dataset_yaml(data)
    check_dataset_present(yaml_file)
    info = check_det_dataset(yaml_file, autodownload=False)
    nc, channels = len(info["names"]), info.get("channels", 3)
    report = DatasetReport(str(yaml_file), dict(info["names"]))
    jobs = []
    for split in SPLITS:
        if info.get(split):
            images = list_images(info[split])
            jobs += [(f, lb, split, nc, channels) for f, lb in zip(images, img2label_paths(images))]
            report.records[split] = []
    with ThreadPool(workers) as pool:
        for record in pool.imap(inspect_image, jobs, chunksize=16):
            report.records[record.split].append(record)
    record_findings(report)
    return report


def cli(overrides: dict) -> int:
    """`sdgas check data=...`: print the report; exit 1 when training on the set would be wrong."""
    unknown = set(overrides) - {"data", "workers"}
    if unknown or not overrides.get("data"):
        raise SyntaxError(f"sdgas check: usage `sdgas check data=DATA.yaml|DATASET_DIR [workers=4]`"
                          f"{'; unknown keys ' + ', '.join(sorted(unknown)) if unknown else ''}")
    report = check_dataset(overrides["data"], workers=int(overrides.get("workers", 4)))
    print(report.to_text())
    return 0 if report.ok else 1
