"""SDGASTrainer: ultralytics' DetectionTrainer building SD-GASNet models with sdgas' arguments and validator."""

from copy import copy

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK

from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.utils import sdgas_default_cfg, sdgas_only_keys


class SDGASTrainer(DetectionTrainer):
    """DetectionTrainer for SD-GASNet: sdgas keys accepted, SD-GASNet built from YAML, BottleRep scales not decayed."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        if cfg is DEFAULT_CFG:
            cfg = sdgas_default_cfg()  # get_cfg validates overrides against this extended base
        super().__init__(cfg, overrides, _callbacks)

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Build an SDGASDetectionModel for the dataset's classes and load `weights` if given."""
        model = SDGASDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        if weights:
            model.load(weights)
        return model

    def get_validator(self):
        """SDGASValidator with the arguments stripped of sdgas-only keys (stock validators reject unknown keys)."""
        from sdgas.models.detect.val import SDGASValidator

        self.loss_names = "box_loss", "cls_loss", "dfl_loss"
        return SDGASValidator(self.test_loader, save_dir=self.save_dir, args=strip_sdgas_keys(self.args),
                              _callbacks=self.callbacks)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """ultralytics' optimizer, with the learnable BottleRep scales moved out of weight decay.

        The official optimizer never collected these scalars at all, so they stayed at 1; here they train, undecayed.
        """
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        scales = {id(p) for n, p in model.named_parameters() if n.endswith(".alpha")}
        no_decay = next(g for g in optimizer.param_groups if g.get("param_group") == "bn")
        for group in optimizer.param_groups:
            if group["weight_decay"] > 0:
                moved = [p for p in group["params"] if id(p) in scales]
                group["params"] = [p for p in group["params"] if id(p) not in scales]
                no_decay["params"].extend(moved)
        return optimizer


def strip_sdgas_keys(args):
    """A copy of the arguments without sdgas-only keys."""
    args = copy(args)
    for key in sdgas_only_keys():
        args.__dict__.pop(key, None) if hasattr(args, "__dict__") else args.pop(key, None)
    return args
