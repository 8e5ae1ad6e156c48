"""Safe input loading: every image and label file is diagnosed before ultralytics' own verification.

Stock ultralytics 8.4.190 already skips most bad files, but often with a misleading reason (an empty file or a text
file renamed .jpg is reported as "No module named 'pi_heif'", a NaN label as "out of bounds coordinates []"), and it
keeps some it should not (zero-size boxes). Here each file gets a precise diagnosis first:

- fatal problems (empty, not an image, truncated, huge, too small, 16-bit without 8-bit content, a bad label line):
  the image is skipped with a message naming the file and the real problem;
- harmless conversions (16-bit, grayscale, alpha, CMYK): the image is used as ultralytics loads it, with a note;
- everything else goes through ultralytics' `verify_image_label` unchanged.

Every run prints one summary per split (used / skipped / converted, counted by reason), and a split left without a
usable image is a clear error. `SDGASDataset` is used by `SDGASTrainer.build_dataset`, `SDGASValidator.build_dataset`
(through `build_sdgas_dataset`), and `SDGASPredictor` uses `diagnose_image` to filter its sources.

Examples:
    >>> from sdgas.data.dataset import diagnose_image, diagnose_label
    >>> diagnose_image("images/train/bad.jpg").fatal
    Problem(kind='empty file', detail='0 bytes')
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image
from ultralytics.data import build as ultralytics_build
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import verify_image_label
from ultralytics.utils import LOGGER

SKIPPED, CONVERTED = "skipped", "converted"
MESSAGE_RE = re.compile(rf": sdgas ({SKIPPED}|{CONVERTED}) \(([^)]*)\): ")
MIN_SIZE = 10  # ultralytics rejects images with a side below 10 pixels
TOLERANCE = 0.01  # ultralytics accepts normalised coordinates in [-0.01, 1.01]
CACHE_TAG = "sdgas-input-check-1"  # kept in the label cache hash: a stock ultralytics cache is never reused
BOX_FIELDS = ("class", "x_center", "y_center", "width", "height")

# File signatures of every format in ultralytics' IMG_FORMATS: (offset, magic bytes, format)
SIGNATURES = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (4, b"ftyp", "HEIF/AVIF"),
)
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass(frozen=True)
class Problem:
    """One diagnosed problem: a short `kind` (used for counting) and a `detail` naming exactly what is wrong."""

    kind: str
    detail: str

    def __str__(self):
        return f"{self.kind}: {self.detail}"


@dataclass
class ImageDiagnosis:
    """The result of `diagnose_image`: a fatal problem (skip the image) or None, conversion notes, and metadata."""

    fatal: Problem | None = None
    notes: list = field(default_factory=list)
    format: str | None = None
    size: tuple | None = None  # (width, height)
    mode: str | None = None


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes, or None when they match no format ultralytics reads."""
    for offset, magic, name in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def describe_non_image(head: bytes) -> str:
    """Say what a file that is not an image looks like: text (quoted) or unknown binary (hex)."""
    text = head.decode("utf-8", errors="replace")
    if "\ufffd" not in text[:-3] and all(c.isprintable() or c.isspace() for c in text[:-3]):
        return f"a text file with an image extension (starts with {text[:40].strip()!r})"
    return f"unknown binary format (first bytes {head[:8].hex(' ')})"


def pixel_limit() -> int:
    """The largest image accepted, in pixels: PIL's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)."""
    return Image.MAX_IMAGE_PIXELS or 2**62


def bit_depth(im: Image.Image, head: bytes) -> int:
    """Bits per sample of an opened image (PIL silently reads 48-bit RGB PNGs as 8-bit RGB, so check the header)."""
    if im.format == "PNG" and len(head) > 24:
        return head[24]  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 16 if im.mode.startswith("I;16") or im.mode in {"I", "F"} else 8


def decode_fully(im: Image.Image) -> Problem | None:
    """Decode every byte of the image data (JPEGs at reduced scale, which still reads the whole entropy stream)."""
    try:
        if im.format == "JPEG":
            im.draft(im.mode, (max(im.width // 8, 1), max(im.height // 8, 1)))
        im.load()
    except OSError as e:
        if "truncated" in str(e):
            return Problem("truncated image", f"{e}: the file ends before its image data does; re-export or "
                                              f"re-download it")
        return Problem("corrupt image data", str(e))
    except Exception as e:  # noqa: BLE001 - any decoder failure means the image cannot be used
        return Problem("corrupt image data", f"{type(e).__name__}: {e}")
    return None


def conversion_notes(im: Image.Image, depth: int, channels: int) -> tuple[Problem | None, list]:
    """How ultralytics' loader (cv2, 8-bit) changes this image: a fatal problem if nothing usable remains, and notes."""
    notes = []
    if depth > 8:
        low, high = extrema_8bit(im)
        if low == high:
            return Problem(f"{depth}-bit image without 8-bit content",
                           f"pixel values all map to {low} when ultralytics keeps the high byte, so the image "
                           f"would load as one flat colour; rescale it to 8 bits"), notes
        notes.append(Problem(f"{depth}-bit image", f"loaded as 8-bit (high byte kept, 8-bit range {low}-{high})"))
    if channels == 3 and im.mode in GRAY_MODES:
        notes.append(Problem("grayscale image", f"mode {im.mode}: loaded as 3 identical channels"))
    elif channels == 1 and im.mode not in GRAY_MODES:
        notes.append(Problem("colour image", f"mode {im.mode}: loaded as grayscale (channels: 1)"))
    if im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        notes.append(Problem("alpha channel", f"mode {im.mode}: transparency dropped, hidden pixels become visible"))
    if im.mode == "CMYK":
        notes.append(Problem("CMYK image", "converted to BGR"))
    return None, notes


def extrema_8bit(im: Image.Image) -> tuple[int, int]:
    """(min, max) of the image as ultralytics' 8-bit loader will see it (16-bit values keep their high byte)."""
    ext = im.getextrema()
    bands = ext if isinstance(ext[0], tuple) else (ext,)
    low, high = min(b[0] for b in bands), max(b[1] for b in bands)
    if im.mode.startswith("I") or im.mode == "F":
        return int(low) >> 8, int(high) >> 8
    return int(low), int(high)


def diagnose_image(path: str | Path, channels: int = 3) -> ImageDiagnosis:
    """Diagnose one image file without trusting its extension; never raises.

    Args:
        path (str | Path): Image file.
        channels (int): Channels the model reads (3 colour, 1 grayscale), to describe conversions.

    Returns:
        (ImageDiagnosis): `fatal` set when the image must be skipped; `notes` for conversions ultralytics applies.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return ImageDiagnosis(Problem("unreadable file", f"{type(e).__name__}: {e.strerror or e}"))
    if size == 0:
        return ImageDiagnosis(Problem("empty file", "0 bytes"))
    fmt = sniff_format(head)
    if fmt is None:
        return ImageDiagnosis(Problem("not an image", describe_non_image(head)))
    if fmt == "HEIF/AVIF":
        return ImageDiagnosis(format=fmt)  # decoded by ultralytics' own PIL plugin path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            return diagnose_opened(im, head, fmt, channels)
    except Image.DecompressionBombError as e:
        return ImageDiagnosis(Problem("huge image", f"{e}; downscale or tile it"), format=fmt)
    except Exception as e:  # noqa: BLE001 - a header PIL cannot parse is a corrupt image
        return ImageDiagnosis(Problem("corrupt image header", f"{fmt} signature but {type(e).__name__}: {e}"),
                              format=fmt)


def diagnose_opened(im: Image.Image, head: bytes, fmt: str, channels: int) -> ImageDiagnosis:
    """The checks of `diagnose_image` that need the opened PIL image."""
    result = ImageDiagnosis(format=im.format or fmt, size=im.size, mode=im.mode)
    width, height = im.size
    if width * height > pixel_limit():
        result.fatal = Problem("huge image", f"{width}x{height} = {width * height / 1e6:.1f} Mpx exceeds the "
                                             f"{pixel_limit() / 1e6:.1f} Mpx limit (PIL.Image.MAX_IMAGE_PIXELS); "
                                             f"downscale or tile it")
    elif width < MIN_SIZE or height < MIN_SIZE:
        result.fatal = Problem("image too small", f"{width}x{height} pixels, at least {MIN_SIZE}x{MIN_SIZE} needed")
    else:
        depth = bit_depth(im, head)
        result.fatal = decode_fully(im)
        if result.fatal is None:
            result.fatal, result.notes = conversion_notes(im, depth, channels)
    return result


def parse_label_lines(path: str | Path) -> tuple[list, list]:
    """Read a YOLO label file into rows of floats, with one Problem per malformed line; never raises.

    Returns:
        rows (list[tuple[int, list[float]]]): (line number, values) of every well-formed line.
        problems (list[Problem]): unreadable file, non-numeric, NaN/inf values, wrong field counts, mixed row types.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return [], [Problem("unreadable label file", f"not UTF-8 text ({e.reason} at byte {e.start})")]
    except OSError as e:
        return [], [Problem("unreadable label file", f"{type(e).__name__}: {e.strerror or e}")]
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            problems.append(Problem("wrong number of fields",
                                    f"line {number} has {len(fields)} fields; a box row is 'class x_center y_center "
                                    f"width height' (5 fields), a polygon row 'class x1 y1 x2 y2 ...' (odd, >= 7)"))
            continue
        try:
            values = [float(x) for x in fields]
        except ValueError:
            bad = next(x for x in fields if not is_number(x))
            problems.append(Problem("non-numeric label value", f"line {number}: {bad!r} is not a number"))
            continue
        if not all(math.isfinite(v) for v in values):
            i, v = next((i, v) for i, v in enumerate(values) if not math.isfinite(v))
            kind = "NaN label value" if math.isnan(v) else "infinite label value"
            problems.append(Problem(kind, f"line {number}: {field_name(i, len(values))} is {fields[i]}"))
            continue
        rows.append((number, values))
    kinds = {len(v) == 5 for _, v in rows}
    if len(kinds) > 1:
        problems.append(Problem("mixed box and polygon rows", "every row of a file must be a box (5 fields) or "
                                                              "every row a polygon"))
    return rows, problems


def is_number(text: str) -> bool:
    """True if float() accepts the text."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def field_name(index: int, n_fields: int) -> str:
    """Name of a field of a label row: class, x_center, ... for boxes, x1, y1, ... for polygons."""
    if n_fields == 5:
        return BOX_FIELDS[index]
    return "class" if index == 0 else f"{'xy'[(index - 1) % 2]}{(index + 1) // 2}"


def check_label_rows(rows: list, num_cls: int, single_cls: bool = False) -> list:
    """Every problem of parsed label rows that makes ultralytics reject the image or learns a wrong box.

    Class ids must be integers in [0, num_cls); coordinates normalised within ultralytics' 1% tolerance; boxes must have
    a positive width and height.
    """
    problems = []
    for number, values in rows:
        cls = values[0]
        if cls != int(cls):
            problems.append(Problem("non-integer class id", f"line {number}: class {cls:g}"))
        elif cls < 0:
            problems.append(Problem("negative class id", f"line {number}: class {int(cls)}"))
        elif cls >= num_cls and not single_cls:
            problems.append(Problem("class id out of range", f"line {number}: class {int(cls)} but the dataset has "
                                                             f"{num_cls} classes (0-{num_cls - 1})"))
        coords = values[1:]
        low = [f"{field_name(i + 1, len(values))}={v:g}" for i, v in enumerate(coords) if v < -TOLERANCE]
        high = [f"{field_name(i + 1, len(values))}={v:g}" for i, v in enumerate(coords) if v > 1 + TOLERANCE]
        if low:
            problems.append(Problem("negative coordinate", f"line {number}: {', '.join(low)} (coordinates are "
                                                           f"normalised to 0-1)"))
        if high:
            problems.append(Problem("coordinate out of range", f"line {number}: {', '.join(high)} > 1 (coordinates "
                                                               f"must be normalised to 0-1; pixel values?)"))
        if len(values) == 5 and not low and (values[3] <= 0 or values[4] <= 0):
            problems.append(Problem("degenerate box", f"line {number}: width {values[3]:g}, height {values[4]:g}"))
    return problems


def diagnose_label(path: str | Path, num_cls: int, single_cls: bool = False) -> Problem | None:
    """The first problem of a label file that makes its image unusable, or None (also for a missing file)."""
    if not os.path.isfile(path):
        return None
    rows, problems = parse_label_lines(path)
    problems += check_label_rows(rows, num_cls, single_cls)
    return problems[0] if problems else None


def format_message(prefix: str, file: str, action: str, problem: Problem) -> str:
    """One log line naming the file, what sdgas did, and why; parsed back by `InputReport`."""
    return f"{prefix}{file}: sdgas {action} ({problem.kind}): {problem.detail}"


def verify_image_label_checked(args: tuple, channels: int = 3) -> list | tuple:
    """ultralytics' `verify_image_label`, preceded by sdgas' diagnosis of the image and of its label file.

    Takes and returns exactly what `verify_image_label` does, so `YOLODataset.cache_labels` is used unchanged.
    """
    im_file, lb_file, prefix, keypoint, num_cls, _, _, single_cls = args
    diagnosis = diagnose_image(im_file, channels)
    fatal = diagnosis.fatal
    if fatal is None and not keypoint:
        label_problem = diagnose_label(lb_file, num_cls, single_cls)
        if label_problem:
            fatal = Problem(label_problem.kind, f"{lb_file} {label_problem.detail}")
    if fatal:
        return [None, None, None, None, None, 0, 0, 0, 1, format_message(prefix, im_file, SKIPPED, fatal)]
    result = verify_image_label(args)
    if result[0] is not None and diagnosis.notes:
        notes = [format_message(prefix, im_file, CONVERTED, note) for note in diagnosis.notes]
        result = (*result[:-1], "\n".join([m for m in (result[-1], *notes) if m]))
    return result


# ultralytics' own per-file scan messages, counted beside sdgas' ones: (pattern capturing the file, action, kind)
ULTRALYTICS_MESSAGES = (
    (re.compile(r"^(.*): ignoring corrupt image/label: "), SKIPPED, "rejected by ultralytics"),
    (re.compile(r"^(.*): \d+ duplicate labels removed$"), CONVERTED, "duplicate boxes removed"),
    (re.compile(r"^(.*): corrupt JPEG restored and saved$"), CONVERTED, "corrupt JPEG restored"),
)


@dataclass
class InputReport:
    """Counts of one split's input check: images total and used, skipped and converted images by reason."""

    total: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    files: dict = field(default_factory=dict)  # image file -> list of "action (kind)"

    @classmethod
    def from_messages(cls, messages: list, total: int, prefix: str = "") -> InputReport:
        """Count the per-file messages of a label scan: sdgas' own lines and ultralytics' skip/repair lines."""
        report = cls(total=total)
        for line in "\n".join(messages).splitlines():
            line = line[len(prefix):] if prefix and line.startswith(prefix) else line
            if match := MESSAGE_RE.search(line):
                report.add(line[: match.start()], *match.groups())
                continue
            for pattern, action, kind in ULTRALYTICS_MESSAGES:
                if match := pattern.search(line):
                    report.add(match.group(1), action, kind)
                    break
        return report

    def add(self, file: str, action: str, kind: str):
        """Count one skipped or converted file."""
        (self.skipped if action == SKIPPED else self.converted)[kind] += 1
        self.files.setdefault(file, []).append(f"{action} ({kind})")

    def summary(self) -> str:
        """One line: used/total, then skipped and converted counts by reason."""
        text = f"sdgas input check: {self.used}/{self.total} images used"
        if self.skipped:
            text += f"; {sum(self.skipped.values())} skipped ({counts_text(self.skipped)})"
        if self.converted:
            text += f"; {sum(self.converted.values())} converted ({counts_text(self.converted)})"
        return text


def counts_text(counts: Counter) -> str:
    """'2 empty file, 1 not an image' from a Counter, most frequent first."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common())


class SDGASDataset(YOLODataset):
    """YOLODataset whose label scan diagnoses every image and label file first (see the module docstring).

    Attributes:
        input_report (InputReport): What the scan used, skipped and converted, filled by `get_labels`.
    """

    def verify_args(self) -> tuple:
        """ultralytics' verification arguments, with the checked verification function."""
        _, iterable = super().verify_args()
        return partial(verify_image_label_checked, channels=self.channels), iterable

    def get_cache_hash(self) -> str:
        """ultralytics' cache hash, tagged so that caches written without sdgas' checks are rescanned."""
        return f"{super().get_cache_hash()}-{CACHE_TAG}"

    def _load_or_scan_cache(self, cache_path: Path, cache_hash: str) -> tuple[dict, bool]:
        """Keep the scan messages (ultralytics drops them from the cache in `get_labels`) for the input report."""
        cache, exists = super()._load_or_scan_cache(cache_path, cache_hash)
        self.input_report = InputReport.from_messages(cache.get("msgs", []), cache["results"][-1], self.prefix)
        return cache, exists

    def get_labels(self) -> list[dict]:
        """ultralytics' labels, with a counted summary and a clear error when no usable image is left."""
        self.input_report = InputReport()
        try:
            labels = super().get_labels()
        except RuntimeError as e:
            report = self.input_report
            raise RuntimeError(f"{self.prefix}no usable images in {self.img_path}: all {report.total} images were "
                               f"skipped ({counts_text(report.skipped) or 'see the messages above'})") from e
        self.input_report.used = len(labels)
        log = LOGGER.warning if self.input_report.skipped or self.input_report.converted else LOGGER.info
        log(f"{self.prefix}{self.input_report.summary()}")
        return labels


@contextmanager
def sdgas_dataset_class():
    """Make ultralytics' `build_yolo_dataset` construct `SDGASDataset` where it would build a plain YOLODataset.

    The swap lasts only for the `with` block (single-threaded dataset construction), so ultralytics keeps owning the
    argument wiring (augment, rect, pad, fraction, ...) and its other dataset types (multi-modal, depth, semantic).
    """
    original = ultralytics_build.YOLODataset
    ultralytics_build.YOLODataset = SDGASDataset
    try:
        yield
    finally:
        ultralytics_build.YOLODataset = original


def build_sdgas_dataset(build, *args, **kwargs):
    """Call a stock `build_dataset` (e.g. `super().build_dataset`) so that it builds an SDGASDataset."""
    with sdgas_dataset_class():
        return build(*args, **kwargs)
