"""SDGASPredictor: ultralytics' DetectionPredictor that diagnoses image files before reading them and predicts on
all physical CPU cores.

Stock prediction reads each file with cv2 and, when that fails, logs only "Image Read Error <file>"; a huge image is
decoded in full. Here every image file of a file/folder/list source is diagnosed first (`sdgas.data.dataset`): a file
that cannot be used is left out with a warning naming it and the real problem, conversions are noted, and a summary
line counts them. A source left without any usable image is a clear error.
"""

from ultralytics.data.loaders import LoadImagesAndVideos
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import LOGGER

from sdgas.data.dataset import CONVERTED, SKIPPED, InputReport, counts_text, diagnose_image, format_message
from sdgas.utils import use_cpu_inference_threads


class SDGASPredictor(DetectionPredictor):
    """DetectionPredictor whose image sources are checked file by file before inference.

    Attributes:
        input_report (InputReport | None): What the last source setup used, skipped and converted.
    """

    input_report = None

    def setup_model(self, model, verbose: bool = True):
        """ultralytics' model set-up, then torch threads for CPU inference (`cpu_inference_threads`), which
        ultralytics' device selection had cut to cpu_count - 1."""
        super().setup_model(model, verbose)
        use_cpu_inference_threads(self.device)

    def setup_source(self, source, stride=None):
        """ultralytics' source setup, then unusable image files are removed from an image/video file loader."""
        super().setup_source(source, stride)
        if isinstance(self.dataset, LoadImagesAndVideos):
            self.input_report = filter_image_files(self.dataset, channels=getattr(self.model, "channels", 3))


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
