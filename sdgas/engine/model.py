"""SDGAS: the Python entry point, an ultralytics Model whose task map builds and trains SD-GASNet."""

from pathlib import Path

from ultralytics.engine.model import Model
from ultralytics.models.yolo.detect import DetectionPredictor

from sdgas.models.detect import SDGASTrainer, SDGASValidator
from sdgas.nn.tasks import SDGASDetectionModel, load_model_yaml
from sdgas.utils import DATASETS_DIR, DEMO_DATA, resolve_cfg_file

DEMO_IMAGES = DEMO_DATA.parent / "neu-det-demo" / "images" / "val"


def resolve_data(data) -> str:
    """A dataset YAML by path or bare packaged name; the built-in NEU-DET demo set when none is given."""
    if not data:
        return str(DEMO_DATA)
    return str(resolve_cfg_file(data, DATASETS_DIR, "dataset YAML")) if str(data).endswith((".yaml", ".yml")) \
        else str(data)


class SDGAS(Model):
    """SD-GASNet detector: `SDGAS("sdgasnet.yaml").train(data=...)`, `SDGAS("best.pt").predict(...)`.

    Accepts a model YAML (by path or bare packaged name), an sdgas/ultralytics detection checkpoint, or an
    exported model (e.g. ONNX). Results objects are ultralytics' own.
    """

    def __init__(self, model="sdgasnet.yaml", task="detect", verbose=False):
        model = str(model).strip()
        if not model.lower().endswith((".yaml", ".yml")) and not Path(model).exists():
            raise FileNotFoundError(f"model file '{model}' not found (sdgas never downloads weights by name)")
        super().__init__(model, task=task, verbose=verbose)

    def _new(self, cfg, task=None, verbose=False):
        """Build a fresh model from a YAML found by path or bare packaged name."""
        cfg_dict = load_model_yaml(cfg)
        self.cfg, self.task = cfg_dict["yaml_file"], task or "detect"
        self.model = SDGASDetectionModel(cfg_dict, verbose=verbose)
        self.overrides.update(model=self.cfg, task=self.task)
        self.model.args = {**self.model_defaults(), **self.overrides}
        self.model.task, self.model_name = self.task, self.cfg

    @staticmethod
    def model_defaults():
        from sdgas.utils import sdgas_default_cfg

        return sdgas_default_cfg()

    def train(self, trainer=None, **kwargs):
        kwargs["data"] = resolve_data(kwargs.get("data") or (None if kwargs.get("resume") else self.overrides.get("data")))
        return super().train(trainer=trainer, **kwargs)

    def val(self, validator=None, **kwargs):
        kwargs["data"] = resolve_data(kwargs.get("data") or self.overrides.get("data"))
        return super().val(validator=validator, **kwargs)

    def predict(self, source=None, stream=False, predictor=None, **kwargs):
        return super().predict(source if source is not None else str(DEMO_IMAGES), stream, predictor, **kwargs)

    @property
    def task_map(self):
        return {"detect": {"model": SDGASDetectionModel, "trainer": SDGASTrainer, "validator": SDGASValidator,
                           "predictor": DetectionPredictor}}
