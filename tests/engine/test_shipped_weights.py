"""The shipped NEU-DET weights (cfg/weights/sdgasnet-neu.safetensors): found by bare name from any directory, accurate
on NEU-DET val, the default of `sdgas predict`/`val`, a starting point for fine-tuning, and never rewritten."""

import hashlib

import pytest
import torch

from sdgas import SDGAS
from sdgas.cli import main
from sdgas.io.weights import read_safetensors
from sdgas.utils import DEMO_DATA, WEIGHTS_DIR, packaged_weights

SHIPPED = WEIGHTS_DIR / "sdgasnet-neu.safetensors"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def holds_shipped_tensors(state: dict) -> bool:
    """Whether a state dict carries the shipped file's floating-point tensors (stored in FP16), exactly."""
    tensors, _ = read_safetensors(SHIPPED)
    return all(torch.equal(state[k], v.float()) for k, v in tensors.items() if v.is_floating_point())


@pytest.mark.parametrize("name", ["sdgasnet-neu.pt", "sdgasnet-neu.safetensors", "sdgasnet-neu"])
def test_bare_name_loads_the_shipped_weights_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = SDGAS(name)
    assert model.ckpt_path == str(SHIPPED)
    assert holds_shipped_tensors(model.model.state_dict())
    assert model.model.names[0] == "crazing" and len(model.model.names) == 6


def test_names_with_a_folder_or_unknown_names_are_not_shipped_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_weights("weights/sdgasnet-neu.pt") is None and packaged_weights("yolo11n.pt") is None
    with pytest.raises(FileNotFoundError, match="shipped weights by bare name: sdgasnet-neu.pt"):
        SDGAS("sdgasnet-nue.pt")


def test_a_local_file_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SDGAS("sdgasnet-n.yaml").export(format="safetensors")  # writes sdgasnet-n.safetensors in the cwd
    (tmp_path / "sdgasnet-n.safetensors").rename(tmp_path / "sdgasnet-neu.safetensors")
    model = SDGAS("sdgasnet-neu.safetensors")
    assert model.ckpt_path == "sdgasnet-neu.safetensors"
    assert sum(p.numel() for p in model.model.parameters()) < 2e6  # the local scale-n model, not the shipped one


def test_predict_without_model_uses_the_shipped_weights_and_finds_the_demo_defects(tmp_path, monkeypatch):
    """`sdgas predict` with no model= and no source= predicts the 12 demo val images (NEU-DET val images the shipped
    model never trained on) with the shipped weights; most labelled defects are found with the right class."""
    from found_defects import found_at_iou50

    from sdgas.models.detect.tiling import read_labels

    monkeypatch.chdir(tmp_path)
    assert main(["predict", f"project={tmp_path}", "name=p", "conf=0.1"]) == 0
    assert len(list((tmp_path / "p").glob("*.jpg"))) == 12
    results = SDGAS("sdgasnet-neu.pt").predict(conf=0.1, verbose=False)
    found = total = 0
    for r in results:
        cls, gt = read_labels(r.path, *r.orig_shape)
        found += int(found_at_iou50(r.boxes.data.cpu(), cls, gt).sum())
        total += len(cls)
    assert total == 32 and found / total >= 0.75, f"{found} of {total} demo defects found"


@pytest.mark.slow  # validates on the 360 NEU-DET val images (about 30 s)
def test_shipped_weights_reach_ap50_060_on_neu_det_val(neu_det, tmp_path):
    metrics = SDGAS("sdgasnet-neu.pt").val(data=str(neu_det / "data.yaml"), project=str(tmp_path), name="v",
                                           plots=False, verbose=False)
    assert metrics.coco["AP50"] >= 0.60, metrics.coco


def test_thresholds_from_val_go_to_a_copy_never_into_the_shipped_file(tmp_path):
    before = digest(SHIPPED)
    model = SDGAS("sdgasnet-neu.pt")
    model.val(data=str(DEMO_DATA), recall=0.5, project=str(tmp_path), name="v", plots=False, verbose=False)
    copy = tmp_path / "v" / "sdgasnet-neu.safetensors"
    assert digest(SHIPPED) == before
    assert copy.is_file() and model.ckpt_path == str(copy)
    assert SDGAS(str(copy)).model.class_conf == model.model.class_conf != {}


@pytest.mark.slow  # trains one epoch
def test_fine_tuning_starts_from_the_shipped_weights(tmp_path):
    model, start = SDGAS("sdgasnet-neu.pt"), {}

    def capture(trainer):
        start.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    model.add_callback("on_train_start", capture)
    model.train(data=str(DEMO_DATA), epochs=1, imgsz=160, batch=4, workers=0, project=str(tmp_path), name="ft",
                plots=False, val=False)
    assert holds_shipped_tensors(start)
    assert (tmp_path / "ft" / "weights" / "last.pt").is_file()


@pytest.mark.slow  # trains one epoch with a teacher
def test_the_shipped_weights_teach_the_n_scale_by_bare_name(tmp_path):
    """`distill_model=sdgasnet-neu.pt`: the n scale distilled from the shipped full model (weights-only loading)."""
    model = SDGAS("sdgasnet-n.yaml")
    model.train(data=str(DEMO_DATA), distill_model="sdgasnet-neu.pt", epochs=1, imgsz=160, batch=4, workers=0,
                project=str(tmp_path), name="kd", plots=False, val=False)
    assert holds_shipped_tensors(model.trainer.model.teacher_model.state_dict())
    assert (tmp_path / "kd" / "weights" / "last.pt").is_file()
