"""SDGASPredictor: ultralytics' DetectionPredictor that diagnoses image files before reading them and predicts on
all physical CPU cores.

Stock prediction reads each file with cv2 and, when that fails, logs only "Image Read Error <file>"; a huge image is
decoded in full. Here every image file of a file/folder/list source is diagnosed first (`sdgas.data.dataset`): a file
that cannot be used is left out with a warning naming it and the real problem, conversions are noted, and a summary
line counts them. A source left without any usable image is a clear error.
"""

from ultralytics.data.loaders import LoadImagesAndVideos
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import DEFAULT_CFG, LOGGER

from sdgas.data.dataset import CONVERTED, SKIPPED, InputReport, counts_text, diagnose_image, format_message
from sdgas.io.weights import parse_class_conf
from sdgas.utils import use_cpu_inference_threads


class SDGASPredictor(DetectionPredictor):
    """DetectionPredictor whose image sources are checked file by file before inference, and which applies the
    model's per-class thresholds (set by `sdgas val recall=`) when no `conf=` was given.

    Attributes:
        input_report (InputReport | None): What the last source setup used, skipped and converted.
        class_conf_auto (bool): Whether to apply the model's per-class thresholds (the caller gave no conf=).
        class_conf (dict[int, float]): The model's per-class thresholds (empty when it has none).
    """

    input_report = None

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, class_conf_auto=False):
        super().__init__(cfg, overrides, _callbacks)
        self.class_conf_auto, self.class_conf = class_conf_auto, {}

    def setup_model(self, model, verbose: bool = True):
        """ultralytics' model set-up, then torch threads for CPU inference (`cpu_inference_threads`), which
        ultralytics' device selection had cut to cpu_count - 1, and the model's per-class thresholds."""
        super().setup_model(model, verbose)
        use_cpu_inference_threads(self.device)
        self.class_conf = model_class_conf(self.model)

    def postprocess(self, preds, img, orig_imgs, **kwargs):
        """ultralytics' NMS; with per-class thresholds in use, NMS keeps down to the lowest and each class is then cut
        at its own."""
        thresholds = self.class_conf if self.class_conf_auto else {}
        if not thresholds:
            return super().postprocess(preds, img, orig_imgs, **kwargs)
        conf, self.args.conf = self.args.conf, min(thresholds.values())
        try:
            results = super().postprocess(preds, img, orig_imgs, **kwargs)
        finally:
            self.args.conf = conf
        return [r[keep_per_class(r.boxes, thresholds)] for r in results]

    def setup_source(self, source, stride=None):
        """ultralytics' source setup, then unusable image files are removed from an image/video file loader."""
        super().setup_source(source, stride)
        if isinstance(self.dataset, LoadImagesAndVideos):
            self.input_report = filter_image_files(self.dataset, channels=getattr(self.model, "channels", 3))


def model_class_conf(backend) -> dict:
    """Per-class thresholds of a loaded model: a PyTorch model's attribute, or an exported model's metadata."""
    value = getattr(backend, "class_conf", None) or getattr(getattr(backend, "model", None), "class_conf", None)
    return parse_class_conf(value, getattr(backend, "pt_path", None) or "the model") if value else {}


def keep_per_class(boxes, thresholds: dict):
    """Mask of the boxes at or above their class's threshold (classes without one keep every box)."""
    import torch

    floor = torch.tensor([thresholds.get(int(c), 0.0) for c in boxes.cls.tolist()], device=boxes.conf.device)
    return (boxes.conf >= floor).cpu().numpy() if len(boxes) else slice(None)


def filter_image_files(loader: LoadImagesAndVideos, channels: int = 3) -> InputReport:
    """Drop the image files of `loader` that cannot be used, logging each with its reason; return the counts.

    Raises:
        FileNotFoundError: If no image or video is left.
    """
    images, videos = loader.files[: loader.ni], loader.files[loader.ni :]
    report, kept = InputReport(total=len(images)), []
    for file in images:
        diagnosis = diagnose_image(file, channels)
        if diagnosis.fatal:
            LOGGER.warning(format_message("", file, SKIPPED, diagnosis.fatal))
            report.add(file, SKIPPED, diagnosis.fatal.kind)
            continue
        for note in diagnosis.notes:
            LOGGER.warning(format_message("", file, CONVERTED, note))
            report.add(file, CONVERTED, note.kind)
        kept.append(file)
    report.used = len(kept)
    if report.skipped or report.converted:
        LOGGER.warning(report.summary())
    if not kept and not videos:
        raise FileNotFoundError(f"no usable images in the source: all {report.total} image files were skipped "
                                f"({counts_text(report.skipped)})")
    loader.files = kept + videos
    loader.ni, loader.nf = len(kept), len(kept) + len(videos)
    loader.video_flag = [False] * len(kept) + [True] * len(videos)
    loader.mode = "image" if kept else "video"
    return report
