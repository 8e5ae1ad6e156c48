"""Stage 2, teacher-guided distillation (issue 4; paper §3.3-3.4, Tables 8-9; docs/official-arch.md §5-6).

Unit tests of the KD losses and the alpha schedule against hand computations, the SelfDistillModel wrapper on real
SD-GASNet models, and the trainer wiring on a small real NEU-DET subset at imgsz 64: the two-stage recipe, the
results.csv columns, checkpoint contents, and resume after a kill in the middle of a stage-2 epoch.
"""

import copy
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sdgas  # noqa: F401  (offline environment before ultralytics)
from ultralytics.cfg import get_cfg
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel

from sdgas import SDGAS
from sdgas.cli import check_arguments
from sdgas.nn.distill_model import (KD_LOSS_NAMES, SelfDistillModel, cls_kd, dfl_kd, feat_kd,
                                         kd_alpha, kd_settings, tempered_divergence)
from sdgas.nn.tasks import SDGASDetectionModel
from sdgas.utils import sdgas_default_cfg

IMGSZ = 64
TRAIN = {"imgsz": IMGSZ, "batch": 8, "workers": 0, "device": "cpu", "plots": False, "seed": 0, "exist_ok": True}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as ultralytics' CPU training uses: two threads on two shared cores run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def kl_by_hand(t_logits, s_logits, temperature):
    """KL(softmax(t/T) || softmax(s/T)) in plain Python floats."""
    p = softmax([x / temperature for x in t_logits])
    q = softmax([x / temperature for x in s_logits])
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# ------------------------------------------------------------------------------------------------ losses, by hand
def test_enhanced_kl_matches_hand_computation():
    """cls KD = alpha * T^2 * sum over anchors of KL(softmax(sigmoid(t)/T) || softmax(sigmoid(s)/T)) (§6, eq. D_KLe)."""
    s = torch.tensor([[[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5]]])  # (B=1, nc=3, A=2) raw logits
    t = torch.tensor([[[1.2, 0.1], [-0.4, 2.2], [0.9, -1.3]]])
    temperature, alpha = 2.0, 0.3
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = 0.0
    for a in range(2):
        expected += kl_by_hand([sig(t[0, c, a].item()) for c in range(3)], [sig(s[0, c, a].item()) for c in range(3)],
                               temperature)
    expected *= alpha * temperature**2
    got = alpha * cls_kd(s, t, temperature, "ekl")
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    # D_KLe(P||Q) = a*sum P log P - a*sum P log Q: the cross-entropy form (Table 8 "CE") is KL + H(teacher)
    ce, kl = (tempered_divergence(s, t, temperature, k, dim=1) for k in ("ce", "kl"))
    p = torch.softmax(t / temperature, dim=1)
    entropy = -(p * p.log()).sum(1) * temperature**2
    torch.testing.assert_close(ce, kl + entropy)
    mse = tempered_divergence(s, t, temperature, "mse", dim=1)
    q = torch.softmax(s / temperature, dim=1)
    torch.testing.assert_close(mse, ((q - p) ** 2).sum(1) * temperature**2)


def test_alpha_cosine_schedule_endpoints_and_midpoint():
    """alpha(e) = 1 + (floor - 1)(1 - cos(pi e / E)) / 2: 1 at the start, the floor at E, the mean at E/2 (§6)."""
    assert kd_alpha(0, 10) == pytest.approx(1.0)
    assert kd_alpha(10, 10) == pytest.approx(0.01)  # official floor
    assert kd_alpha(5, 10) == pytest.approx((1 + 0.01) / 2)
    assert kd_alpha(10, 10, floor=0.0) == pytest.approx(0.0)  # paper §3.4.1: decays to 0
    assert kd_alpha(5, 10, floor=0.0) == pytest.approx(0.5)
    values = [kd_alpha(e, 20) for e in range(21)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert kd_alpha(25, 20) == pytest.approx(0.01) and kd_alpha(-1, 20) == pytest.approx(1.0)


def test_dfl_kd_uses_positives_only_and_shared_bins():
    """DFL KD: mean over (positive anchor, side) of T^2 KL over the bins; 16-bin teachers compare the shared bins."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 4 * 17, 5), torch.randn(2, 4 * 17, 5)
    fg = torch.zeros(2, 5, dtype=torch.bool)
    fg[0, 1] = fg[1, 3] = True
    value = dfl_kd(s, t, fg, temperature=3.0)
    sv, tv = s.view(2, 4, 17, 5), t.view(2, 4, 17, 5)
    by_hand = [kl_by_hand(tv[b, k, :, a].tolist(), sv[b, k, :, a].tolist(), 3.0) * 9 for b, a in ((0, 1), (1, 3))
               for k in range(4)]
    assert value.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    s2 = s.clone()
    s2.view(2, 4, 17, 5)[0, :, :, 0] += 5.0  # a negative anchor: no effect
    assert dfl_kd(s2, t, fg, 3.0).item() == pytest.approx(value.item())
    t16 = t.view(2, 4, 17, 5)[:, :, :16].reshape(2, 64, 5)  # a stock-YOLO teacher: 16 bins
    s16 = s.view(2, 4, 17, 5)[:, :, :16].reshape(2, 64, 5)
    assert dfl_kd(s, t16, fg, 3.0).item() == pytest.approx(dfl_kd(s16, t16, fg, 3.0).item())
    assert dfl_kd(s, t, torch.zeros_like(fg), 3.0).item() == 0.0


def test_feat_kd_is_channel_wise_distillation():
    """CWD: per channel, softmax over H*W; T^2 KL summed over (N, C) / (N * C) (official distill_loss_cw)."""
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    expected = sum(kl_by_hand(t[n, c].flatten().tolist(), s[n, c].flatten().tolist(), 1.0)
                   for n in range(2) for c in range(3)) / 6
    assert feat_kd(s, t, 1.0).item() == pytest.approx(expected, rel=1e-5)
    assert feat_kd(t, t, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_arguments_defaults_validation_and_cli():
    """Official defaults; Table 8/9 choices validated; the CLI accepts and type-checks every kd key."""
    s = kd_settings(get_cfg(sdgas_default_cfg()))
    assert (s.loss, s.scope, s.t, s.cls, s.dfl, s.feat, s.alpha_min) == ("ekl", "neck", 30.0, 2.0, 1.0, 10.0, 0.01)
    assert kd_settings({}).t == sdgas_default_cfg()["kd_t"] == 30.0  # the official temperature
    for bad in ({"kd_loss": "js"}, {"kd_scope": "backbone"}, {"kd_t": 0}, {"kd_alpha_min": 2}):
        with pytest.raises(ValueError):
            kd_settings(bad)
    check_arguments({"distill_model": "t.pt", "kd_loss": "mse", "kd_scope": "head", "kd_t": 20, "kd_feat": 0.0,
                     "kd_alpha_min": 0.0, "selfdistill": True})
    with pytest.raises(TypeError):
        check_arguments({"kd_t": "hot"})


# ------------------------------------------------------------------------------------------- the wrapper, real models
def make_student(**args):
    """A real SD-GASNet (6 classes) with non-trivial head predictions (the official init zeroes the pred convs)."""
    model = SDGASDetectionModel("sdgasnet.yaml", nc=6, verbose=False)
    model.args = get_cfg(sdgas_default_cfg(), {"imgsz": IMGSZ, **args})
    with torch.no_grad():
        for branch in (*model.model[-1].cv2, *model.model[-1].cv3):
            branch[-1].weight.normal_(0, 0.05)
    return model


def make_batch():
    torch.manual_seed(3)
    return {"img": torch.rand(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
            "cls": torch.tensor([[1.0], [3.0], [5.0]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.5], [0.7, 0.3, 0.3, 0.3]])}


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return make_student()


@pytest.fixture(scope="module")
def other():
    """Another SD-GASNet with different weights: a teacher that differs from the student."""
    torch.manual_seed(1)
    return make_student()


def head_kd_in_eval(wrapper, batch):
    """Teacher and student forward, both in eval mode, then the three KD terms with every anchor positive."""
    wrapper.student_model.eval()
    wrapper._teacher_feats.clear()
    wrapper._student_feats.clear()
    with torch.no_grad():
        wrapper.teacher_model(batch["img"])
        preds = wrapper.student_model(batch["img"])[1]
    if getattr(wrapper.student_model, "criterion", None) is None:
        wrapper.criterion = wrapper.init_criterion()
    fg = torch.ones(preds["scores"].shape[0], preds["scores"].shape[-1], dtype=torch.bool)
    return wrapper.kd_losses(preds, fg), preds


def test_identical_teacher_and_student_give_zero_kd_in_eval_mode(student, other):
    """Self-distillation sanity: a teacher identical to the student gives zero cls, DFL and feature KD in eval mode,
    and the eval-mode (validation) loss reports the three KD keys as zeros."""
    wrapper = SelfDistillModel(copy.deepcopy(student), student)
    assert all(isinstance(p, torch.nn.Identity) for p in wrapper.projector)  # same shapes: no adapter
    batch = make_batch()
    kd, preds = head_kd_in_eval(wrapper, batch)
    assert preds["scores"].std() > 0 and preds["boxes"].std() > 0  # non-trivial outputs
    torch.testing.assert_close(kd, torch.zeros(3), atol=1e-6, rtol=0)
    wrapper.eval()
    loss, items = wrapper.loss(batch)
    assert tuple(items)[-3:] == KD_LOSS_NAMES and all(items[k].item() == 0 for k in KD_LOSS_NAMES)
    assert loss.shape == (6,) and (loss[-3:] == 0).all() and loss[:3].sum() > 0
    assert (head_kd_in_eval(SelfDistillModel(other, student), batch)[0] > 0).all()  # a different teacher: KD > 0


@pytest.mark.slow  # trains a model
def test_gradients_reach_student_and_never_teacher(student, other):
    """Training loss: the KD terms are positive, gradients reach the student's head and neck, the teacher stays frozen
    in eval mode with no gradients, and it is no child of the student."""
    wrapper = SelfDistillModel(other, student).train()
    wrapper.alpha = 0.5
    student.zero_grad(set_to_none=True)
    loss, items = wrapper.loss(make_batch())
    assert all(items[k] > 0 for k in KD_LOSS_NAMES) and wrapper.effective_alpha == 0.5
    loss.sum().backward()
    head, neck = student.model[-1], student.model[19]
    assert head.cv3[0][-1].weight.grad.abs().sum() > 0 and head.cv2[0][-1].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())
    teacher = wrapper.teacher_model
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not any(m is teacher for m in student.modules())
    assert not any("teacher" in k for k in student.state_dict())

    student.zero_grad(set_to_none=True)  # the KD terms alone (no ground truth) also move the student
    wrapper.loss(make_batch())
    preds = wrapper._student_feats[len(wrapper.feats_idx) - 1]
    fg = torch.zeros(2, preds["scores"].shape[-1], dtype=torch.bool)
    fg[:, :10] = True
    wrapper.kd_losses(preds, fg).sum().backward()
    assert head.cv3[1][-1].weight.grad.abs().sum() > 0 and head.cv2[0][-1].weight.grad.abs().sum() > 0  # fg: level 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.slow  # trains a model
def test_foreign_teacher_stock_yolo_and_class_mismatch(student, other):
    """A stock YOLOv8s (built from its YAML, no download) teaches through learned 1x1 adapters and its 16 DFL bins;
    a teacher with other classes is a clear error; kd_scope=head and the Table 8 variants switch terms."""
    yolo = DetectionModel("yolov8s.yaml", nc=6, verbose=False)
    wrapper = SelfDistillModel(yolo, student).train()
    convs = [p for p in wrapper.projector if isinstance(p, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 128, (1, 1)), (128, 256, (1, 1)), (256, 512, (1, 1))]
    assert wrapper.dfl_bins == 16
    loss, items = wrapper.loss(make_batch())
    assert torch.isfinite(loss).all() and items["kd_dfl"] > 0 and items["kd_feat"] > 0
    loss.sum().backward()
    assert convs[0].weight.grad.abs().sum() > 0  # the adapters learn
    with pytest.raises(ValueError, match="classes"):
        SelfDistillModel(DetectionModel("yolov8n.yaml", nc=3, verbose=False), student)
    wrapper = SelfDistillModel(other, student).train()
    wrapper.kd, wrapper.alpha = kd_settings({"kd_scope": "head", "kd_loss": "mse"}), 0.2
    items = wrapper.loss(make_batch())[1]
    assert items["kd_feat"] == 0 and items["kd_cls"] > 0 and wrapper.effective_alpha == 1.0


# ------------------------------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def selfdistill_run(neu_subset, tmp_path_factory):
    """`selfdistill=True` on 24 + 12 real NEU-DET images, 2 epochs per stage; records each stage's initial weights."""
    project = tmp_path_factory.mktemp("selfdistill")
    model = SDGAS("sdgasnet.yaml")
    starts = []

    def record_init(trainer):
        net = getattr(trainer.model, "student_model", trainer.model)
        starts.append(sum(p.double().sum().item() for p in net.state_dict().values() if p.is_floating_point()))

    model.add_callback("on_train_start", record_init)
    metrics = model.train(data=str(neu_subset), epochs=2, selfdistill=True, project=str(project), name="sd", **TRAIN)
    return model, metrics, project, starts


@pytest.mark.slow  # trains a model
def test_selfdistill_recipe_trains_both_stages_from_the_same_init(selfdistill_run):
    """One call trains stage 1, then stage 2 from the same initialization (not the teacher's weights), same seed,
    epochs and augmentation, and reports both; the object then holds the student."""
    model, metrics, project, starts = selfdistill_run
    results = model.selfdistill_results
    assert set(results) == {"teacher", "student"}
    for stage, r in results.items():
        assert r["weights"].is_file() and "metrics/mAP50-95(B)" in r
    assert results["teacher"]["weights"] == project / "sd-stage1" / "weights" / "best.pt"
    assert results["student"]["weights"] == project / "sd-stage2" / "weights" / "best.pt"
    assert len(starts) == 2 and starts[0] == pytest.approx(starts[1], rel=0, abs=0)  # identical initial weights
    args = [torch.load(results[s]["weights"], weights_only=False)["train_args"] for s in ("teacher", "student")]
    assert args[1]["distill_model"] == str(results["teacher"]["weights"]) and args[0]["distill_model"] is None
    for key in ("seed", "epochs", "imgsz", "batch", "mosaic", "fliplr", "hsv_s", "scale", "lr0", "optimizer"):
        assert args[0][key] == args[1][key], key
    assert type(model.model) is SDGASDetectionModel and metrics is not None


@pytest.mark.slow  # trains a model
def test_stage2_results_csv_has_kd_columns_and_alpha(selfdistill_run):
    """results.csv: train/kd_* from the losses, val/kd_* zero-valued, and the epoch's alpha (kd/alpha)."""
    import csv

    _, _, project, _ = selfdistill_run
    rows = list(csv.DictReader((project / "sd-stage2" / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for name in KD_LOSS_NAMES:
        assert all(float(r[f"val/{name}"]) == 0 for r in rows)
        assert f"train/{name}" in rows[0]
    assert all(float(r["train/kd_feat"]) > 0 for r in rows)
    assert [float(r["kd/alpha"]) for r in rows] == pytest.approx([1.0, kd_alpha(1, 2)], abs=1e-5)
    stage1 = (project / "sd-stage1" / "results.csv").read_text().splitlines()[0]
    assert "kd" not in stage1  # stage 1 is plain training


@pytest.mark.slow  # trains a model
def test_stage2_checkpoints_hold_only_the_student(selfdistill_run):
    """Final last.pt/best.pt of stage 2: the student alone (no teacher tensors, no wrapper), the size of stage 1's."""
    _, _, project, _ = selfdistill_run
    size1 = (project / "sd-stage1" / "weights" / "best.pt").stat().st_size
    for name in ("last.pt", "best.pt"):
        path = project / "sd-stage2" / "weights" / name
        ckpt = torch.load(path, weights_only=False)
        assert type(ckpt["model"]) is SDGASDetectionModel and ckpt.get("ema") is None
        assert not any(isinstance(m, DistillationModel) for m in ckpt["model"].modules())
        assert not any("teacher" in k for k in ckpt["model"].state_dict())
        assert abs(path.stat().st_size - size1) < 0.01 * size1


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import sdgas
    from sdgas import SDGAS

    data, teacher, project = sys.argv[1:4]
    model = SDGAS("sdgasnet.yaml")
    model.add_callback("on_train_batch_end",
                       lambda trainer: trainer.epoch == 1 and os.kill(os.getpid(), signal.SIGKILL))
    model.train(data=data, distill_model=teacher, epochs=3, project=project, name="kd", kd_loss="kl", kd_t=5.0,
                kd_scope="head", imgsz=64, batch=8, workers=0, device="cpu", plots=False, seed=0, exist_ok=True)
""")


@pytest.mark.slow  # trains a model
def test_resume_after_kill_mid_epoch_continues_distillation(selfdistill_run, neu_subset, tmp_path):
    """Stage 2 killed in the middle of epoch 2, then `resume=True`: the same teacher and KD settings, a finished run
    whose results.csv has every epoch once, and a final checkpoint without the teacher."""
    import csv

    _, _, project, _ = selfdistill_run
    teacher = project / "sd-stage1" / "weights" / "best.pt"
    run = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(neu_subset), str(teacher), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == -9, run.stderr[-2000:]  # SIGKILL, inside epoch 2
    last = tmp_path / "kd" / "weights" / "last.pt"
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "kd" / "results.csv").open())] == ["1"]

    model = SDGAS(str(last))
    model.train(resume=True)
    wrapper = model.trainer.model
    assert type(wrapper) is SelfDistillModel
    assert (wrapper.kd.loss, wrapper.kd.t, wrapper.kd.scope) == ("kl", 5.0, "head")
    assert wrapper.teacher_model.pt_path == str(teacher) and not wrapper.teacher_model.training
    rows = list(csv.DictReader((tmp_path / "kd" / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train/kd_feat"]) == 0 and float(r["kd/alpha"]) == 1.0 for r in rows)  # head scope, plain KL
    ckpt = torch.load(last, weights_only=False)
    assert type(ckpt["model"]) is SDGASDetectionModel
    assert not any("teacher" in k for k in ckpt["model"].state_dict())
