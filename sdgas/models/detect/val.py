"""SDGASValidator: ultralytics' DetectionValidator plus the paper's COCO metrics (AP, AP50, AP75, APs, APm, APl).

Every validation (standalone `sdgas val`, each training epoch, the final validation of best.pt) evaluates the
predictions with a field-standard COCO evaluator on any YOLO-format dataset: ultralytics builds the COCO ground truth
in memory from the YOLO labels (boxes in original-image pixels, so the 32²/96² area ranges are COCO's), and
faster-coco-eval (a dependency, never auto-installed) computes the 12 COCO numbers. The six AP numbers
join ultralytics' stats as `metrics/AP(B)` ... `metrics/APl(B)`, hence results.csv; -1 means no ground truth in
that size range (COCO's convention).

The paper evaluates with conf 0.03, NMS IoU 0.65 and at most 300 detections: `paper_eval=True` (cfg/default.yaml)
sets exactly these (`PAPER_EVAL`); ultralytics' val defaults are conf 0.001, iou 0.7, max_det 300.
Standalone validation on the CPU runs on all physical cores (`cpu_inference_threads`), not ultralytics' cpu_count - 1.

Examples:
    >>> from sdgas import SDGAS
    >>> metrics = SDGAS("best.pt").val(data="neu-det.yaml", paper_eval=True)
    >>> metrics.coco  # {"AP": ..., "AP50": ..., "AP75": ..., "APs": ..., "APm": ..., "APl": ...}
    >>> metrics.results_dict["metrics/AP(B)"], metrics.complexity  # stats dict; params and GFLOPs at 640
"""

import contextlib
import io
import json
import math
from pathlib import Path

from faster_coco_eval import COCO, COCOeval_faster
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import LOGGER, RANK, nms
from ultralytics.utils.metrics import DetMetrics

from sdgas.data.dataset import build_sdgas_dataset
from sdgas.models.detect.inspection import class_thresholds, inspection_report, plot_froc
from sdgas.nn.tasks import model_gflops
from sdgas.utils import use_cpu_inference_threads

PAPER_EVAL = {"conf": 0.03, "iou": 0.65, "max_det": 300}  # the paper's evaluation settings
NMS_CANDIDATES_PER_DETECTION = 10  # NMS sees at most 10 * max_det (3000) highest-scoring candidates per image
COCO_AP = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
COCO_AR = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # COCOeval.stats[6:12]


def apply_paper_eval(args: dict) -> dict:
    """Pop sdgas' `paper_eval` key from `args` and, when true, set the paper's conf, iou and max_det."""
    if args.pop("paper_eval", False):
        args.update(PAPER_EVAL)
    return args


def label_exact_boxes(gt: dict) -> dict:
    """Round ultralytics' in-memory COCO ground truth to 3 decimals (its precision for predictions) and recompute areas.

    The boxes come back from the letterbox in float32, so a labelled 48x192 px box arrives as 47.99999x192.00001: its
    area, exactly 96² in the labels, leaves COCO's inclusive 'medium' range and APm differs from a COCO conversion of
    the label files. Rounding restores the label-exact pixels. Idempotent.
    """
    for ann in gt["annotations"]:
        ann["bbox"] = [round(x, 3) for x in ann["bbox"]]
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    return gt


class SDGASDetMetrics(DetMetrics):
    """DetMetrics whose keys and results also carry the COCO AP numbers, as ultralytics' SegmentMetrics adds mask keys.

    Attributes:
        coco (dict[str, float]): AP, AP50, AP75, APs, APm, APl of the last validation (0.0 before any COCO run).
        coco_stats (dict[str, float]): all 12 COCO summary numbers (the six AP plus AR1, AR10, AR100, ARs, ARm, ARl).
        complexity (dict[str, float]): `params` and `GFLOPs` (at 640x640) of the validated PyTorch model.
        inspection (dict): defect recall at 0.1/0.5/1/2 false calls per image (overall, per class), escape and
            overkill rates, and the confidence meeting the target escape rate (standalone validation).
        class_conf (dict[int, float]): per-class thresholds found with `recall=`.
        save_dir (Path | None): the folder the validation wrote to (standalone validation).
    """

    def __init__(self, names=None) -> None:
        self._box_only = False
        super().__init__(names)
        self.coco = dict.fromkeys(COCO_AP, 0.0)
        self.coco_stats = {}
        self.complexity = {}
        self.inspection = {}  # FROC points and image-level rates (sdgas.models.detect.inspection)
        self.class_conf = {}  # per-class thresholds, when validated with recall=
        self.save_dir = None

    @property
    def keys(self) -> list[str]:
        """ultralytics' four box keys, then `metrics/AP(B)` ... `metrics/APl(B)` (the trainer's results.csv columns)."""
        return super().keys + ([] if self._box_only else [f"metrics/{k}(B)" for k in COCO_AP])

    def mean_results(self) -> list[float]:
        """Mean precision, recall, mAP50, mAP50-95, then the six COCO AP numbers."""
        return super().mean_results() + ([] if self._box_only else [self.coco[k] for k in COCO_AP])

    @contextlib.contextmanager
    def box_only(self):
        """Within this context keys and mean_results are the stock four box entries (ultralytics prints those)."""
        self._box_only = True
        try:
            yield self
        finally:
            self._box_only = False


class SDGASValidator(DetectionValidator):
    """DetectionValidator for SD-GASNet models, reporting COCO AP/AP50/AP75/APs/APm/APl and Params/GFLOPs@640.

    COCO evaluation is always on (`save_json` is forced; standalone validation therefore also writes predictions.json).
    Standalone validation writes its stats as one row of `results.csv` in its save_dir.
    """

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None, recall=None, escape_rate=0.01):
        """`recall` (sdgas' key) sets per-class thresholds at that recall; `escape_rate` is the target escape rate."""
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.recall_target, self.escape_target = recall, escape_rate
        self.args.save_json = True  # collect COCO-format predictions; ultralytics builds the COCO ground truth
        self.metrics = SDGASDetMetrics()
        if use_cpu_cores_when_standalone not in self.callbacks["on_val_start"]:  # the dict may be a model's, reused
            self.add_callback("on_val_start", use_cpu_cores_when_standalone)

    def build_dataset(self, img_path, mode="val", batch=None):
        """ultralytics' dataset as an SDGASDataset: bad images/labels skipped or converted with a precise warning."""
        return build_sdgas_dataset(super().build_dataset, img_path, mode, batch)

    def __call__(self, trainer=None, model=None):
        """Validate as ultralytics does; standalone runs also write their stats to `results.csv`."""
        stats = super().__call__(trainer, model)
        if trainer is None and RANK in {-1, 0} and stats:
            self.save_results_csv(stats)
        return stats

    def init_metrics(self, model) -> None:
        """ultralytics' metric set-up, plus fresh COCO results and (standalone) the model's Params and GFLOPs@640.

        A model trained for another number of classes than the dataset has is refused: ultralytics would validate it
        silently against the model's own class list.
        """
        data_nc = (self.data or {}).get("nc")
        if data_nc is not None and data_nc != len(model.names):
            raise ValueError(f"model has {len(model.names)} classes but dataset '{self.args.data}' has {data_nc}: "
                             f"validate on data with the classes the model was trained for")
        super().init_metrics(model)
        self.metrics.coco = dict.fromkeys(COCO_AP, 0.0)
        self.metrics.coco_stats = {}
        if not self.training and getattr(model, "format", None) == "pt":  # AutoBackend around the fused model
            native = model.model
            self.metrics.complexity = {"params": sum(p.numel() for p in native.parameters()),
                                       "GFLOPs": model_gflops(native, 640)}

    def postprocess(self, preds) -> list[dict]:
        """NMS as ultralytics' validator runs it, with a bound on its work instead of ultralytics' time limit.

        ultralytics stops NMS after 2 s + 0.05 s per image and returns no detections for the rest of the batch, with
        only a warning: on a slow or busy CPU an early-training model (every anchor-class pair above conf 0.001)
        overruns it and the epoch's AP is silently wrong. Here every image is processed, and each image's NMS sees
        its `NMS_CANDIDATES_PER_DETECTION * max_det` highest-scoring (box, class) candidates, as detectors bound
        NMS (nms_pre / top-k): greedy NMS decides each box from higher-scoring boxes only, so the detections are
        exactly those of an unbounded NMS down to the score of the last candidate kept, and identical whenever
        max_det of them survive (COCO AP uses each image's top 100).
        """
        outputs = nms.non_max_suppression(
            preds, self.args.conf, self.args.iou, nc=0, multi_label=True,
            agnostic=self.args.single_cls or self.args.agnostic_nms, max_det=self.args.max_det, end2end=self.end2end,
            max_time_img=math.inf, max_nms=NMS_CANDIDATES_PER_DETECTION * self.args.max_det)
        return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in outputs]

    def get_stats(self) -> dict:
        """ultralytics' stats with the COCO AP columns (ultralytics' own mAP_small/medium/large duplicates dropped);
        standalone validation adds the inspection metrics (FROC, escape/overkill rates, per-class thresholds)."""
        if not self.training:
            self.inspect(per_image_stats(self.metrics.stats))
        stats = super().get_stats()
        for size in ("small", "medium", "large") if not self.is_lvis else ():
            stats.pop(f"metrics/mAP_{size}(B)", None)
        return stats

    def inspect(self, images: list) -> None:
        """Inspection metrics of this validation on `metrics.inspection` (and `metrics.class_conf` with recall=),
        logged and written to inspection.json, with FROC curves beside ultralytics' PR curves when plotting."""
        names, self.metrics.save_dir = self.names, self.save_dir
        if self.recall_target:
            self.metrics.class_conf = class_thresholds(images, float(self.recall_target), len(names))
        self.metrics.inspection = inspection_report(images, names, self.args.conf, self.escape_target,
                                                    getattr(self.metrics, "class_conf", None))
        log_inspection(self.metrics.inspection, getattr(self.metrics, "class_conf", {}), names)
        if RANK in {-1, 0}:
            (self.save_dir / "inspection.json").write_text(json.dumps(
                {**self.metrics.inspection, "class_conf": getattr(self.metrics, "class_conf", {})}, indent=2))
            if self.args.plots:
                plot_froc(images, names, self.save_dir / "FROC_curve.png")

    def print_results(self) -> None:
        """ultralytics' results table, then the model's Params and GFLOPs@640 (standalone PyTorch models)."""
        with self.metrics.box_only():
            super().print_results()
        if self.metrics.complexity:
            c = self.metrics.complexity
            LOGGER.info(f"Params {c['params'] / 1e6:.2f}M, GFLOPs {c['GFLOPs']:.1f} (fused model at 640x640)")

    def coco_evaluate(self, stats, pred_json, anno_json, iou_types="bbox", suffix="Box") -> dict:
        """COCO-evaluate the predictions with faster-coco-eval and add the six AP numbers to `stats`.

        Handles the in-memory ground truth ultralytics builds for any YOLO dataset and COCO's own annotation file;
        LVIS stays with ultralytics. Never calls check_requirements (which may pip-install).
        """
        if self.is_lvis:
            return super().coco_evaluate(stats, pred_json, anno_json, iou_types, suffix)
        if self.jdict and (self.gdict or self.is_coco):
            if self.gdict:
                label_exact_boxes(self.gdict)
            try:
                self.metrics.coco_stats = self.run_cocoeval(pred_json, anno_json)
            except Exception as e:  # a COCO failure must not end a training run, as in ultralytics
                LOGGER.warning(f"faster-coco-eval unable to run: {e}")
        self.metrics.coco = {k: self.metrics.coco_stats.get(k, 0.0) for k in COCO_AP}
        stats.update({f"metrics/{k}(B)": v for k, v in self.metrics.coco.items()})
        return stats

    def run_cocoeval(self, pred_json, anno_json) -> dict:
        """Run one COCO bbox evaluation; returns the 12 summary numbers by name."""
        if self.gdict:
            img_ids = [image["id"] for image in self.gdict["images"]]
        else:
            img_ids = [int(Path(x).stem) for x in self.dataloader.dataset.im_files]
        gt = COCO(anno_json if isinstance(anno_json, dict) else str(anno_json))
        dt = gt.loadRes(pred_json if isinstance(pred_json, list) else str(pred_json))
        cocoeval = COCOeval_faster(gt, dt, iouType="bbox", print_function=LOGGER.info if not self.training else _mute)
        cocoeval.params.imgIds = img_ids
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            cocoeval.evaluate()
            cocoeval.accumulate()
            cocoeval.summarize()
        if not self.training and summary.getvalue().strip():
            LOGGER.info(summary.getvalue().rstrip())
        coco_stats = dict(zip(COCO_AP + COCO_AR, (float(x) for x in cocoeval.stats[:12])))
        if not self.training:
            LOGGER.info("COCO (faster-coco-eval): " + "  ".join(f"{k} {coco_stats[k]:.3f}" for k in COCO_AP))
        return coco_stats

    def save_results_csv(self, stats: dict) -> None:
        """Append the stats as a row of `save_dir/results.csv`; a training run's results.csv is left alone."""
        file = self.save_dir / "results.csv"
        if file.exists() and file.read_text(encoding="utf-8").startswith("epoch"):  # final validation of a training
            return
        keys, vals = list(stats), [float(v) for v in stats.values()]
        header = "" if file.exists() else ",".join(keys) + "\n"
        with open(file, "a", encoding="utf-8") as f:
            f.write(header + ",".join(f"{v:.6g}" for v in vals) + "\n")
        LOGGER.info(f"Metrics saved to {file}")


def per_image_stats(stats: dict) -> list:
    """ultralytics' per-image validation stats (lists of arrays, one entry per image) as one dict per image."""
    return [dict(zip(("tp", "conf", "pred_cls", "target_cls"), v))
            for v in zip(stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"])]


def log_inspection(report: dict, class_conf: dict, names: dict) -> None:
    """The inspection metrics, as a few readable lines under ultralytics' table."""
    rates = "  ".join(f"{k} FP/img: {v:.3f}" for k, v in report["recall_at_false_calls"].items())
    LOGGER.info(f"Defect recall (IoU 0.5) at {rates}")
    line = f"At conf {report['conf']:g}: escape rate {report['escape_rate']:.3f} over {report['defective_images']} " \
           f"defective images"
    if report["good_images"]:
        line += (f", overkill rate {report['overkill_rate']:.3f} over {report['good_images']} defect-free images; "
                 f"escape rate <= {report['escape_target']:g} at conf {report['conf_for_escape_target']:.3f} "
                 f"(overkill {report['overkill_at_that_conf']:.3f})")
    LOGGER.info(line)
    if class_conf:
        LOGGER.info("Per-class thresholds: " + ", ".join(f"{names[c]} {t:.3f}" for c, t in class_conf.items()))


def use_cpu_cores_when_standalone(validator: SDGASValidator) -> None:
    """on_val_start: a standalone validation on the CPU gets `cpu_inference_threads` torch threads (ultralytics'
    device selection cut them to cpu_count - 1); validation inside training keeps the trainer's setting."""
    if not validator.training:
        use_cpu_inference_threads(validator.device)


def _mute(*args, **kwargs):
    """A print function that prints nothing (per-epoch COCO summaries during training)."""
