"""Stage 2 of SD-GASNet: teacher-guided distillation with the enhanced KL (paper §3.3-3.4, docs/official-arch.md §5-6).

Built on ultralytics' `DistillationModel` (docs/ultralytics-integration.md §3), which already keeps the teacher frozen, in
eval mode, out of the EMA and out of checkpoints, and hooks the three neck outputs that feed the head. Only the loss
and the feature adapter differ:

    L = L_gt + cls * kd_cls * a * KD_cls + dfl * kd_dfl * a * KD_dfl + kd_feat * a * KD_feat

as the authors' code weights it (docs/official-arch.md §5: 1.0*(VFL + 2.0*a*KD_cls) + 0.5*(DFL + 1.0*a*KD_dfl) +
10*a*KD_feat). L_gt is the stage-1 loss (VFL + GIoU + DFL). `a` is the enhanced-KL weight: it decays by cosine from 1 to
`kd_alpha_min` over the epochs with the enhanced KL (`kd_loss=ekl`) and is 1 for the Table 8 alternatives. The IoU
branch is never distilled (paper §3.3).

- KD_cls: T^2 * sum over all anchors of D(softmax(q_t / T) || softmax(q_s / T)) over the classes, q = sigmoid scores.
- KD_dfl: T^2 * mean over (positive anchor, side) of D over the DFL bins of the tempered distributions.
- KD_feat: channel-wise distillation (CWD) of the three neck outputs, softmax over H*W per channel at `kd_feat_t`,
  summed over (N, C) / (N * C) and over the levels; only with `kd_scope=neck` (Table 9 "Neck KD").
- D is KL(teacher || student) for `ekl` and `kl`, soft cross-entropy for `ce`, squared error for `mse` (Table 8).
"""

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils import LOGGER, IterableSimpleNamespace

from sdgas.nn.tasks import detect_head
from sdgas.utils import sdgas_setting

KD_KEYS = ("kd_loss", "kd_scope", "kd_t", "kd_cls", "kd_dfl", "kd_feat", "kd_feat_t", "kd_alpha_min")  # cfg/default.yaml
KD_LOSSES = ("ekl", "kl", "ce", "mse")  # paper Table 8: enhanced KL (ours), KL, CE, MSE
KD_SCOPES = ("neck", "head")  # paper Table 9: "Neck KD" (neck features + head) and "Head KD"
KD_LOSS_NAMES = ("kd_cls", "kd_dfl", "kd_feat")


def kd_settings(args) -> IterableSimpleNamespace:
    """The distillation arguments (kd_* keys), with cfg/default.yaml's values for missing or None ones.

    An ultralytics namespace (not types.SimpleNamespace) so that checkpoints holding it pass sdgas' safe loader.
    """
    s = IterableSimpleNamespace(**{k[3:]: sdgas_setting(args, k) for k in KD_KEYS})
    s.loss, s.scope = str(s.loss).lower(), str(s.scope).lower()
    if s.loss not in KD_LOSSES:
        raise ValueError(f"kd_loss='{s.loss}' is not one of {', '.join(KD_LOSSES)} (paper Table 8)")
    if s.scope not in KD_SCOPES:
        raise ValueError(f"kd_scope='{s.scope}' is not one of {', '.join(KD_SCOPES)} (paper Table 9)")
    for k in ("t", "cls", "dfl", "feat", "feat_t", "alpha_min"):
        setattr(s, k, float(getattr(s, k)))
    if s.t <= 0 or s.feat_t <= 0:
        raise ValueError(f"kd_t and kd_feat_t must be positive, got {s.t} and {s.feat_t}")
    if not 0.0 <= s.alpha_min <= 1.0:
        raise ValueError(f"kd_alpha_min must lie in [0, 1], got {s.alpha_min}")
    return s


def kd_alpha(epoch: float, epochs: int, floor: float = 0.01) -> float:
    """Enhanced-KL weight at `epoch` (0-based) of `epochs`: cosine from 1 at epoch 0 to `floor` at epoch `epochs`.

    docs/official-arch.md §6: a(e) = 1 + (floor - 1) * (1 - cos(pi * e / E)) / 2, epoch-wise (YOLOv6's distillation decay);
    paper §3.4.1 decays to 0, the official code to 0.01.
    """
    e = min(max(float(epoch), 0.0), float(epochs)) / max(epochs, 1)
    return 1.0 + (floor - 1.0) * (1.0 - math.cos(math.pi * e)) / 2.0


SERIES_LIMIT = 0.1  # |x| below which e^-x - 1 + x is evaluated by its Taylor series (see tempered_divergence)


def exp_minus_linear(x: torch.Tensor) -> torch.Tensor:
    """e^-x - 1 + x for |x| < SERIES_LIMIT, by its Taylor series to x^5 (relative error < 3e-7 there).

    The direct form cancels: in float32 it keeps no correct digit for |x| ~ 1e-5, where the result is ~5e-11.
    """
    return x * x * (0.5 - x * (1 / 6 - x * (1 / 24 - x / 120)))


def tempered_divergence(s_logits, t_logits, temperature: float, kind: str = "kl", dim: int = -1) -> torch.Tensor:
    """T^2 * D(softmax(t / T) || softmax(s / T)) along `dim` (official `distill_loss_cls/dfl`, docs/official-arch.md §6).

    D (paper §3.4.1, Table 8): 'kl'/'ekl' KL(teacher || student), the official direction (the enhanced KL's alpha is
    applied by the caller); 'ce' the soft cross-entropy -sum p_t log p_s = KL + the teacher's entropy (same
    gradient as KL, larger logged values); 'mse' sum (p_s - p_t)^2. Identical inputs give exactly 0 (KL, MSE).

    Float32 outside autocast, no host synchronisation. At T = 30 the tempered distributions are nearly uniform and
    their KL (~1e-7 per anchor) lies below the float32 rounding of log-probabilities (~2e-7), so it is computed from
    the logit differences instead: with d = (t - s) / T centred on its teacher mean (d' = d - E_pt[d]),
    log p_t - log p_s = d' + L with L = log E_pt[exp(-d')] = KL. Where every |d'| of a distribution is below
    SERIES_LIMIT, L = log1p(E_pt[e^-d' - 1 + d']) with the bracket by its series (exact to float32 rounding of L);
    elsewhere L = logsumexp(log p_t - d'), whose absolute error (~1e-7) is then far below the KL.
    """
    with torch.autocast(s_logits.device.type, enabled=False):
        a_t, a_s = t_logits.detach().float() / temperature, s_logits.float() / temperature
        logp_t = F.log_softmax(a_t, dim=dim)
        p_t = logp_t.exp()
        d = a_t - a_s
        d = d - (p_t * d).sum(dim, keepdim=True)
        small = d.abs().amax(dim, keepdim=True) < SERIES_LIMIT
        d_small = torch.where(small, d, torch.zeros_like(d))  # finite series (and its gradient) where unused
        series = torch.log1p((p_t * exp_minus_linear(d_small)).sum(dim, keepdim=True))
        kl = torch.where(small, series, torch.logsumexp(logp_t - d, dim=dim, keepdim=True))
        if kind in ("kl", "ekl"):
            value = kl
        elif kind == "ce":  # KL plus the teacher's entropy: the same gradient as KL
            value = kl - (p_t * logp_t).sum(dim, keepdim=True)
        elif kind == "mse":  # p_s - p_t = p_t * (exp(-(d' + L)) - 1)
            diff = torch.where(small, p_t * torch.expm1(-(d_small + kl)), (logp_t - d - kl).exp() - p_t)
            value = diff.pow(2).sum(dim, keepdim=True)
        else:
            raise ValueError(f"unknown distillation loss '{kind}', expected one of {', '.join(KD_LOSSES)}")
        return value.squeeze(dim) * temperature**2


def cls_kd(s_scores, t_scores, temperature: float = 30.0, kind: str = "kl") -> torch.Tensor:
    """Classification KD on (B, nc, A) raw logits: tempered softmax over the classes of the sigmoid scores, summed
    over all B * A anchors with no normalisation (official `distill_loss_cls`, reduction='sum', docs/official-arch.md §6).
    """
    return tempered_divergence(s_scores.float().sigmoid(), t_scores.float().sigmoid(), temperature, kind, dim=1).sum()


def dfl_kd(s_boxes, t_boxes, fg_mask, temperature: float = 30.0, kind: str = "kl") -> torch.Tensor:
    """DFL KD on the positives: (B, 4 * R, A) raw bin logits, fg_mask (B, A); mean over (positive anchor, side).

    official `distill_loss_dfl` (docs/official-arch.md §6; its bbox_weight / sum(q) weighting sums to 1). The bins of both
    models are distances 0, 1, 2, ... in stride units, so where the bin counts differ (stock YOLO 16, SDHead 17) the
    distributions are compared on the shared bins, each renormalised over them.

    On an accelerator (and when compiled) it is computed on every anchor and weighted by the mask, so the number of
    positives never has to reach the host; on the CPU, where indexing synchronises nothing, only the positives
    (a few percent of the anchors) are computed (docs/cpu_inference_forms.md). Both give the same value; 0 without
    positives.
    """
    b, _, a = s_boxes.shape
    s, t = s_boxes.reshape(b, 4, -1, a), t_boxes.reshape(b, 4, -1, a)  # (B, 4, R, A)
    bins = min(s.shape[2], t.shape[2])
    s, t = s[:, :, :bins], t[:, :, :bins]
    if s.device.type == "cpu" and not torch.compiler.is_compiling():
        per_side = tempered_divergence(s.permute(0, 3, 1, 2)[fg_mask], t.permute(0, 3, 1, 2)[fg_mask], temperature,
                                       kind, dim=-1)  # (positives, 4)
        return per_side.mean() if per_side.numel() else per_side.sum()
    per_side = tempered_divergence(s, t, temperature, kind, dim=2)  # (B, 4, A)
    weight = fg_mask[:, None, :].float()
    return (per_side * weight).sum() / (4 * weight.sum()).clamp_min(1)


def feat_kd(s_feat, t_feat, temperature: float = 1.0, kind: str = "kl") -> torch.Tensor:
    """Channel-wise distillation of one (N, C, H, W) feature pair (official `distill_loss_cw`, docs/official-arch.md §6):
    softmax over the H*W positions of every channel, T^2 * D summed over (N, C) and divided by N * C.
    """
    n, c = t_feat.shape[:2]
    return tempered_divergence(s_feat.flatten(2), t_feat.flatten(2), temperature, kind, dim=-1).sum() / (n * c)


def load_teacher(teacher, student: nn.Module) -> nn.Module:
    """Load a teacher checkpoint (or take a module) and check it can teach `student`: same classes, same strides.

    Any ultralytics detection checkpoint qualifies (an SD-GASNet of any size, a stock YOLO); a stage-2 checkpoint
    saved mid-training contributes its student. Never downloads: the path must exist.
    """
    if isinstance(teacher, (str, Path)):
        if not Path(teacher).is_file():
            raise FileNotFoundError(f"teacher checkpoint '{teacher}' not found (distill_model= must be a local .pt "
                                    f"file; sdgas never downloads weights)")
        teacher = load_checkpoint(teacher)[0]
    if isinstance(teacher, DistillationModel):
        teacher = teacher.student_model
    t_head, s_head = detect_head(teacher), detect_head(student)
    if t_head.nc != s_head.nc:
        raise ValueError(f"the teacher predicts {t_head.nc} classes but the student {s_head.nc}: distillation needs a "
                         f"teacher trained on the same classes (check distill_model=)")
    t_names, s_names = getattr(teacher, "names", None), getattr(student, "names", None)
    if isinstance(t_names, dict) and isinstance(s_names, dict) and t_names != s_names and len(s_names) == s_head.nc:
        LOGGER.warning(f"distillation: teacher class names {list(t_names.values())} differ from the student's "
                       f"{list(s_names.values())}; class i of the teacher teaches class i of the student")
    if not torch.equal(t_head.stride.cpu(), s_head.stride.cpu()):
        raise ValueError(f"teacher strides {t_head.stride.tolist()} differ from the student's "
                         f"{s_head.stride.tolist()}: "
                         f"the anchors must coincide for head distillation")
    return teacher


class SelfDistillModel(DistillationModel):
    """ultralytics' DistillationModel with SD-GASNet's distillation losses (paper §3.3-3.4, docs/official-arch.md §5-6).

    The teacher is `teacher_model` of this wrapper, never a child of the student. Neck features whose channel counts
    differ are adapted by a learned 1x1 convolution of the student's feature (identity where they match, as in
    self-distillation). `alpha` is set per epoch by SDGASTrainer. Training returns the ground-truth loss vector
    followed by (kd_cls, kd_dfl, kd_feat), each weighted; eval mode returns the same keys as zeros, because validation
    sums the loss items seen in training (docs/ultralytics-integration.md §3).
    """

    def __init__(self, teacher_model, student_model: nn.Module):
        super().__init__(load_teacher(teacher_model, student_model), student_model)
        self.kd = kd_settings(getattr(student_model, "args", None))
        self.alpha = 1.0
        self.projector = self.build_projector()
        t_bins, s_bins = detect_head(self.teacher_model).reg_max, detect_head(student_model).reg_max
        self.dfl_bins = min(t_bins, s_bins) if t_bins > 1 and s_bins > 1 else 0
        if self.kd.dfl and self.dfl_bins == 0:
            LOGGER.warning(f"distillation: no DFL distributions to distil (teacher reg_max {t_bins}, student "
                           f"{s_bins}); DFL KD is skipped")
        elif self.kd.dfl and t_bins != s_bins:
            LOGGER.warning(f"distillation: teacher has {t_bins} DFL bins, student {s_bins}; DFL KD compares the "
                           f"{self.dfl_bins} shared bins (distances 0..{self.dfl_bins - 1} in stride units)")
        LOGGER.info(f"distillation: teacher {getattr(self.teacher_model, 'pt_path', type(self.teacher_model).__name__)}"
                    f", loss {self.kd.loss}, scope {self.kd.scope}, T {self.kd.t:g}, weights cls {self.kd.cls:g} "
                    f"dfl {self.kd.dfl:g} feat {self.kd.feat if self.kd.scope == 'neck' else 0:g}, "
                    f"alpha 1 -> {self.kd.alpha_min:g}" + (" (cosine)" if self.kd.loss == "ekl" else " (fixed at 1)"))

    @property
    def effective_alpha(self) -> float:
        """The weight on every KD term: the cosine-decayed alpha with the enhanced KL, 1 with the alternatives."""
        return self.alpha if self.kd.loss == "ekl" else 1.0

    def build_projector(self) -> nn.ModuleList:
        """Per neck level: identity where teacher and student channels match, else a learned 1x1 conv
        (student -> teacher).

        Uses the features the parent's dummy forward captured; spatial sizes must match (same strides).
        """
        layers = []
        device = next(self.student_model.parameters()).device
        for i in range(len(self.feats_idx) - 1):
            s, t = self.decouple_outputs(self._student_feats[i]), self.decouple_outputs(self._teacher_feats[i])
            if s.shape[2:] != t.shape[2:]:
                raise ValueError(f"neck level {i}: student feature {tuple(s.shape[1:])} and teacher feature "
                                 f"{tuple(t.shape[1:])} differ in size")
            layers.append(nn.Identity() if s.shape[1] == t.shape[1] else nn.Conv2d(s.shape[1], t.shape[1], 1))
        self._teacher_feats.clear()
        self._student_feats.clear()
        return nn.ModuleList(layers).to(device)

    def loss(self, batch, preds=None):
        """Ground-truth loss plus the weighted KD terms, times batch size like ultralytics' losses (§5 total loss)."""
        if not self.training:  # validation with the EMA (no teacher): the student loss and zero KD columns
            if preds is None:
                preds = self.student_model(batch["img"])
            regular, items = self.student_model.loss(batch, preds)
            zeros = torch.zeros(len(KD_LOSS_NAMES), device=regular.device)
            return torch.cat([regular, zeros]), {**items, **dict(zip(KD_LOSS_NAMES, zeros.unbind()))}

        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            self.teacher_model(batch["img"])  # hooks capture the teacher's neck features and head output
        preds = self.student_model(batch["img"])  # hooks capture the student's neck features
        if getattr(self.student_model, "criterion", None) is None:  # created lazily, as BaseModel.loss does
            self.criterion = self.init_criterion()
        (fg_mask, *_), regular, items = self.criterion.get_assigned_targets_and_loss(preds, batch)
        kd = self.kd_losses(preds, fg_mask)
        items.update(zip(KD_LOSS_NAMES, kd.detach().unbind()))
        return torch.cat([regular, kd]) * batch["img"].shape[0], items

    def kd_losses(self, preds, fg_mask) -> torch.Tensor:
        """(kd_cls, kd_dfl, kd_feat), weighted, from the student's head output `preds` and the hooked features.

        Expects a teacher and student forward to have filled the feature hooks. The IoU branch is not distilled.
        """
        kd, hyp = self.kd, self.criterion.hyp
        n = len(self.feats_idx) - 1  # levels 0..n-1 are the neck outputs, level n the head
        t_head = self.decouple_outputs(self._teacher_feats[n], branch="one2many")
        s_head = self.decouple_outputs(preds, branch="one2many")
        alpha = self.effective_alpha
        zero = s_head["scores"].new_zeros((), dtype=torch.float32)
        l_cls = cls_kd(s_head["scores"], t_head["scores"], kd.t, kd.loss) if kd.cls else zero
        l_dfl = dfl_kd(s_head["boxes"], t_head["boxes"], fg_mask, kd.t, kd.loss) if kd.dfl and self.dfl_bins else zero
        l_feat = zero
        if kd.scope == "neck" and kd.feat:
            l_feat = sum(feat_kd(self.projector[i](self.decouple_outputs(self._student_feats[i])),
                                 self.decouple_outputs(self._teacher_feats[i]), kd.feat_t, kd.loss) for i in range(n))
        return torch.stack([getattr(hyp, "cls", 1.0) * kd.cls * alpha * l_cls,
                            getattr(hyp, "dfl", 1.0) * kd.dfl * alpha * l_dfl,
                            kd.feat * alpha * l_feat])
