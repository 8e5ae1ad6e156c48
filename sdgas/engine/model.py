"""SDGAS: the Python entry point, an ultralytics Model whose task map builds and trains SD-GASNet."""

import shutil
from functools import partial
from pathlib import Path

import torch
from ultralytics.engine.model import Model
from ultralytics.utils import LOGGER

from sdgas.data.check import check_dataset_present
from sdgas.engine.int8 import int8_gate, is_int8_openvino
from sdgas.io.checkpoint import (
    check_detection_model,
    checkpoint_path_setting,
    refuse_untrusted_torchscript,
    trust_checkpoint,
)
from sdgas.io.saving import check_resumable
from sdgas.io.weights import export_safetensors, load_safetensors, write_class_conf
from sdgas.models.detect import SDGASTrainer, SDGASValidator
from sdgas.models.detect.predict import SDGASPredictor
from sdgas.models.detect.tiling import tile_dataset, tiled_predict, tiled_val
from sdgas.models.detect.val import apply_paper_eval
from sdgas.nn.tasks import SDGASDetectionModel, load_model_yaml
from sdgas.utils import (
    DATASETS_DIR,
    DEMO_DATA,
    find_weights,
    is_packaged,
    packaged_weight_names,
    resolve_cfg_file,
    sdgas_default_cfg,
)

DEMO_IMAGES = DEMO_DATA.parent / "neu-det-demo" / "images" / "val"


def missing_model(model: str):
    """Raise FileNotFoundError for a model that is neither a file nor a shipped weights name."""
    raise FileNotFoundError(f"model file '{model}' not found (shipped weights by bare name: "
                            f"{', '.join(packaged_weight_names()) or 'none'}; sdgas never downloads weights)")


def resolve_data(data) -> str:
    """A dataset YAML by path or bare packaged name; the built-in NEU-DET demo set when none is given.

    A packaged set whose images are missing raises FileNotFoundError saying what to download and how to convert it
    (instead of ultralytics' download attempt).
    """
    if not data:
        return str(DEMO_DATA)
    if not str(data).endswith((".yaml", ".yml")):
        return str(data)
    path = resolve_cfg_file(data, DATASETS_DIR, "dataset YAML")
    check_dataset_present(path)
    return str(path)


DYNAMIC_FORMATS = ("onnx", "openvino", "engine")  # engine: TensorRT builds from the same dynamic ONNX graph


def check_dynamic_export(kwargs: dict) -> None:
    """Refuse `dynamic=True` for formats other than DYNAMIC_FORMATS: SD-GASNet computes its sizes in the graph of
    a traced export (CSA windows, MFA pooling, the PDCT basis), checked against PyTorch at several sizes for ONNX
    and OpenVINO (tests/engine/test_dynamic_export.py); other converters were never checked and could freeze a size."""
    fmt = str(kwargs.get("format") or "torchscript").lower()
    if kwargs.get("dynamic") and fmt not in DYNAMIC_FORMATS:
        raise ValueError(f"dynamic=True is supported for format={', '.join(DYNAMIC_FORMATS)} exports of SD-GASNet, "
                         f"not format={fmt}; export at a fixed imgsz= instead")


def stage_metrics(metrics, model) -> dict:
    """The metrics of a finished training run: its validator's, or, after DDP training (whose validator ran in the
    worker processes), those its best checkpoint was saved with."""
    if hasattr(metrics, "results_dict"):
        return metrics.results_dict
    return dict((model.ckpt or {}).get("train_metrics") or {})


def add_class_conf_metadata(exported, class_conf):
    """Carry per-class thresholds into an exported model's metadata (ONNX metadata_props, OpenVINO metadata.yaml),
    where AutoBackend exposes them to `sdgas predict`; other formats are told they do not carry them."""
    if not class_conf or not exported:
        return exported
    path = Path(exported)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path))
        model.metadata_props.add(key="class_conf", value=str(dict(class_conf)))
        onnx.save(model, str(path))
    elif (path / "metadata.yaml").is_file():
        from ultralytics.utils import YAML

        YAML.save(path / "metadata.yaml", {**YAML.load(path / "metadata.yaml"), "class_conf": dict(class_conf)})
    else:
        LOGGER.warning(f"{path.name} does not carry the per-class thresholds; pass conf= when predicting with it")
    return exported


class SDGAS(Model):
    """SD-GASNet detector: `SDGAS("sdgasnet.yaml").train(data=...)`, `SDGAS("best.pt").predict(...)`.

    Accepts a model YAML (by path or bare packaged name), an sdgas/ultralytics detection checkpoint (loaded through
    sdgas' allow-list unless `trust=True`), a weights-only `.safetensors` export, or an exported model (e.g. ONNX).
    Results objects are ultralytics' own.
    """

    def __init__(self, model="sdgasnet.yaml", task="detect", verbose=False, trust=False):
        """`trust=True` loads this .pt with ultralytics' unrestricted unpickler (runs any code it carries)."""
        model = str(model).strip()
        if not model.lower().endswith((".yaml", ".yml")):
            model = find_weights(model) or missing_model(model)
        if trust:
            trust_checkpoint(model)
        if model.lower().endswith(".torchscript"):
            refuse_untrusted_torchscript(model)
        super().__init__(model, task=task, verbose=verbose)

    def _new(self, cfg, task=None, verbose=False):
        """Build a fresh model from a YAML found by path or bare packaged name."""
        cfg_dict = load_model_yaml(cfg)
        self.cfg, self.task = cfg_dict["yaml_file"], task or "detect"
        self.model = SDGASDetectionModel(cfg_dict, verbose=verbose)
        self.overrides.update(model=self.cfg, task=self.task)
        self.model.args = {**self.model_defaults(), **self.overrides}
        self.model.task, self.model_name = self.task, self.cfg

    def _load(self, weights, task=None):
        """A detection checkpoint through sdgas' allow-list, or a weights-only .safetensors export."""
        if str(weights).lower().endswith(".safetensors"):
            self.model = load_safetensors(weights)
            self.ckpt, self.ckpt_path, self.task = {"model": self.model}, str(weights), self.model.task
            self.overrides = self.model.args = self._reset_ckpt_args(self.model.args)
            self.overrides.update(model=str(weights), task=self.task)
            self.model_name = str(weights)
            return
        super()._load(weights, task=task)
        if str(weights).lower().endswith(".pt"):
            check_detection_model(self.model, weights)

    def export(self, **kwargs):
        """ultralytics' export formats, plus format=safetensors (tensors and a JSON config, no pickled code);
        `int8=True` means quantize=8, and an INT8 OpenVINO export with `data=` passes the accuracy gate
        (sdgas/engine/int8.py; its figures in `self.int8_report`)."""
        check_dynamic_export(kwargs)
        if kwargs.pop("int8", False):
            kwargs["quantize"] = 8
        if kwargs.get("data"):  # calibration data by sdgas' bare names too (neu-det.yaml), as train and val take it
            kwargs["data"] = resolve_data(kwargs["data"])
        if is_int8_openvino(kwargs) and kwargs.get("data"):
            exported, self.int8_report = int8_gate(self, super().export, kwargs)
            return add_class_conf_metadata(exported, getattr(self.model, "class_conf", None))
        if str(kwargs.get("format", "")).lower() != "safetensors":
            return add_class_conf_metadata(super().export(**kwargs), getattr(self.model, "class_conf", None))
        self._check_is_pytorch_model()
        source = getattr(self.model, "pt_path", None) or Path(self.model.yaml.get("yaml_file") or "model").name
        return export_safetensors(self.model, Path(source).with_suffix(".safetensors"),
                                  half=kwargs.get("quantize") in (16, "16", "fp16"))

    @staticmethod
    def model_defaults():
        return sdgas_default_cfg()

    def train(self, trainer=None, **kwargs):
        """ultralytics' training; `selfdistill=True` runs both stages of the self-distillation recipe."""
        if kwargs.pop("selfdistill", False):
            return self._selfdistill(trainer, **kwargs)
        if kwargs.get("resume") is True and self.ckpt:  # ultralytics would start a new run on coco8 instead
            check_resumable(self.ckpt, self.ckpt_path)
        if kwargs.get("data") or not kwargs.get("resume"):  # a resumed run keeps its checkpoint's data
            kwargs["data"] = resolve_data(kwargs.get("data") or self.overrides.get("data"))
        if kwargs.get("tile"):  # train on windows cut from the large images (sdgas/models/detect/tiling.py)
            tile = kwargs.pop("tile")
            kwargs["data"] = tile_dataset(kwargs["data"], int(kwargs.get("imgsz") or 640) if tile is True else tile)
        return super().train(trainer=trainer, **kwargs)

    def _selfdistill(self, trainer=None, **kwargs):
        """Stage 1 (GASNet, the teacher), then stage 2 distilling it into a fresh student (paper §3.3, §4.1).

        The student starts where the teacher started (this YAML's seeded init, or this checkpoint), with the same
        arguments (seed, epochs, augmentation): only the distillation terms differ. Runs go to `<name>-stage1` and
        `<name>-stage2`; afterwards this object holds the student, and `selfdistill_results` both stages' metrics.
        """
        from ultralytics.utils import LOGGER

        if kwargs.get("resume") or kwargs.get("distill_model"):
            raise ValueError("selfdistill=True trains its own teacher: drop distill_model=; to resume an interrupted "
                             "stage run `sdgas train resume model=<stage run>/weights/last.pt`")
        init, name = (self.ckpt_path if self.ckpt else self.cfg), kwargs.pop("name", None) or "selfdistill"
        stages = {}
        for stage, model, extra in (("teacher", self, {}), ("student", None, None)):
            if model is None:  # stage 2: a fresh model from the teacher's starting point
                model = type(self)(init, task=self.task)
                model.callbacks = self.callbacks
                extra = {"distill_model": str(stages["teacher"]["weights"])}
            metrics = model.train(trainer, **kwargs, **extra, name=f"{name}-stage{len(stages) + 1}")
            best = model.trainer.best if model.trainer.best.exists() else model.trainer.last
            stages[stage] = {"weights": best, **stage_metrics(metrics, model)}
        self.__dict__.update(vars(model))  # this object now holds the student
        self.selfdistill_results = stages
        for stage, r in stages.items():
            LOGGER.info(f"selfdistill {stage}: mAP50 {r.get('metrics/mAP50(B)', float('nan')):.4f}  "
                        f"mAP50-95 {r.get('metrics/mAP50-95(B)', float('nan')):.4f}  {r['weights']}")
        return metrics

    def val(self, validator=None, **kwargs):
        apply_paper_eval(kwargs)  # paper_eval=True -> conf=0.03, iou=0.65, max_det=300
        kwargs["data"] = resolve_data(kwargs.get("data") or self._checkpoint_data())
        inspection = {k: kwargs.pop(k) for k in ("recall", "escape_rate") if kwargs.get(k) is not None}
        validator = partial(validator or self._smart_load("validator"), **inspection)
        tile = kwargs.pop("tile", False)
        metrics = self._tiled_val(validator, tile, **kwargs) if tile else super().val(validator=validator, **kwargs)
        if metrics.class_conf:
            self.save_class_conf(metrics.class_conf, copy_to=getattr(metrics, "save_dir", None))
        return metrics

    def save_class_conf(self, class_conf: dict, copy_to=None) -> None:
        """Keep per-class thresholds with this model: in memory, and in its .pt or .safetensors file; shipped weights
        stay as shipped, so the thresholds go into a copy in `copy_to` (the validation run folder), which this model
        then uses."""
        if isinstance(self.model, torch.nn.Module):
            self.model.class_conf = dict(class_conf)
        file = Path(str(self.ckpt_path or self.model_name or ""))
        if file.is_file() and is_packaged(file):
            if copy_to is None:
                LOGGER.warning(f"Per-class thresholds kept in memory only: {file.name} is shipped with sdgas")
                return
            file = Path(shutil.copyfile(file, Path(copy_to) / file.name))
            self.ckpt_path = self.model_name = self.overrides["model"] = str(file)
        if file.suffix in (".pt", ".safetensors") and file.is_file():
            write_class_conf(file, class_conf)
            LOGGER.info(f"Per-class thresholds saved with {file}; sdgas predict applies them unless conf= is given")

    def _checkpoint_data(self):
        """The dataset a loaded checkpoint names, only if it is a local file (never a URL, never a download)."""
        data = self.overrides.get("data")
        if data and self.ckpt_path and str(self.ckpt_path).lower().endswith(".pt"):
            return checkpoint_path_setting(data, "data", self.ckpt_path)
        return data

    def predict(self, source=None, stream=False, predictor=None, **kwargs):
        """ultralytics' prediction; the model's per-class thresholds (from `sdgas val recall=`) apply unless conf=;
        `tile=True|N` predicts large images window by window (sdgas/models/detect/tiling.py)."""
        if kwargs.get("tile"):
            return self._tiled_predict(source if source is not None else str(DEMO_IMAGES), **kwargs)
        kwargs.pop("tile", None)
        auto = "conf" not in kwargs
        if self.predictor is not None:
            self.predictor.class_conf_auto = auto
        predictor = predictor or partial(self._smart_load("predictor"), class_conf_auto=auto)
        return super().predict(source if source is not None else str(DEMO_IMAGES), stream, predictor, **kwargs)

    def _tiled_val(self, validator, tile, **kwargs):
        """Validation of the original val images window by window (sdgas/models/detect/tiling.py)."""
        from ultralytics.data.utils import check_det_dataset

        validator = validator(args={**self.overrides, **kwargs, "mode": "val"}, _callbacks=self.callbacks)
        validator.data = check_det_dataset(validator.args.data)
        size = int(validator.args.imgsz) if tile is True else int(tile)
        a = validator.args
        self.metrics = tiled_val(self, validator, size, conf=a.conf, iou=a.iou, max_det=a.max_det,
                                 imgsz=kwargs.get("imgsz") or size, agnostic_nms=a.agnostic_nms or a.single_cls)
        return self.metrics

    def _tiled_predict(self, source, tile, save=False, project=None, name=None, exist_ok=False, **kwargs):
        """Tiled prediction: one Results per image; annotated images saved like ultralytics' when save=True."""
        from ultralytics.utils import RUNS_DIR
        from ultralytics.utils.files import increment_path

        size = int(kwargs.get("imgsz") or 640) if tile is True else int(tile)
        kwargs["imgsz"] = kwargs.get("imgsz") or size
        results = tiled_predict(self, source, size, **kwargs)
        if save:
            folder = increment_path(Path(project or RUNS_DIR / "detect") / (name or "predict"), exist_ok=exist_ok)
            folder.mkdir(parents=True, exist_ok=True)
            for r in results:
                r.save(filename=str(folder / Path(r.path).name))
            LOGGER.info(f"Tiled predictions ({len(results)} images, {size}-px windows) saved to {folder}")
        return results

    @property
    def task_map(self):
        return {"detect": {"model": SDGASDetectionModel, "trainer": SDGASTrainer, "validator": SDGASValidator,
                           "predictor": SDGASPredictor}}
