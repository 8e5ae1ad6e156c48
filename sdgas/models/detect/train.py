"""SDGASTrainer: ultralytics' DetectionTrainer building SD-GASNet models with sdgas' arguments and validator."""

import shutil
from copy import copy
from pathlib import Path

from ultralytics.cfg import cfg2dict
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from sdgas.data.dataset import build_sdgas_dataset
from sdgas.io.checkpoint import (
    CheckpointError,
    checkpoint_path_setting,
    is_trusted,
    load_checkpoint_dict,
    trust_checkpoint,
)
from sdgas.io.saving import (
    STAGING_DIR,
    AllEpochsSaved,
    atomic_final_strip,
    check_class_count,
    check_resumable,
    checkpoint_run_dir,
    staged_checkpoint_writes,
    truncate_results_csv,
)
from sdgas.io.weights import load_safetensors
from sdgas.models.detect.val import SDGASValidator, apply_paper_eval
from sdgas.nn.distill_model import KD_LOSS_NAMES, SelfDistillModel, kd_alpha
from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.utils import find_weights, sdgas_default_cfg, strip_sdgas_keys
from sdgas.models.detect.amp import offline_amp_check
from sdgas.utils.malloc import keep_freed_memory


def teacher_source(distill_model):
    """The teacher `distill_model=` names: a local file, else shipped weights by bare name (`sdgasnet-neu.pt`).
    A .safetensors teacher is loaded here by the weights-only loader; a .pt path goes to SelfDistillModel, which
    loads it through the checkpoint allow-list."""
    path = Path(find_weights(distill_model) or str(distill_model))
    return load_safetensors(path) if path.suffix == ".safetensors" else str(path)


class SDGASTrainer(DetectionTrainer):
    """DetectionTrainer for SD-GASNet: sdgas keys accepted, SD-GASNet built from YAML, BottleRep scales not decayed."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        """get_cfg validates `overrides` against `cfg`, so sdgas' keys are added to it: sdgas' defaults for the
        default config, the missing ones for any other (a DDP worker passes ultralytics' DEFAULT_CFG_DICT copy)."""
        cfg = sdgas_default_cfg() if cfg is DEFAULT_CFG else {**sdgas_default_cfg(), **cfg2dict(cfg)}
        super().__init__(cfg, carry_trust(overrides), _callbacks)
        if self.device.type == "cpu":
            keep_freed_memory()  # reuse freed activation buffers instead of page-faulting them in every iteration

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Build an SDGASDetectionModel for the dataset's classes and load `weights` if given."""
        model = SDGASDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        if weights:
            model.load(weights)
        return model

    def build_dataset(self, img_path, mode="train", batch=None):
        """ultralytics' dataset as an SDGASDataset: bad images/labels skipped or converted with a precise warning."""
        return build_sdgas_dataset(super().build_dataset, img_path, mode, batch)

    def get_validator(self):
        """SDGASValidator with the arguments stripped of sdgas-only keys (stock validators reject unknown keys)."""

        self.loss_names = ("box_loss", "cls_loss", "dfl_loss") + (KD_LOSS_NAMES if self.args.distill_model else ())
        args = copy(self.args)
        apply_paper_eval(vars(args))  # paper_eval=True: the paper's conf/iou/max_det for every validation
        args = strip_sdgas_keys(args)
        return SDGASValidator(self.test_loader, save_dir=self.save_dir, args=args, _callbacks=self.callbacks)

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

    # Stage 2, teacher-guided distillation (paper §3.3-3.4; the losses live in sdgas/nn/distill_model.py)
    def set_model_attributes(self):
        """Attach the dataset and arguments, then wrap the model in SelfDistillModel when `distill_model` is set.

        Runs after setup_model() and .to(device), before ultralytics' own DistillationModel wrap in _setup_train,
        which its isinstance check then skips (docs/ultralytics-integration.md §3).
        """
        super().set_model_attributes()
        if not self.args.distill_model:
            return
        if not isinstance(self.model, SelfDistillModel):  # a resumed run arrives wrapped by setup_model()
            self.model = SelfDistillModel(teacher_source(self.args.distill_model), self.model)
        if set_kd_alpha not in self.callbacks["on_train_epoch_start"]:
            self.add_callback("on_train_epoch_start", set_kd_alpha)

    def setup_model(self):
        """ultralytics' setup_model, except that resuming a stage-2 checkpoint rebuilds SelfDistillModel.

        The checkpoint holds the student and the feature adapters but no teacher, which is reloaded from
        `distill_model`; the stock path would rebuild ultralytics' DistillationModel with its own loss.
        """
        if not (self.resume and str(self.model).lower().endswith(".pt")):
            return super().setup_model()
        from ultralytics.nn.distill_model import DistillationModel
        from ultralytics.nn.tasks import load_checkpoint

        weights, ckpt = load_checkpoint(self.model)
        if not isinstance(weights, DistillationModel):
            return super().setup_model()
        if not self.args.distill_model:
            raise ValueError(f"{self.model} is a distillation checkpoint but names no teacher; pass distill_model=")
        LOGGER.info(f"Resuming distillation from {self.model} with teacher {self.args.distill_model}")
        student = self.get_model(cfg=weights.student_model.yaml, weights=weights.student_model, verbose=False)
        student.args = self.args
        self.model = SelfDistillModel(teacher_source(self.args.distill_model), student)
        self.model.projector.load_state_dict(weights.projector.state_dict())  # the trained 1x1 adapters, if any
        return ckpt

    def save_metrics(self, metrics):
        """results.csv row; while distilling, with the epoch's enhanced-KL weight as column `kd/alpha`."""
        model = unwrap_model(self.model)
        if hasattr(model, "effective_alpha"):
            metrics = {**metrics, "kd/alpha": round(model.effective_alpha, 5)}
        super().save_metrics(metrics)

    # Checkpoints that survive a kill at any point (the helpers are in sdgas/io/saving.py)
    def save_model(self):
        """ultralytics' checkpoints written atomically: staged beside the weights, flushed, renamed (last.pt last)."""
        with staged_checkpoint_writes(self):
            return super().save_model()

    def final_eval(self):
        """ultralytics' final evaluation; strip_optimizer loads safely, writes atomically, and strips last.pt last."""
        with atomic_final_strip(self):
            super().final_eval()

    def check_resume(self, overrides):
        """ultralytics' resume check, with the checkpoint's settings treated as data: a refused or damaged checkpoint
        reports its own one-line error, a finished run has nothing to resume, the run continues only in the folder the
        checkpoint sits in, and the dataset and teacher it names must be local files."""
        if isinstance(self.args.resume, (str, Path)) and Path(self.args.resume).is_file():
            check_resumable(load_checkpoint_dict(self.args.resume), self.args.resume)
        try:
            super().check_resume(overrides)
        except FileNotFoundError as e:
            if isinstance(e.__cause__, CheckpointError):
                raise e.__cause__ from None
            raise
        if self.resume:
            run = checkpoint_run_dir(self.args.resume)
            self.args.save_dir, self.args.project, self.args.name = str(run), str(run.parent), run.name
            self.args.trust = bool((overrides or {}).get("trust", False))  # the user's word, never the checkpoint's
            shutil.rmtree(run / "weights" / STAGING_DIR, ignore_errors=True)  # left by a kill during a save
            for key in ("data", "distill_model"):
                if getattr(self.args, key, None):
                    setattr(self.args, key, checkpoint_path_setting(getattr(self.args, key), key, self.args.resume))

    def resume_training(self, ckpt):
        """ultralytics' resume, after checking the class count and cutting results.csv back to the saved epochs.

        A run killed after saving its final epoch has only its final evaluation left (see _do_train).
        """
        epochs_saved = ckpt.get("epoch", -1) + 1 if ckpt else 0
        if not (self.resume and epochs_saved):  # nothing to resume, or a finished (stripped) run: ultralytics decides
            return super().resume_training(ckpt)
        check_class_count(ckpt, self.data, self.args.model)
        truncate_results_csv(self.csv, epochs_saved)
        if epochs_saved < self.epochs:
            return super().resume_training(ckpt)
        self._load_checkpoint_state(ckpt)
        self.start_epoch = self.epochs

    def _setup_train(self):
        """ultralytics' setup, with AMP checked on this model offline (sdgas/models/detect/amp.py); signals a resumed run
        that has no epoch left to train."""
        with offline_amp_check():
            super()._setup_train()
        if self.resume and self.start_epoch >= self.epochs:
            raise AllEpochsSaved

    def _do_train(self):
        """ultralytics' training loop, or only its end for a resumed run whose every epoch was already saved."""
        try:
            super()._do_train()
        except AllEpochsSaved:
            LOGGER.info(f"All {self.epochs} epochs of {self.args.model} were saved; finishing its final evaluation")
            self.epoch = self.epochs - 1
            self.final_eval()
            if RANK in {-1, 0}:
                if self.args.plots:
                    self.plot_metrics()
                self.run_callbacks("on_train_end")


def set_kd_alpha(trainer):
    """on_train_epoch_start: set and log this epoch's enhanced-KL weight (paper §3.4.1, docs/official-arch.md §6)."""
    model = unwrap_model(trainer.model)
    if hasattr(model, "kd"):
        model.alpha = kd_alpha(trainer.epoch, trainer.epochs, model.kd.alpha_min)
        LOGGER.info(f"distillation: epoch {trainer.epoch + 1}/{trainer.epochs}, alpha {model.effective_alpha:.4f}")


def carry_trust(overrides):
    """The trainer's arguments, with `trust=True` where this process trusts the model= checkpoint, and that file
    trusted here where they say `trust=True`. A DDP worker is a fresh process that knows only these arguments."""
    overrides = dict(overrides or {})
    model = str(overrides.get("model") or "")
    if model.lower().endswith(".pt"):
        if overrides.get("trust"):
            trust_checkpoint(model)
        elif is_trusted(model):
            overrides["trust"] = True
    return overrides

